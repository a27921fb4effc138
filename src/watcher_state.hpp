// The shared state behind a watcher: what has happened and not yet been delivered, to
// `async_next_event` and to each subscriber. Sources (the v1 and v2 watchers) publish
// into it from whatever thread their completion handlers run on.
#pragma once

#include <oomwatch/event.hpp>

#include "detail/parse.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <array>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
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
    /// `removed` comes last) that has any.
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

/// One subscription's delivery state. At most one delivery is posted at a time; it
/// delivers one event and reposts itself while the backlog is not empty, so a slow
/// handler only grows this subscriber's counts, never anyone's queue.
class subscriber : public std::enable_shared_from_this<subscriber> {
public:
    subscriber(std::shared_ptr<const event_source_info> info, boost::asio::any_io_executor ex,
               std::function<void(const oom_event&)> fn);

    void publish(const counter_delta& d, bool removed, const memory_counters& c, clock::time_point when);
    void deactivate() noexcept;
    bool active() const noexcept;

private:
    void schedule();  // with m_ held
    void deliver_one();

    std::shared_ptr<const event_source_info> info_;
    boost::asio::any_io_executor ex_;
    std::function<void(const oom_event&)> fn_;
    mutable std::mutex m_;
    backlog pending_;
    memory_counters counters_;
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

    // --- called by the watcher ----------------------------------------------------
    void attach(std::shared_ptr<source> s);
    void async_next(event_handler h);
    void cancel_wait();
    void close();
    std::shared_ptr<subscriber> subscribe(boost::asio::any_io_executor ex, std::function<void(const oom_event&)> fn);
    memory_counters counters() const;
    bool closed() const;

private:
    enum class phase { open, removed, finished, closed };
    void publish_locked(const counter_delta& d, bool removed, clock::time_point when,
                        std::unique_lock<std::mutex>& lk);
    std::optional<oom_event> pop_event_locked();
    // Takes the waiting handler out (clearing its cancellation slot) for completion.
    std::optional<event_handler> take_waiter_locked();
    void complete(event_handler h, boost::system::error_code ec, oom_event ev);

    boost::asio::any_io_executor ex_;
    std::shared_ptr<const event_source_info> info_;
    kind_set kinds_;

    mutable std::mutex m_;
    phase phase_ = phase::open;
    backlog own_;  // for async_next_event
    memory_counters counters_;
    std::optional<event_handler> waiter_;
    std::uint64_t waiter_id_ = 0;  // which wait a cancellation slot belongs to
    std::vector<std::weak_ptr<subscriber>> subscribers_;
    std::shared_ptr<source> source_;
};

} // namespace oomwatch::detail
