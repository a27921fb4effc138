// oomwatch/cgroup.hpp: finding memory cgroups on this machine.
//
// Everything is discovered from /proc/self/mountinfo and /proc/PID/cgroup; no path is
// hard-coded. Works on cgroup v1, v2 and hybrid machines (memory on v1, a cgroup2
// hierarchy mounted beside it).
//
// Each lookup comes in two forms, as in Boost.Asio: one that throws `cgroup_error`
// (see error.hpp) and one that sets an `error_code&` instead (cleared on success; on
// failure the returned value is default-constructed). The errors listed are those of
// both forms.
#pragma once

#include <oomwatch/error.hpp>
#include <oomwatch/event.hpp>

#include <boost/system/error_code.hpp>

#include <sys/types.h>

#include <filesystem>
#include <string>

namespace oomwatch {

/// The mounted hierarchy that holds the memory controller.
struct memory_hierarchy {
    std::filesystem::path mount_point;  // e.g. /sys/fs/cgroup/memory
    std::string root = "/";             // the mount's root inside the hierarchy ("/" unless a sub-tree is mounted)
    cgroup_version version = cgroup_version::v1;
};

/// Reads /proc/self/mountinfo and picks the memory hierarchy: a v1 `cgroup` mount with
/// the `memory` option wins; else a `cgroup2` mount whose root's `cgroup.controllers`
/// lists `memory`. Of several candidates the one mounted at the root of its hierarchy
/// and then the first is taken.
/// Errors: `error::no_memory_hierarchy`, `error::malformed_proc_file`, errno values from
/// reading /proc/self/mountinfo. The exception names /proc/self/mountinfo.
memory_hierarchy find_memory_hierarchy();
memory_hierarchy find_memory_hierarchy(boost::system::error_code& ec);

/// A memory cgroup, located.
struct cgroup_location {
    std::filesystem::path directory;   // absolute, e.g. /sys/fs/cgroup/memory/myapp
    cgroup_version version = cgroup_version::v1;
};

/// Finds the memory cgroup that `spec` names:
/// - an absolute directory inside a mounted cgroup file system
///   (`/sys/fs/cgroup/memory/myapp`), or
/// - a path inside the memory hierarchy, as /proc/PID/cgroup shows it (`/myapp`).
/// Errors:
/// - `no_such_file_or_directory` (errno): nothing there, or a path that leaves the part
///   of the hierarchy this process can see;
/// - `error::not_a_cgroup`: it exists but is no cgroup directory (a file, or a
///   directory outside the cgroup file systems);
/// - `error::no_memory_controller`: a cgroup of a hierarchy without the memory
///   controller, or a v2 cgroup the controller is not enabled for;
/// - `error::root_cgroup`: the root of the cgroup v2 memory hierarchy, which keeps no
///   `memory.events` (watch a cgroup below it);
/// - `error::no_memory_hierarchy`, `error::malformed_proc_file`;
/// - other errno values from stat(2), such as `permission_denied` for a directory on
///   the way that may not be searched.
/// The exception names `spec` as given.
cgroup_location resolve_cgroup(const std::filesystem::path& spec);
cgroup_location resolve_cgroup(const std::filesystem::path& spec, boost::system::error_code& ec);

/// The memory cgroup of process `pid` (from /proc/PID/cgroup).
/// Errors: `no_such_process` when the process does not exist, `error::malformed_proc_file`,
/// `error::no_memory_hierarchy`, and those of `resolve_cgroup` (`error::root_cgroup` for
/// a process in the root of the cgroup v2 hierarchy). The exception names
/// /proc/PID/cgroup.
cgroup_location memory_cgroup_of(pid_t pid);
cgroup_location memory_cgroup_of(pid_t pid, boost::system::error_code& ec);

} // namespace oomwatch
