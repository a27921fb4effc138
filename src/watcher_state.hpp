// The shared state behind a watcher: what has happened and not yet been delivered, to
// `async_next_event` and to each subscriber. Sources (the v1 and v2 watchers) publish
// into it from whatever thread their completion handlers run on.
#pragma once

#include <oomwatch/event.hpp>

#include "detail/parse.hpp"
#include "kernel_log.hpp"
#include "pending_wait.hpp"
#include "subscriber.hpp"
#include "victims.hpp"

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <array>
#include <deque>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace oomwatch::detail {

using clock = std::chrono::system_clock;
using event_handler = boost::asio::any_completion_handler<void(boost::system::error_code, oom_event)>;

/// A cgroup that events come from, as consumers report it. A tree watcher has one per
/// cgroup (and one more per cgroup for the kills of its removed descendants, so those
/// never merge with its own); a watcher has one.
struct event_source_info {
    // A string, not a std::filesystem::path: a path also keeps a list of its components
    // (about 300 bytes for a cgroup path), and a tree holds one of these per cgroup.
    std::string cgroup;
    cgroup_version version = cgroup_version::v1;
    event_origin origin = event_origin::here;
};
using source_ref = std::shared_ptr<const event_source_info>;

/// What a source found in one re-read of one cgroup: per-kind counts, and maybe the
/// end of that cgroup (`removed`) or of the whole watch (`failed`, with `error`).
struct occurrence {
    source_ref src;
    counter_delta d;
    std::optional<event_kind> end;
    memory_counters counters;  // as read for the newest of them
    clock::time_point when;
    boost::system::error_code error;
    // The `oom_kill` count's victims, and how many of it have none (see oom_event).
    std::vector<victim> victims;
    std::uint64_t unattributed = 0;
};

/// Occurrences not yet delivered to one consumer: per cgroup one slot per kind, so
/// memory stays bounded (by the number of cgroups) however far the consumer falls
/// behind, and counts add up. Cgroups are served in the order their first pending
/// occurrence came; within one, kinds in `event_kind` order (`removed`, `failed` last).
class backlog {
public:
    void add(const occurrence& o);
    bool empty() const noexcept { return head_ == queue_.size(); }
    std::optional<oom_event> pop();
    void clear() noexcept {
        slots_.clear();
        queue_.clear();
        head_ = 0;
    }

private:
    struct slot {
        source_ref src;
        std::array<std::uint64_t, event_kind_count> count{};
        std::array<clock::time_point, event_kind_count> first{};
        memory_counters counters;
        boost::system::error_code error;
        std::vector<victim> victims;  // of the oom_kill count, at most max_victims_per_event
        std::uint64_t unattributed = 0;
        bool queued = false;
    };
    std::unordered_map<const event_source_info*, slot> slots_;
    // A vector read from `head_`, not a std::deque, which allocates some 600 bytes as
    // soon as it exists: every watcher and every subscriber has a backlog.
    std::vector<const event_source_info*> queue_;
    std::size_t head_ = 0;
    void pop_front() noexcept;
};

/// Why a watch ended for good: the code, and the file or descriptor it concerns.
struct failure_info {
    boost::system::error_code ec;
    std::string path;
};

class watcher_state;

/// One subscription to an OOM watcher (see `basic_subscriber`).
class subscriber final : public basic_subscriber<oom_event, backlog> {
public:
    subscriber(boost::asio::any_io_executor ex, std::function<void(const oom_event&)> fn,
               std::weak_ptr<watcher_state> owner);
    /// The watcher this subscription came from (to tidy its list on reset).
    std::shared_ptr<watcher_state> owner() const noexcept { return owner_.lock(); }
    void released() noexcept override;

private:
    bool is_last(const oom_event& ev) const override;
    std::weak_ptr<watcher_state> owner_;
};

/// What a source watching one cgroup of a tree tells the tree. Called with the source's
/// lock held: it must not block, nor call back into the source.
class node_observer {
public:
    /// Every delta found (all kinds, before the state filters them).
    virtual void on_published(const counter_delta& d) noexcept = 0;
    /// Once, when the cgroup is removed (after its `removed`).
    virtual void on_end() noexcept = 0;

protected:
    ~node_observer() = default;
};

