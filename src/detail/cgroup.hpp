// detail/cgroup.hpp (internal, not installed): the seams under oomwatch/cgroup.hpp.
//
// The selection of the memory hierarchy from a parsed mount table, the lookup against
// a given mount table, the check of a directory without the mount table, and the
// result-returning forms of the public lookups, which the library (the watcher's
// constructors), the scratch cgroups and the tests build on.
#pragma once

#include <oomwatch/cgroup.hpp>
#include <oomwatch/event.hpp>

#include "parse.hpp"

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <vector>

namespace oomwatch {

/// Whether a `cgroup2` hierarchy mounted at `mount_point` offers the memory controller.
using v2_memory_probe = std::function<bool(const std::filesystem::path& mount_point)>;

/// Picks the memory hierarchy from parsed mountinfo: a v1 `cgroup` mount with the
/// `memory` option wins; else a `cgroup2` mount whose root's `cgroup.controllers` lists
/// `memory`, as told by `v2_root_has_memory(mount_point)`. Of several candidates the one
/// mounted at the root of its hierarchy (`root == "/"`) and then the first is taken.
/// Errors: `error::no_memory_hierarchy`.
result<memory_hierarchy> select_memory_hierarchy(const std::vector<mount_entry>& mounts,
                                                 const v2_memory_probe& v2_root_has_memory);

/// The probe `find_memory_hierarchy` uses: reads `<mount_point>/cgroup.controllers`.
bool v2_root_has_memory(const std::filesystem::path& mount_point);

/// Checks that `dir` is a memory cgroup of the given version without consulting the
/// mount table (for cgroup folders outside the usual mounts, `watch_options::force_version`,
/// and tests on fake folders): v1 needs `memory.oom_control` and `cgroup.event_control`,
/// v2 needs `memory.events`. A v2 directory without `memory.events` is
/// `error::no_memory_controller` if it holds `cgroup.controllers`, and
/// `error::root_cgroup` if that lists `memory` and there is no `cgroup.type` (which the
/// kernel gives every cgroup but the root); else `error::not_a_cgroup`.
result<cgroup_location> check_cgroup_directory(const std::filesystem::path& dir, cgroup_version version);

/// `resolve_cgroup` against a given mount table and v2 probe (what the public one does
/// with /proc/self/mountinfo and `v2_root_has_memory`).
result<cgroup_location> resolve_cgroup_in(const std::vector<mount_entry>& mounts, const std::filesystem::path& spec,
                                          const v2_memory_probe& v2_root_has_memory);

// The public lookups, returning a result. In namespace detail: they share their names
// and parameters with the public forms.
namespace detail {

/// As `oomwatch::find_memory_hierarchy()`.
result<memory_hierarchy> find_memory_hierarchy();

/// As `oomwatch::resolve_cgroup(spec)`.
result<cgroup_location> resolve_cgroup(const std::filesystem::path& spec);

/// As `oomwatch::memory_cgroup_of(pid)`.
result<cgroup_location> memory_cgroup_of(pid_t pid);

} // namespace detail

} // namespace oomwatch
