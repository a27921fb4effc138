// detail/oom_report.hpp (internal, not installed): assembles the OOM killer's lines of
// the kernel log into kill records (issue 10). Pure: no I/O, no clock; the kernel-log
// service (kernel_log.hpp) feeds it what it reads.
//
// What the kernel prints for one OOM kill, in this order (mm/oom_kill.c, 4.19 to 6.x;
// oom_kill_process, one OOM at a time under oom_lock):
//   1. dump_header, only when the `oom_rs` rate limit allows it (DEFAULT_RATELIMIT_INTERVAL
//      5 s, DEFAULT_RATELIMIT_BURST 10): `COMM invoked oom-killer: ...`, the stack, the
//      memory state (before 5.0 with `Task in X killed as a result of limit of Y`), the
//      task list, and from 5.0 the one-line summary `oom-kill:...,task=COMM,pid=N,uid=N`;
//   2. before 5.1 `REASON: Kill process N (COMM) score N or sacrifice child`;
//   3. __oom_kill_process: `[REASON: ]Killed process N (COMM) total-vm:...` (never rate
//      limited; printed right after the counters vmstat oom_kill and memcg oom_kill rise),
//      or `REASON: OOM victim N (COMM) is already exiting. Skip killing the task` (the
//      victim lost its mm meanwhile: nothing killed, no counter rises);
//   4. with memory.oom.group: `Tasks in X are going to be killed due to memory.oom.group
//      set`, then step 3 for every task of X (oom_kill_memcg_member), the first victim
//      included again (the kernel kills and counts it a second time).
// A victim that is exiting already (task_will_free_mem) is not reported at all.
// The oom_reaper's `reaped process` line comes later, from another thread.
#pragma once

#include "kmsg_parse.hpp"

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace oomwatch::detail {

/// One process killed by the OOM killer, as the kernel log tells it: one per
/// `Killed process` line of the kernel (facility 0), each of which the kernel counted.
struct kill_record {
    std::uint64_t seq = 0;      // of the `Killed process` record
    std::uint64_t ts_usec = 0;  // its kernel timestamp (local_clock, microseconds)
    pid_t pid = 0;
    std::string comm;           // escapes decoded
    std::optional<uid_t> uid;   // the Killed line's UID (5.3+), else the summary's
    /// The OOM's constraint: from the summary line when one matched; else from the
    /// reason ("Memory cgroup out of memory" is memcg; "Out of memory" is taken as none,
    /// though it may have been cpuset or memory_policy: `constraint_guessed`).
    kmsg_constraint constraint = kmsg_constraint::other;
    bool constraint_guessed = false;
    std::string reason;         // as printed ("Memory cgroup out of memory"), may be empty
    /// Cgroup paths as the kernel prints them: relative to the hierarchy's root (not to a
    /// cgroup namespace). Empty when unknown.
    std::string oom_memcg;      // whose limit was hit (empty for a global OOM)
    std::string task_memcg;     // the victim's
    /// task_memcg was read from /proc/PID/cgroup by the service (the summary line was
    /// missing), not printed by the kernel in the report.
    bool task_memcg_from_proc = false;
    /// A summary (`oom-kill:`) or `Task in` line of this kill was found.
    bool report_matched = false;
    std::uint64_t total_vm = 0;  // bytes
    std::uint64_t anon_rss = 0;
    std::uint64_t file_rss = 0;
    std::optional<std::uint64_t> shmem_rss;  // 4.5+
    std::optional<int> oom_score_adj;        // 5.4+
    /// Killed as a member of a memory.oom.group kill (after the `Tasks in X` line);
    /// task_memcg is then left empty (some cgroup at or under `group_memcg`).
    bool group = false;
    std::string group_memcg;

    bool operator==(const kill_record&) const = default;
};

/// Turns the kernel log, record by record, into kill records. Not thread-safe (the
/// service calls it under its lock).
class oom_report_assembler {
public:
    /// Members of a memory.oom.group kill are printed one right after the other; a
    /// `Killed process` line later than this after the previous line of the group is
    /// taken as a new OOM's (whose report was rate limited), not as a member.
    static constexpr std::uint64_t group_window_usec = 1'000'000;
    /// Summaries waiting for their `Killed process` line (normally at most one).
    static constexpr std::size_t max_pending_summaries = 8;

    /// Feeds one record as /dev/kmsg returned it. Records of another facility than the
    /// kernel's (0) are dropped: anyone with write access to /dev/kmsg can write text
    /// that looks like an OOM line, but the kernel gives such records facility >= 1.
    /// Continuation fragments are joined (see the .cpp). Returns the kills it completed.
    std::vector<kill_record> feed_record(const kmsg_record& r);

    /// Feeds one parsed OOM line of a kernel record; returns the kill it completes.
    std::optional<kill_record> feed(std::uint64_t seq, std::uint64_t ts_usec, const oom_log_line& line);

    /// Records were lost here (EPIPE, a sequence gap): whatever context was gathered
    /// (a group in progress, a `Task in` line) may not belong to what comes next.
    void note_lost();

    /// Records dropped for their facility.
    std::uint64_t foreign_records() const noexcept { return foreign_; }

private:
    // A kernel message, whole.
    std::vector<kill_record> feed_message(std::uint64_t seq, std::uint64_t ts_usec, const std::string& message);
    void clear_report();

    std::deque<oom_summary_line> summaries_;
    std::optional<memcg_oom_info_line> task_in_;  // before 5.0: for the next Killed line
    std::string choice_reason_;                   // before 5.1: the `Kill process` line's
    // The OOM being reported (from its summary), for the members of a group kill.
    std::optional<oom_summary_line> current_;
    std::optional<std::string> group_;
    std::uint64_t group_last_ts_ = 0;

    // A continuation fragment ('c', then '+' before 4.9) waiting for the rest.
    struct fragment {
        std::uint64_t seq = 0, ts_usec = 0;
        std::string caller, text;
    };
    std::optional<fragment> fragment_;
    std::uint64_t foreign_ = 0;
};

} // namespace oomwatch::detail
