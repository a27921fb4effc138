// oomwatch/watcher.hpp: the watcher, and subscriptions to it.
#pragma once

#include <oomwatch/error.hpp>
#include <oomwatch/event.hpp>
#include <oomwatch/subscription.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace oomwatch {

namespace detail {
class watcher_state;
} // namespace detail

/// How a watcher watches.
struct watch_options {
    /// The kinds to report. `removed` is reported whatever this says.
    kind_set kinds = kind_set::defaults();

    /// cgroup v2 only: read `memory.events` (this cgroup and its descendants: the
    /// default) or `memory.events.local` (this cgroup alone). v1 ignores it.
    enum class scope { hierarchical, local } counters = scope::hierarchical;

    /// Take the directory as a cgroup of this version without looking it up in the
    /// mount table (cgroup folders outside the usual mounts, fake folders in tests).
    std::optional<cgroup_version> force_version;

    /// cgroup v2: how often the safety net re-reads the counters and rechecks that the
    /// cgroup still exists. Removal is normally seen at once through the parent
    /// directory's inotify watch. One timer serves all v2 watchers of an execution
    /// context, at the shortest interval of the watchers still open. Must be positive:
    /// zero or negative fails construction with `errc::invalid_argument`.
    std::chrono::milliseconds liveness_interval{std::chrono::seconds(5)};

    /// Name the processes killed (`oom_event::victims`) from the kernel log: one
    /// `/dev/kmsg` reader per execution context, shared by every watcher that wants
    /// victims, reading only while one is open. Counts never depend on it. Off, or
    /// without the kernel log (see `watcher::victims_available()`), every kill is
    /// counted in `oom_event::unattributed`. Ignored with `force_version` (a folder
    /// outside the mount table has no kernel log): victims off.
    bool victims = true;

    /// How long an `oom_kill` count may wait for the kernel-log records of its kills
    /// before it is delivered with the missing ones counted as `unattributed`. The
    /// kernel raises the counter a moment before it logs the kill, and the log is read
    /// by a handler of the execution context, so a count is sometimes seen first; a
    /// count whose records are already read is delivered at once, and one held is
    /// delivered as soon as they come. 0: never wait (victims read later are lost to
    /// that event). Events of that cgroup after a held one wait behind it, in order.
    /// Must not be negative (`errc::invalid_argument`).
    std::chrono::milliseconds victim_hold{default_victim_hold};

    /// Resume after a restart: the counters an earlier watch of this cgroup last
    /// reported (`oom_event::counters` of its last event of each kind). The watcher then
    /// reports, as its first events, the growth from these to the baseline it reads at
    /// start (what happened while nobody watched: computed against that very baseline,
    /// so nothing is missed or counted twice), then live events as usual. Those kills
    /// are `unattributed` (their kernel-log records are not replayed). A counter lower
    /// than given means the cgroup was removed and made again under the same name
    /// meanwhile: everything in the new one is reported, from zero. Compare like with
    /// like: `memory.events` or `memory.events.local` as `counters` says.
    /// cgroup v1: only `oom_kill` is a kernel counter and is resumed; `oom` counts the
    /// notifications a watcher saw, which are not to be had for the time nobody watched.
    /// Empty (the default): what happened before the start is not reported.
    std::optional<memory_counters> resume_from;

    /// 50 ms: the log record follows the counter by microseconds, but its reading is one
    /// handler per record on a context that may be busy (a `memory.oom.group` kill of N
    /// tasks is N + 2 records), on a loaded machine. Paid only when a record is late or
    /// lost (overwritten), never on the path where it is there.
    static constexpr std::chrono::milliseconds default_victim_hold{50};
};

/// Names a cgroup by a process in it: `watcher w(ex, oomwatch::process{pid});`.
struct process {
    pid_t pid;
};

