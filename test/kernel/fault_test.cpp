// Fault injection on real cgroups, written for whatever memory hierarchy the machine has
// (cgroup v1 on the hosts; the VM tests run this program on a real cgroup v2 kernel too):
//
// - the cgroup removed between the OOM notification and the watcher's read, hundreds of
//   times: rmdir before the io_context runs at all (sometimes with a namesake in its
//   place by then), and rmdir racing with the io_context running on another thread;
// - out of descriptors (RLIMIT_NOFILE): constructing a watcher fails with
//   `too_many_files_open` naming the path and leaks nothing, on a fresh io_context too;
//   the existing watchers keep counting, also a kill that happens while no descriptor
//   is left;
// - EINTR: SIGUSR1 (no SA_RESTART) every ~100 us while watchers wait and kills happen;
// - paths that are not memory cgroups (a file, other controllers' hierarchies, a cgroup2
//   root without memory), and a symlink to a cgroup (which watches the target);
// - an exception thrown by a subscriber's handler.
//
// Every case checks exact counts against the kernel's own (v1: memory.oom_control and an
// eventfd of the test's own registered on the same cgroup; v2: memory.events), no
// descriptor leak, and errors that name the path. Everything made here (cgroups,
// processes, rlimits, signal dispositions) is undone even when a case fails.
//
// The removal loops run a few hundred times within a time budget (so that a slow
// machine or a TCG guest stays bounded); OOMWATCH_FAULT_ITERATIONS=N runs exactly N.
#include "fault_support.hpp"
#include "test_support.hpp"
#include "kernel_log.hpp"

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"
#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

// How many times a loop runs: OOMWATCH_FAULT_ITERATIONS=N exactly N times; else up to
// `by_default` times, stopping early (after at least 20) when `budget` is spent.
class iterations {
public:
    iterations(int by_default, std::chrono::seconds budget)
        : max_(by_default), until_(std::chrono::steady_clock::now() + budget) {
        if (const char* e = std::getenv("OOMWATCH_FAULT_ITERATIONS"); e && *e && std::atoi(e) > 0) {
            max_ = std::atoi(e);
            forced_ = true;
        }
    }
    bool more(int done) const {
        if (done >= max_) return false;
        return forced_ || done < 20 || std::chrono::steady_clock::now() < until_;
    }

private:
    int max_;
    std::chrono::steady_clock::time_point until_;
    bool forced_ = false;
};

// ---- what the kernel says, independently of the library --------------------------------

// The test's own eventfd on a v1 cgroup's memory.oom_control: the truth about how many
// OOM notifications the kernel sent, to check the watcher against.
owned_fd register_oom_eventfd(const fs::path& cg) {
    owned_fd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    BOOST_TEST_REQUIRE(bool(efd));
    owned_fd ctl(::open((cg / "memory.oom_control").c_str(), O_RDONLY | O_CLOEXEC));
    BOOST_TEST_REQUIRE(bool(ctl), "open memory.oom_control: errno " << errno);
    owned_fd evc(::open((cg / "cgroup.event_control").c_str(), O_WRONLY | O_CLOEXEC));
    BOOST_TEST_REQUIRE(bool(evc), "open cgroup.event_control: errno " << errno);
    std::string line = std::to_string(efd.get()) + " " + std::to_string(ctl.get());
    ssize_t w;
    do w = ::write(evc.get(), line.data(), line.size());
    while (w < 0 && errno == EINTR);
    BOOST_TEST_REQUIRE(w == static_cast<ssize_t>(line.size()), "register eventfd: errno " << errno);
    return efd;
}

// What the eventfd holds now (0 when nothing).
std::uint64_t drain_eventfd(int efd) {
    std::uint64_t v = 0;
    ssize_t n;
    do n = ::read(efd, &v, sizeof v);
    while (n < 0 && errno == EINTR);
    return n == sizeof v ? v : 0;
}

