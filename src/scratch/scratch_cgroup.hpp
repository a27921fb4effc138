// Scratch cgroups and OOM victims, for the demo and the real-kernel tests.
//
// Not part of the installed library: it creates and removes cgroups and forks
// processes, which a watcher never does.
#pragma once

#include <oomwatch/event.hpp>

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace oomwatch::scratch {

/// A memory cgroup created for a test or the demo, removed by the destructor (after
/// killing any process still in it), even when a test fails.
///
/// Where: under the memory hierarchy found by `find_memory_hierarchy()`:
/// - v1: as a child of this process's own memory cgroup;
/// - v2: as a child of the hierarchy root when this process is in the root, else as a
///   sibling of this process's cgroup (a v2 cgroup with processes cannot have children
///   with the memory controller); the parent must have `+memory` in
///   `cgroup.subtree_control` (it is written if missing).
/// - `OOMWATCH_SCRATCH_PARENT=/abs/dir` overrides the parent directory.
class scratch_cgroup {
public:
    /// Creates `<parent>/<prefix>-<pid>-<n>` with `limit_bytes` as its memory limit
    /// (v1 `memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` where present;
    /// v2 `memory.max` and `memory.swap.max=0`). `limit_bytes == 0` sets no limit.
    static result<scratch_cgroup> create(std::string_view prefix, std::uint64_t limit_bytes);

    scratch_cgroup(scratch_cgroup&& other) noexcept;
    scratch_cgroup& operator=(scratch_cgroup&& other) noexcept;
    ~scratch_cgroup();

    const std::filesystem::path& path() const noexcept { return path_; }
    cgroup_version version() const noexcept { return version_; }

    /// A child cgroup of this one (v2: enables `+memory` in this one's subtree_control).
    result<scratch_cgroup> create_child(std::string_view name, std::uint64_t limit_bytes) const;

    /// Sets the memory limit (see `create`).
    boost::system::error_code set_limit(std::uint64_t limit_bytes) const;
    /// v2 only: `memory.oom.group`.
    boost::system::error_code set_oom_group(bool on) const;
    /// Writes `value` to the control file `name` in this cgroup.
    boost::system::error_code write_file(std::string_view name, std::string_view value) const;

    /// Kills every process in it, waits (bounded, 5 s) for them to leave, and rmdirs it.
    /// Idempotent. Errors name nothing: the caller has `path()`.
    boost::system::error_code remove();

    /// Leaves the cgroup in place (the destructor will not remove it).
    std::filesystem::path release() noexcept;

private:
    scratch_cgroup(std::filesystem::path p, cgroup_version v) noexcept : path_(std::move(p)), version_(v) {}
    std::filesystem::path path_;
    cgroup_version version_ = cgroup_version::v1;
};

/// A child process that moved itself into a cgroup and allocates memory until it is
/// killed or done. The destructor kills it (SIGKILL) and reaps it, so no test leaves a
/// process behind.
class victim {
public:
    /// Forks a child that writes itself to `<cgroup>/cgroup.procs`, then allocates
    /// `bytes` with mmap and touches every page, then exits 0. Its exit status tells
    /// what happened: killed by SIGKILL means the OOM killer got it. Returns once the
    /// child is in the cgroup (it reports that over a pipe), never before; fails with the
    /// child's errno if it could not join the cgroup.
    static result<victim> spawn(const std::filesystem::path& cgroup, std::size_t bytes);

    victim(victim&& other) noexcept;
    victim& operator=(victim&& other) noexcept;
    ~victim();

    pid_t pid() const noexcept { return pid_; }
    /// A pidfd (pidfd_open) that becomes readable when the child exits: wrap it in a
    /// `posix::stream_descriptor` and `async_wait(wait_read)` (not owned by the caller).
    int pidfd() const noexcept { return pidfd_; }

    /// Waits (blocking, at most `timeout`) for the child to exit and reaps it.
    /// Returns the raw wait status, or `timed_out`; once reaped, `no_child_process`.
    result<int> wait(std::chrono::milliseconds timeout);
    /// True when a wait status is "killed by SIGKILL".
    static bool killed_by_sigkill(int status) noexcept;

private:
    victim(pid_t pid, int pidfd) noexcept : pid_(pid), pidfd_(pidfd) {}
    void kill_and_reap() noexcept;
    pid_t pid_ = -1;
    int pidfd_ = -1;
    bool reaped_ = false;
};

/// A fresh random-ish name suffix for scratch objects: "<pid>-<counter>".
std::string unique_suffix();

/// Removes the scratch cgroups ("oomwatch-...-<pid>-<counter>" in the default parent)
/// whose creating process is gone, with whatever is left in them: what a test program
/// that died (a sanitizer's abort, SIGKILL) could not remove. Returns how many went;
/// nothing when there is no memory hierarchy.
std::size_t remove_leftovers();

} // namespace oomwatch::scratch
