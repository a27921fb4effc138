// Real-kernel tests: real cgroups, real OOM kills. Written for whatever memory hierarchy
// the machine has, so the same cases run on the host (cgroup v1) and in the VM (v2).
#include "test_support.hpp"

#include "detail/cgroup.hpp"
#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

BOOST_AUTO_TEST_SUITE(real_kernel, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_FIXTURE_TEST_CASE(an_oom_kill_is_reported, kernel_fixture) {
    watcher w(ctx, cg->path());
    BOOST_TEST(w.version() == cg->version());
    event_log log(w);
    log.arm();
    oom_kill_one();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u);
    BOOST_TEST(log.t[event_kind::oom] >= 1u);
    BOOST_TEST(log.events.front().kind == event_kind::oom);  // the limit is hit before the kill
    BOOST_TEST(log.events.back().cgroup == cg->path());
    BOOST_TEST(log.events.back().counters.oom_kill == 1u);
}

BOOST_FIXTURE_TEST_CASE(five_kills_add_up_to_exactly_five, kernel_fixture) {
    watcher w(ctx, cg->path());
    auto base = w.counters();
    event_log log(w);
    log.arm();
    for (int i = 0; i < 5; ++i) oom_kill_one();  // the watcher is not even running meanwhile
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 5; }));
    // Nothing more than five arrives until the cgroup goes away.
    BOOST_TEST_REQUIRE(!cg->remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }));
    BOOST_TEST(log.t[event_kind::oom_kill] == 5u);
    BOOST_TEST(log.events.back().kind == event_kind::removed);
    BOOST_TEST(log.events.back().counters.oom_kill - base.oom_kill == 5u);
    // Every kill needed at least one OOM; the oom counts add up to the counter's growth.
    BOOST_TEST(log.t[event_kind::oom] >= 5u);
    BOOST_TEST(log.t[event_kind::oom] == log.events.back().counters.oom - base.oom);
}

BOOST_FIXTURE_TEST_CASE(kills_before_the_watcher_give_no_event, kernel_fixture) {
    oom_kill_one();
    oom_kill_one();
    watcher w(ctx, cg->path());
    BOOST_TEST(w.counters().oom_kill == 2u);  // the baseline
    event_log log(w);
    log.arm();
    // One more kill: exactly one is reported (a missing baseline would report three).
    oom_kill_one();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
    BOOST_TEST_REQUIRE(!cg->remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }));
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u);
    BOOST_TEST(log.events.back().counters.oom_kill == 3u);
    BOOST_TEST(log.events.back().kind == event_kind::removed);
}

BOOST_FIXTURE_TEST_CASE(rmdir_while_waiting_gives_removed_then_cgroup_removed, kernel_fixture) {
    watcher w(ctx, cg->path());
    event_log log(w);
    log.arm();
    run_ready(ctx);
    BOOST_TEST_REQUIRE(!cg->remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 5s));
    BOOST_TEST(log.events.size() == 1u);
    bool done = false;
    error_code ec;
    w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == error::cgroup_removed);
}

BOOST_FIXTURE_TEST_CASE(a_cancelled_wait_loses_no_kill, kernel_fixture) {
    watcher w(ctx, cg->path());
    asio::cancellation_signal sig;
    bool done = false;
    error_code ec;
    w.async_next_event(asio::bind_cancellation_slot(sig.slot(), [&](error_code e, oom_event) { ec = e, done = true; }));
    run_ready(ctx);
    sig.emit(asio::cancellation_type::total);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == asio::error::operation_aborted);
    oom_kill_one();
    event_log log(w);
    log.arm();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] == 1; }));
    BOOST_TEST(!log.last_error);
}

