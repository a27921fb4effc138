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
#include <boost/asio/steady_timer.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>

namespace asio = boost::asio;
using boost::system::error_code;

namespace oomwatch::detail {
namespace {

class v2_watch final : public source, public inotify_client, public std::enable_shared_from_this<v2_watch> {
public:
    v2_watch(inotify_service& svc, const watch_options& opts, const std::shared_ptr<watcher_state>& sink,
             node_role role)
        : svc_(svc),
          sink_(sink),
          src_(role.src ? std::move(role.src) : sink->root()),
          observer_(std::move(role.observer)),
          ino_(role.ino),
          local_(opts.counters == watch_options::scope::local),
          report_removed_(role.report_removed),
          from_zero_(role.from_zero),
          watch_parent_(!role.owner_sees_removal),
          local_failure_(role.local_failure) {}

    error_code start(const asio::any_io_executor& ex, std::chrono::milliseconds liveness, memory_counters& baseline,
                     const std::optional<memory_counters>& resume) {
        if (!ino_) {
            struct stat st{};
            if (auto ec = stat_path(dir(), st)) return ec;
            ino_ = st.st_ino;
        }
        ex_ = ex;
        liveness_ = liveness;
        // Arm first, then read the baseline: a change in between is in the baseline (it
        // happened before the watcher existed), a change after it is a notification.
        if (auto ec = arm()) return ec;
        std::lock_guard lk(m_);
        registered_ = true;
        memory_counters c;
        if (auto ec = read_counters(c)) {
            unregister();
            return ec;
        }
        file_ino_ = read_ino_;  // the cgroup's own, checked by the stat of the directory before
        last_ = from_zero_ ? memory_counters{} : c;  // made after the tree started: all of it is news
        baseline = c;
        ready_ = true;
        if (auto sink = sink_.lock()) sink->watch_victims(src_);
        if (from_zero_) {
            if (auto sink = sink_.lock()) reread(*sink);
        } else if (resume) {
            // Not told to the tree (`observer_`): it happened before the tree's
            // hierarchical baselines, which must not account for it.
            const auto d = resume_delta(*resume, c);
            if (auto sink = sink_.lock(); sink && !d.empty()) sink->publish_resumed(src_, d, c);
        }
        return {};
    }

    void stop() noexcept override {
        std::lock_guard lk(m_);
        done_ = true;
        unregister();
        unwatch_victims();
    }

    void refresh() noexcept override {
        std::lock_guard lk(m_);
        if (done_ || !ready_) return;
        if (auto sink = sink_.lock()) reread(*sink);
    }

    void on_counters_changed() override {
        std::lock_guard lk(m_);
        if (done_ || !ready_) return;
        if (auto sink = sink_.lock()) reread(*sink);
    }

    void maybe_removed() noexcept override { on_maybe_removed(); }

    memory_counters last_counters() const override {
        std::lock_guard lk(m_);
        return last_;
    }

    void on_maybe_removed() override {
        std::lock_guard lk(m_);
        if (done_ || !ready_) return;
        auto sink = sink_.lock();
        if (!sink) return;
        if (gone()) {
            finish_removed(*sink);
            return;
        }
        // The kernel says nothing when the memory controller is disabled for a cgroup
        // (its files go, no inotify event): the safety net notices the file missing.
        struct stat st{};
        if (stale_ || recheck_armed_ || stat_path(file(), st)) reread(*sink);
    }

    void on_watch_lost() override {
        std::lock_guard lk(m_);
        if (done_ || !ready_) return;
        auto sink = sink_.lock();
        if (!sink) return;
        // The kernel dropped the watch on the counters file, with the file (or the
        // cgroup). Re-reading tells which: gone, a missing file (confirmed, then a
        // failure), or a file still there, which gets a new watch.
        watch_lost_ = true;
        reread(*sink);
    }

    void on_service_failed(const error_code& ec) override {
        std::lock_guard lk(m_);
        if (done_) return;
        registered_ = false;  // the instance and its watches are gone
        // The instance is everyone's: the whole watch ends, a tree's too.
        if (auto sink = sink_.lock()) fail(*sink, ec, "inotify (watching " + file() + ")", /*global=*/true);
    }

private:
    // With m_ held.
    void reread(watcher_state& sink) {
        for (int pass = 0; pass < 2 && !done_; ++pass)
            if (!read_once(sink)) return;
    }