// The kernel's counters of a cgroup: v1 memory.oom_control (oom_kill; no OOM counter),
// v2 memory.events.
memory_counters kernel_counters(const fs::path& cg, cgroup_version v) {
    memory_counters c;
    if (v == cgroup_version::v2) {
        auto r = parse_memory_events(read_text(cg / "memory.events"));
        BOOST_TEST_REQUIRE(r.has_value(), "cannot parse " << cg / "memory.events");
        c = *r;
    } else {
        auto r = parse_oom_control(read_text(cg / "memory.oom_control"));
        BOOST_TEST_REQUIRE(r.has_value(), "cannot parse " << cg / "memory.oom_control");
        c.oom_kill = r->oom_kill.value_or(0);
    }
    return c;
}

// OOMs and kills in a cgroup since construction, as the kernel counts them: v1 OOM
// notifications through an eventfd of its own, v2 memory.events. Read before rmdir.
class kernel_truth {
public:
    kernel_truth(const fs::path& cg, cgroup_version v) : cg_(cg), v_(v), base_(kernel_counters(cg, v)) {
        if (v == cgroup_version::v1) efd_ = register_oom_eventfd(cg);
    }
    // Call once the victims are dead (every notification precedes its kill).
    void take() {
        auto now = kernel_counters(cg_, v_);
        kills_ = now.oom_kill - base_.oom_kill;
        ooms_ = v_ == cgroup_version::v1 ? ooms_ + drain_eventfd(efd_.get()) : now.oom - base_.oom;
    }
    std::uint64_t ooms() const { return ooms_; }
    std::uint64_t kills() const { return kills_; }

private:
    fs::path cg_;
    cgroup_version v_;
    memory_counters base_;
    owned_fd efd_;
    std::uint64_t ooms_ = 0;
    std::uint64_t kills_ = 0;
};

// A child that joins `cg`, then waits for go() before it allocates far over the limit:
// everything that needs a descriptor happens before the test takes them all away.
class held_victim {
public:
    explicit held_victim(const fs::path& cg) {
        const std::string procs = (cg / "cgroup.procs").string();  // no allocation after fork
        int ready[2], go[2];
        BOOST_TEST_REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
        BOOST_TEST_REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
        const pid_t parent = ::getpid();
        pid_ = ::fork();
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(1);
            ::close(ready[0]);
            ::close(go[1]);
            int err = 0;
            int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0 || ::write(fd, "0", 1) != 1) err = errno ? errno : EIO;
            if (fd >= 0) ::close(fd);
            while (::write(ready[1], &err, sizeof err) < 0 && errno == EINTR) {}
            if (err) ::_exit(127);
            char c;
            while (::read(go[0], &c, 1) < 0 && errno == EINTR) {}
            void* mem = ::mmap(nullptr, oom_hog, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (mem == MAP_FAILED) ::_exit(1);
            auto* page = static_cast<volatile char*>(mem);
            for (std::size_t off = 0; off < oom_hog; off += 4096) page[off] = 1;
            ::_exit(0);
        }
        ::close(ready[1]);
        ::close(go[0]);
        go_ = owned_fd(go[1]);
        owned_fd rd(ready[0]);
        if (pid_ < 0) {
            error_ = "fork: errno " + std::to_string(errno);
            return;
        }
        pidfd_ = owned_fd(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
        if (!pidfd_) error_ = "pidfd_open: errno " + std::to_string(errno);
        int err = ECHILD;
        while (::read(rd.get(), &err, sizeof err) < 0 && errno == EINTR) {}
        if (err != 0) error_ = "the victim could not join " + cg.string() + ": errno " + std::to_string(err);
    }
    // Empty when the victim is in place, waiting for go().
    const std::string& error() const { return error_; }
    held_victim(const held_victim&) = delete;
    held_victim& operator=(const held_victim&) = delete;
    ~held_victim() {
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGKILL);
            int st;
            while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {}
        }
    }

    // Lets it allocate; needs no descriptor.
    void go() {
        char c = 1;
        while (::write(go_.get(), &c, 1) < 0 && errno == EINTR) {}
    }
    // Waits (bounded) for it to die and reaps it; needs no descriptor. True when the OOM
    // killer got it.
    bool wait_killed(std::chrono::milliseconds timeout) {
        pollfd p{pidfd_.get(), POLLIN, 0};
        int n;
        do n = ::poll(&p, 1, static_cast<int>(timeout.count()));
        while (n < 0 && errno == EINTR);
        if (n != 1) return false;
        int st = 0;
        while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {}
        reaped_ = true;
        return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
    }

