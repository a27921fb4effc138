// Matching the kernel log's kill records to the kills the counters show (issue 10).
// Internal, not installed. Pure: no I/O, no clock of its own (times are passed in), so
// the unit tests drive it with recorded sequences.
//
// The counters are the truth for how many kills there were; a kill record only names
// one. A record is matched to the watched cgroup the kernel counted its kill in, by the
// victim's cgroup (`task_memcg`, relative to the hierarchy's root, mapped to a
// directory through the mount point), and to the counts by order (the log's order is
// the kernel's order of the kills of one cgroup).
#pragma once

#include <oomwatch/event.hpp>

#include "detail/oom_report.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace oomwatch::detail {

/// Where the memory hierarchy is mounted: `mount_point` shows the hierarchy's `root`.
struct hierarchy_view {
    std::string mount_point;  // "/sys/fs/cgroup/memory"
    std::string root = "/";   // the mount's root inside the hierarchy

    /// A directory under the mount point as the kernel prints it (`/a/b`; `/` for the
    /// mount point itself when it is the hierarchy's root); empty if `dir` is not under it.
    std::string hierarchy_path(std::string_view dir) const;
    /// The inverse: the directory of a path the kernel printed; empty when it is not
    /// inside the mounted part of the hierarchy (or is empty).
    std::filesystem::path directory(std::string_view hpath) const;
};

/// Whether hierarchy path `sub` is `root` or below it.
bool hierarchy_path_under(std::string_view sub, std::string_view root) noexcept;

/// The public form of a kill record.
victim to_victim(const kill_record& k, const hierarchy_view& h);

/// Matches kill records to the cgroups of one watcher (its cgroup, or every cgroup of a
/// tree), each a target with a key. Not thread-safe: the watcher's state calls it under
/// its lock.
class victim_matcher {
public:
    using time_point = std::chrono::steady_clock::time_point;
    using key = const void*;

    /// Records kept for a target before its count rises: at most this many, ...
    static constexpr std::size_t max_kept = 64;
    /// ... and for at most this long (the counter rises before the record is logged; its
    /// v2 notification may be delayed by 10 ms by the kernel, then read by a busy
    /// context). A record older than this belongs to no count (a kill counted in the
    /// baseline, logged after it was read): dropped, so it is never given to a later kill.
    static constexpr std::chrono::milliseconds keep{1000};

    explicit victim_matcher(hierarchy_view h) : h_(std::move(h)) {}
    const hierarchy_view& hierarchy() const noexcept { return h_; }

    /// Watches `dir` (a directory under the mount point) as target `k`: with
    /// `hierarchical`, kills in its descendants count there too (a v2 `memory.events`).
    /// False when `dir` is not in the mounted hierarchy (nothing can match it).
    bool add_target(key k, std::string_view dir, bool hierarchical);
    void remove_target(key k);
    bool has_target(key k) const { return targets_.contains(k); }
    std::size_t target_count() const noexcept { return targets_.size(); }

    /// A kill record read from the log: the target it belongs to (null: none of ours),
    /// which keeps its victim until its count comes (`take`).
    key on_record(const kill_record& r, time_point now);

    /// `n` kills were counted for `k`: up to `n` of its kept victims, oldest first.
    std::vector<victim> take(key k, std::uint64_t n, time_point now);
    /// Appends up to `n` kept victims of `k` to `out`; returns how many.
    std::uint64_t take_into(key k, std::uint64_t n, time_point now, std::vector<victim>& out);

    /// `n` kills of `k` were delivered without their records: a record of `k` logged no
    /// later than `logged_by_usec` (kernel timestamp) that comes within `keep` from now is
    /// taken as one of them, late, and dropped (rather than given to a later kill, whose
    /// record is logged after it). The kernel's timestamp is its local_clock, taken here
    /// as CLOCK_MONOTONIC (they stay within milliseconds; the caller leaves a margin).
    void give_up(key k, std::uint64_t n, time_point now, std::uint64_t logged_by_usec);

    /// Victims kept for `k` (for tests).
    std::size_t kept(key k) const;

private:
    struct kept_victim {
        victim v;
        time_point at;
    };
    struct target {
        std::string hpath;
        bool hierarchical = false;
        // A vector, not a std::deque (which allocates some 600 bytes as soon as it
        // exists): a tree has a target per cgroup, and nearly all keep nothing.
        std::vector<kept_victim> kept;
        std::uint64_t owed = 0;  // given up on; their records may still come
        time_point owed_until{};
        std::uint64_t owed_logged_by = 0;  // ... logged no later than this
    };
    void expire(target& t, time_point now);
    key find(const kill_record& r) const;
    // Keeps `r` for `k`, in the log's order.
    void keep_for(key k, const kill_record& r, time_point now);

    // Records that name no cgroup (the OOM report rate limited, the victim gone before
    // /proc could be read). The first victim of a memory.oom.group kill is one: it is
    // logged again as a member of the group right after, and that record names the
    // group's cgroup, which is then its place too.
    struct unplaced_record {
        kill_record r;
        time_point at;
    };
    static constexpr std::size_t max_unplaced = 16;
    std::vector<unplaced_record> unplaced_;

    hierarchy_view h_;
    std::unordered_map<key, target> targets_;
    std::unordered_map<std::string, key> exact_;  // hierarchy path -> target, the non-hierarchical ones
    std::vector<key> hierarchical_;
};

} // namespace oomwatch::detail