/// Watches one memory cgroup (v1 or v2, detected) for OOM events.
///
/// cgroup v1: an eventfd registered on `memory.oom_control`, read asynchronously.
/// cgroup v2: `memory.events` watched through one inotify instance shared by all v2
/// watchers of the execution context, and the parent directory watched for removal.
/// Counters are read as a baseline when the watcher starts: what happened before
/// produces no event (unless `watch_options::resume_from` says where an earlier watch
/// stopped). Every change is re-read and reported as exact per-kind deltas.
///
/// Events are kept for `async_next_event` from construction on, and for each
/// subscription from its `subscribe()` on, separately, coalesced per kind (bounded
/// memory: one slot per kind), so nothing is lost while nobody is waiting and a slow
/// consumer never slows the watcher or the other consumers. A subscription does not see
/// events that happened before it was made (they stay for `async_next_event`).
///
/// The watch ends with `removed` (the cgroup is gone) or `failed` (it cannot go on: the
/// eventfd or the inotify instance failed, or the counters file vanished while the cgroup
/// remains: seen by the liveness timer, as the kernel sends no notification for it). Both
/// are the last event; the watcher releases its descriptors at that point.
/// A failure is never silent: it is logged at `error` (when logging is enabled), the
/// pending and every later `async_next_event` completes with its code (after the events
/// that came before it), subscribers receive a `failed` event, and `failure()` names the
/// file concerned.
///
/// Object lifetimes: a watcher must not outlive its execution context. It may be
/// destroyed with operations pending; they complete with `operation_aborted`. No file
/// descriptor outlives the watcher (v1: its two eventfds; v2: its inotify watches, the
/// shared instance stays with the execution context).
///
/// Thread safety: Distinct objects: Safe. Shared objects: Unsafe, except that a
/// subscription may be reset from any thread.
class watcher {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Watches the cgroup `cgroup` names: an absolute cgroup directory
    /// (`/sys/fs/cgroup/memory/myapp`) or a path inside the memory hierarchy (`/myapp`).
    ///
    /// Errors: throws `cgroup_error` naming the path: `no_such_file_or_directory`,
    /// `permission_denied` and other errno values, `error::not_a_cgroup`,
    /// `error::no_memory_controller`, `error::no_memory_hierarchy`; `too_many_files_open`
    /// and inotify's `no_space_on_device` (the `max_user_watches` limit) when out of
    /// descriptors or watches.
    watcher(const executor_type& ex, const std::filesystem::path& cgroup, const watch_options& opts = {});
    /// As above; on failure sets `ec` and leaves the watcher closed (`is_open() == false`).
    watcher(const executor_type& ex, const std::filesystem::path& cgroup, const watch_options& opts,
            boost::system::error_code& ec);
    /// Watches the memory cgroup of process `p.pid` (from /proc/PID/cgroup).
    watcher(const executor_type& ex, process p, const watch_options& opts = {});
    watcher(const executor_type& ex, process p, const watch_options& opts, boost::system::error_code& ec);

    /// The same four, on an execution context's executor (`watcher w(io_context, path)`).
    template <class ExecutionContext>
        requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    watcher(ExecutionContext& ctx, const std::filesystem::path& cgroup, const watch_options& opts = {})
        : watcher(executor_type(ctx.get_executor()), cgroup, opts) {}
    template <class ExecutionContext>
        requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    watcher(ExecutionContext& ctx, const std::filesystem::path& cgroup, const watch_options& opts,
            boost::system::error_code& ec)
        : watcher(executor_type(ctx.get_executor()), cgroup, opts, ec) {}
    template <class ExecutionContext>
        requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    watcher(ExecutionContext& ctx, process p, const watch_options& opts = {})
        : watcher(executor_type(ctx.get_executor()), p, opts) {}
    template <class ExecutionContext>
        requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    watcher(ExecutionContext& ctx, process p, const watch_options& opts, boost::system::error_code& ec)
        : watcher(executor_type(ctx.get_executor()), p, opts, ec) {}

    watcher(watcher&& other) noexcept;
    /// Closes this watcher first (pending operations complete with `operation_aborted`).
    watcher& operator=(watcher&& other) noexcept;
    watcher(const watcher&) = delete;
    watcher& operator=(const watcher&) = delete;
    ~watcher();

    executor_type get_executor() const noexcept { return ex_; }
    /// True while the watcher is watching: from a successful construction until `close()`,
    /// or until the watch ended (`removed` or `failed` was published; the descriptors are
    /// released then). False after a failed construction and when moved from.
    bool is_open() const noexcept;
    /// The cgroup's directory; kept after the watch ended and after `close()`. Empty after
    /// a failed construction or when moved from.
    const std::filesystem::path& cgroup() const noexcept;
    /// The cgroup's version; kept after the watch ended and after `close()`. Meaningless
    /// (v1) when `cgroup()` is empty.
    cgroup_version version() const noexcept;
    /// Why the watch failed, if it did: the error code of the `failed` event, and the file
    /// it concerns (`path()`; `what()` reads "oomwatch: PATH: message").
    std::optional<cgroup_error> failure() const;
    /// The counters as last read (the baseline until something happens).
    memory_counters counters() const;
    /// True while this watcher names the victims of kills (`oom_event::victims`): asked
    /// for (`watch_options::victims`), a cgroup of the mounted hierarchy (not
    /// `force_version`), and the kernel log readable. False once `/dev/kmsg` turned out
    /// unreadable (no `CAP_SYSLOG` under `kernel.dmesg_restrict`, no device) or failed:
    /// the watcher goes on counting exactly, every kill unattributed, and
    /// `victims_error()` says why (logged once per execution context, at `warning`).
    bool victims_available() const;
    /// Why victims are not available: the error opening or reading `/dev/kmsg`; empty
    /// when they are, or when they were not asked for.
    boost::system::error_code victims_error() const;

