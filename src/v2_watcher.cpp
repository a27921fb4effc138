// cgroup v2 watcher.
//
// inotify says only "memory.events changed": identical unread events merge and the
// kernel rate-limits them, so they are never counted. Every notification re-reads the
// file and reports the per-kind growth since the last read.
#include "v2_watcher.hpp"

#include "detail/parse.hpp"
#include "inotify_service.hpp"
#include "logger.hpp"
#include "sys.hpp"

#include <oomwatch/error.hpp>

#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <mutex>
#include <string>

namespace asio = boost::asio;
using boost::system::error_code;

namespace oomwatch::detail {
namespace {

class v2_watch final : public source, public inotify_client, public std::enable_shared_from_this<v2_watch> {
public:
    v2_watch(inotify_service& svc, const std::filesystem::path& dir, const watch_options& opts,
             std::weak_ptr<watcher_state> sink)
        : svc_(svc),
          dir_(dir.native()),
          file_(dir_ + (opts.counters == watch_options::scope::local ? "/memory.events.local" : "/memory.events")),
          sink_(std::move(sink)) {}

    error_code start(const asio::any_io_executor& ex, std::chrono::milliseconds liveness, memory_counters& baseline) {
        struct stat st{};
        if (auto ec = stat_path(dir_, st)) return ec;
        ino_ = st.st_ino;
        // Arm first, then read the baseline: a change in between is in the baseline (it
        // happened before the watcher existed), a change after it is a notification.
        if (auto ec = svc_.add(ex, file_, dir_, weak_from_this(), liveness, reg_)) return ec;
        std::lock_guard lk(m_);
        registered_ = true;
        memory_counters c;
        if (auto ec = read_counters(c)) {
            unregister();
            return ec;
        }
        last_ = c;
        baseline = c;
        ready_ = true;
        return {};
    }

    void stop() noexcept override {
        std::lock_guard lk(m_);
        done_ = true;
        unregister();
    }

    void on_counters_changed() override {
        std::lock_guard lk(m_);
        if (done_ || !ready_) return;
        if (auto sink = sink_.lock()) reread(*sink);
    }

    void on_maybe_removed() override {
        std::lock_guard lk(m_);
        if (done_ || !ready_) return;
        auto sink = sink_.lock();
        if (!sink) return;
        if (gone())
            finish_removed(*sink);
        else if (stale_)
            reread(*sink);  // the last read failed: the safety net retries it
    }

private:
    // With m_ held.
    void reread(watcher_state& sink) {
        memory_counters c;
        if (auto ec = read_counters(c)) {
            if (ec == boost::system::errc::no_such_file_or_directory || ec == boost::system::errc::no_such_device) {
                if (gone()) finish_removed(sink);
                return;
            }
            if (ec == error::malformed_counters) {
                // A fake file caught mid-write reads empty or partial (real cgroup files
                // are read atomically); its own notification follows, so this is no change.
                OOMWATCH_LOG(debug) << file_ << ": ignoring unparsable counters";
            } else {
                // Nothing is lost: the baseline stays put, so the next read that works
                // reports everything since; the liveness timer retries it.
                OOMWATCH_LOG(warning) << file_ << ": cannot read: " << ec.message();
                stale_ = true;
            }
            return;
        }
        stale_ = false;
        // The file read may be a namesake's, made after ours was removed: its counters
        // are not ours.
        if (gone()) {
            finish_removed(sink);
            return;
        }
        counter_delta d = compute_delta(last_, c, kind_set::all());
        if (d.went_backwards) {
            OOMWATCH_LOG(warning) << file_ << ": counters went down; taking them as the new baseline";
            d = counter_delta{};
        }
        last_ = c;
        if (!d.empty()) OOMWATCH_LOG(debug) << file_ << ": oom " << c.oom << ", oom_kill " << c.oom_kill
                                            << ", oom_group_kill " << c.oom_group_kill;
        sink.publish(d, c);
    }

    bool gone() const {
        error_code ec;
        auto l = check_liveness(dir_, ino_, ec);  // a namesake made after the removal is not ours
        if (l == liveness::unknown)
            OOMWATCH_LOG(warning) << dir_ << ": cannot check whether the cgroup exists: " << ec.message();
        return l == liveness::gone;
    }

    void finish_removed(watcher_state& sink) {
        OOMWATCH_LOG(info) << dir_ << ": cgroup removed";
        done_ = true;
        unregister();
        sink.publish_removed();
    }

    void unregister() {
        if (!registered_) return;
        registered_ = false;
        svc_.remove(reg_);
    }

    error_code read_counters(memory_counters& c) {
        thread_local std::string text;  // its capacity is reused: no allocation per read
        if (auto ec = read_file(file_, text)) return ec;
        // The kernel writes the whole file, newline-terminated, and never drops a key:
        // anything shorter is torn (cut inside a number, or at a line end with keys
        // missing, which would read as 0) and would look like counters going down.
        const auto lines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
        if (text.empty() || text.back() != '\n' || lines < lines_) return make_error_code(error::malformed_counters);
        auto r = parse_memory_events(text);
        if (!r) return r.error();
        c = std::move(*r);
        lines_ = lines;
        return {};
    }

    inotify_service& svc_;
    // Plain strings, not std::filesystem::path: a path keeps a list of its components,
    // several hundred bytes each, and 10,000 watchers should stay small.
    const std::string dir_;
    const std::string file_;
    std::weak_ptr<watcher_state> sink_;
    std::mutex m_;  // called from the service's strand and from the owner's thread
    inotify_service::registration reg_;
    memory_counters last_;
    ino_t ino_ = 0;
    std::size_t lines_ = 0;  // lines of the last good read
    bool stale_ = false;     // the last read failed (not for a torn file): retry it
    bool registered_ = false;
    bool ready_ = false;
    bool done_ = false;
};

} // namespace

std::shared_ptr<source> start_v2_watch(const asio::any_io_executor& ex, const std::filesystem::path& dir,
                                       const watch_options& opts, const std::shared_ptr<watcher_state>& sink,
                                       error_code& ec) {
    auto& svc = asio::use_service<inotify_service>(asio::query(ex, asio::execution::context));
    auto w = std::make_shared<v2_watch>(svc, dir, opts, sink);
    memory_counters baseline;
    ec = w->start(ex, opts.liveness_interval, baseline);
    if (ec) return nullptr;
    sink->set_baseline(baseline);
    return w;
}

} // namespace oomwatch::detail
