// Pressure watchers (issue 12) on a real kernel: v1 pressure levels on the host, PSI
// triggers on a cgroup v2 in the VM, the system-wide trigger on both. The load is a child
// in a small cgroup re-reading a file larger than the limit (page cache reclaim and
// refaults: memory stalls without an OOM); it is killed at the end of each test.
#include "fault_support.hpp"
#include "pressure_load.hpp"
#include "test_support.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <grp.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <vector>
#include <optional>
#include <string>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

constexpr std::uint64_t load_limit = 32u << 20;
// Waits (bounded) for the next event of `pw` as users do, `co_await pw.next_event()`;
// nothing and the error when it throws.
std::optional<pressure_event> next(asio::io_context& ctx, pressure_watcher& pw, error_code& ec,
                                   std::chrono::milliseconds timeout = 20s) {
    std::optional<pressure_event> got;
    bool done = false;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
            try {
                got = co_await pw.next_event();
                ec = {};
            } catch (const boost::system::system_error& e) {
                ec = e.code();
            }
            done = true;
        },
        asio::detached);
    if (!run_until(ctx, [&] { return done; }, timeout)) {
        pw.cancel();
        run_until(ctx, [&] { return done; }, 2s);
        ec = asio::error::timed_out;
        return std::nullopt;
    }
    return got;
}

bool in_vm() { return std::getenv("OOMWATCH_IN_VM") != nullptr; }

// A trigger every kernel accepts, for root without CAP_SYS_RESOURCE too (a container).
pressure_trigger quick_trigger() { return {.kind = stall::some, .threshold = std::chrono::milliseconds(10), .window = std::chrono::seconds(2)}; }

// The watch of `s` most tests use: the level `v1` on cgroup v1, the quick trigger on v2.
pressure_watcher cgroup_watch(asio::io_context& ctx, const scratch_oom& s, pressure_level_trigger v1 = {}) {
    if (s.v1()) return pressure_watcher(ctx.get_executor(), s.cg->path(), v1);
    return pressure_watcher(ctx.get_executor(), s.cg->path(), quick_trigger());
}

// PSI off for this boot: the v1 VM boots with psi=0 (test/vm/run-vm-tests.sh).
bool psi_off() {
    std::ifstream in("/proc/cmdline");
    for (std::string w; in >> w;)
        if (w == "psi=0") return true;
    return false;
}

// A hybrid machine's cgroup2 mount without controllers beside the v1 ones (this host;
// the v1 VM mounts one too), or nothing.
std::optional<fs::path> unified_mount() {
    const fs::path p = "/sys/fs/cgroup/unified";
    struct statfs st {};
    if (::statfs(p.c_str(), &st) != 0 || st.f_type != CGROUP2_SUPER_MAGIC) return std::nullopt;
    return p;
}

// A cgroup made in the unified mount, removed (with a bounded retry while its last task
// is being reaped) on destruction.
class unified_cgroup {
public:
    explicit unified_cgroup(const fs::path& mount)
        : dir_(mount / ("oomwatch-psi-u-" + std::to_string(::getpid()))) {
        std::error_code ec;
        fs::create_directory(dir_, ec);
        BOOST_TEST_REQUIRE(!ec, "cannot create " << dir_ << ": " << ec.message());
    }
    ~unified_cgroup() {
        for (int i = 0; i < 100 && ::rmdir(dir_.c_str()) != 0 && errno == EBUSY; ++i) ::usleep(10'000);
    }
    unified_cgroup(const unified_cgroup&) = delete;
    unified_cgroup& operator=(const unified_cgroup&) = delete;
    const fs::path& path() const { return dir_; }

private:
    fs::path dir_;
};

// The error of a pressure_watcher made by `make`, or a failed test when there is none.
template <class Make>
std::optional<cgroup_error> construction_error(Make make) {
    try {
        make();
    } catch (const cgroup_error& e) {
        return e;
    }
    return std::nullopt;
}

// v1 pressure levels only: cgroup v2 has none.
bool no_levels_here(const scratch_oom& s) {
    if (s.v1()) return false;
    BOOST_TEST_MESSAGE("cgroup v2 has no pressure levels");
    return true;
}

// The VM's root is an initramfs: no page cache to reclaim, so no load for v1 there.
bool no_v1_load_here(const scratch_oom& s) {
    if (!s.v1() || !in_vm()) return false;
    BOOST_TEST_MESSAGE("v1 in the VM: no reclaimable page cache, pressure levels are tested on the host");
    return true;
}

} // namespace