    // One read; true when it must be repeated (the watch was re-armed after it, so a
    // change in between may have gone unnotified).
    bool read_once(watcher_state& sink) {
        memory_counters c;
        if (auto ec = read_counters(c)) {
            if (ec == boost::system::errc::no_such_file_or_directory || ec == boost::system::errc::no_such_device) {
                error_code lec;
                switch (check_liveness(dir(), ino_, lec)) {
                case liveness::gone: finish_removed(sink); break;
                case liveness::alive:
                    // The cgroup is there but its memory.events is not: the controller
                    // was disabled for it, and nothing more can be counted, ever. Unless
                    // the directory is about to go too (a removal takes the files first
                    // on some file systems): look once more shortly, then say so.
                    if (confirming_)
                        fail(sink, make_error_code(error::counters_vanished), file());
                    else if (!recheck_armed_)
                        recheck_soon();
                    break;
                case liveness::unknown:
                    OOMWATCH_LOG(warning) << dir() << ": cannot check whether the cgroup exists: " << lec.message();
                    stale_ = true;  // the liveness timer retries
                    break;
                }
                return false;
            }
            if (ec == error::malformed_counters) {
                // A fake file caught mid-write reads empty or partial (real cgroup files
                // are read atomically); its own notification follows, so this is no change.
                OOMWATCH_LOG(debug) << file() << ": ignoring unparsable counters";
            } else {
                // Nothing is lost: the baseline stays put, so the next read that works
                // reports everything since; the liveness timer retries it.
                OOMWATCH_LOG(warning) << file() << ": cannot read: " << ec.message();
                stale_ = true;
            }
            return false;
        }
        stale_ = false;
        // The file read may be a namesake's, made after ours was removed: its counters
        // are not ours. The same file as before (by inode, from the open descriptor) is
        // ours; another one sends us to the directory.
        if (read_ino_ != file_ino_) {
            if (gone()) {
                finish_removed(sink);
                return false;
            }
            file_ino_ = read_ino_;
        }
        if (watch_lost_) {
            // Still readable, yet the kernel dropped the watch: without one no change
            // would be seen again. Arm a new one (or fail, saying why), and read again.
            watch_lost_ = false;
            unregister();
            if (auto ec = arm()) {
                fail(sink, ec, file());
                return false;
            }
            registered_ = true;
            return true;
        }
        counter_delta d = compute_delta(last_, c, kind_set::all());
        if (d.went_backwards) {
            OOMWATCH_LOG(warning) << file() << ": counters went down; taking them as the new baseline";
            d = counter_delta{};
        }
        last_ = c;
        if (!d.empty()) OOMWATCH_LOG(debug) << file() << ": oom " << c.oom << ", oom_kill " << c.oom_kill
                                            << ", oom_group_kill " << c.oom_group_kill;
        sink.publish(src_, d, c);
        if (!d.empty())
            if (auto o = observer_.lock()) o->on_published(d);
        return false;
    }

    // With m_ held.
    void recheck_soon() {
        if (!recheck_) recheck_ = std::make_unique<asio::steady_timer>(ex_);
        recheck_armed_ = true;
        recheck_->expires_after(std::chrono::milliseconds(100));
        recheck_->async_wait([w = weak_from_this()](error_code ec) {
            auto self = w.lock();
            if (!self) return;
            std::lock_guard lk(self->m_);
            self->recheck_armed_ = false;
            if (ec || self->done_) return;
            if (auto sink = self->sink_.lock()) {
                self->confirming_ = true;  // a missing file now is the end
                self->reread(*sink);
                self->confirming_ = false;
            }
        });
    }

    bool gone() const {
        error_code ec;
        auto l = check_liveness(dir(), ino_, ec);  // a namesake made after the removal is not ours
        if (l == liveness::unknown)
            OOMWATCH_LOG(warning) << dir() << ": cannot check whether the cgroup exists: " << ec.message();
        return l == liveness::gone;
    }