BOOST_FIXTURE_TEST_CASE(subscribers_on_strands_see_the_kill, kernel_fixture) {
    watcher w(ctx, cg->path());
    tally a, b;
    auto sa = w.subscribe(asio::make_strand(ctx), [&](const oom_event& ev) { a.add(ev); });
    auto sb = w.subscribe(asio::make_strand(ctx), [&](const oom_event& ev) { b.add(ev); });
    oom_kill_one();
    oom_kill_one();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return a[event_kind::oom_kill] >= 2 && b[event_kind::oom_kill] >= 2; }));
    BOOST_TEST(a[event_kind::oom_kill] == 2u);
    BOOST_TEST(b[event_kind::oom_kill] == 2u);
}

BOOST_FIXTURE_TEST_CASE(a_cgroup_named_three_ways_is_the_same, kernel_fixture) {
    auto h = detail::find_memory_hierarchy();
    BOOST_TEST_REQUIRE(h.has_value());
    // As a path inside the hierarchy, the way /proc/PID/cgroup shows it.
    auto rel = "/" + cg->path().lexically_relative(h->mount_point).string();
    watcher by_hierarchy_path(ctx, rel);
    BOOST_TEST(by_hierarchy_path.cgroup() == cg->path());
    // As a process in it: a child that waits on a pipe until we let it go.
    int pipefd[2];
    BOOST_TEST_REQUIRE(::pipe2(pipefd, O_CLOEXEC) == 0);
    pid_t child = ::fork();
    BOOST_TEST_REQUIRE(child >= 0);
    if (child == 0) {
        char c;
        ::close(pipefd[1]);
        while (::read(pipefd[0], &c, 1) < 0 && errno == EINTR) {}
        ::_exit(0);
    }
    ::close(pipefd[0]);
    struct reap {
        int wfd;
        pid_t pid;
        ~reap() {
            ::close(wfd);  // EOF lets the child exit
            int st;
            ::waitpid(pid, &st, 0);
        }
    } reaper{pipefd[1], child};
    BOOST_TEST_REQUIRE(!cg->write_file("cgroup.procs", std::to_string(child)));
    watcher by_pid(ctx, process{child});
    BOOST_TEST(by_pid.cgroup() == cg->path());
    watcher self(ctx, process{::getpid()});
    auto mine = detail::memory_cgroup_of(::getpid());
    BOOST_TEST_REQUIRE(mine.has_value());
    BOOST_TEST(self.cgroup() == mine->directory);
}

BOOST_FIXTURE_TEST_CASE(no_fd_growth_over_1000_watch_cycles, kernel_fixture) {
    { watcher warm(ctx, cg->path()); }  // lazily made things (the reactor, v2's inotify) exist now
    run_ready(ctx);
    auto before = open_fd_count();
    int removed = 0;
    for (int i = 0; i < 1000; ++i) {
        auto c = cg->create_child("c" + std::to_string(i), 0);
        BOOST_TEST_REQUIRE(c.has_value(), "cycle " << i << ": " << c.error().message());
        watcher w(ctx, c->path());
        event_log log(w);
        log.arm();
        BOOST_TEST_REQUIRE(!c->remove());
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 5s), "cycle " << i);
        removed += static_cast<int>(log.t[event_kind::removed]);
    }
    run_ready(ctx);
    BOOST_TEST(removed == 1000);
    BOOST_TEST(open_fd_count() == before);
}

BOOST_AUTO_TEST_CASE(errors_name_the_problem) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    asio::io_context ctx;
    auto h = detail::find_memory_hierarchy();
    BOOST_TEST_REQUIRE(h.has_value());
    error_code ec;
    watcher missing(ctx, h->mount_point / "oomwatch-no-such-cgroup", {}, ec);
    BOOST_TEST(ec == boost::system::errc::no_such_file_or_directory);
    watcher file(ctx, h->mount_point / "cgroup.procs", {}, ec);
    BOOST_TEST(ec == error::not_a_cgroup);
    try {
        watcher w(ctx, h->mount_point / "oomwatch-no-such-cgroup");
        BOOST_FAIL("no exception");
    } catch (const cgroup_error& e) {
        BOOST_TEST(std::string(e.what()).find("oomwatch-no-such-cgroup") != std::string::npos, e.what());
    }
}

BOOST_AUTO_TEST_SUITE_END()