BOOST_AUTO_TEST_SUITE(pressure, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_AUTO_TEST_CASE(levels_and_system_trigger_fire_under_reclaim) {
    scratch_oom s("oomwatch-psi", load_limit);
    if (no_v1_load_here(s)) return;
    asio::io_context ctx;
    std::optional<pressure_watcher> levels;
    if (s.v1()) {
        levels.emplace(ctx.get_executor(), s.cg->path(),
                       std::vector<pressure_level_trigger>{{pressure_level::medium, pressure_mode::local},
                                                           {pressure_level::low, pressure_mode::standard}});
    } else {
        levels.emplace(ctx.get_executor(), s.cg->path(), quick_trigger());
    }
    pressure_watcher sys(ctx.get_executor(), system_pressure{}, quick_trigger());
    reclaim_load load(s.cg->path(), s.v1());

    error_code ec;
    auto ev = next(ctx, *levels, ec);
    BOOST_TEST_REQUIRE(ev.has_value(), "no pressure event for " << s.cg->path() << ": " << ec.message());
    BOOST_TEST(!ec);
    BOOST_TEST(ev->kind == pressure_kind::pressure);
    BOOST_TEST(ev->count >= 1u);
    BOOST_TEST(ev->cgroup == s.cg->path());
    if (s.v1()) {
        BOOST_TEST(ev->level.has_value());
        BOOST_TEST(!ev->averages.has_value());
    } else {
        BOOST_TEST_REQUIRE(ev->averages.has_value());
        BOOST_TEST(ev->averages->some.total > 0u);
    }

    auto sev = next(ctx, sys, ec);
    BOOST_TEST_REQUIRE(sev.has_value(), "no system pressure event: " << ec.message());
    BOOST_TEST(sev->cgroup == fs::path("/proc/pressure/memory"));
    BOOST_TEST_REQUIRE(sev->averages.has_value());
    BOOST_TEST(sev->averages->some.total > 0u);
    BOOST_TEST(sev->averages->full.has_value());
}

// Near an OOM (anonymous memory past the limit, no swap: reclaim finds nothing), the
// kernel's scan priority drops to the bottom, which vmpressure reports as critical, and
// to every lower level. Anonymous memory needs no page cache: this runs in the v1 VM too.
BOOST_AUTO_TEST_CASE(critical_level_fires_near_oom) {
    scratch_oom s("oomwatch-psi-crit", load_limit);
    if (no_levels_here(s)) return;
    asio::io_context ctx;
    pressure_watcher pw(ctx.get_executor(), s.cg->path(),
                        std::vector<pressure_level_trigger>{{pressure_level::critical, pressure_mode::standard},
                                                            {pressure_level::low, pressure_mode::local}});
    std::vector<pressure_event> got;
    auto sub = pw.subscribe([&](const pressure_event& ev) { got.push_back(ev); });
    oom_kill_one(s.cg->path());
    auto saw = [&](pressure_level l) {
        return std::any_of(got.begin(), got.end(), [&](const pressure_event& e) { return e.level == l; });
    };
    // vmpressure signals from a work item: possibly after the kill.
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return saw(pressure_level::critical) && saw(pressure_level::low); }, 10s),
                       "no critical (or no low) level for " << s.cg->path() << " after its OOM kill: " << got.size()
                                                            << " events");
    for (const auto& e : got) {
        BOOST_TEST((e.kind == pressure_kind::pressure));
        BOOST_TEST(e.count >= 1u);
        BOOST_TEST((e.level == (e.trigger == 0 ? pressure_level::critical : pressure_level::low)));
    }
}

// No wake-up is lost or doubled: an eventfd of our own, registered on the same cgroup
// and level, is signalled by the kernel exactly as often as the watcher's, and the
// watcher's events add up to its count.
BOOST_AUTO_TEST_CASE(v1_level_counts_match_a_raw_eventfd) {
    scratch_oom s("oomwatch-psi-raw", load_limit);
    if (no_levels_here(s)) return;
    asio::io_context ctx;
    pressure_watcher pw(ctx.get_executor(), s.cg->path(), pressure_level_trigger{pressure_level::low, pressure_mode::standard});
    const owned_fd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    const owned_fd level(::open((s.cg->path() / "memory.pressure_level").c_str(), O_RDONLY | O_CLOEXEC));
    BOOST_TEST_REQUIRE((efd.get() >= 0 && level.get() >= 0));
    {
        std::ofstream control(s.cg->path() / "cgroup.event_control");
        control << efd.get() << ' ' << level.get() << " low" << std::flush;
        BOOST_TEST_REQUIRE(control.good(), "cannot register an eventfd on " << s.cg->path());
    }
    std::uint64_t delivered = 0, raw = 0;
    auto sub = pw.subscribe([&](const pressure_event& ev) { delivered += ev.count; });
    oom_kill_one(s.cg->path());  // reclaim with nothing to reclaim: many wake-ups
    // vmpressure signals from a work item: both counts may still grow for a moment.
    const bool equal = run_until(ctx, [&] {
        std::uint64_t n = 0;
        if (::read(efd.get(), &n, sizeof n) == sizeof n) raw += n;
        return raw > 0 && delivered == raw;
    }, 10s);
    BOOST_TEST(equal, "the watcher delivered " << delivered << " wake-ups, the kernel signalled " << raw);
    BOOST_TEST_MESSAGE("wake-ups during one OOM: " << raw);
}