    void finish_removed(watcher_state& sink) {
        OOMWATCH_LOG(debug) << dir() << ": cgroup removed";
        done_ = true;
        unregister();
        if (report_removed_) sink.publish_removed(src_, clock::now(), last_);
        sink.unwatch_victims(src_);
        if (auto o = observer_.lock()) o->on_end();
    }

    void fail(watcher_state& sink, const error_code& ec, const std::string& what, bool global = false) {
        done_ = true;
        unregister();
        if (local_failure_ && !global) {
            OOMWATCH_LOG(warning) << what << ": no longer watched: " << ec.message();
            sink.publish_skipped(src_, ec);
            return;
        }
        OOMWATCH_LOG(error) << what << ": watch failed: " << ec.message();
        sink.publish_failed(ec, what);
        sink.unwatch_victims(src_);
    }

    void unwatch_victims() noexcept {
        if (auto sink = sink_.lock()) sink->unwatch_victims(src_);
    }

    void unregister() {
        if (recheck_ && done_) recheck_->cancel();
        if (!registered_) return;
        registered_ = false;
        svc_.remove(reg_);
    }

    // The cgroup's directory: its name in events (one string for both).
    const std::string& dir() const noexcept { return src_->cgroup; }

    // The counters file, made on demand in a per-thread buffer: one string fewer per
    // watched cgroup. Valid until the next call on this thread.
    const std::string& file() const {
        thread_local std::string f;
        f.assign(dir()).append(local_ ? "/memory.events.local" : "/memory.events");
        return f;
    }

    error_code arm() {
        return svc_.add(ex_, file(), watch_parent_ ? dir() : std::string(), weak_from_this(), liveness_, reg_);
    }

    error_code read_counters(memory_counters& c) {
        thread_local std::string text;  // its capacity is reused: no allocation per read
        if (auto ec = read_small_file(file(), text, &read_ino_)) return ec;
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
    asio::any_io_executor ex_;
    std::chrono::milliseconds liveness_{};
    std::weak_ptr<watcher_state> sink_;
    const source_ref src_;  // its cgroup is the directory watched
    const std::weak_ptr<node_observer> observer_;
    mutable std::mutex m_;  // called from the service's strand and from the owner's thread
    inotify_service::registration reg_;
    memory_counters last_;
    ino_t ino_ = 0;       // the directory's
    ino_t file_ino_ = 0;  // the counters file's, as last known to be ours
    ino_t read_ino_ = 0;  // the counters file's, as the last read found it
    std::size_t lines_ = 0;  // lines of the last good read
    std::unique_ptr<asio::steady_timer> recheck_;  // made on first need: confirms a missing file
    const bool local_;           // memory.events.local, not memory.events
    const bool report_removed_;
    const bool from_zero_;
    const bool watch_parent_;    // the service watches the parent for its removal (else the owner does)
    const bool local_failure_;   // a failure of this watch alone is `skipped` for it (a tree's descendant)
    bool stale_ = false;     // the last read failed (not for a torn file): retry it
    bool watch_lost_ = false;  // the kernel dropped the file's watch: re-arm on the next good read
    bool recheck_armed_ = false;  // the file was missing with the cgroup there: look again
    bool confirming_ = false;     // this read is that second look
    bool registered_ = false;
    bool ready_ = false;
    bool done_ = false;
};

} // namespace

std::shared_ptr<source> start_v2_watch(const asio::any_io_executor& ex, const watch_options& opts,
                                       const std::shared_ptr<watcher_state>& sink, error_code& ec, node_role role) {
    const bool own = !role.src;
    auto& svc = asio::use_service<inotify_service>(asio::query(ex, asio::execution::context));
    const auto resume = std::move(role.resume_from);  // needed at start only
    auto w = std::make_shared<v2_watch>(svc, opts, sink, std::move(role));
    memory_counters baseline;
    ec = w->start(ex, opts.liveness_interval, baseline, resume);
    if (ec) return nullptr;
    if (own) sink->set_baseline(baseline);
    return w;
}

} // namespace oomwatch::detail
