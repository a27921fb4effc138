// oomwatch/event.hpp: what a watcher reports.
#pragma once

#include <boost/system/error_code.hpp>

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace oomwatch {

/// Which cgroup interface a watched cgroup lives in.
enum class cgroup_version { v1 = 1, v2 = 2 };

/// What happened. The same kinds are reported on cgroup v1 and v2.
enum class event_kind : std::uint8_t {
    /// The cgroup hit its memory limit and the OOM killer was invoked (v2 `oom`; v1: an OOM notification).
    oom,
    /// A process was killed by the OOM killer (v2 `oom_kill`; v1 `oom_kill` in `memory.oom_control`).
    oom_kill,
    /// The whole cgroup was killed because `memory.oom.group` is set (v2 only).
    oom_group_kill,
    /// Usage went over `memory.high` and was throttled (v2 only; opt in).
    high,
    /// Usage hit `memory.max` (v2 only; opt in).
    max,
    /// Reclaimed below `memory.low` under pressure (v2 only; opt in).
    low,
    /// The cgroup was removed. Always the last event of a watcher; `count` is 1.
    removed,
    /// The watch failed for good (`oom_event::error` says why); nothing more will be
    /// reported. Always the last event, like `removed`; `count` is 1. Subscribers receive
    /// it as an event; `async_next_event` completes with `error` set to the same code.
    failed,
    /// `tree_watcher` only, opt in: a cgroup appeared in the tree (found at start or
    /// created later); `count` is 1. Comes before any other event of that cgroup.
    created,
    /// `tree_watcher` only, always reported: a descendant was found but cannot be watched
    /// (`oom_event::error` says why: a descriptor or inotify limit reached, permission
    /// denied), or its new subdirectories cannot be found, or its watch ended on its own
    /// (`error::counters_vanished`: its memory controller was disabled from above; an
    /// eventfd read failed). The tree goes on with what it has; nothing more is reported
    /// for that cgroup's counters.
    skipped,
};

inline constexpr std::size_t event_kind_count = 10;

/// Where the occurrences of an event happened.
enum class event_origin : std::uint8_t {
    /// In `oom_event::cgroup` itself (for `watch_options::scope::hierarchical` watchers:
    /// in it or below it, as its `memory.events` counts).
    here,
    /// `tree_watcher` only: in descendants of `oom_event::cgroup` that were removed
    /// before the tree could read their own counters; found in this cgroup's
    /// hierarchical counters, this being the nearest ancestor still there.
    removed_descendant,
};

/// "oom", "oom_kill", "oom_group_kill", "high", "max", "low", "removed", "failed", "created",
/// "skipped".
std::string_view to_string(event_kind k) noexcept;
/// The inverse of `to_string`; empty for an unknown name.
std::optional<event_kind> event_kind_from_string(std::string_view s) noexcept;

inline std::ostream& operator<<(std::ostream& os, event_kind k) { return os << to_string(k); }
inline std::ostream& operator<<(std::ostream& os, cgroup_version v) { return os << 'v' << static_cast<int>(v); }

/// A small set of event kinds.
class kind_set {
public:
    constexpr kind_set() noexcept = default;
    constexpr kind_set(std::initializer_list<event_kind> kinds) noexcept {
        for (auto k : kinds) bits_ |= bit(k);
    }
    constexpr bool contains(event_kind k) const noexcept { return (bits_ & bit(k)) != 0; }
    constexpr kind_set& insert(event_kind k) noexcept { bits_ |= bit(k); return *this; }
    constexpr kind_set& erase(event_kind k) noexcept { bits_ &= static_cast<std::uint16_t>(~bit(k)); return *this; }
    constexpr bool operator==(const kind_set&) const noexcept = default;

    /// `oom`, `oom_kill`, `oom_group_kill` (and `removed`, `failed` and `skipped`, which
    /// are always reported).
    static constexpr kind_set defaults() noexcept {
        return {event_kind::oom, event_kind::oom_kill, event_kind::oom_group_kill, event_kind::removed,
                event_kind::failed, event_kind::skipped};
    }
    /// Every kind, `created` included.
    static constexpr kind_set all() noexcept {
        return {event_kind::oom,     event_kind::oom_kill, event_kind::oom_group_kill,
                event_kind::high,    event_kind::max,      event_kind::low,
                event_kind::removed, event_kind::failed,   event_kind::created,
                event_kind::skipped};
    }

private:
    static constexpr std::uint16_t bit(event_kind k) noexcept {
        return static_cast<std::uint16_t>(1u << static_cast<unsigned>(k));
    }
    std::uint16_t bits_ = 0;
};

/// The cgroup's counters as the watcher last read them.
///
/// v2: the values of `memory.events` (or `memory.events.local`), cumulative since the
/// cgroup was created; keys this version does not know are kept in `other`.
/// v1: `oom_kill` is the kernel's counter from `memory.oom_control`; the kernel keeps no
/// OOM counter on v1, so `oom` counts the notifications seen since the watcher started;
/// `under_oom` mirrors `memory.oom_control`. The v2-only fields stay 0.
struct memory_counters {
    std::uint64_t low = 0;
    std::uint64_t high = 0;
    std::uint64_t max = 0;
    std::uint64_t oom = 0;
    std::uint64_t oom_kill = 0;
    std::uint64_t oom_group_kill = 0;
    bool under_oom = false;                                    // v1 only
    std::vector<std::pair<std::string, std::uint64_t>> other;  // v2 keys unknown to this version

    /// The counter that a kind's events are computed from (0 for `removed`).
    std::uint64_t get(event_kind k) const noexcept;
    friend bool operator==(const memory_counters&, const memory_counters&) = default;
};

/// Why the OOM killer ran, as the kernel printed it (`constraint=` of its report).
enum class oom_constraint : std::uint8_t {
    /// A memory cgroup hit its limit (`victim::oom_cgroup` names it).
    memcg,
    /// The whole machine ran out of memory.
    global,
    /// The allocating task's cpuset ran out of memory.
    cpuset,
    /// The allocating task's memory policy (mbind, set_mempolicy) ran out of memory.
    mempolicy,
};

/// "memcg", "global", "cpuset", "mempolicy".
std::string_view to_string(oom_constraint c) noexcept;
inline std::ostream& operator<<(std::ostream& os, oom_constraint c) { return os << to_string(c); }

/// One process the OOM killer killed, as the kernel log named it.
///
/// The counters stay the source of truth for how many kills there were; the kernel log
/// (`/dev/kmsg`, the kernel's own records only: forged lines are ignored) says who.
/// Sizes are as the kernel printed them at the kill, in bytes.
struct victim {
    pid_t pid = 0;
    /// The task's command name (at most 15 bytes on most kernels; any byte but NUL).
    std::string comm;
    /// The task's real uid; `static_cast<uid_t>(-1)` when the kernel did not print it
    /// (before 5.3, with the OOM report rate limited).
    uid_t uid = static_cast<uid_t>(-1);
    oom_constraint constraint = oom_constraint::memcg;
    /// The constraint was not printed (the kernel's OOM report, which says it, is rate
    /// limited machine-wide to 10 every 5 s) and was inferred from the kill line:
    /// `Memory cgroup out of memory` is `memcg`, `Out of memory` is taken as `global`
    /// (it may have been `cpuset` or `mempolicy`).
    bool constraint_guessed = false;
    /// The victim's memory cgroup (a directory, like `oom_event::cgroup`). Empty when
    /// unknown: a member of a `memory.oom.group` kill whose cgroup could not be read, or
    /// a cgroup outside the mounted part of the hierarchy.
    std::filesystem::path task_cgroup;
    /// The cgroup whose limit was hit (`constraint == memcg`): the victim's own or an
    /// ancestor's. Empty for other constraints, and when the OOM report was rate limited.
    std::filesystem::path oom_cgroup;
    std::uint64_t total_vm = 0;
    std::uint64_t anon_rss = 0;
    std::uint64_t file_rss = 0;
    std::uint64_t shmem_rss = 0;  // 0 before 4.5
    int oom_score_adj = 0;        // 0 before 5.4, which does not print it
    /// Killed because its cgroup, or an ancestor, has `memory.oom.group` set: every task
    /// of `group_cgroup` was killed. The kernel kills and counts the first victim of such
    /// an OOM twice (once as the victim, once as a member), and so it is listed twice.
    bool group_kill = false;
    /// `group_kill`: the cgroup whose tasks were all killed (the one with `memory.oom.group`).
    std::filesystem::path group_cgroup;
    /// The kernel log record of the kill: its sequence number (`/dev/kmsg`; victims of
    /// one event are in this order) and its timestamp (the kernel's `local_clock`, close
    /// to `CLOCK_MONOTONIC`).
    std::uint64_t kernel_seq = 0;
    std::chrono::microseconds kernel_time{0};

    friend bool operator==(const victim&, const victim&) = default;
};

/// One event: `count` occurrences of `kind` in `cgroup`.
///
/// Events are coalesced, never dropped: when occurrences of a kind pile up before they
/// are delivered (a burst the kernel merged, or a slow consumer), one event carries
/// them all and `count` says how many. Summing `count` per kind always gives the
/// truth.
struct oom_event {
    /// The cgroup's directory, e.g. `/sys/fs/cgroup/memory/myapp`.
    std::filesystem::path cgroup;
    event_kind kind = event_kind::oom;
    /// How many occurrences this event stands for (>= 1).
    std::uint64_t count = 1;
    /// The counters as read for the newest occurrence in this event.
    memory_counters counters;
    /// When the watcher observed the earliest occurrence in this event (wall clock).
    std::chrono::system_clock::time_point time;
    cgroup_version version = cgroup_version::v1;
    /// Where the occurrences happened (`tree_watcher`: the cgroup itself, or its
    /// descendants that were removed before they could be read).
    event_origin origin = event_origin::here;
    /// `failed` and `skipped` events only: why the watch failed (an errno value in `system_category()`,
    /// or an `oomwatch::error` such as `counters_vanished`). Empty otherwise.
    boost::system::error_code error;
    /// `oom_kill` events: the processes killed, in the kernel log's order, as many as the
    /// log named; `victims.size() + unattributed == count` always. A kill is left
    /// unattributed when its record was not to be had: victims turned off
    /// (`watch_options::victims`), a watcher without the kernel log (`force_version`, no
    /// permission: see `watcher::victims_available()`), the record lost (overwritten) or
    /// not read within `watch_options::victim_hold`, a `removed_descendant` event, or
    /// more than `max_victims_per_event` kills piled up unread. Never a guess: a victim
    /// is listed only when the kernel's record names a process of this cgroup (for a v2
    /// watcher with hierarchical counters, of it or a descendant).
    ///
    /// `memory.oom.group` kills: the members' victims are in the `oom_kill` events (the
    /// kernel counts `oom_kill` once per task killed, `oom_group_kill` once per group
    /// kill), each with `victim::group_kill` set. `oom_group_kill` events carry no victims
    /// and `unattributed` is 0 there; other kinds too.
    std::vector<victim> victims;
    std::uint64_t unattributed = 0;
};

/// At most this many victims are kept for one undelivered event (a consumer far behind):
/// beyond it, kills are counted in `oom_event::unattributed`.
inline constexpr std::size_t max_victims_per_event = 256;

} // namespace oomwatch
