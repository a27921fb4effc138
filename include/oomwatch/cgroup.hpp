// oomwatch/cgroup.hpp: finding memory cgroups on this machine.
//
// Everything is discovered from /proc/self/mountinfo and /proc/PID/cgroup; no path is
// hard-coded. Works on cgroup v1, v2 and hybrid machines (memory on v1, a cgroup2
// hierarchy mounted beside it).
#pragma once

#include <oomwatch/event.hpp>
#include <oomwatch/parse.hpp>

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace oomwatch {

/// The mounted hierarchy that holds the memory controller.
struct memory_hierarchy {
    std::filesystem::path mount_point;  // e.g. /sys/fs/cgroup/memory
    std::string root = "/";             // the mount's root inside the hierarchy ("/" unless a sub-tree is mounted)
    cgroup_version version = cgroup_version::v1;
};

/// Picks the memory hierarchy from parsed mountinfo: a v1 `cgroup` mount with the
/// `memory` option wins; else a `cgroup2` mount whose root's `cgroup.controllers` lists
/// `memory`, as told by `v2_root_has_memory(mount_point)`. Of several candidates the one
/// mounted at the root of its hierarchy (`root == "/"`) and then the first is taken.
/// Errors: `error::no_memory_hierarchy`.
result<memory_hierarchy> select_memory_hierarchy(
    const std::vector<mount_entry>& mounts,
    const std::function<bool(const std::filesystem::path&)>& v2_root_has_memory);

/// Reads /proc/self/mountinfo and selects the memory hierarchy.
result<memory_hierarchy> find_memory_hierarchy();

/// A memory cgroup, located.
struct cgroup_location {
    std::filesystem::path directory;   // absolute, e.g. /sys/fs/cgroup/memory/myapp
    cgroup_version version = cgroup_version::v1;
};

/// Finds the memory cgroup that `spec` names:
/// - an absolute directory inside a mounted cgroup file system
///   (`/sys/fs/cgroup/memory/myapp`), or
/// - a path inside the memory hierarchy, as /proc/PID/cgroup shows it (`/myapp`).
/// Errors: `no_such_file_or_directory` (errno), `error::not_a_cgroup`,
/// `error::no_memory_controller`, `error::no_memory_hierarchy`, other errno values from
/// stat(2) such as `permission_denied`.
result<cgroup_location> resolve_cgroup(const std::filesystem::path& spec);

/// Checks that `dir` is a memory cgroup of the given version without consulting the
/// mount table (for cgroup folders outside the usual mounts, and for tests on fake
/// folders): v1 needs `memory.oom_control` and `cgroup.event_control`, v2 needs
/// `memory.events`.
result<cgroup_location> check_cgroup_directory(const std::filesystem::path& dir, cgroup_version version);

/// The memory cgroup of process `pid` (from /proc/PID/cgroup).
/// Errors: `no_such_process` when the process does not exist, `error::malformed_proc_file`,
/// `error::no_memory_hierarchy`, and those of `resolve_cgroup`.
result<cgroup_location> memory_cgroup_of(pid_t pid);

} // namespace oomwatch
