// oomwatch/system_watcher.hpp: every OOM kill on the machine, global ones included.
#pragma once

#include <oomwatch/error.hpp>
#include <oomwatch/event.hpp>
#include <oomwatch/watcher.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace oomwatch {

namespace detail {
class system_source;
class watcher_state;
} // namespace detail

/// How a system watcher watches.
struct system_options {
    /// How often `/proc/vmstat` is read to find kills whose kernel-log record was lost
    /// (overwritten before it was read). A kill still without its record after a whole
    /// interval is delivered as `unattributed`, so a kill is never later than two
    /// intervals, and never lost. Must be positive (`errc::invalid_argument`).
    std::chrono::milliseconds check_interval{std::chrono::seconds(1)};

    /// Resume after a restart: the `/proc/vmstat` `oom_kill` value up to which an
    /// earlier watch reported kills (`counted_from()` plus the counts it reported). The
    /// kills counted since are reported at start, as one `unattributed` event at the
    /// root (their kernel-log records are not replayed: naming them would need the log
    /// from that point, which may be gone). A value above the counter (a reboot): every
    /// kill since boot is reported. Ignored without the counter. Empty: kills before the
    /// start are not reported.
    std::optional<std::uint64_t> resume_from;
};

/// Every OOM kill on the machine, from the kernel log, counted exactly.
///
/// Each kill is an `oom_kill` event (with `count` 1 unless events pile up unread) in the
/// victim's memory cgroup (`oom_event::cgroup`), with the victim named
/// (`oom_event::victims`) and why it was killed (`victim::constraint`): a cgroup's limit
/// (`memcg`, `victim::oom_cgroup` says whose), the whole machine out of memory
/// (`global`), a cpuset or a memory policy. No cgroup file shows a global OOM; this
/// watcher does. Members of a `memory.oom.group` kill are each an `oom_kill` event;
/// there are no `oom_group_kill` or `oom` events here.
///
/// Counts: the kernel counts every OOM kill in `oom_kill` of `/proc/vmstat` (4.13+); the
/// watcher reports exactly that counter's growth since it started. A kill whose record
/// was lost is reported as `unattributed` in an event for the memory hierarchy's root
/// (its mount point; empty when none is mounted), within two `check_interval`s. A record
/// is never reported without its count: a record of a kill from before the start is
/// dropped. Without `oom_kill` in `/proc/vmstat` (older kernels), every kernel record is
/// reported and lost ones are not counted. When the kernel log did not name the victim's
/// cgroup (a rate-limited report, the victim gone before `/proc` could be read), the
/// event is in the root's directory too, and `victim::task_cgroup` is empty.
/// `oom_event::counters` holds only `oom_kill`: the machine's count as last read;
/// `oom_event::version` is the memory hierarchy's.
///
/// The kernel log: `/dev/kmsg`, read through the execution context's one reader (shared
/// with the watchers' victims), from its end as it was at construction (old kills are
/// never replayed). Only the kernel's own records count: lines written to `/dev/kmsg`
/// by a process are ignored. Reading it needs `CAP_SYSLOG` when
/// `kernel.dmesg_restrict` is 1, else read permission on `/dev/kmsg`: without, the
/// constructor fails with the error, naming `/dev/kmsg`.
///
/// The watch ends only with `failed` (the kernel log or `/proc/vmstat` cannot be read
/// any more; `failure()` names which), or `close()`. There is no `removed`.
///
/// Handlers, executors, cancellation, lifetimes and thread safety are those of
/// `watcher`: `async_next_event` completes on the handler's associated executor (else
/// the watcher's) with `void(error_code, oom_event)`, supports per-operation
/// cancellation (terminal, partial, total), and at most one may be pending; each
/// subscription has its own backlog. A system watcher must not outlive its execution
/// context. Thread safety: Distinct objects: Safe. Shared objects: Unsafe.
class system_watcher {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Starts watching. Errors (as `cgroup_error` naming the file, or in `ec`):
    /// `/dev/kmsg` cannot be opened (EPERM or EACCES without the permission above,
    /// ENOENT without the device), `/proc/vmstat` cannot be read or its `oom_kill` line
    /// is malformed (`error::malformed_counters`), `errc::invalid_argument` for a bad
    /// `check_interval`.
    explicit system_watcher(const executor_type& ex, const system_options& opts = {});
    /// As above; on failure sets `ec` and leaves the watcher closed.
    system_watcher(const executor_type& ex, const system_options& opts, boost::system::error_code& ec);