private:
    pid_t pid_ = -1;
    owned_fd go_;
    owned_fd pidfd_;
    std::string error_;
    bool reaped_ = false;
};

// ---- fixtures -----------------------------------------------------------------------

// A scratch cgroup without a limit, to make children in.
struct scratch_parent : scratch_oom {
    scratch_parent() : scratch_oom("oomwatch-fault", 0) {}
};

struct fixture : scratch_parent {
    asio::io_context ctx;
};

// What a removal loop saw, for the summary line.
struct loop_stats {
    int iterations = 0;
    int oom_short = 0;      // fewer OOMs reported than the kernel sent (see the cases)
    int kill_reported = 0;  // the kill was read before the cgroup went
    int namesakes = 0;
};

// Checks one watcher's story after "OOM kill(s), then rmdir": exactly one `removed`,
// last, and no error; counts never above the truth, and consistent with the counters in
// the events. What cannot be known (README, "Known limits"): a kill (and on v2 any
// counter) not read before the cgroup went is not reported. v1 OOM notifications are
// exact: the watcher tells the removal's own eventfd signal apart from an OOM's.
void check_removal_story(const event_log& log, const memory_counters& base, cgroup_version v,
                         const kernel_truth& truth, loop_stats& st) {
    BOOST_TEST(log.t[event_kind::removed] == 1u);
    BOOST_TEST_REQUIRE(!log.events.empty());
    BOOST_TEST(log.events.back().kind == event_kind::removed);
    BOOST_TEST(!log.last_error);
    const auto oom = log.t[event_kind::oom];
    const auto kills = log.t[event_kind::oom_kill];
    BOOST_TEST(oom <= truth.ooms(), "reported " << oom << " OOMs, the kernel counted " << truth.ooms());
    BOOST_TEST(kills <= truth.kills(), "reported " << kills << " kills, the kernel counted " << truth.kills());
    if (v == cgroup_version::v1) {
        BOOST_TEST(oom == truth.ooms(), "reported " << oom << " OOMs, the kernel sent " << truth.ooms());
        BOOST_TEST((kills == 0 || kills == truth.kills()), "reported " << kills << " of " << truth.kills());
    }
    if (oom < truth.ooms()) ++st.oom_short;
    if (kills == truth.kills()) ++st.kill_reported;
    const auto& last = log.events.back().counters;
    BOOST_TEST(last.oom - base.oom == oom, "the counters in the events say " << last.oom - base.oom << " OOMs");
    BOOST_TEST(last.oom_kill - base.oom_kill == kills,
               "the counters in the events say " << last.oom_kill - base.oom_kill << " kills");
    for (auto& ev : log.events) BOOST_TEST(ev.count >= 1u);
}

std::string summary(const char* name, const loop_stats& st, std::chrono::steady_clock::time_point t0) {
    std::ostringstream os;
    os << name << ": " << st.iterations << " iterations in "
       << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()
       << " ms; fewer OOMs reported than sent in " << st.oom_short << "; the kill reported in "
       << st.kill_reported << "; a namesake in its place in " << st.namesakes;
    return os.str();
}

} // namespace

BOOST_AUTO_TEST_SUITE(faults_kernel, *boost::unit_test::precondition(kernel_precondition{}))

// ---- 1. removed between the notification and the read ----------------------------------