// PSI off (psi=0: the v1 VM): error::psi_disabled naming the file, for the machine and
// for a cgroup that exists, whose memory.pressure the kernel leaves out. With PSI on,
// the same watches work.
BOOST_AUTO_TEST_CASE(psi_off_is_psi_disabled) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    asio::io_context ctx;
    const auto unified = unified_mount();
    std::optional<unified_cgroup> cg;
    if (unified) cg.emplace(*unified);
    auto sys = construction_error([&] { pressure_watcher pw(ctx.get_executor(), system_pressure{}); });
    std::optional<cgroup_error> grp;
    if (cg) grp = construction_error([&] { pressure_watcher pw(ctx.get_executor(), cg->path()); });
    if (!psi_off()) {
        BOOST_TEST_MESSAGE("PSI is on here (the v1 VM boots with psi=0)");
        BOOST_TEST(!sys.has_value(), (sys ? sys->what() : ""));
        BOOST_TEST(!grp.has_value(), (grp ? grp->what() : ""));
        return;
    }
    BOOST_TEST_REQUIRE(sys.has_value());
    BOOST_TEST(sys->code() == error_code(error::psi_disabled), sys->what());
    BOOST_TEST(sys->path() == fs::path("/proc/pressure/memory"));
    BOOST_TEST(std::string(sys->what()).find("psi=0") != std::string::npos, sys->what());
    if (cg) {
        BOOST_TEST_REQUIRE(grp.has_value());
        BOOST_TEST(grp->code() == error_code(error::psi_disabled), grp->what());
        BOOST_TEST(grp->path() == cg->path() / "memory.pressure");
    }
}

// PSI needs no memory controller: on a hybrid machine (this host) a trigger on the
// controller-less unified cgroup of the loaded child fires.
BOOST_AUTO_TEST_CASE(psi_trigger_on_a_cgroup_without_memory_controller) {
    scratch_oom s("oomwatch-psi-hy", load_limit);
    const auto unified = unified_mount();
    if (!unified || psi_off() || !s.v1() || in_vm()) {
        BOOST_TEST_MESSAGE("needs a hybrid machine with PSI on and page cache to reclaim (the host)");
        return;
    }
    unified_cgroup cg(*unified);
    asio::io_context ctx;
    pressure_watcher pw(ctx.get_executor(), cg.path(), quick_trigger());
    BOOST_TEST(pw.cgroup() == cg.path());
    reclaim_load load(s.cg->path(), true);
    {
        std::ofstream procs(cg.path() / "cgroup.procs");
        procs << load.pid() << std::flush;
        BOOST_TEST_REQUIRE(procs.good(), "cannot move the load into " << cg.path());
    }
    error_code ec;
    auto ev = next(ctx, pw, ec);
    BOOST_TEST_REQUIRE(ev.has_value(), "no pressure event for " << cg.path() << ": " << ec.message());
    BOOST_TEST((ev->kind == pressure_kind::pressure));
    BOOST_TEST_REQUIRE(ev->averages.has_value());
    BOOST_TEST(ev->averages->some.total > 0u);
}

BOOST_AUTO_TEST_CASE(rmdir_ends_the_watch_with_removed) {
    scratch_oom s("oomwatch-psi-rm", load_limit);
    asio::io_context ctx;
    auto pw = cgroup_watch(ctx, s);
    BOOST_TEST_REQUIRE(pw.is_open());
    auto rm = s.cg->remove();
    BOOST_TEST_REQUIRE(!rm, "rmdir: " << rm.message());
    error_code ec;
    // v2: the kernel's POLLERR, or at worst the 2 s liveness check.
    auto ev = next(ctx, pw, ec, 10s);
    BOOST_TEST_REQUIRE(ev.has_value(), "no removed event: " << ec.message());
    BOOST_TEST(ev->kind == pressure_kind::removed);
    BOOST_TEST(!pw.is_open());
    ev = next(ctx, pw, ec, 2s);
    BOOST_TEST(ec == error_code(error::cgroup_removed));
}

