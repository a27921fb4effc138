// Real-kernel tests: real cgroups, real OOM kills. Written for whatever memory hierarchy
// the machine has, so the same cases run on the host (cgroup v1) and in the VM (v2).
#include "test_support.hpp"

#include "detail/cgroup.hpp"
#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/strand.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

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

// The counts are checked against what the kernel says without the library: the five
// victims that died of SIGKILL, and kernel_witness (on v1 the OOM notifications on an
// eventfd the test registers itself, on v2 memory.events). The watcher's own
// counters.oom would prove nothing on v1: the watcher sums it from its own reads.
BOOST_FIXTURE_TEST_CASE(five_kills_add_up_to_exactly_five, kernel_fixture) {
    watcher w(ctx, cg->path());
    auto base = w.counters();
    kernel_witness kernel(cg->path(), cg->version());
    event_log log(w);
    log.arm();
    for (int i = 0; i < 5; ++i) oom_kill_one();  // the watcher is not even running meanwhile
    kernel.take();
    BOOST_TEST_REQUIRE(kernel.kills() == 5u);
    BOOST_TEST_REQUIRE(kernel.ooms() >= 5u);  // every kill needed at least one OOM
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 5; }));
    // Nothing more than five arrives until the cgroup goes away.
    BOOST_TEST_REQUIRE(!cg->remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }));
    BOOST_TEST(log.t[event_kind::oom_kill] == 5u);
    BOOST_TEST(log.events.back().kind == event_kind::removed);
    BOOST_TEST(log.events.back().counters.oom_kill - base.oom_kill == 5u);
    // Every OOM the kernel signalled is reported, once: several notifications in one
    // eventfd read (v1) or one re-read (v2) count as what they are, not as one.
    BOOST_TEST(log.t[event_kind::oom] == kernel.ooms());
    BOOST_TEST(log.events.back().counters.oom - base.oom == kernel.ooms());
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

// watch_options::resume_from: a watch stopped after one kill; two more while nobody
// watched; the watch resumed from the counters it last reported reports exactly those
// two (unattributed: their kernel-log records are not replayed), then live kills.
BOOST_FIXTURE_TEST_CASE(a_resumed_watch_reports_exactly_the_kills_while_nobody_watched, kernel_fixture) {
    memory_counters saved;
    {
        watcher w(ctx, cg->path());
        event_log log(w);
        log.arm();
        oom_kill_one();
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
        for (const auto& ev : log.events)
            if (ev.kind == event_kind::oom_kill) saved = ev.counters;
        // The pending wait completes (aborted) after close: while `log` is still there.
        w.close();
        run_ready(ctx);
    }
    BOOST_TEST_REQUIRE(saved.oom_kill == 1u);
    oom_kill_one();
    oom_kill_one();
    watch_options o;
    o.resume_from = saved;
    watcher w(ctx, cg->path(), o);
    event_log log(w);
    log.arm();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 2; }));
    BOOST_TEST(log.events.front().counters.oom_kill == 3u);
    for (const auto& ev : log.events)
        if (ev.kind == event_kind::oom_kill) BOOST_TEST(ev.unattributed == ev.count);
    oom_kill_one();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 3; }));
    BOOST_TEST_REQUIRE(!cg->remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }));
    BOOST_TEST(log.t[event_kind::oom_kill] == 3u);  // two resumed, one live
    BOOST_TEST(log.events.back().counters.oom_kill == 4u);
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