// OOM-kill a victim, rmdir the cgroup, and only then let the watcher run: its first
// read finds the notification(s), and the cgroup gone (ENOENT). Hundreds of times; every
// tenth time a namesake (with two kills of its own) is in its place by then, which must
// not be counted as the watched cgroup's.
//
// v1: the kernel sends the removal's eventfd signal asynchronously, once the cgroup's
// css is offline (10-40 ms after rmdir returns on this machine), so when the watcher
// reads right after the rmdir that signal is usually not there yet; the watcher must
// still report exactly the OOM notifications the kernel sent (its removal probe says
// when the removal signal is in).
BOOST_FIXTURE_TEST_CASE(oom_then_rmdir_before_the_watcher_runs, scratch_parent) {
    const auto v = cg->version();
    asio::io_context ctx;
    { watcher warm(ctx, cg->path()); }
    run_ready(ctx);
    const auto fds_before = open_fd_count();
    const iterations n(300, 20s);
    loop_stats st;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; n.more(i); ++i) {
        BOOST_TEST_CONTEXT("iteration " << i) {
            auto c = child("r" + std::to_string(i));
            const auto path = c.path();
            watcher w(ctx, path);
            const auto base = w.counters();
            kernel_truth truth(path, v);
            event_log log(w);
            log.arm();
            oom_kill_one(path);
            truth.take();
            BOOST_TEST_REQUIRE(truth.ooms() >= 1u);
            BOOST_TEST_REQUIRE(truth.kills() == 1u);
            BOOST_TEST_REQUIRE(!c.remove(), "rmdir " << path);
            std::optional<scratch::scratch_cgroup> namesake;
            if (i % 10 == 9) {
                namesake.emplace(child("r" + std::to_string(i)));
                oom_kill_one(path);
                oom_kill_one(path);
                ++st.namesakes;
            }
            BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1 || log.last_error; }, 5s),
                               "no removed event");
            run_ready(ctx);
            check_removal_story(log, base, v, truth, st);
            // After the terminal event: cgroup_removed.
            error_code ec;
            bool done = false;
            w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
            BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
            BOOST_TEST(ec == error::cgroup_removed);
            ++st.iterations;
        }
    }
    run_ready(ctx);
    BOOST_TEST(open_fd_count() == fds_before);
    BOOST_TEST_MESSAGE(summary("oom_then_rmdir_before_the_watcher_runs", st, t0));
}

// The same with the io_context running on another thread, so that the rmdir lands
// anywhere in the watcher's handling of the OOM: before, during or after its re-reads
// (ENOENT or ENODEV mid-read, the directory gone between its checks).
BOOST_FIXTURE_TEST_CASE(rmdir_races_with_the_watcher_on_another_thread, scratch_parent) {
    const auto v = cg->version();
    const auto fds_before = open_fd_count();
    const iterations n(100, 10s);
    loop_stats st;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; n.more(i); ++i) {
        BOOST_TEST_CONTEXT("iteration " << i) {
            auto c = child("t" + std::to_string(i));
            const auto path = c.path();
            asio::io_context ctx;
            watcher w(ctx, path);
            const auto base = w.counters();
            kernel_truth truth(path, v);
            event_log log(w);
            log.arm();
            // run() returns once the watcher has finished (after `removed` nothing is pending).
            run_out_thread io(ctx);

            oom_kill_one(path);
            truth.take();
            BOOST_TEST_REQUIRE(truth.ooms() >= 1u);
            BOOST_TEST_REQUIRE(!c.remove(), "rmdir " << path);  // while the watcher handles the OOM
            BOOST_TEST_REQUIRE(io.ran_out_within(10s),
                               "the io_context did not run out of work after the removal (hang)");
            io.join();
            check_removal_story(log, base, v, truth, st);
            ++st.iterations;
        }
    }
    BOOST_TEST(open_fd_count() == fds_before);
    BOOST_TEST_MESSAGE(summary("rmdir_races_with_the_watcher_on_another_thread", st, t0));
}

// ---- 3. out of descriptors ----------------------------------------------------------