/// How a source reports when it watches one cgroup of a tree (the defaults: a watcher's
/// own cgroup).
struct node_role {
    source_ref src;              // the cgroup as events name it; empty: the state's root
    bool from_zero = false;      // made after the tree started: report its counters from zero
    std::optional<memory_counters> resume_from;  // see watch_options::resume_from
    bool report_removed = true;  // false: the owner publishes the removal (a tree's root)
    std::weak_ptr<node_observer> observer;
    ino_t ino = 0;               // the directory's inode, when the owner has it (0: stat it)
    // v2: the owner watches the parent directory and calls `maybe_removed()` when the
    // cgroup's name goes from it, so the source adds no watch of its own there.
    bool owner_sees_removal = false;
    // A tree's descendant: a failure of this cgroup's watch alone (its counters file gone
    // while the cgroup stays, an eventfd read error) is `skipped` for it, not the end of
    // the whole watch.
    bool local_failure = false;
};

/// A running source of events (v1 eventfd reader, v2 inotify registration).
class source {
public:
    virtual ~source() = default;
    /// Stops watching and releases descriptors and watches, synchronously.
    virtual void stop() noexcept = 0;
    /// Re-reads the counters now and publishes what changed (v2; a no-op elsewhere).
    virtual void refresh() noexcept {}
    /// The cgroup's name went from its parent directory: check whether it is gone (v2
    /// with `owner_sees_removal`; a no-op elsewhere).
    virtual void maybe_removed() noexcept {}
    /// The kernel log named a victim of a kill in this cgroup: the kill is counted
    /// already, re-read now (v1, which has no notification of the kill itself; a no-op
    /// elsewhere). Called without the state's lock.
    virtual void kill_logged() noexcept {}
    /// The counters as last read (for `tree_watcher::counters()`).
    virtual memory_counters last_counters() const { return {}; }
};

class watcher_state : public kernel_log_client, public std::enable_shared_from_this<watcher_state> {
public:
    watcher_state(boost::asio::any_io_executor ex, std::filesystem::path cgroup, cgroup_version v,
                  kind_set kinds);

    const std::filesystem::path& cgroup() const noexcept { return cgroup_; }
    cgroup_version version() const noexcept { return root_->version; }
    kind_set kinds() const noexcept { return kinds_; }
    /// The watched cgroup (a tree's root).
    const source_ref& root() const noexcept { return root_; }

    // --- called by sources --------------------------------------------------------
    void set_baseline(const memory_counters& c);
    /// Occurrences found by a re-read of the watched cgroup: `d` per kind, `c` the counters just read.
    void publish(const counter_delta& d, const memory_counters& c) { publish(root_, d, c); }
    /// The same for any cgroup of a tree.
    void publish(const source_ref& src, const counter_delta& d, const memory_counters& c);
    /// What happened while nobody watched (`watch_options::resume_from`): published at
    /// once, its kills unattributed (their kernel-log records are not read).
    void publish_resumed(const source_ref& src, const counter_delta& d, const memory_counters& c);
    /// The cgroup is gone: the terminal event.
    void publish_removed() { publish_removed(root_, clock::now()); }
    /// A cgroup of a tree is gone (terminal when it is the root). `c`: its last counters.
    void publish_removed(const source_ref& src, clock::time_point when, const memory_counters& c = {});
    /// An opt-in kind of a tree: `src` appeared.
    void publish_created(const source_ref& src, const memory_counters& c);
    /// Kills found by the system watcher: `victims` named and `unattributed` more, at
    /// `src` (`c`: the machine's counters). Published as they are: nothing to match.
    void publish_kills(const source_ref& src, std::vector<victim> victims, std::uint64_t unattributed,
                       const memory_counters& c);
    /// A tree's descendant `src` cannot be watched (`ec`); the tree goes on.
    void publish_skipped(const source_ref& src, boost::system::error_code ec);
    /// The watch failed for good (`ec`, concerning `path`): every consumer learns it
    /// once the events before it are delivered. The source stops itself.
    void publish_failed(boost::system::error_code ec, std::string path);

    /// The victims of `src`'s kills are wanted (a no-op unless `enable_victims` was
    /// called): kill records of its cgroup go to its `oom_kill` counts; `poke` is told
    /// of each at once (`source::kill_logged`). Called by a source once it has read its
    /// baseline; `unwatch_victims` when it stops.
    void watch_victims(const source_ref& src, std::weak_ptr<source> poke = {});
    void unwatch_victims(const source_ref& src) noexcept;

