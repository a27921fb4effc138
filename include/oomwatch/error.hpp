// oomwatch/error.hpp: the library's error codes.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <filesystem>
#include <ostream>
#include <string>
#include <type_traits>

namespace oomwatch {

/// Errors of oomwatch's own. Failures of system calls keep their errno as
/// `error_code(errno, boost::system::system_category())` and are not mapped here.
enum class error {
    /// The path exists but is not a cgroup directory (not inside a cgroup file system, or not a directory).
    not_a_cgroup = 1,
    /// A cgroup, but its hierarchy has no memory controller (v1), or the controller is not enabled for it (v2).
    no_memory_controller,
    /// No cgroup hierarchy with a memory controller is mounted on this machine.
    no_memory_hierarchy,
    /// The watched cgroup was removed; the `removed` event has been delivered already.
    cgroup_removed,
    /// A counters file (`memory.events`, `memory.oom_control`, ...) could not be parsed.
    malformed_counters,
    /// `/proc/PID/cgroup` or `/proc/self/mountinfo` could not be parsed.
    malformed_proc_file,
    /// The watcher was closed (`close()`, or moved from).
    watcher_closed,
    /// `async_next_event` was called while another `async_next_event` was still pending.
    operation_in_progress,
    /// The root cgroup of a cgroup v2 hierarchy: the kernel keeps no `memory.events` there
    /// (watch a cgroup below it, or the whole subtree).
    root_cgroup,
    /// The cgroup still exists but its counters file is gone: the memory controller was
    /// disabled for it (removed from the parent's `cgroup.subtree_control`). Terminal.
    counters_vanished,
    /// A record of the kernel log (`/dev/kmsg`) could not be parsed.
    malformed_log_record,
    /// A pressure trigger breaks the kernel's rules: the window must be 500 ms to 10 s, the
    /// threshold more than 0 and at most the window. Checked before the kernel is asked.
    invalid_pressure_trigger,
    /// The kernel refused a PSI trigger that oomwatch's own checks accept: without
    /// `CAP_SYS_RESOURCE`, Linux 6.4+ allows only windows that are a multiple of 2 s. `cgroup_error::path()` names the pressure file.
    pressure_trigger_refused,
    /// PSI is off: booted with `psi=0` (or `CONFIG_PSI_DEFAULT_DISABLED` without
    /// `psi=1`), or not built in. Older kernels fail reads with `EOPNOTSUPP`; recent
    /// ones (6.1) have no pressure files (no `/proc/pressure`, no `memory.pressure` in an
    /// existing cgroup). `cgroup_error::path()` names the file.
    psi_disabled,
    /// The trigger does not fit the cgroup: PSI triggers need cgroup v2 (or
    /// `system_pressure`), v1 pressure levels need cgroup v1.
    pressure_trigger_mismatch,
};

/// The category of `oomwatch::error`; its name is `"oomwatch"`.
const boost::system::error_category& error_category() noexcept;

inline boost::system::error_code make_error_code(error e) noexcept {
    return {static_cast<int>(e), error_category()};
}

inline std::ostream& operator<<(std::ostream& os, error e) {
    return os << "oomwatch:" << static_cast<int>(e) << " (" << make_error_code(e).message() << ")";
}

/// The exception thrown by the throwing overloads: an `error_code` plus the path it concerns.
/// `what()` reads like "oomwatch: /sys/fs/cgroup/memory/x: No such file or directory".
class cgroup_error : public boost::system::system_error {
public:
    cgroup_error(boost::system::error_code ec, std::filesystem::path path);
    const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
};

} // namespace oomwatch

template <>
struct boost::system::is_error_code_enum<oomwatch::error> : std::true_type {};