// With k descriptors left (k = 0, 1, 2), constructing a watcher works or fails with
// too_many_files_open naming the path, and leaves nothing open; with none left it fails.
// What needs one: the lookup in the mount table (first, transiently); then v1: the
// eventfd, memory.oom_control and cgroup.event_control at once; v2 (the io_context's
// inotify instance exists): the baseline read. Both ways: through the mount table, and
// with force_version (no lookup: the watcher's own descriptors come first). The
// existing watcher counts a kill exactly afterwards.
BOOST_FIXTURE_TEST_CASE(out_of_fds_a_new_watcher_fails_naming_the_path, fixture) {
    auto existing_cg = child("existing");
    watcher existing(ctx, existing_cg.path());
    event_log log(existing);
    log.arm();
    auto target = child("target");
    run_ready(ctx);
    const auto fds_before = open_fd_count();

    watch_options direct;
    direct.force_version = cg->version();
    for (int pass = 0; pass < 2; ++pass) {
        const watch_options opts = pass == 0 ? watch_options{} : direct;
        for (int k = 0; k <= 2; ++k) {
            BOOST_TEST_CONTEXT(k << " descriptor(s) left" << (pass == 0 ? "" : ", force_version")) {
                both_constructors r;
                {
                    rlimit_guard lim(limit_leaving(k));
                    r = try_both_constructors(ctx, ctx, target.path(), opts);
                }
                const auto& [ec, opened, threw, what, what_path, wrong] = r;
                BOOST_TEST(threw.empty(), "the error_code constructor threw: " << threw);
                if (k == 0 || v1()) BOOST_TEST(!opened, "it worked without the descriptors it needs");
                if (!opened) BOOST_TEST(ec == boost::system::errc::too_many_files_open, ec.message());
                BOOST_TEST(wrong.empty(), "not a cgroup_error: " << wrong);
                if (!opened) {
                    BOOST_TEST(what_path == target.path().string());
                    BOOST_TEST(what.find(target.path().string()) != std::string::npos, what);
                }
                BOOST_TEST(open_fd_count() == fds_before);
            }
        }
    }
    // With descriptors back, the same cgroup can be watched; the existing watcher counts.
    watcher later(ctx, target.path());
    BOOST_TEST(later.is_open());
    oom_kill_one(existing_cg.path());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u);
}

// An OOM kill while not one descriptor is left: the watcher cannot read the counters
// (v1 memory.oom_control, v2 memory.events). The kill must be reported once it can read
// again. Here the descriptors come back within ~100 ms: on v1 while the watcher still
// re-reads after the notification (which it reports at once); on v2 a kill modifies
// memory.events three times within ~30 ms and then never again, so the watcher must
// retry by itself (its liveness timer, 100 ms here, is the safety net that re-reads).
BOOST_FIXTURE_TEST_CASE(a_kill_while_out_of_fds_is_counted_once_fds_return, fixture) {
    auto c = child("k");
    watch_options o;
    o.liveness_interval = 100ms;
    watcher w(ctx, c.path(), o);
    const auto base = w.counters();
    event_log log(w);
    log.arm();
    held_victim victim(c.path());
    BOOST_TEST_REQUIRE(victim.error().empty(), victim.error());
    log_capture logs;
    run_ready(ctx);
    const auto fds_before = open_fd_count();
    {
        rlimit_guard lim(limit_leaving(0));
        victim.go();
        BOOST_TEST_REQUIRE(victim.wait_killed(10s), "the victim was not OOM-killed");
        // The watcher wakes up and cannot read.
        run_until(ctx, [&] { return logs.count("Too many open files") >= 1; }, 2s);
        BOOST_TEST(log.t[event_kind::oom_kill] == 0u);
    }
    BOOST_TEST(logs.count("Too many open files") >= 1u, "no read failed: the case did not test anything");
    const auto kills = kernel_counters(c.path(), cg->version()).oom_kill - base.oom_kill;
    BOOST_TEST_REQUIRE(kills == 1u);
    BOOST_TEST(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }, 3s),
               "the kill was not reported after descriptors came back");
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom_kill] == kills);
    BOOST_TEST(log.t[event_kind::oom] >= 1u);
    BOOST_TEST(open_fd_count() == fds_before);
}

