// The shared state behind a watcher: what has happened and not yet been delivered, to
// `async_next_event` and to each subscriber. Sources (the v1 and v2 watchers) publish
// into it from whatever thread their completion handlers run on.
#pragma once

#include <oomwatch/event.hpp>

#include "detail/parse.hpp"

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <array>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace oomwatch::detail {

using clock = std::chrono::system_clock;
using event_handler = boost::asio::any_completion_handler<void(boost::system::error_code, oom_event)>;

/// Occurrences not yet delivered to one consumer: one slot per kind, so memory stays
/// bounded however far the consumer falls behind, and counts add up.
class backlog {
public:
    void add(event_kind k, std::uint64_t n, clock::time_point when);
    bool empty() const noexcept;
    /// Takes the pending occurrences of the first kind (in `event_kind` order, so
    /// `removed` and `failed` come last) that has any.
    std::optional<std::pair<event_kind, std::uint64_t>> pop(clock::time_point& first_seen);
    void clear() noexcept { *this = backlog{}; }

private:
    std::array<std::uint64_t, event_kind_count> count_{};
    std::array<clock::time_point, event_kind_count> first_{};
};

/// What every consumer needs to turn a backlog entry into an `oom_event`.
struct event_source_info {
    std::filesystem::path cgroup;
    cgroup_version version = cgroup_version::v1;
};

/// Why a watch ended for good: the code, and the file or descriptor it concerns.
struct failure_info {
    boost::system::error_code ec;
    std::string path;
};

class watcher_state;

/// One subscription's delivery state. At most one delivery is posted at a time; it
/// delivers one event and reposts itself while the backlog is not empty, so a slow
/// handler only grows this subscriber's counts, never anyone's queue.
class subscriber : public std::enable_shared_from_this<subscriber> {
public:
    subscriber(std::shared_ptr<const event_source_info> info, boost::asio::any_io_executor ex,
               std::function<void(const oom_event&)> fn, std::weak_ptr<watcher_state> owner);

    /// `terminal`: `removed` or `failed` (with `error`), after the counts in `d`.
    void publish(const counter_delta& d, std::optional<event_kind> terminal, const memory_counters& c,
                 clock::time_point when, const boost::system::error_code& error = {});
    /// Stops delivery. With `wait`, also waits for an invocation of the handler running
    /// on another thread to return (never for one running on this thread: a handler may
    /// reset its own subscription).
    void deactivate(bool wait) noexcept;
    bool active() const noexcept;
    /// The watcher this subscription came from (to tidy its list on reset).
    std::shared_ptr<watcher_state> owner() const noexcept { return owner_.lock(); }

private:
    void schedule();  // with m_ held
    void deliver_one();

    std::shared_ptr<const event_source_info> info_;
    boost::asio::any_io_executor ex_;
    std::function<void(const oom_event&)> fn_;
    std::weak_ptr<watcher_state> owner_;
    // Held for the whole of a handler invocation, so that deactivation from another
    // thread can wait for it: after reset() returns, the handler neither runs nor starts.
    std::mutex call_m_;
    mutable std::mutex m_;
    std::thread::id caller_;  // the thread running the handler, if any
    backlog pending_;
    memory_counters counters_;
    boost::system::error_code error_;  // for the `failed` event
    bool scheduled_ = false;
    bool active_ = true;
};

/// A running source of events (v1 eventfd reader, v2 inotify registration).
class source {
public:
    virtual ~source() = default;
    /// Stops watching and releases descriptors and watches, synchronously.
    virtual void stop() noexcept = 0;
};

class watcher_state : public std::enable_shared_from_this<watcher_state> {
public:
    watcher_state(boost::asio::any_io_executor ex, std::filesystem::path cgroup, cgroup_version v,
                  kind_set kinds);

    const std::filesystem::path& cgroup() const noexcept { return info_->cgroup; }
    cgroup_version version() const noexcept { return info_->version; }
    kind_set kinds() const noexcept { return kinds_; }

    // --- called by sources --------------------------------------------------------
    void set_baseline(const memory_counters& c);
    /// Occurrences found by a re-read: `d` per kind, `c` the counters just read.
    void publish(const counter_delta& d, const memory_counters& c);
    /// The cgroup is gone: the terminal event.
    void publish_removed();
    /// The watch failed for good (`ec`, concerning `path`): every consumer learns it
    /// once the events before it are delivered. The source stops itself.
    void publish_failed(boost::system::error_code ec, std::string path);

    // --- called by the watcher ----------------------------------------------------
    void attach(std::shared_ptr<source> s);
    void async_next(event_handler h);
    void cancel_wait();
    void close();
    std::shared_ptr<subscriber> subscribe(boost::asio::any_io_executor ex, std::function<void(const oom_event&)> fn);
    /// A subscription was reset: forget dead subscribers once they are many.
    void subscriber_gone();
    memory_counters counters() const;
    bool closed() const;
    bool open() const;
    std::optional<failure_info> failure() const;
    std::size_t subscriber_slots() const;  // for tests: live and not yet pruned

private:
    enum class phase { open, removed, failed, finished, closed };
    void publish_locked(const counter_delta& d, std::optional<event_kind> terminal, clock::time_point when,
                        std::unique_lock<std::mutex>& lk);
    std::optional<oom_event> pop_event_locked();
    void prune_locked();
    // The waiting handler, and the work it keeps on its executor.
    struct taken_waiter {
        event_handler handler;
        std::optional<boost::asio::any_completion_executor> work;
    };
    // Takes the waiting handler out for completion.
    std::optional<taken_waiter> take_waiter_locked();
    void complete(taken_waiter t, boost::system::error_code ec, oom_event ev);

    boost::asio::any_io_executor ex_;
    std::shared_ptr<const event_source_info> info_;
    kind_set kinds_;

    mutable std::mutex m_;
    phase phase_ = phase::open;
    backlog own_;  // for async_next_event
    memory_counters counters_;
    std::optional<failure_info> failure_;
    std::optional<event_handler> waiter_;
    // Keeps the waiting handler's executor from running out of work while it waits, as
    // Asio's own operations do.
    std::optional<boost::asio::any_completion_executor> waiter_work_;
    std::uint64_t waiter_id_ = 0;  // which wait a cancellation slot belongs to
    std::vector<std::weak_ptr<subscriber>> subscribers_;
    std::size_t resets_since_prune_ = 0;
    std::shared_ptr<source> source_;
};

} // namespace oomwatch::detail
