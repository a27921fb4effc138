// Small helpers for the benchmark harness: clocks, process metrics, statistics, fake
// cgroup v2 folders on tmpfs, sysctl files and /dev/kmsg records.
//
// Benchmarks do not link the test support library: what they need is here.
#pragma once

#include <oomwatch/event.hpp>

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace bench {

// ---- clocks -------------------------------------------------------------------------

/// CLOCK_MONOTONIC in nanoseconds.
std::int64_t now_ns() noexcept;
void sleep_ns(std::int64_t ns) noexcept;
inline void sleep_ms(std::int64_t ms) noexcept { sleep_ns(ms * 1'000'000); }

// ---- process metrics ----------------------------------------------------------------

/// Open descriptors of this process (not counting the one used to count them).
std::size_t open_fds();
/// VmRSS of this process, in KiB.
long rss_kib();
/// CPU time (user + system) of the whole process so far, in seconds.
double cpu_seconds();
/// Voluntary context switches summed over the threads of this process, except the
/// calling thread: each one is a thread going to sleep, so the count of wake-ups.
struct switch_count {
    std::uint64_t voluntary = 0;
    std::uint64_t involuntary = 0;
    std::size_t threads = 0;
};
switch_count other_threads_switches();
/// RLIMIT_NOFILE (soft).
std::size_t fd_limit();
/// Kernel inotify watches held by this process: "inotify wd:" lines in the fdinfo of
/// each of its inotify descriptors.
std::size_t inotify_watches();
/// CPU time of thread `t` so far, in seconds (0 when it is not running).
double thread_cpu_seconds(const std::thread& t);

// ---- statistics ---------------------------------------------------------------------

struct summary {
    std::size_t n = 0;
    double min = 0, p50 = 0, p99 = 0, max = 0, mean = 0;
};
/// Order statistics (nearest rank) of `v` (sorted in place).
summary summarize(std::vector<double>& v);

// ---- files --------------------------------------------------------------------------

/// Reads a whole (small) file; empty on failure.
std::optional<std::string> read_text(const std::filesystem::path& p);
/// Reads a small file into `buf` (no allocation: the floors' event path); the bytes
/// read (up to `size`), or -errno.
ssize_t read_into(const char* path, char* buf, std::size_t size) noexcept;
/// open(O_WRONLY|O_TRUNC|O_CREAT) + one write + close; errno on failure, 0 on success.
int write_text(const char* path, std::string_view text) noexcept;
std::optional<long> read_long(const std::filesystem::path& p);
/// Writes a decimal number to a file (sysctl, cgroup control file); errno or 0.
int write_long(const std::filesystem::path& p, long v) noexcept;

// ---- the contenders' own parsers (benchmarked against the library's) ---------------

/// The floor's parser: "key value\n" lines, picks the keys it needs, no allocation,
/// no validation. `any` is false when nothing usable was read (an empty file caught
/// mid-rewrite).
struct min_counters {
    std::uint64_t oom = 0, oom_kill = 0, oom_group_kill = 0, under_oom = 0;
    bool any = false;
};
min_counters parse_min_counters(const char* p, std::size_t n) noexcept;

/// The seed's readOOMKillCount scanner: reads lines, trims them, parses the first line
/// starting with "oom_kill" as "oom_kill %d"; no such line gives 0 (no error).
std::optional<long> seed_scan_oom_kill(std::istream& in);

// ---- fake cgroup v2 folders on tmpfs ------------------------------------------------

/// The text of a memory.events file, as the kernel writes it.
std::string events_text(const oomwatch::memory_counters& c);
/// Same, into a caller's buffer (no allocation); returns the length.
std::size_t events_text(const oomwatch::memory_counters& c, char* buf, std::size_t size) noexcept;

/// Writes `c` to a memory.events(.local) file (one write, no allocation); errno or 0.
int write_counters(const char* path, const oomwatch::memory_counters& c) noexcept;
/// Writes `c` to `dir`/memory.events and `dir`/memory.events.local, the files of a fake
/// cgroup v2; throws std::system_error naming the file that could not be written.
void write_fake_counters(const std::string& dir, const oomwatch::memory_counters& c);

/// The counters a fake cgroup starts with (some with kills before the watcher came).
oomwatch::memory_counters initial_counters(std::size_t i);

/// Directory name of fake or real bench cgroup number i ("c00042").
std::string cgroup_name(std::size_t i);

/// A folder the bench builds fake cgroups in: removed, with everything below it, by the
/// destructor. As the first member of a fake tree, it also removes what the tree's
/// constructor made before it threw.
class scratch_dir {
public:
    explicit scratch_dir(std::filesystem::path p) : path_(std::move(p)) {}
    ~scratch_dir();
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

/// `<base>/parent/c00000 ...`: fake cgroup v2 folders with memory.events and
/// memory.events.local. Removed by the destructor.
class fake_tree {
public:
    fake_tree(std::filesystem::path base, std::size_t n);
    fake_tree(const fake_tree&) = delete;
    fake_tree& operator=(const fake_tree&) = delete;

    const std::filesystem::path& parent() const { return parent_; }
    std::size_t size() const { return n_; }
    std::filesystem::path dir(std::size_t i) const { return parent_ / cgroup_name(i); }
    std::vector<std::filesystem::path> dirs() const;

private:
    scratch_dir base_;
    std::filesystem::path parent_;
    std::size_t n_;
};

/// Where fake trees go: /dev/shm (tmpfs) when it exists.
std::filesystem::path tmpfs_base();

// ---- /dev/kmsg ----------------------------------------------------------------------

/// One record of /dev/kmsg: "pri,seq,usec,flags[,...];message".
struct kmsg_record {
    std::uint64_t seq = 0;
    std::int64_t usec = 0;  // the kernel's timestamp (local_clock), microseconds since boot
    std::string_view message;
};
/// Bench-only parser (the library has no kmsg parser yet).
std::optional<kmsg_record> parse_kmsg_record(std::string_view rec) noexcept;
/// The pid of "Memory cgroup out of memory: Killed process N (...)".
std::optional<pid_t> parse_memcg_kill(std::string_view message) noexcept;

/// Reads /dev/kmsg from its end on.
class kmsg_reader {
public:
    kmsg_reader();
    ~kmsg_reader();
    kmsg_reader(const kmsg_reader&) = delete;
    kmsg_reader& operator=(const kmsg_reader&) = delete;
    bool ok() const { return fd_ >= 0; }
    const std::string& error() const { return error_; }

    /// The kmsg timestamp (microseconds) of the memcg OOM kill of `pid`, waiting up to
    /// `timeout_ms` for it. Skips other records. `reported`, if given: whether the
    /// kernel's OOM report (`oom-kill:constraint=...,pid=N,...`, which names the victim's
    /// cgroup) came before it; the kernel rate-limits that report machine-wide.
    std::optional<std::int64_t> find_kill(pid_t pid, int timeout_ms, bool* reported = nullptr);

    /// Offset of the kmsg clock against CLOCK_MONOTONIC, in nanoseconds (kmsg minus
    /// monotonic), measured by writing marker records to /dev/kmsg; `uncertainty_ns`
    /// gets the width of the tightest window. Empty when /dev/kmsg is not writable.
    std::optional<std::int64_t> calibrate(std::int64_t& uncertainty_ns);

private:
    bool read_record(std::string& out, int timeout_ms);
    int fd_ = -1;
    std::string error_;
};

// ---- misc ---------------------------------------------------------------------------

std::string errno_text(int e);
/// "6.1.0-18-amd64", the CPU model, nproc.
std::string kernel_release();
std::string cpu_model();
unsigned cpu_count();

} // namespace bench
