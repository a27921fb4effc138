// On a real kernel: a program that never sets up logging prints nothing while its
// watcher sees real OOM kills; and a watch whose notification descriptor fails (v1: the
// eventfd read, v2: the inotify read; injected, since a kernel does this only when
// something is badly wrong) ends with a failure that every consumer learns.
#include "test_support.hpp"

#include "fault_injection.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/log/core/core.hpp>
#include <boost/test/unit_test.hpp>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

// The child's whole life: a scratch cgroup, a watcher, a real OOM kill, rmdir, the
// `removed` event. Prints nothing of its own; returns an exit code (0: all seen).
int quiet_child() {
    // As an application that never touched Boost.Log: no sinks (so Boost.Log's default
    // sink would print anything that reached it) and the library's default setting.
    boost::log::core::get()->remove_all_sinks();
    disable_logging();
    auto cg = scratch::scratch_cgroup::create("oomwatch-quiet", oom_limit);
    if (!cg) return 10;
    asio::io_context ctx;
    watcher w(ctx, cg->path());
    tally t;
    auto sub = w.subscribe([&](const oom_event& ev) { t.add(ev); });
    {
        auto v = scratch::victim::spawn(cg->path(), oom_hog);
        if (!v) return 11;
        auto st = v->wait(std::chrono::seconds(10));
        if (!st || !scratch::victim::killed_by_sigkill(*st)) return 12;
    }
    if (!run_until(ctx, [&] { return t[event_kind::oom_kill] >= 1; })) return 13;
    if (cg->remove()) return 14;
    if (!run_until(ctx, [&] { return t[event_kind::removed] == 1; })) return 15;
    return t[event_kind::oom_kill] == 1 ? 0 : 16;
}

} // namespace

BOOST_AUTO_TEST_SUITE(silence_and_failure, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_AUTO_TEST_CASE(a_program_without_logging_setup_prints_nothing_during_real_kills) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    int out[2];
    BOOST_TEST_REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    BOOST_TEST_REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(out[1], STDOUT_FILENO);
        ::dup2(out[1], STDERR_FILENO);
        int rc = 99;
        try {
            rc = quiet_child();
        } catch (...) {
            rc = 98;
        }
        std::fflush(nullptr);
        ::_exit(rc);
    }
    ::close(out[1]);
    std::string printed;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
        pollfd p{out[0], POLLIN, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
        char buf[4096];
        const ssize_t n = ::read(out[0], buf, sizeof buf);
        if (n <= 0) break;  // EOF: the child exited
        printed.append(buf, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == 0) {  // still running after the deadline
        ::kill(pid, SIGKILL);
        r = ::waitpid(pid, &status, 0);
    }
    BOOST_TEST_REQUIRE(r == pid);
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 0, "the child's watch did not go as planned (exit " << WEXITSTATUS(status) << ")");
    BOOST_TEST(printed.empty(), "the library printed: " << printed);
}

BOOST_FIXTURE_TEST_CASE(a_failing_notification_descriptor_ends_the_watch_for_every_consumer, kernel_fixture) {
    watcher w(ctx, cg->path());
    std::vector<oom_event> seen;
    auto sub = w.subscribe([&](const oom_event& ev) { seen.push_back(ev); });
    event_log log(w);
    log.arm();
    if (v1())
        detail::fault::eventfd_read_errno.store(EIO);
    else
        detail::fault::inotify_read_errno.store(EIO);
    oom_kill_one();  // wakes the watcher, whose read now fails
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.last_error && !seen.empty() && seen.back().kind == event_kind::failed; }),
                       "a consumer never learnt of the failure");
    BOOST_TEST(log.last_error == boost::system::errc::io_error);
    BOOST_TEST(seen.back().error == boost::system::errc::io_error);
    BOOST_TEST(!w.is_open());
    auto f = w.failure();
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST(f->code() == boost::system::errc::io_error);
    BOOST_TEST(!f->path().empty());
    // Later waits too.
    error_code later;
    bool done = false;
    w.async_next_event([&](error_code ec, oom_event) { later = ec, done = true; });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(later == boost::system::errc::io_error);
}

BOOST_AUTO_TEST_SUITE_END()