// A wait cancelled while a kill is under way loses nothing: the kill goes to the next
// wait, counted exactly once. Only oom_kill is asked for, so the wait is still pending
// while the kernel and the watcher are busy with the kill. The cancel lands, with each
// cancellation type, at four moments of it:
// - the victim is still allocating (the kernel has not killed it yet);
// - the kernel has killed it, but the io_context has not run: nothing is read yet;
// - a second watcher (default kinds) reports the OOM: the kernel has signalled it, the
//   kill comes a moment later, and the watcher under test is typically between reading
//   the notification and seeing the kill (v1: re-reading memory.oom_control);
// - the io_context sees the victim exit (its pidfd).
// In the last two the wait may have completed with the kill first (by the exit it has,
// on the host): delivery too, and the late cancel must change nothing. Either way each
// victim is reported exactly once, and after the last one comes `removed`.
BOOST_FIXTURE_TEST_CASE(a_cancelled_wait_loses_no_kill, kernel_fixture) {
    watch_options opts;
    opts.kinds = {event_kind::oom_kill};
    watcher w(ctx, cg->path(), opts);
    const auto base = w.counters();
    kernel_witness kernel(cg->path(), cg->version());
    watcher other(ctx, cg->path());
    tally other_seen;
    std::function<void(const oom_event&)> on_other;
    auto other_sub = other.subscribe([&](const oom_event& ev) {
        other_seen.add(ev);
        if (on_other) on_other(ev);
    });
    enum class moment { allocating, killed_unread, oom_seen, exit_seen };
    const char* const moment_names[] = {"the victim allocating", "killed, nothing read", "the OOM reported",
                                        "the victim's exit seen"};
    int round = 0, cancelled_in_flight = 0;
    int hit[4] = {};
    std::uint64_t delivered = 0;
    for (auto m : {moment::allocating, moment::killed_unread, moment::oom_seen, moment::exit_seen})
        for (auto type : {asio::cancellation_type::total, asio::cancellation_type::partial,
                          asio::cancellation_type::terminal}) {
            BOOST_TEST_CONTEXT("round " << round << ": cancel (type " << static_cast<unsigned>(type) << ") with "
                                        << moment_names[static_cast<int>(m)]) {
                ++round;
                asio::cancellation_signal sig;
                std::optional<error_code> first_ec;
                oom_event first;
                w.async_next_event(asio::bind_cancellation_slot(sig.slot(), [&](error_code e, oom_event ev) {
                    first_ec = e;
                    first = std::move(ev);
                }));
                // The second watcher has seen the earlier kills: its next `oom` is this one's.
                BOOST_TEST_REQUIRE(run_until(ctx, [&] { return other_seen[event_kind::oom_kill] == delivered; }));
                auto v = scratch::victim::spawn(cg->path(), oom_hog);
                BOOST_TEST_REQUIRE(v.has_value(), "cannot start a victim: " << v.error().message());
                auto reap = [&] {
                    auto status = v->wait(10s);
                    BOOST_TEST_REQUIRE(status.has_value(), "the victim did not die: " << status.error().message());
                    BOOST_TEST_REQUIRE(scratch::victim::killed_by_sigkill(*status), "victim status " << *status);
                };
                if (m == moment::allocating) {
                    sig.emit(type);
                    reap();
                } else if (m == moment::killed_unread) {
                    reap();
                    sig.emit(type);
                } else if (m == moment::oom_seen) {
                    bool oom_seen = false;
                    on_other = [&](const oom_event& ev) {
                        if (ev.kind != event_kind::oom || oom_seen) return;
                        oom_seen = true;
                        sig.emit(type);  // a no-op if the wait has completed
                    };
                    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return oom_seen; }));
                    on_other = nullptr;
                    reap();
                } else {
                    asio::posix::stream_descriptor exit_fd(ctx, v->pidfd());
                    struct release_it {  // the victim owns the pidfd
                        asio::posix::stream_descriptor& d;
                        ~release_it() { d.release(); }
                    } release{exit_fd};
                    bool exited = false;
                    exit_fd.async_wait(asio::posix::stream_descriptor::wait_read, [&](error_code) {
                        exited = true;
                        sig.emit(type);  // a no-op if the wait has completed
                    });
                    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return exited; }));
                    reap();
                }
                BOOST_TEST_REQUIRE(run_until(ctx, [&] { return first_ec.has_value(); }));
                std::uint64_t kills = 0;
                if (*first_ec == asio::error::operation_aborted) {
                    ++cancelled_in_flight;
                    ++hit[static_cast<int>(m)];
                } else {
                    // Only when the io_context ran before the cancel.
                    BOOST_TEST((m >= moment::oom_seen), "the wait completed despite the cancel");
                    BOOST_TEST_REQUIRE(!*first_ec, first_ec->message());
                    BOOST_TEST(first.kind == event_kind::oom_kill);
                    kills += first.count;
                }
                if (kills == 0) {
                    std::optional<error_code> next_ec;
                    oom_event next;
                    w.async_next_event([&](error_code e, oom_event ev) {
                        next_ec = e;
                        next = std::move(ev);
                    });
                    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return next_ec.has_value(); }),
                                       "the kill in flight at the cancel never came");
                    BOOST_TEST_REQUIRE(!*next_ec, next_ec->message());
                    BOOST_TEST(next.kind == event_kind::oom_kill);
                    kills += next.count;
                }
                BOOST_TEST(kills == 1u);
                delivered += kills;
            }
        }
    BOOST_TEST_MESSAGE("a_cancelled_wait_loses_no_kill: " << cancelled_in_flight << " of " << round
                                                          << " cancels hit a pending wait (by moment: " << hit[0]
                                                          << "/3, " << hit[1] << "/3, " << hit[2] << "/3, " << hit[3]
                                                          << "/3)");
    // The first six rounds cancel before the io_context runs: those always hit.
    BOOST_TEST(hit[0] == 3);
    BOOST_TEST(hit[1] == 3);
    // Nothing more (a kill reported twice would come now), and the kernel agrees.
    kernel.take();
    BOOST_TEST(kernel.kills() == static_cast<std::uint64_t>(round));
    BOOST_TEST_REQUIRE(!cg->remove());
    std::optional<error_code> last_ec;
    oom_event last;
    w.async_next_event([&](error_code e, oom_event ev) {
        last_ec = e;
        last = std::move(ev);
    });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return last_ec.has_value(); }));
    BOOST_TEST(!*last_ec);
    BOOST_TEST(last.kind == event_kind::removed);
    BOOST_TEST(delivered == static_cast<std::uint64_t>(round));
    BOOST_TEST(last.counters.oom_kill - base.oom_kill == static_cast<std::uint64_t>(round));
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

