// Shared test helpers: bounded waits on an io_context, fake cgroup folders, fd counts,
// the rule that real-kernel tests may skip only when OOMWATCH_REQUIRE_KERNEL is unset,
// and the real-kernel fixture (a scratch cgroup, OOM-killed victims).
#pragma once

#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace oomwatch::test {

using namespace std::chrono_literals;

/// OOMWATCH_REQUIRE_KERNEL=1 (set by .ci/run) turns every "cannot run here" into a failure.
inline bool kernel_required() {
    const char* e = std::getenv("OOMWATCH_REQUIRE_KERNEL");
    return e && std::string_view(e) == "1";
}

/// Why real-kernel tests cannot run here, or empty when they can.
inline std::string kernel_unavailable_reason() {
    if (::geteuid() != 0) return "not running as root";
    auto h = detail::find_memory_hierarchy();
    if (!h) return "no memory cgroup hierarchy is mounted (" + h.error().message() + ")";
    return {};
}

/// A Boost.Test precondition for real-kernel tests: skips (with the reason) when the
/// kernel facilities are missing, unless they are required, in which case the test runs
/// and fails on its first step with the reason.
struct kernel_precondition {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        auto why = kernel_unavailable_reason();
        if (why.empty() || kernel_required()) return true;
        boost::test_tools::assertion_result r(false);
        r.message() << "skipped: " << why << " (set OOMWATCH_REQUIRE_KERNEL=1 to fail instead)";
        return r;
    }
};

/// Fails the test when the kernel facilities are missing (only reached when required).
#define OOMWATCH_REQUIRE_KERNEL_READY()                                                          \
    do {                                                                                         \
        auto why_ = ::oomwatch::test::kernel_unavailable_reason();                               \
        BOOST_TEST_REQUIRE(why_.empty(), "real-kernel test cannot run: " << why_);               \
    } while (0)

/// A Boost.Test precondition for cases that need root but no cgroup (lowering an inotify
/// sysctl, say): skips, saying `what` needs root, when not root, unless required; then
/// the case runs and fails on its first step, OOMWATCH_REQUIRE_ROOT.
struct root_precondition {
    const char* what;
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        if (::geteuid() == 0 || kernel_required()) return true;
        boost::test_tools::assertion_result r(false);
        r.message() << "skipped: " << what << " needs root (set OOMWATCH_REQUIRE_KERNEL=1 to fail instead)";
        return r;
    }
};

/// Fails the test unless it runs as root (only reached when not root if required).
#define OOMWATCH_REQUIRE_ROOT(what) BOOST_TEST_REQUIRE(::geteuid() == 0u, (what) << " needs root")

/// The main() of the test programs (test/support/test_main.cpp): Boost.Test's own
/// unit_test_main with `init`, except that a run in which every test case was skipped
/// exits with `all_skipped_exit` (77, ctest's SKIP_RETURN_CODE) instead of 0, or fails
/// (201, a test failure) when OOMWATCH_REQUIRE_KERNEL=1, which allows no skipping.
inline constexpr int all_skipped_exit = 77;
int run_test_program(bool (*init)(), int argc, char* argv[]);

/// A scratch cgroup for real-kernel tests, made by `scratch_cgroup::create` (limit
/// `limit_bytes`, 0 for none); fails the test when it cannot be made.
scratch::scratch_cgroup make_scratch_cgroup(std::string_view prefix, std::uint64_t limit_bytes);

/// The memory limit of the scratch cgroups that OOM-kill, and what a victim allocates
/// (far over it).
inline constexpr std::uint64_t oom_limit = 32u << 20;
inline constexpr std::size_t oom_hog = 256u << 20;

/// Runs a child in `cg` that allocates far over the limit; returns once it has died, and
/// fails the test unless it died of SIGKILL (the OOM killer).
void oom_kill_one(const std::filesystem::path& cg, std::chrono::milliseconds timeout = 10s);

/// Fixture of the real-kernel tests: a scratch cgroup `cg` (limit `limit_bytes`, 0 for
/// none), made after OOMWATCH_REQUIRE_KERNEL_READY(); removed on destruction.
struct scratch_oom {
    explicit scratch_oom(std::string_view prefix = "oomwatch-test", std::uint64_t limit_bytes = oom_limit);

    /// A child cgroup of `cg`, with a limit of its own.
    scratch::scratch_cgroup child(const std::string& name, std::uint64_t limit_bytes = oom_limit);

    bool v1() const { return cg->version() == cgroup_version::v1; }

    std::optional<scratch::scratch_cgroup> cg;
};

/// A scratch cgroup with a 32 MiB limit, and an io_context.
struct kernel_fixture : scratch_oom {
    kernel_fixture();

    /// OOM-kills one victim in `cg`.
    void oom_kill_one() { ::oomwatch::test::oom_kill_one(cg->path()); }

