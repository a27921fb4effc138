// The system watcher (issue 10): every OOM kill on the machine. The kernel log names
// each kill; /proc/vmstat's oom_kill counts them (kill_ledger squares the two); a timer
// finds the kills whose records were lost.
#include <oomwatch/system_watcher.hpp>

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"
#include "fault_injection.hpp"
#include "kernel_log.hpp"
#include "logger.hpp"
#include "sys.hpp"
#include "system_watcher.hpp"
#include "victims.hpp"
#include "watcher_state.hpp"

#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/steady_timer.hpp>

#include <mutex>
#include <unordered_map>

namespace asio = boost::asio;
using boost::system::error_code;

namespace oomwatch {

namespace detail {

namespace {

constexpr const char* vmstat_path = "/proc/vmstat";
constexpr const char* kmsg_path = "/dev/kmsg";

result<std::optional<std::uint64_t>> read_vmstat_oom_kill() {
    if (auto ec = fault::take(fault::vmstat_read_errno)) return ec;
    std::string text;
    if (auto ec = read_file(vmstat_path, text)) return ec;
    return parse_vmstat_oom_kill(text);
}

} // namespace

/// The source behind a system watcher: a client of the context's kernel log, and the
/// timer that reads /proc/vmstat.
class system_source : public source,
                      public kernel_log_client,
                      public std::enable_shared_from_this<system_source> {
public:
    system_source(asio::any_io_executor ex, std::shared_ptr<watcher_state> st, std::optional<hierarchy_view> h,
                  kill_ledger ledger, std::chrono::milliseconds interval)
        : ex_(std::move(ex)), st_(std::move(st)), h_(std::move(h)), ledger_(ledger), interval_(interval),
          timer_(ex_) {
        counters_.oom_kill = ledger_.count();
    }

    /// Registers with the kernel log and starts the timer; the error of /dev/kmsg if it
    /// cannot be read.
    error_code start() {
        auto& svc = asio::use_service<kernel_log_service>(asio::query(ex_, asio::execution::context));
        error_code ec;
        const auto key = svc.add(ex_, std::weak_ptr<kernel_log_client>(shared_from_this()), &ec);
        if (!key) return ec ? ec : make_error_code(boost::system::errc::io_error);
        std::lock_guard lk(m_);
        log_key_ = key;
        // Resumed: the kills while nobody watched, first.
        if (const auto n = ledger_.take_all_missing()) st_->publish_kills(st_->root(), {}, n, counters_);
        arm_locked();
        return {};
    }

    void stop() noexcept override {
        std::uint64_t key = 0;
        {
            std::lock_guard lk(m_);
            stopped_ = true;
            key = std::exchange(log_key_, 0);
            timer_.cancel();
        }
        if (key) asio::use_service<kernel_log_service>(asio::query(ex_, asio::execution::context)).remove(key);
    }

    void on_kill(const kill_record& k) override {
        std::lock_guard lk(m_);
        if (stopped_) return;
        if (ledger_.needs_count() && !read_count_locked()) return;
        if (!ledger_.on_record()) {
            OOMWATCH_LOG(debug) << "system watcher: kernel log: pid " << k.pid
                                << " was killed before the start, or reported already without its record";
            return;
        }
        victim v = h_ ? to_victim(k, *h_) : to_victim(k, hierarchy_view{});
        // The victim's cgroup; a group member whose own one is unknown: the group's.
        const std::filesystem::path& where =
            !v.task_cgroup.empty() ? v.task_cgroup : (v.group_kill ? v.group_cgroup : std::filesystem::path());
        auto src = source_for_locked(where.empty() ? st_->root() : nullptr, where.native());
        counters_.oom_kill = ledger_.count();
        std::vector<victim> vs;
        vs.push_back(std::move(v));
        st_->publish_kills(src, std::move(vs), 0, counters_);
    }

    void on_log_unavailable(const error_code& ec) override {
        {
            std::lock_guard lk(m_);
            if (stopped_) return;
            stopped_ = true;
            log_key_ = 0;  // the service forgot it
            timer_.cancel();
        }
        OOMWATCH_LOG(error) << "system watcher: " << kmsg_path << ": " << ec.message();
        st_->publish_failed(ec, kmsg_path);
    }

    std::uint64_t kills() const {
        std::lock_guard lk(m_);
        return ledger_.reported();
    }
    std::uint64_t unattributed() const {
        std::lock_guard lk(m_);
        return ledger_.unattributed();
    }
    bool exact() const {
        std::lock_guard lk(m_);
        return ledger_.exact();
    }
    std::optional<std::uint64_t> counted_from() const {
        std::lock_guard lk(m_);
        return ledger_.base();
    }

private:
    // False when /proc/vmstat cannot be read: the watch has failed (published).
    bool read_count_locked() {
        auto r = read_vmstat_oom_kill();
        if (r && *r) {
            ledger_.update(**r);
            return true;
        }
        const error_code ec = r ? make_error_code(error::malformed_counters) : r.error();  // the line went away
        OOMWATCH_LOG(error) << "system watcher: " << vmstat_path << ": " << ec.message();
        stopped_ = true;
        timer_.cancel();
        const auto key = std::exchange(log_key_, 0);
        // The service and the state take their own locks, never this one: safe under it.
        if (key) asio::use_service<kernel_log_service>(asio::query(ex_, asio::execution::context)).remove(key);
        st_->publish_failed(ec, vmstat_path);
        return false;
    }

    void arm_locked() {
        if (stopped_ || !ledger_.exact()) return;  // nothing to check without the counter
        timer_.expires_after(interval_);
        timer_.async_wait([w = weak_from_this()](error_code ec) {
            if (ec) return;
            if (auto s = w.lock()) s->on_timer();
        });
    }

    void on_timer() {
        std::lock_guard lk(m_);
        if (stopped_ || !read_count_locked()) return;
        if (const auto n = ledger_.on_check()) {
            OOMWATCH_LOG(warning) << "system watcher: " << n
                                  << " OOM kill(s) counted by the kernel without a kernel log record "
                                     "(overwritten before it was read): reported unattributed";
            counters_.oom_kill = ledger_.count();
            st_->publish_kills(st_->root(), {}, n, counters_);
        }
        arm_locked();
    }

    // The event source of a cgroup (`root`, when given, stands for itself). Kept while
    // some backlog holds it, so that kills of one cgroup pile up in one event.
    source_ref source_for_locked(const source_ref& root, const std::string& dir) {
        if (root) return root;
        if (auto it = sources_.find(dir); it != sources_.end())
            if (auto s = it->second.lock()) return s;
        if (sources_.size() >= 64) std::erase_if(sources_, [](const auto& e) { return e.second.expired(); });
        auto s = std::make_shared<event_source_info>(event_source_info{dir, st_->version(), event_origin::here});
        sources_[dir] = s;
        return s;
    }

    asio::any_io_executor ex_;
    std::shared_ptr<watcher_state> st_;
    std::optional<hierarchy_view> h_;
    mutable std::mutex m_;
    kill_ledger ledger_;
    std::chrono::milliseconds interval_;
    asio::steady_timer timer_;
    memory_counters counters_;
    std::unordered_map<std::string, std::weak_ptr<const event_source_info>> sources_;
    std::uint64_t log_key_ = 0;
    bool stopped_ = false;
};

} // namespace detail

namespace {
const std::filesystem::path empty_path;
}

system_watcher::system_watcher(const executor_type& ex, const system_options& opts) : ex_(ex) {
    error_code ec;
    std::filesystem::path failed;
    open(opts, ec, &failed);
    if (ec) throw cgroup_error(ec, failed);
}

system_watcher::system_watcher(const executor_type& ex, const system_options& opts, error_code& ec) : ex_(ex) {
    open(opts, ec, nullptr);
}

void system_watcher::open(const system_options& opts, error_code& ec, std::filesystem::path* failed_path) {
    ec = {};
    auto fail = [&](error_code e, const char* path) {
        ec = e;
        if (failed_path) *failed_path = path;
        OOMWATCH_LOG(debug) << "system watcher: " << path << ": " << e.message();
    };
    if (opts.check_interval <= std::chrono::milliseconds::zero()) {
        fail(make_error_code(boost::system::errc::invalid_argument), "check_interval");
        return;
    }
    // Where victims' cgroups are; a machine without a memory hierarchy still has kills.
    std::optional<detail::hierarchy_view> h;
    std::filesystem::path root;
    cgroup_version v = cgroup_version::v2;
    if (auto mh = detail::find_memory_hierarchy()) {
        h = detail::hierarchy_view{mh->mount_point.native(), mh->root};
        root = mh->mount_point;
        v = mh->version;
    }
    // The counter first, then the log: a kill in between is counted and reported
    // without its record, never a record without its kill.
    auto base = detail::read_vmstat_oom_kill();
    if (!base) {
        fail(base.error(), detail::vmstat_path);
        return;
    }
    if (!*base) OOMWATCH_LOG(warning) << "system watcher: no oom_kill in /proc/vmstat: kills counted from the kernel log alone";
    auto st = std::make_shared<detail::watcher_state>(ex_, root, v, kind_set{event_kind::oom_kill});
    const auto ledger = opts.resume_from && *base ? detail::kill_ledger(*opts.resume_from, **base)
                                                  : detail::kill_ledger(*base);
    auto src = std::make_shared<detail::system_source>(ex_, st, std::move(h), ledger, opts.check_interval);
    st->attach(src);
    if (auto e = src->start()) {
        st->close();
        fail(e, detail::kmsg_path);
        return;
    }
    state_ = std::move(st);
    source_ = std::move(src);
    OOMWATCH_LOG(trace) << "system watcher: watching every OOM kill (cgroups under '" << root.native() << "')";
}

system_watcher::system_watcher(system_watcher&& other) noexcept
    : ex_(other.ex_), state_(std::move(other.state_)), source_(std::move(other.source_)) {}

system_watcher& system_watcher::operator=(system_watcher&& other) noexcept {
    if (this != &other) {
        close();
        ex_ = other.ex_;
        state_ = std::move(other.state_);
        source_ = std::move(other.source_);
    }
    return *this;
}

system_watcher::~system_watcher() { close(); }

bool system_watcher::is_open() const noexcept { return state_ && state_->open(); }

const std::filesystem::path& system_watcher::root() const noexcept { return state_ ? state_->cgroup() : empty_path; }

std::optional<cgroup_error> system_watcher::failure() const {
    if (!state_) return std::nullopt;
    auto f = state_->failure();
    if (!f) return std::nullopt;
    return cgroup_error(f->ec, f->path);
}

std::uint64_t system_watcher::kills() const { return source_ ? source_->kills() : 0; }
std::uint64_t system_watcher::unattributed() const { return source_ ? source_->unattributed() : 0; }
bool system_watcher::exact() const { return source_ && source_->exact(); }
std::optional<std::uint64_t> system_watcher::counted_from() const {
    return source_ ? source_->counted_from() : std::nullopt;
}

void system_watcher::async_next_event_impl(event_handler handler) {
    detail::async_next_of(ex_, state_, std::move(handler));
}

asio::awaitable<oom_event> system_watcher::next_event() { return detail::next_event_of(ex_, state_); }

subscription system_watcher::subscribe_impl(executor_type ex, std::function<void(const oom_event&)> fn) {
    if (!state_) return subscription{};
    return subscription(state_->subscribe(std::move(ex), std::move(fn)));
}

void system_watcher::cancel() {
    if (state_) state_->cancel_wait();
}

void system_watcher::close() {
    if (state_) state_->close();  // stops the source: the log registration and the timer
}

} // namespace oomwatch