// The same, but the descriptors stay gone for 2 s: longer than v1's re-read schedule
// after a notification (1 + 3 + 10 + 30 + 100 + 300 + 1000 ms), and 20 liveness
// intervals. The kill must still be reported once a read works again, without waiting
// for another OOM or the removal (at the removal the counters can no longer be read:
// the kill would be lost for good).
BOOST_FIXTURE_TEST_CASE(a_kill_during_a_long_fd_outage_is_still_counted, fixture) {
    auto c = child("k");
    watch_options o;
    o.liveness_interval = 100ms;
    watcher w(ctx, c.path(), o);
    event_log log(w);
    log.arm();
    held_victim victim(c.path());
    BOOST_TEST_REQUIRE(victim.error().empty(), victim.error());
    run_ready(ctx);
    {
        rlimit_guard lim(limit_leaving(0));
        victim.go();
        BOOST_TEST_REQUIRE(victim.wait_killed(10s), "the victim was not OOM-killed");
        run_until(ctx, [] { return false; }, 2000ms);  // the watcher's own timers run meanwhile
        BOOST_TEST(log.t[event_kind::oom_kill] == 0u);
    }
    const bool reported = run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }, 3s);
    BOOST_TEST(reported, "a kill seen while out of descriptors is not reported once they are back "
                         "(only a later change of the counters would show it)");
    BOOST_TEST_REQUIRE(!c.remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 5s));
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u, "the kernel counted 1 kill");
}

// A fresh io_context has no reactor yet: the first watcher makes it (asio's epoll
// descriptor and its interrupter). Out of descriptors there, the constructor must still
// fail with too_many_files_open naming the path (the error_code form must not throw)
// and leak nothing.
BOOST_FIXTURE_TEST_CASE(out_of_fds_on_a_fresh_io_context, scratch_parent) {
    auto target = child("fresh", 0);
    for (int k = 0; k <= 5; ++k) {
        BOOST_TEST_CONTEXT(k << " descriptor(s) left") {
            const auto fds_before = open_fd_count();
            both_constructors r;
            {
                asio::io_context fresh;
                asio::io_context fresh2;
                rlimit_guard lim(limit_leaving(k));
                r = try_both_constructors(fresh, fresh2, target.path(), {});
                lim.restore();
            }
            const auto& [ec, opened, threw, what, what_path, wrong] = r;
            BOOST_TEST(threw.empty(), "the error_code constructor threw: " << threw);
            if (!opened) BOOST_TEST(ec == boost::system::errc::too_many_files_open, ec.message());
            BOOST_TEST(wrong.empty(), "the throwing constructor threw something else than cgroup_error: " << wrong);
            if (!what.empty()) {
                BOOST_TEST(what_path == target.path().string());
                BOOST_TEST(what.find(target.path().string()) != std::string::npos, what);
            }
            BOOST_TEST(open_fd_count() == fds_before, "descriptors leaked");
        }
    }
}

// ---- 4. EINTR -------------------------------------------------------------------------

