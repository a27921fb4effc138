// detail/kmsg_parse.hpp (internal, not installed): pure parsers of the kernel log as
// /dev/kmsg returns it, for the OOM killer's lines (issue 10: who was killed, and why).
//
// No I/O here: each function takes the text of one record (what one read() returned) or
// of one decoded message. Every function accepts any input (empty, truncated, binary)
// without undefined behaviour: a malformed record is `error::malformed_log_record`, a
// message that is not one of the OOM lines below is `std::nullopt` (most of the log).
//
// Formats come from the kernel sources (mm/oom_kill.c, mm/memcontrol.c,
// kernel/cgroup/cpuset.c, kernel/printk/printk.c) from 4.x to 6.x and from real captures
// (test/data/kmsg/); test/unit/kmsg_parse_test.cpp names the source of each format.
#pragma once

#include "parse.hpp"  // result<T>

#include <oomwatch/error.hpp>

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace oomwatch {

// ---- Record framing (Documentation/ABI/testing/dev-kmsg) ------------------------------

/// One record of /dev/kmsg: `PRIO,SEQ,TS_USEC,FLAG[,FIELD...];MESSAGE\n` followed by
/// dictionary lines ` KEY=VALUE\n`.
struct kmsg_record {
    /// PRIO = facility << 3 | level. Facility 0 is the kernel's own: the kernel refuses
    /// it to processes that write to /dev/kmsg, so only facility 0 can be trusted.
    unsigned facility = 0;
    unsigned level = 0;
    std::uint64_t seq = 0;      // a gap between two reads means records were lost
    std::uint64_t ts_usec = 0;  // local_clock() in microseconds (not CLOCK_MONOTONIC)
    /// '-' (a whole line), 'c' (a fragment of a continuation line: pr_cont() text that
    /// could not be appended to its line, since 4.9), '+' (a later fragment, before 4.9).
    char flag = '-';
    /// The value of a `caller=` field (`T123` a task, `C1` a CPU; CONFIG_PRINTK_CALLER),
    /// else empty. Other extra fields, which the ABI allows, are skipped.
    std::string caller;
    /// The message with the kernel's `\xHH` escapes decoded (it escapes bytes below 0x20,
    /// from 0x7f, and the backslash itself, so a message never holds a raw newline).
    std::string message;
    /// The dictionary (`SUBSYSTEM=`, `DEVICE=`, ...) in record order, values decoded.
    std::vector<std::pair<std::string, std::string>> dict;

    bool operator==(const kmsg_record&) const = default;
};

/// Parses one record, as one read() of /dev/kmsg returns it. The final '\n' may be
/// missing. Errors (`error::malformed_log_record`): no `;`, a header without four fields,
/// PRIO/SEQ/TS_USEC not decimal or out of range, a flag other than '-', 'c', '+', a
/// second line that does not start with a space or holds no '=' (two records glued
/// together are an error: one read is one record). A backslash not starting a
/// `\xHH` escape, which the kernel never writes, is kept as it is.
result<kmsg_record> parse_kmsg_record(std::string_view text);

/// Splits a stream of records (a capture: reads written one after the other) into the
/// text of each record: a record is a line that does not start with a space plus the
/// dictionary lines (starting with a space) after it. Each piece keeps its final '\n'.
/// Empty lines are skipped. Never fails; parse each piece with `parse_kmsg_record`.
std::vector<std::string_view> split_kmsg_records(std::string_view stream);

/// Decodes the kernel's `\xHH` escapes (either case of hex digit); anything else is kept.
std::string decode_kmsg_escapes(std::string_view text);

// ---- The OOM killer's lines ---------------------------------------------------------------
//
// Comms (task names) may hold any byte, spaces and parentheses included, up to 15 bytes
// (TASK_COMM_LEN, maybe 63 in later kernels). Each parser splits where a forged comm
// cannot move the split: the text after a comm is the kernel's own (numbers and fixed
// words), so the comm ends at the LAST `) total-vm:` etc. Cgroup paths (any byte but
// '/' and '\n' in a name) are found by the fixed keys around them; where a path could
// hold such a key itself, see the limits at each struct.

/// The OOM kill's constraint (mm/oom_kill.c, oom_constraint_text).
enum class kmsg_constraint {
    none,           // CONSTRAINT_NONE: a machine-wide OOM
    cpuset,         // CONSTRAINT_CPUSET
    memory_policy,  // CONSTRAINT_MEMORY_POLICY
    memcg,          // CONSTRAINT_MEMCG: a memory cgroup's limit
    other,          // any other text (a future kernel); see constraint_text
};

/// `COMM invoked oom-killer: gfp_mask=0xHEX(FLAGS), [nodemask=LIST, ]order=N,
/// oom_score_adj=N`: the first line of an OOM report (dump_header, rate-limited with the
/// rest of the report). `nodemask=` was printed here from about 4.10 to 4.20 (4.19 has
/// it, 4.9 not); 5.0 moved it to the summary. `(FLAGS)` is missing before about 4.6.
/// Unknown `, key=value` fields are skipped.
struct oom_invoked_line {
    std::string comm;                     // the task whose allocation failed
    std::uint64_t gfp_mask = 0;
    std::string gfp_flags;                // "GFP_KERNEL", "" when absent
    std::optional<std::string> nodemask;  // "(null)" or a node list such as "0-1,3"
    int order = 0;                        // -1 for a sysrq OOM
    int oom_score_adj = 0;

    bool operator==(const oom_invoked_line&) const = default;
};

/// `oom-kill:constraint=C,nodemask=N[,cpuset=NAME,mems_allowed=LIST]
/// [,oom_memcg=PATH|,global_oom][,task_memcg=PATH],task=COMM,pid=N,uid=N` (5.0+,
/// dump_oom_summary: one record built with pr_cont(); rate-limited with the report).
/// The cpuset part is missing without CONFIG_CPUSETS, the memcg part without
/// CONFIG_MEMCG. The comm starts at the first `,task=` at most 15 bytes (then 63)
/// before the last `,pid=`, so a comm holding `,task=` or `,pid=` reads right. Limits: a
/// task_memcg path ending in `,task=...` that close to the pid is misread (the
/// `Killed process` line after it names the same pid and comm); a cpuset name holding
/// `,mems_allowed=` is cut there; an oom_memcg path holding `,task_memcg=` is split
/// where task_memcg lies under oom_memcg, as it always does for a memcg OOM.
struct oom_summary_line {
    kmsg_constraint constraint = kmsg_constraint::other;
    std::string constraint_text;               // as printed, e.g. "CONSTRAINT_MEMCG"
    std::string nodemask;                      // "(null)" or a node list
    std::optional<std::string> cpuset;         // the cpuset's name ("/" for the root)
    std::optional<std::string> mems_allowed;   // a node list
    bool global_oom = false;                   // `,global_oom` in place of oom_memcg
    std::optional<std::string> oom_memcg;      // the cgroup whose limit was hit
    std::optional<std::string> task_memcg;     // the victim's memory cgroup
    std::string task;                          // the victim's comm
    pid_t pid = 0;
    uid_t uid = 0;                             // printed with %d: "-1" reads as 4294967295

    bool operator==(const oom_summary_line&) const = default;
};

/// Before 5.0 (mm/memcontrol.c, mem_cgroup_print_oom_info): `Task in PATH killed as a
/// result of limit of PATH`, or `Memory limit reached of cgroup PATH` when there was no
/// victim. Limit: when a path holds ` killed as a result of limit of `, the split is the
/// one where the limit's cgroup is the task's or one of its ancestors.
struct memcg_oom_info_line {
    std::optional<std::string> task_memcg;  // empty for "Memory limit reached of cgroup"
    std::string oom_memcg;

    bool operator==(const memcg_oom_info_line&) const = default;
};

/// Before 5.1 (oom_kill_process): `REASON: Kill process N (COMM) score N or sacrifice
/// child`, the chosen task; a `Killed process` line follows with the actual victim,
/// which may be a child of it.
struct kill_choice_line {
    std::string reason;  // "Out of memory", "Memory cgroup out of memory", ...
    pid_t pid = 0;
    std::string comm;
    std::uint64_t score = 0;

    bool operator==(const kill_choice_line&) const = default;
};

/// The kill itself (__oom_kill_process; not rate-limited, unlike the report):
///   4.x-5.0: `Killed process N (COMM) total-vm:NkB, anon-rss:NkB, file-rss:NkB, shmem-rss:NkB`
///   5.1+:    `REASON: Killed process ...` (the 'Kill process' line is gone; REASON "Out of memory", "Memory cgroup out of
///            memory", "Out of memory (oom_kill_allocating_task)")
///   5.3+:    `..., shmem-rss:NkB, UID:N`
///   5.4+:    `..., UID:N pgtables:NkB oom_score_adj:N` (up to 6.x)
/// Before 4.5 there is no shmem-rss. Sizes are converted from kB to bytes. Unknown
/// `key:value` fields after the comm are skipped.
struct killed_process_line {
    std::string reason;  // empty when there is no prefix (before 5.1)
    pid_t pid = 0;
    std::string comm;
    std::uint64_t total_vm = 0;   // bytes
    std::uint64_t anon_rss = 0;   // bytes
    std::uint64_t file_rss = 0;   // bytes
    std::optional<std::uint64_t> shmem_rss;   // bytes; 4.5+
    std::optional<uid_t> uid;                 // 5.3+
    std::optional<std::uint64_t> pgtables;    // bytes; 5.4+
    std::optional<int> oom_score_adj;         // 5.4+

    bool operator==(const killed_process_line&) const = default;
};

/// `Tasks in PATH are going to be killed due to memory.oom.group set` (4.19+,
/// mem_cgroup_print_oom_group): `Killed process` lines for every member follow.
struct oom_group_line {
    std::string cgroup;

    bool operator==(const oom_group_line&) const = default;
};

/// `REASON: OOM victim N (COMM) is already exiting. Skip killing the task` (5.x: in
/// 5.10 and 6.1, not in 4.19): the victim had no mm left; nothing was killed for it.
struct victim_exiting_line {
    std::string reason;
    pid_t pid = 0;
    std::string comm;

    bool operator==(const victim_exiting_line&) const = default;
};

/// `oom_reaper: reaped process N (COMM), now anon-rss:NkB, file-rss:NkB, shmem-rss:NkB`
/// (4.6+): the victim's memory was taken back (sizes in bytes, what was left).
struct oom_reaped_line {
    pid_t pid = 0;
    std::string comm;
    std::uint64_t anon_rss = 0;
    std::uint64_t file_rss = 0;
    std::uint64_t shmem_rss = 0;

    bool operator==(const oom_reaped_line&) const = default;
};

using oom_log_line = std::variant<oom_invoked_line, oom_summary_line, memcg_oom_info_line, kill_choice_line,
                                  killed_process_line, oom_group_line, victim_exiting_line, oom_reaped_line>;

/// Recognises one decoded message (`kmsg_record::message`) as one of the OOM killer's
/// lines, or returns nullopt: for other lines, for a line cut short (a pr_cont()
/// fragment: join a 'c' record to the one before it from the same caller first), and
/// for a recognised line with a malformed field (a number that is not one, a size
/// whose bytes overflow 64 bits). A trailing '\n' is ignored. It does not look at the
/// facility: the caller must drop records whose facility is not 0 (forgeries).
std::optional<oom_log_line> parse_oom_line(std::string_view message);

/// The text of a constraint as the kernel prints it ("CONSTRAINT_MEMCG"), "" for other.
std::string_view to_string(kmsg_constraint c) noexcept;

} // namespace oomwatch