// The scratch cgroups of a test program that died are removed by the next one (its
// main calls remove_leftovers); those of live processes, ours included, stay.
BOOST_FIXTURE_TEST_CASE(leftovers_of_dead_test_programs_are_removed, kernel_fixture) {
    pid_t dead = ::fork();
    BOOST_TEST_REQUIRE(dead >= 0);
    if (dead == 0) ::_exit(0);
    BOOST_TEST_REQUIRE(::waitpid(dead, nullptr, 0) == dead);
    const auto parent = cg->path().parent_path();
    const auto left = parent / ("oomwatch-leftover-" + std::to_string(dead) + "-0");
    const auto alive = parent / ("oomwatch-leftover-" + std::to_string(::getppid()) + "-0");
    const auto other = parent / ("oomwatch-leftover-" + std::to_string(dead));  // not a scratch name
    struct cleanup {
        std::vector<std::filesystem::path> dirs;
        ~cleanup() {
            for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) ::rmdir(it->c_str());
        }
    } guard{{left, left / "child", alive, other}};
    for (const auto& d : guard.dirs) BOOST_TEST_REQUIRE(::mkdir(d.c_str(), 0755) == 0, d << ": " << std::strerror(errno));
    BOOST_TEST(scratch::remove_leftovers() >= 1u);
    BOOST_TEST(!std::filesystem::exists(left));
    BOOST_TEST(std::filesystem::exists(alive));
    BOOST_TEST(std::filesystem::exists(other));
    BOOST_TEST(std::filesystem::exists(cg->path()));
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
