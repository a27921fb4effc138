// oomwatch/tree_watcher.hpp: every memory cgroup under a root, found as it appears.
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
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace oomwatch {

namespace detail {
class tree;
class watcher_state;
} // namespace detail

/// How a tree watcher watches.
struct tree_options {
    /// The kinds to report. `removed` (of the root and of each descendant) and `failed`
    /// are reported whatever this says; `created` only when asked for.
    kind_set kinds = kind_set::defaults();

    /// How deep below the root to watch: 0 is the root alone, 1 its children, ...
    /// Empty: every depth.
    std::optional<unsigned> max_depth;

    /// Which descendants to watch (and report): called with each descendant's directory
    /// when it is found; false leaves it and everything below it out. Empty: all. The
    /// root is always watched. Called in the constructor, and later from the handlers of
    /// the execution context's inotify service (on any thread running the context); it
    /// must not block, nor use the tree watcher.
    std::function<bool(const std::filesystem::path&)> filter;

    /// Take the root as a cgroup of this version without looking it up in the mount
    /// table (cgroup folders outside the usual mounts, fake folders in tests).
    std::optional<cgroup_version> force_version;

    /// The safety-net timer (see `watch_options::liveness_interval`). Must be positive.
    std::chrono::milliseconds liveness_interval{std::chrono::seconds(5)};

    /// Victims of the kills in each cgroup of the tree, matched to the cgroup the kernel
    /// counted each kill in (see `watch_options::victims`; one kernel-log client for the
    /// whole tree).
    bool victims = true;
    /// See `watch_options::victim_hold`; per cgroup.
    std::chrono::milliseconds victim_hold{watch_options::default_victim_hold};

    /// Resume after a restart (see `watch_options::resume_from`, per cgroup): called in
    /// the constructor with the directory of each cgroup found at start (the root
    /// included, unless it is the v2 hierarchy's root, which has no counters); returns
    /// the counters (`memory.events.local` on v2) an earlier watch last reported for it.
    /// Their growth to the baseline read at start is reported first. Empty: nothing
    /// saved, what happened before the start is not reported (as without `resume_from`).
    /// A cgroup made while nobody watched is not in what was saved: return
    /// `memory_counters{}` for it, and everything in it is reported, as for a cgroup made
    /// while the tree runs. Not called for cgroups found later. Must not use the tree.
    std::function<std::optional<memory_counters>(const std::filesystem::path&)> resume_from;
};

/// Watches a memory cgroup and every cgroup below it (v1 or v2, detected), finding
/// descendants that exist at start and every one created later, at any depth, and
/// reports each event once, in the cgroup where the kernel counts it.
///
/// What is reported where: each cgroup's own counters. On cgroup v2 these are
/// `memory.events.local`: `oom_kill` in the victim's cgroup, `oom` and `max` in the
/// cgroup whose limit was hit (which may be an ancestor of the victim's). On v1, each
/// cgroup's OOM notifications and its `oom_kill` counter (v1 counts nothing
/// hierarchically). A descendant's removal is a `removed` event for it; the root's
/// removal is the last event, after which waits complete with `error::cgroup_removed`.
///
/// Discovery: inotify on the directories (`IN_CREATE`, `IN_DELETE`, moves), on the
/// execution context's one shared inotify instance; a directory is rescanned after its
/// watch is added, so a child created in between is not missed, and after a queue
/// overflow. A cgroup created after the watcher started is counted from zero: what
/// happened in it before it was found is reported.
///
/// Descriptors: on v2 none per cgroup (one inotify instance for everything); on v1 two
/// eventfds per cgroup (the kernel has no hierarchical v1 notification).
///
/// Delivery, cancellation, lifetimes, errors and thread safety are those of `watcher`:
/// one backlog per consumer, coalesced per cgroup and kind (bounded memory: one slot
/// per kind and cgroup), served in the order the cgroups' events came.
class tree_watcher {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Watches the tree rooted at `root` (any path form `watcher` takes).
    /// Errors: those of `watcher` for the root; `errc::invalid_argument` for a bad
    /// `liveness_interval`. A descendant that cannot be watched (permission denied, a
    /// limit reached) is left out with a warning; it does not fail the tree.
    tree_watcher(const executor_type& ex, const std::filesystem::path& root, const tree_options& opts = {});
    /// As above; on failure sets `ec` and leaves the watcher closed.
    tree_watcher(const executor_type& ex, const std::filesystem::path& root, const tree_options& opts,
                 boost::system::error_code& ec);

    template <class ExecutionContext>
        requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    tree_watcher(ExecutionContext& ctx, const std::filesystem::path& root, const tree_options& opts = {})
        : tree_watcher(executor_type(ctx.get_executor()), root, opts) {}
    template <class ExecutionContext>
        requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
    tree_watcher(ExecutionContext& ctx, const std::filesystem::path& root, const tree_options& opts,
                 boost::system::error_code& ec)
        : tree_watcher(executor_type(ctx.get_executor()), root, opts, ec) {}

    tree_watcher(tree_watcher&& other) noexcept;
    tree_watcher& operator=(tree_watcher&& other) noexcept;
    tree_watcher(const tree_watcher&) = delete;
    tree_watcher& operator=(const tree_watcher&) = delete;
    ~tree_watcher();

    executor_type get_executor() const noexcept { return ex_; }
    bool is_open() const noexcept;
    /// The root's directory (empty after a failed construction or when moved from).
    const std::filesystem::path& root() const noexcept;
    cgroup_version version() const noexcept;
    /// How many cgroups are watched now, the root included.
    std::size_t size() const;
    /// Each watched cgroup's counters as last read (the baselines until something
    /// happens), in no particular order: what a later `tree_options::resume_from` is
    /// to start from, when taken before the execution context runs (nothing reported yet).
    std::vector<std::pair<std::filesystem::path, memory_counters>> counters() const;
    /// Why the watch failed, if it did (see `watcher::failure`).
    std::optional<cgroup_error> failure() const;
    /// As `watcher::victims_available()` and `watcher::victims_error()`.
    bool victims_available() const;
    boost::system::error_code victims_error() const;

    /// Waits for the next event of any cgroup in the tree. As `watcher::async_next_event`.
    template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code, oom_event))
                  Token = boost::asio::deferred_t>
    auto async_next_event(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(boost::system::error_code, oom_event)>(
            [](auto handler, tree_watcher* self) { self->async_next_event_impl(std::move(handler)); }, token,
            this);
    }

    /// `co_await tw.next_event()`; throws `cgroup_error` as `watcher::next_event`.
    boost::asio::awaitable<oom_event> next_event();

    /// As `watcher::subscribe`: every event of the tree from now on.
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
    /// Stops watching every cgroup and releases the descriptors and watches.
    void close();

private:
    using event_handler = boost::asio::any_completion_handler<void(boost::system::error_code, oom_event)>;
    void open(const std::filesystem::path& root, const tree_options& opts, boost::system::error_code& ec);
    void async_next_event_impl(event_handler handler);
    subscription subscribe_impl(executor_type ex, std::function<void(const oom_event&)> fn);

    executor_type ex_;
    std::shared_ptr<detail::watcher_state> state_;
    std::shared_ptr<detail::tree> tree_;
};

} // namespace oomwatch