// subscribe(): events on the given strand, a reset subscription gets nothing, and the
// removal is the last event (the subscription inactive after it).
BOOST_AUTO_TEST_CASE(subscription_sees_pressure_then_removed) {
    scratch_oom s("oomwatch-psi-sub", load_limit);
    if (no_v1_load_here(s)) return;
    asio::io_context ctx;
    auto pw = cgroup_watch(ctx, s, {pressure_level::low, pressure_mode::standard});
    auto strand = asio::make_strand(ctx);
    std::vector<pressure_event> got;
    bool off_strand = false;
    auto sub = pw.subscribe(strand, [&](const pressure_event& ev) {
        off_strand = off_strand || !strand.running_in_this_thread();
        got.push_back(ev);
    });
    int reset_calls = 0;
    auto gone = pw.subscribe([&](const pressure_event&) { ++reset_calls; });
    gone.reset();
    BOOST_TEST(!gone.active());
    {
        reclaim_load load(s.cg->path(), s.v1());
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return !got.empty(); }, 20s), "no pressure event for " << s.cg->path());
    }
    BOOST_TEST((got.front().kind == pressure_kind::pressure));
    BOOST_TEST(sub.active());
    auto rm = s.cg->remove();
    BOOST_TEST_REQUIRE(!rm, "rmdir: " << rm.message());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return got.back().kind == pressure_kind::removed; }, 10s),
                       "no removed event");
    BOOST_TEST(!sub.active());
    BOOST_TEST(!off_strand);
    BOOST_TEST(reset_calls == 0);
}

BOOST_AUTO_TEST_CASE(wrong_kind_of_trigger_is_a_mismatch) {
    scratch_oom s("oomwatch-psi-mm", load_limit);
    asio::io_context ctx;
    try {
        if (s.v1())
            pressure_watcher pw(ctx.get_executor(), s.cg->path(), pressure_trigger{});
        else
            pressure_watcher pw(ctx.get_executor(), s.cg->path(), pressure_level_trigger{});
        BOOST_TEST(false, "no error");
    } catch (const cgroup_error& e) {
        BOOST_TEST(e.code() == error_code(error::pressure_trigger_mismatch));
    }
}

// Unprivileged (uid 65534, no capabilities): the default trigger (2 s window) is allowed;
// since 6.4 a 1 s window is refused with a clear error. Run in a child, which drops
// its privileges for good.
BOOST_AUTO_TEST_CASE(unprivileged_default_trigger_and_refusal) {
    OOMWATCH_REQUIRE_ROOT("dropping to uid 65534");
    struct utsname_release {
        int major = 0, minor = 0;
    } rel;
    {
        std::ifstream in("/proc/sys/kernel/osrelease");
        char dot;
        in >> rel.major >> dot >> rel.minor;
    }
    const bool allowed = rel.major > 6 || (rel.major == 6 && rel.minor >= 4);
    const bool off = psi_off();  // then both are psi_disabled
    pid_t pid = ::fork();
    BOOST_TEST_REQUIRE(pid >= 0);
    if (pid == 0) {
        ::alarm(10);
        if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
        asio::io_context ctx;
        int code = 0;
        try {
            // The default trigger works unprivileged (6.1 in the VM allows it too).
            pressure_watcher pw(ctx.get_executor(), system_pressure{});
            if (off) code = 15;
        } catch (const cgroup_error& e) {
            if (!off || e.code() != error_code(error::psi_disabled)) code = 12;
        }
        try {
            pressure_watcher pw(ctx.get_executor(), system_pressure{},
                                pressure_trigger{.kind = stall::some, .threshold = std::chrono::milliseconds(100),
                                                 .window = std::chrono::seconds(1)});
            if (allowed || off) code = code ? code : 13;  // before 6.4 no window rule
        } catch (const cgroup_error& e) {
            if (off) {
                if (e.code() != error_code(error::psi_disabled)) code = code ? code : 16;
            } else if (e.code() != error_code(error::pressure_trigger_refused) || e.path() != "/proc/pressure/memory" ||
                std::string(e.what()).find("multiple of 2 s") == std::string::npos)
                code = code ? code : 14;
        }
        ::_exit(code);
    }
    int status = 0;
    BOOST_TEST_REQUIRE(::waitpid(pid, &status, 0) == pid);
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 0, "child exit " << WEXITSTATUS(status) << " (kernel " << rel.major << "."
                                                      << rel.minor << ")");
}

BOOST_AUTO_TEST_SUITE_END()