    // --- called by the watcher ----------------------------------------------------
    /// Names the victims of kills, matched in the hierarchy mounted as `h` (before the
    /// sources start). `root_hierarchical`: the root's counters count its descendants'
    /// kills too (a v2 watcher's memory.events).
    void enable_victims(hierarchy_view h, std::chrono::milliseconds hold, bool root_hierarchical);
    /// Registers with the execution context's kernel log (after the sources started,
    /// so that no record of a kill in their baselines is read).
    void start_victims();
    bool victims_available() const;
    boost::system::error_code victims_error() const;
    /// Counts waiting for their victims (for tests).
    std::size_t held_count() const;

    // kernel_log_client
    void on_kill(const kill_record& k) override;
    void on_log_unavailable(const boost::system::error_code& ec) override;

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
    void publish_locked(occurrence o, std::unique_lock<std::mutex>& lk);
    // Into the backlogs, without waking the waiter.
    void enqueue_locked(occurrence o);
    void wake_waiter(std::unique_lock<std::mutex>& lk);
    // Victims: attaches them to `o` or holds it for them, else publishes it.
    void route_locked(occurrence o, std::unique_lock<std::mutex>& lk);
    // Publishes the held occurrences that are complete or due (`all`: every one).
    void release_held_locked(std::chrono::steady_clock::time_point now, bool all);
    void arm_hold_timer_locked();
    void on_hold_timer();
    void victims_off_locked(const boost::system::error_code& ec);
    // The watch ended or was closed: the log registration to undo (outside the lock).
    std::uint64_t end_victims_locked();
    void stop_log(std::uint64_t log_key);
    std::optional<oom_event> pop_event_locked();
    using waiter = pending_wait<event_handler>;
    using taken_waiter = waiter::taken;
    void abort_wait(std::uint64_t id);
    void complete(taken_waiter t, boost::system::error_code ec, oom_event ev);

    boost::asio::any_io_executor ex_;
    std::filesystem::path cgroup_;
    source_ref root_;
    kind_set kinds_;

    mutable std::mutex m_;
    phase phase_ = phase::open;
    backlog own_;  // for async_next_event
    memory_counters counters_;
    std::optional<failure_info> failure_;
    // The waiting handler; it keeps its executor from running out of work while it
    // waits, as Asio's own operations do.
    waiter wait_;
    subscriber_list<subscriber> subscribers_;
    std::shared_ptr<source> source_;

    // Victims (issue 10), made by enable_victims: a watch without them (not asked for,
    // a fake cgroup) pays one pointer, not the ~380 bytes of these.
    struct victims_part {
        // Null: victims off (the kernel log failed): every kill unattributed.
        std::optional<victim_matcher> matcher;
        std::chrono::milliseconds hold{0};
        bool root_hierarchical = false;
        boost::system::error_code error;
        std::uint64_t log_key = 0;  // the kernel log registration
        std::unordered_map<const event_source_info*, std::weak_ptr<source>> pokes;
        struct held_occurrence {
            occurrence o;
            std::uint64_t missing = 0;  // kills still without their record
            std::chrono::steady_clock::time_point due;
        };
        // In publishing order; an occurrence waits behind an earlier one of its cgroup.
        std::vector<held_occurrence> held;
        std::unique_ptr<boost::asio::steady_timer> timer;  // made on first need
        std::optional<std::chrono::steady_clock::time_point> timer_due;
    };
    std::unique_ptr<victims_part> v_;
    // Whether victims are on (the matcher exists); v_ is then not null.
    bool matching_locked() const noexcept { return v_ && v_->matcher; }
};

/// Victims for `st` in the machine's memory hierarchy (found from the mount table; none
/// when it cannot be read).
void enable_victims_of(watcher_state& st, std::chrono::milliseconds hold, bool root_hierarchical);

/// `async_next_event` and `next_event()` of a watcher or tree watcher over `st` (null:
/// closed by a failed construction or moved from).
void async_next_of(const boost::asio::any_io_executor& ex, const std::shared_ptr<watcher_state>& st,
                   event_handler handler);
boost::asio::awaitable<oom_event> next_event_of(const boost::asio::any_io_executor& ex,
                                                std::shared_ptr<watcher_state> st);

} // namespace oomwatch::detail