// SIGUSR1 every ~100 us (no SA_RESTART) at the thread running the io_context while
// real kills happen: the counts stay exact, nothing fails.
BOOST_FIXTURE_TEST_CASE(signals_during_waits_change_no_count, fixture) {
    auto c = child("sig");
    watcher w(ctx, c.path());
    const auto base = w.counters();
    event_log log(w);
    log.arm();
    tally sub;
    auto s = w.subscribe(asio::make_strand(ctx), [&](const oom_event& ev) { sub.add(ev); });
    run_ready(ctx);
    const auto fds_before = open_fd_count();
    // The context's /dev/kmsg reader (victims), whose only client this watcher is.
    const bool kmsg_open = asio::use_service<detail::kernel_log_service>(ctx).is_open();
    const auto seen_before = sigusr1_seen.load();
    {
        signal_storm storm({::pthread_self()}, 100us);
        for (int i = 0; i < 3; ++i) oom_kill_one(c.path());
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 3; }, 10s));
        // Some idle waiting under the storm too.
        run_until(ctx, [] { return false; }, 200ms);
        BOOST_TEST(storm.sent() > 100u);
    }
    BOOST_TEST(sigusr1_seen.load() - seen_before > 100u, "few signals arrived: the case tested little");
    const auto now = kernel_counters(c.path(), cg->version());
    BOOST_TEST_REQUIRE(!c.remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 5s));
    run_ready(ctx);
    BOOST_TEST(now.oom_kill - base.oom_kill == 3u);
    BOOST_TEST(log.t[event_kind::oom_kill] == 3u);
    BOOST_TEST(sub[event_kind::oom_kill] == 3u);
    BOOST_TEST(log.t[event_kind::oom] >= 3u);
    if (v1()) BOOST_TEST(log.t[event_kind::oom] == log.events.back().counters.oom);
    else BOOST_TEST(log.t[event_kind::oom] == now.oom - base.oom);
    BOOST_TEST(sub[event_kind::oom] == log.t[event_kind::oom]);
    BOOST_TEST(!log.last_error);
    // v1: the watcher's two eventfds (notifications, removal probe) are closed after
    // `removed`; v2 keeps no descriptor per cgroup. The kernel log is closed with the
    // end of its last client's watch.
    BOOST_TEST(open_fd_count() == fds_before - (v1() ? 2 : 0) - (kmsg_open ? 1 : 0));
}

// ---- 6. paths that are not memory cgroups; symlinks ------------------------------------

// A file, another controller's hierarchy, the cgroup2 root without memory: refused with
// the right error, naming the path, in both constructor forms.
BOOST_AUTO_TEST_CASE(a_file_or_a_non_memory_cgroup_is_refused_naming_the_path) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    asio::io_context ctx;
    auto h = detail::find_memory_hierarchy();
    BOOST_TEST_REQUIRE(h.has_value());
    std::string text;
    {
        std::ifstream in("/proc/self/mountinfo");
        std::stringstream ss;
        ss << in.rdbuf();
        text = ss.str();
    }
    auto mounts = parse_mountinfo(text);
    BOOST_TEST_REQUIRE(mounts.has_value());

    auto expect = [&](const fs::path& p, error_code want) {
        BOOST_TEST_CONTEXT(p) {
            error_code ec;
            watcher w(ctx, p, {}, ec);
            BOOST_TEST((ec.default_error_condition() == want.default_error_condition()), ec.message());
            BOOST_TEST(!w.is_open());
            try {
                watcher w2(ctx, p);
                BOOST_FAIL("no exception");
            } catch (const cgroup_error& e) {
                BOOST_TEST((e.code().default_error_condition() == want.default_error_condition()), e.what());
                BOOST_TEST(e.path() == p);
                BOOST_TEST(std::string(e.what()).find(p.string()) != std::string::npos, e.what());
            }
        }
    };

    // A file inside the memory hierarchy.
    expect(h->mount_point / "cgroup.procs", error::not_a_cgroup);
    expect(h->mount_point / (h->version == cgroup_version::v1 ? "memory.oom_control" : "cgroup.controllers"),
           error::not_a_cgroup);

    // Other controllers' v1 hierarchies (cpu, pids, name=systemd, ...): cgroups, but not
    // memory ones; a cgroup2 hierarchy without memory (the unified one of a hybrid
    // machine), or the root of the v2 memory hierarchy (no memory.events there).
    int others = 0;
    for (auto& m : *mounts) {
        if (m.fs_type == "cgroup" && !has_option(m.super_options, "memory") && m.root == "/") {
            expect(m.mount_point, error::no_memory_controller);
            // Taken as a v1 cgroup without the mount table: it has no memory.oom_control.
            watch_options o;
            o.force_version = cgroup_version::v1;
            error_code ec;
            watcher w(ctx, m.mount_point, o, ec);
            BOOST_TEST(ec == error::not_a_cgroup, m.mount_point << ": " << ec.message());
            ++others;
        }
        if (m.fs_type == "cgroup2" && m.root == "/") {
            // The root of the v2 memory hierarchy is named as what it is.
            const bool memory_root = h->version == cgroup_version::v2 && fs::path(m.mount_point) == h->mount_point;
            expect(m.mount_point, memory_root ? error::root_cgroup : error::no_memory_controller);
            ++others;
        }
    }
    BOOST_TEST_MESSAGE("checked " << others << " cgroup hierarchy roots without a memory controller");
}