    boost::asio::io_context ctx;
};

/// What the kernel counted in a cgroup since construction, read without the library, to
/// check a watcher against: kills from the cgroup's counter file (`oom_kill` in
/// memory.oom_control or memory.events, parsed here); OOMs on v1 from an eventfd of
/// its own, registered through cgroup.event_control on memory.oom_control (the kernel
/// keeps no OOM count on v1), on v2 from `oom` in memory.events. Construct it before the
/// OOMs; call take() once the victims are dead (each notification precedes its kill) and
/// before rmdir (the removal signals the eventfd too, and takes the files away).
class kernel_witness {
public:
    kernel_witness(const std::filesystem::path& cg, cgroup_version v);
    ~kernel_witness();
    kernel_witness(const kernel_witness&) = delete;
    kernel_witness& operator=(const kernel_witness&) = delete;

    void take();
    std::uint64_t ooms() const { return ooms_; }
    std::uint64_t kills() const { return kills_; }

private:
    struct file_counts {
        std::uint64_t oom = 0, oom_kill = 0;
    };
    file_counts read_file() const;

    std::filesystem::path cg_;
    cgroup_version v_;
    file_counts base_;
    int efd_ = -1;
    std::uint64_t ooms_ = 0;
    std::uint64_t kills_ = 0;
};

/// Runs `ctx` until `done()` holds or `timeout` passes; true when `done()` held.
/// Event-driven: it returns as soon as the handlers that make `done()` true have run.
inline bool run_until(boost::asio::io_context& ctx, const std::function<bool()>& done,
                      std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        if (ctx.stopped()) ctx.restart();
        ctx.run_one_for(20ms);
    }
    return true;
}

/// Runs `ctx` only on what is ready now (no waiting).
inline void run_ready(boost::asio::io_context& ctx) {
    ctx.restart();
    ctx.poll();
}

/// Open descriptors of this process.
inline std::size_t open_fd_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

/// Counters with these oom, oom_kill and oom_group_kill (the others 0).
inline memory_counters with(std::uint64_t oom, std::uint64_t kill, std::uint64_t group = 0) {
    memory_counters c;
    c.oom = oom;
    c.oom_kill = kill;
    c.oom_group_kill = group;
    return c;
}

/// The text of a memory.events file with these counters (the `other` ones left out).
std::string events_text(const memory_counters& c);

/// A fake cgroup v2 tree on tmpfs: <root>/parent/<name>/memory.events. Removed on
/// destruction, even when the test fails.
class fake_v2_tree {
public:
    fake_v2_tree();
    ~fake_v2_tree();
    fake_v2_tree(const fake_v2_tree&) = delete;
    fake_v2_tree& operator=(const fake_v2_tree&) = delete;

    const std::filesystem::path& parent() const { return parent_; }
    /// Creates a fake cgroup with all counters 0 and returns its directory.
    std::filesystem::path make_cgroup(const std::string& name, const memory_counters& c = {});
    /// Rewrites memory.events in place (O_TRUNC, like an editor would; never a rename,
    /// which would replace the inode under the watch).
    static void write_events(const std::filesystem::path& cg, const memory_counters& c,
                             const char* file = "memory.events");
    /// Deletes the files and the directory, like rmdir of a real cgroup.
    static void remove_cgroup(const std::filesystem::path& cg);

private:
    std::filesystem::path root_;
    std::filesystem::path parent_;
};

/// Options for watching a fake v2 cgroup.
inline watch_options fake_v2_options(kind_set kinds = kind_set::defaults()) {
    watch_options o;
    o.force_version = cgroup_version::v2;
    o.kinds = kinds;
    o.liveness_interval = std::chrono::hours(1);  // prove removal comes from the parent watch
    return o;
}

/// Global fixture: a Boost.Log sink on stderr for the library's records, warning and
/// up (debug and up with OOMWATCH_TEST_LOG=debug).
struct log_to_stderr {
    log_to_stderr();
};

/// Sum of `count` per kind over a list of events.
struct tally {
    std::uint64_t by_kind[event_kind_count] = {};
    std::size_t events = 0;
    void add(const oom_event& ev) {
        by_kind[static_cast<std::size_t>(ev.kind)] += ev.count;
        ++events;
    }
    std::uint64_t operator[](event_kind k) const { return by_kind[static_cast<std::size_t>(k)]; }
};

/// Collects what `async_next_event` delivers, re-arming after each event until
/// `removed`; an error ends it and is kept in `last_error`.
class event_log {
public:
    explicit event_log(watcher& w) : w_(w) {}
    void arm();

    tally t;
    std::vector<oom_event> events;
    boost::system::error_code last_error;

private:
    watcher& w_;
};

} // namespace oomwatch::test
