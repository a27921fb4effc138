// detail/parse.hpp (internal, not installed): pure parsers of the kernel files oomwatch
// reads, and the counter arithmetic the watchers share.
//
// No I/O here: each function takes a file's text and returns a value or an error.
// Every parser accepts any input (empty, truncated, binary) without undefined
// behaviour and reports malformed input as `error::malformed_counters` or
// `error::malformed_proc_file`. The library, the tests, the fuzz targets and the
// benchmarks include it from src/ ("detail/parse.hpp").
#pragma once

#include <oomwatch/error.hpp>
#include <oomwatch/event.hpp>
#include <oomwatch/pressure_event.hpp>

#include <boost/system/result.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace oomwatch {

/// A value or an error_code: the return type of the internal functions.
template <class T>
using result = boost::system::result<T>;

/// `memory.events` / `memory.events.local` (cgroup v2): flat keyed, one `key value` a
/// line. Known keys fill the named fields, unknown keys are kept in `other` in file
/// order. Missing keys read as 0 (older kernels lack `oom_group_kill`). Errors: empty
/// input, a line without exactly one key and one value, a value that is not a decimal
/// `uint64_t`, a key given twice.
result<memory_counters> parse_memory_events(std::string_view text);

/// `/proc/vmstat` (flat keyed like `memory.events`): the machine's `oom_kill` counter
/// (every OOM kill, 4.13+), or none when the kernel has no such line. Errors as for
/// `parse_memory_events`.
result<std::optional<std::uint64_t>> parse_vmstat_oom_kill(std::string_view text);

/// `memory.oom_control` (cgroup v1).
struct oom_control {
    bool oom_kill_disable = false;
    bool under_oom = false;
    /// Absent on kernels older than 4.13.
    std::optional<std::uint64_t> oom_kill;
};
/// Same line format as `memory.events`; unknown keys are ignored. Errors as for
/// `parse_memory_events`, and when `oom_kill_disable` or `under_oom` is missing.
result<oom_control> parse_oom_control(std::string_view text);

/// One line of `/proc/PID/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
struct proc_cgroup_entry {
    unsigned hierarchy_id = 0;
    std::vector<std::string> controllers;  // empty for the v2 line "0::/path"
    std::string path;                      // relative to the hierarchy's root, starts with '/'
};
/// Errors: a line without two ':' separators, a non-numeric ID, a path not starting
/// with '/'. An empty file is an error. Paths may contain ':' (only the first two split).
result<std::vector<proc_cgroup_entry>> parse_proc_cgroup(std::string_view text);

/// The memory cgroup's path in `/proc/PID/cgroup` entries: the v1 line whose controller
/// list holds "memory" if there is one, else (when `v2_has_memory`) the v2 line "0::".
/// Empty when neither is there.
std::optional<std::string> memory_cgroup_path(const std::vector<proc_cgroup_entry>& entries,
                                              bool v2_has_memory);

/// One line of `/proc/PID/mountinfo` (see proc(5)). Octal escapes (`\040` etc.) in
/// `root` and `mount_point` are decoded.
struct mount_entry {
    unsigned mount_id = 0;
    unsigned parent_id = 0;
    std::string root;          // root of the mount within its file system
    std::string mount_point;   // where it is mounted
    std::string fs_type;       // e.g. "cgroup", "cgroup2"
    std::string source;
    std::string super_options; // e.g. "rw,memory"
};
/// Errors: fewer than the required fields, no " - " separator, non-numeric IDs.
result<std::vector<mount_entry>> parse_mountinfo(std::string_view text);

/// A PSI pressure file (`memory.pressure`, `/proc/pressure/memory`): lines
/// `some avg10=A avg60=A avg300=A total=N` and optionally `full ...` the same. The
/// averages are non-negative decimals (digits and at most one '.'), `total` a decimal
/// `uint64_t`; the four keys each once per line, in any order; other `key=value` fields
/// and lines of other names are ignored (later kernels may add some). Errors
/// (`error::malformed_counters`): no `some` line, a line given twice, a key missing or
/// repeated, a malformed field or value.
result<pressure_averages> parse_pressure(std::string_view text);

/// True when a comma-separated option list (`super_options`) holds `opt` exactly.
bool has_option(std::string_view options, std::string_view opt) noexcept;

/// Per-kind growth from `before` to `after`, for the kinds in `kinds`.
///
/// A counter that went down (which a real cgroup never does; it means the file now
/// belongs to another cgroup, or a fake file was rewritten) gives 0 for that kind and
/// sets `went_backwards`: the caller takes `after` as the new baseline and reports
/// nothing for it, since nothing can be known about it.
struct counter_delta {
    std::array<std::uint64_t, event_kind_count> by_kind{};
    bool went_backwards = false;
    std::uint64_t get(event_kind k) const noexcept { return by_kind[static_cast<std::size_t>(k)]; }
    bool empty() const noexcept;
};
counter_delta compute_delta(const memory_counters& before, const memory_counters& after,
                            kind_set kinds) noexcept;

/// What happened between a watch that reported up to `saved` and the baseline `now` of
/// the one resuming it (`watch_options::resume_from`), for every kind: the growth; all
/// of `now` when a counter went down (the cgroup was made again under its name).
counter_delta resume_delta(const memory_counters& saved, const memory_counters& now) noexcept;

} // namespace oomwatch