// A symlink in /tmp to a scratch cgroup: the watcher should watch the cgroup it points to
// (the kill is reported, the removal too), and its errors still name the path given.
BOOST_FIXTURE_TEST_CASE(a_symlink_to_a_cgroup_watches_the_target, fixture) {
    auto c = child("linked");
    const fs::path link = fs::temp_directory_path() / ("oomwatch-link-" + scratch::unique_suffix());
    fs::create_directory_symlink(c.path(), link);
    struct unlink_it {
        fs::path p;
        ~unlink_it() {
            std::error_code ec;
            fs::remove(p, ec);
        }
    } cleanup{link};

    error_code ec;
    watcher w(ctx, link, {}, ec);
    BOOST_TEST_REQUIRE(!ec, "watching " << link << " -> " << c.path() << " failed: " << ec.message());
    BOOST_TEST(fs::equivalent(w.cgroup(), c.path()), w.cgroup() << " is not " << c.path());
    event_log log(w);
    log.arm();
    oom_kill_one(c.path());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u);
    BOOST_TEST_REQUIRE(!c.remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 5s),
                       "the removal of the target was not reported");
    BOOST_TEST(log.events.back().kind == event_kind::removed);
}

// ---- 7. an exception thrown by a subscriber --------------------------------------------

// One subscriber throws from every call. The exception leaves io_context::run(); the
// watcher, the other subscriber (on a strand) and async_next_event keep counting
// exactly, and the thrower itself still receives every event (each time run() is
// called again).
BOOST_FIXTURE_TEST_CASE(an_exception_in_a_subscriber_stops_nothing, fixture) {
    auto c = child("ex");
    watcher w(ctx, c.path());
    event_log log(w);
    log.arm();
    tally thrower, other;
    int thrown = 0;
    auto s1 = w.subscribe([&](const oom_event& ev) {
        thrower.add(ev);
        throw std::runtime_error("subscriber failed");
    });
    auto s2 = w.subscribe(asio::make_strand(ctx), [&](const oom_event& ev) { other.add(ev); });

    auto run_until_caught = [&](const std::function<bool()>& done, std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            try {
                if (run_until(ctx, done, std::chrono::duration_cast<std::chrono::milliseconds>(
                                             deadline - std::chrono::steady_clock::now())))
                    return true;
            } catch (const std::runtime_error&) {
                ++thrown;
            }
        }
        return done();
    };

    oom_kill_one(c.path());
    oom_kill_one(c.path());
    auto all_see = [&](std::uint64_t kills) {
        return [&, kills] {
            return log.t[event_kind::oom_kill] >= kills && other[event_kind::oom_kill] >= kills &&
                   thrower[event_kind::oom_kill] >= kills;
        };
    };
    BOOST_TEST_REQUIRE(run_until_caught(all_see(2), 10s));
    oom_kill_one(c.path());
    BOOST_TEST_REQUIRE(run_until_caught(all_see(3), 10s));
    BOOST_TEST_REQUIRE(!c.remove());
    BOOST_TEST_REQUIRE(run_until_caught(
        [&] { return log.t[event_kind::removed] == 1 && other[event_kind::removed] == 1 && thrower[event_kind::removed] == 1; },
        5s));
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom_kill] == 3u);
    BOOST_TEST(other[event_kind::oom_kill] == 3u);
    BOOST_TEST(thrower[event_kind::oom_kill] == 3u);
    BOOST_TEST(other[event_kind::oom] == log.t[event_kind::oom]);
    BOOST_TEST(thrower[event_kind::oom] == log.t[event_kind::oom]);
    BOOST_TEST(static_cast<std::size_t>(thrown) == thrower.events, "every call threw out of run() once");
}

BOOST_AUTO_TEST_SUITE_END()