    template <class ExecutionContext>
        requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    explicit system_watcher(ExecutionContext& ctx, const system_options& opts = {})
        : system_watcher(executor_type(ctx.get_executor()), opts) {}
    template <class ExecutionContext>
        requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    system_watcher(ExecutionContext& ctx, const system_options& opts, boost::system::error_code& ec)
        : system_watcher(executor_type(ctx.get_executor()), opts, ec) {}

    system_watcher(system_watcher&& other) noexcept;
    system_watcher& operator=(system_watcher&& other) noexcept;
    system_watcher(const system_watcher&) = delete;
    system_watcher& operator=(const system_watcher&) = delete;
    ~system_watcher();

    executor_type get_executor() const noexcept { return ex_; }
    bool is_open() const noexcept;
    /// The directory of the memory hierarchy's root: where unattributed kills are
    /// reported (empty when no memory hierarchy is mounted).
    const std::filesystem::path& root() const noexcept;
    /// Why the watch failed, if it did: the error and the file (`/dev/kmsg`, `/proc/vmstat`).
    std::optional<cgroup_error> failure() const;
    /// Kills reported since the start (named and unattributed), and of those unattributed.
    std::uint64_t kills() const;
    std::uint64_t unattributed() const;
    /// Whether counts are exact (`/proc/vmstat` has `oom_kill`).
    bool exact() const;
    /// The `/proc/vmstat` `oom_kill` value kills are reported from: the counter at the
    /// start, or `system_options::resume_from` when given. That plus the counts of the
    /// events reported is what to resume from later. Empty without the counter.
    std::optional<std::uint64_t> counted_from() const;

    /// Waits for the next kill. As `watcher::async_next_event`.
    template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code, oom_event))
                  Token = boost::asio::deferred_t>
    auto async_next_event(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(boost::system::error_code, oom_event)>(
            [](auto handler, system_watcher* self) { self->async_next_event_impl(std::move(handler)); }, token,
            this);
    }

    /// `co_await sw.next_event()`; throws `cgroup_error` as `watcher::next_event`.
    boost::asio::awaitable<oom_event> next_event();

    /// As `watcher::subscribe`: every kill from now on.
    template <class Executor, class Handler>
    subscription subscribe(const Executor& ex, Handler&& handler) {
        return subscribe_impl(executor_type(ex), std::function<void(const oom_event&)>(std::forward<Handler>(handler)));
    }
    template <class Handler>
    subscription subscribe(Handler&& handler) {
        return subscribe_impl(ex_, std::function<void(const oom_event&)>(std::forward<Handler>(handler)));
    }

    /// Completes a pending `async_next_event` with `operation_aborted`. Keeps watching.
    void cancel();
    /// Stops watching: the kernel-log registration and the timer are released.
    void close();

private:
    using event_handler = boost::asio::any_completion_handler<void(boost::system::error_code, oom_event)>;
    void open(const system_options& opts, boost::system::error_code& ec, std::filesystem::path* failed_path);
    void async_next_event_impl(event_handler handler);
    subscription subscribe_impl(executor_type ex, std::function<void(const oom_event&)> fn);

    executor_type ex_;
    std::shared_ptr<detail::watcher_state> state_;
    std::shared_ptr<detail::system_source> source_;
};

} // namespace oomwatch
