// oomwatch/event.hpp: what a watcher reports.
#pragma once

#include <boost/system/error_code.hpp>

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
};

} // namespace oomwatch
