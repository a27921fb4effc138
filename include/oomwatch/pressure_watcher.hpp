// oomwatch/pressure_watcher.hpp: memory-pressure watchers (PSI triggers on cgroup v2 and
// system-wide, pressure levels on cgroup v1).
#pragma once

#include <oomwatch/error.hpp>
#include <oomwatch/pressure_event.hpp>
#include <oomwatch/subscription.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

namespace oomwatch {

namespace detail {
class pressure_state;
} // namespace detail

/// Watches memory pressure: PSI triggers on a cgroup v2 (`memory.pressure`) or on the
/// whole machine (`/proc/pressure/memory`, `system_pressure{}`), or pressure levels on a
/// cgroup v1 (`memory.pressure_level`, through `cgroup.event_control`).
///
/// Each trigger is its own open file in the kernel (one trigger per file). A wake-up
/// of a PSI trigger re-reads the averages of the pressure file (`pressure_event::averages`);
/// v1 levels have none. Events are kept for `async_next_event` from construction on, and
/// for each subscription from its `subscribe()` on, separately, coalesced per trigger
/// (`count`), in bounded memory (one slot per trigger).
///
/// The watch of a cgroup ends with `removed`: v2 sees it as the kernel's POLLERR on the
/// trigger when the cgroup goes (or, as a safety net, a liveness check every 2 s), v1 as
/// the eventfd signal the kernel sends when it tears the registration down. `failed`
/// ends it otherwise (`failure()` names the file). Both are the last event; the
/// descriptors are released then.
///
/// Object lifetimes: must not outlive its execution context; may be destroyed with a
/// wait pending (it completes with `operation_aborted`).
///
/// Thread safety: Distinct objects: Safe. Shared objects: Unsafe.
class pressure_watcher {
public:
    using executor_type = boost::asio::any_io_executor;

    /// PSI triggers on the cgroup v2 `cgroup` (an absolute directory or a path in the
    /// memory hierarchy): one per trigger, `pressure_event::trigger` their index. PSI
    /// needs no memory controller: any v2 cgroup but the root will do (a hybrid
    /// machine's `/sys/fs/cgroup/unified/...` too).
    ///
    /// Errors: throws `cgroup_error` naming the path: `error::invalid_pressure_trigger`
    /// (none given, or one breaks the kernel's rules), `error::pressure_trigger_refused`,
    /// `error::psi_disabled` (PSI off: the pressure file is missing or unsupported),
    /// `error::pressure_trigger_mismatch` (a v1 cgroup), the errors
    /// of `watcher`'s constructor, errno values.
    pressure_watcher(const executor_type& ex, const std::filesystem::path& cgroup, pressure_trigger t = {});
    pressure_watcher(const executor_type& ex, const std::filesystem::path& cgroup,
                     std::vector<pressure_trigger> triggers);
    /// The whole machine: `/proc/pressure/memory`.
    pressure_watcher(const executor_type& ex, system_pressure, pressure_trigger t = {});
    pressure_watcher(const executor_type& ex, system_pressure, std::vector<pressure_trigger> triggers);
    /// Pressure levels on the cgroup v1 `cgroup` (`error::pressure_trigger_mismatch` on v2).
    pressure_watcher(const executor_type& ex, const std::filesystem::path& cgroup, pressure_level_trigger t);
    pressure_watcher(const executor_type& ex, const std::filesystem::path& cgroup,
                     std::vector<pressure_level_trigger> triggers);

    pressure_watcher(pressure_watcher&& other) noexcept;
    /// Closes this watcher first.
    pressure_watcher& operator=(pressure_watcher&& other) noexcept;
    pressure_watcher(const pressure_watcher&) = delete;
    pressure_watcher& operator=(const pressure_watcher&) = delete;
    ~pressure_watcher();

    executor_type get_executor() const noexcept { return ex_; }
    /// True from construction until `close()` or the end of the watch (`removed`, `failed`).
    bool is_open() const noexcept;
    /// The cgroup's directory, or `/proc/pressure/memory`; empty when moved from.
    const std::filesystem::path& cgroup() const noexcept;
    /// Why the watch failed, if it did.
    std::optional<cgroup_error> failure() const;

    /// Waits for the next event.
    ///
    /// Handler signature: `void(boost::system::error_code, pressure_event)`.
    ///
    /// Executor: the handler runs on its associated executor, else the watcher's; never
    /// inside this call.
    ///
    /// Per-operation cancellation: terminal, partial and total; a cancelled wait loses
    /// no event. While pending, the wait counts as work on the handler's executor.
    ///
    /// Errors: `operation_aborted` (cancelled, `cancel()`, `close()`, destroyed);
    /// `error::cgroup_removed` after the `removed` event; the failure's code with a
    /// `failed` event, for this and every later call; `error::watcher_closed`;
    /// `error::operation_in_progress` when another wait is pending.
    template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code, pressure_event))
                  Token = boost::asio::deferred_t>
    auto async_next_event(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(boost::system::error_code, pressure_event)>(
            [](auto handler, pressure_watcher* self) { self->async_next_event_impl(std::move(handler)); }, token,
            this);
    }

    /// `co_await pw.next_event()`: throws `cgroup_error` with the errors above.
    boost::asio::awaitable<pressure_event> next_event();

    /// Calls `handler(const pressure_event&)` for every event from now on, on `ex` (for
    /// example a strand); posted to it, never run inside the watcher. As
    /// `watcher::subscribe`: each subscription has its own backlog, coalesced per trigger
    /// when the handler falls behind; the last event is `removed` or `failed`, after
    /// which the subscription is inactive; one made after the watch ended receives that
    /// last event alone; nothing is delivered after `close()` or destruction, which wait
    /// for a handler running on another thread (see `subscription`).
    template <class Executor, class Handler>
    subscription subscribe(const Executor& ex, Handler&& handler) {
        return subscribe_impl(executor_type(ex), detail::subscriber_function<pressure_event>(std::forward<Handler>(handler)));
    }
    /// As above, on the watcher's executor.
    template <class Handler>
    subscription subscribe(Handler&& handler) {
        return subscribe_impl(ex_, detail::subscriber_function<pressure_event>(std::forward<Handler>(handler)));
    }

    /// Completes a pending wait with `operation_aborted`. Keeps watching.
    void cancel();
    /// Stops watching and releases the descriptors; a pending wait completes with
    /// `operation_aborted`, later ones with `error::watcher_closed`; subscriptions
    /// receive nothing more.
    void close();

private:
    using event_handler = boost::asio::any_completion_handler<void(boost::system::error_code, pressure_event)>;
    void open_psi(const std::filesystem::path& cgroup, bool system, std::vector<pressure_trigger> triggers);
    void open_levels(const std::filesystem::path& cgroup, std::vector<pressure_level_trigger> triggers);
    void async_next_event_impl(event_handler handler);
    subscription subscribe_impl(executor_type ex, std::function<void(const pressure_event&)> fn);

    executor_type ex_;
    std::shared_ptr<detail::pressure_state> state_;
};

/// Checks `t` against the kernel's rules (see `pressure_trigger`): empty, or
/// `error::invalid_pressure_trigger`.
boost::system::error_code validate(const pressure_trigger& t) noexcept;

} // namespace oomwatch