    /// Waits for the next event.
    ///
    /// Handler signature: `void(boost::system::error_code, oom_event)`.
    ///
    /// Executor: the handler runs on its associated executor, else the watcher's; never
    /// inside this call, even when an event is already waiting.
    ///
    /// Per-operation cancellation: terminal, partial and total. Waiting consumes
    /// nothing, so a cancelled wait loses no event: it is delivered to the next call.
    ///
    /// Outstanding work: while the wait is pending it counts as work on the handler's
    /// associated executor (its `io_context::run()` does not return for lack of work).
    ///
    /// Errors: `operation_aborted` (cancelled, `cancel()`, `close()`, or the watcher was
    /// destroyed); `error::cgroup_removed` after the `removed` event was delivered;
    /// the watch's failure code (see `failure()`) with an event of kind `failed` once the
    /// watch failed and the events before it were delivered, for this and every later call;
    /// `error::watcher_closed` on a closed watcher; `error::operation_in_progress` when
    /// another wait is pending.
    template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code, oom_event))
                  Token = boost::asio::deferred_t>
    auto async_next_event(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(boost::system::error_code, oom_event)>(
            [](auto handler, watcher* self) { self->async_next_event_impl(std::move(handler)); }, token,
            this);
    }

    /// `co_await w.next_event()`: the next event; throws `cgroup_error` (a
    /// `boost::system::system_error`) with the errors of `async_next_event`, naming the
    /// file that failed or else the cgroup. Use it with awaitable operators
    /// (`co_await (w.next_event() || timer.async_wait(use_awaitable))`).
    boost::asio::awaitable<oom_event> next_event();

    /// Calls `handler(const oom_event&)` for every event from now on (not for earlier
    /// ones), on `ex` (for example a strand); events are posted to it, never run inside
    /// the watcher. Each subscription has its own backlog: when the handler falls behind
    /// its events are coalesced per kind (counts add up), in bounded memory. The last
    /// event is `removed` or `failed` (with `oom_event::error`); after it the subscription
    /// is inactive. A subscription made after the watch ended receives that last event
    /// alone. Nothing is delivered after the watcher is closed or destroyed: like
    /// `subscription::reset()`, `close()` waits for a handler running on another thread.
    ///
    /// An exception thrown by the handler propagates out of the executor's `run()`; the
    /// watcher and other subscriptions are unaffected, and delivery to this subscription
    /// continues with the next event once `run()` is called again.
    template <class Executor, class Handler>
    subscription subscribe(const Executor& ex, Handler&& handler) {
        return subscribe_impl(executor_type(ex), wrap_handler(std::forward<Handler>(handler)));
    }
    /// As above, on the watcher's executor.
    template <class Handler>
    subscription subscribe(Handler&& handler) {
        return subscribe_impl(ex_, wrap_handler(std::forward<Handler>(handler)));
    }

    /// Completes a pending `async_next_event` with `operation_aborted`. Keeps watching.
    void cancel();
    /// Stops watching and releases the descriptors. A pending `async_next_event`
    /// completes with `operation_aborted`, later ones with `error::watcher_closed`;
    /// subscriptions receive nothing more (a handler running on another thread is waited
    /// for; see `subscription`).
    void close();

private:
    using event_handler = boost::asio::any_completion_handler<void(boost::system::error_code, oom_event)>;
    using subscriber_fn = std::function<void(const oom_event&)>;

    template <class Handler>
    static subscriber_fn wrap_handler(Handler&& h) {
        return detail::subscriber_function<oom_event>(std::forward<Handler>(h));
    }

    void open(const std::filesystem::path& dir, cgroup_version v, const watch_options& opts,
              boost::system::error_code& ec);
    void async_next_event_impl(event_handler handler);
    subscription subscribe_impl(executor_type ex, subscriber_fn fn);

    executor_type ex_;
    std::shared_ptr<detail::watcher_state> state_;
};

} // namespace oomwatch
