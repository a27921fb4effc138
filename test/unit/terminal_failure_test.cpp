// A watch that cannot go on ends with a failure that reaches every consumer: a pending
// and every later async_next_event (with an event of kind `failed`), each subscriber
// (the `failed` event), next_event() (a cgroup_error naming the file) and failure().
// On fake cgroup folders, with the failures the kernel gives only when something is
// badly wrong (a failing inotify read or wait) injected through the test seam.
#include "test_support.hpp"

#include "fault_injection.hpp"
#include "inotify_service.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/unit_test.hpp>

#include <cerrno>
#include <optional>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

struct fixture {
    asio::io_context ctx;
    fake_v2_tree tree;
};

// One wait's outcome.
struct wait_result {
    bool done = false;
    error_code ec;
    oom_event ev;
};

void wait_once(watcher& w, wait_result& r) {
    w.async_next_event([&r](error_code ec, oom_event ev) {
        r.done = true;
        r.ec = ec;
        r.ev = std::move(ev);
    });
}

} // namespace

BOOST_AUTO_TEST_SUITE(terminal_failure)

// The memory controller disabled under a live watcher: memory.events goes, the cgroup
// stays. Before: the watcher stayed open and its consumers waited for ever.
BOOST_FIXTURE_TEST_CASE(counters_file_vanishing_fails_every_consumer, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    std::vector<oom_event> seen;
    auto sub = w.subscribe([&](const oom_event& ev) { seen.push_back(ev); });
    wait_result pending;
    wait_once(w, pending);
    // One kill first: it must be delivered before the failure, to both.
    fake_v2_tree::write_events(cg, with(0, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return pending.done && seen.size() >= 1; }));
    BOOST_TEST(!pending.ec);
    pending = {};
    wait_once(w, pending);
    std::filesystem::remove(cg / "memory.events");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return pending.done; }), "the pending wait never completed");
    BOOST_TEST(pending.ec == error::counters_vanished);
    BOOST_TEST(pending.ev.kind == event_kind::failed);
    BOOST_TEST(pending.ev.error == error::counters_vanished);
    BOOST_TEST(pending.ev.cgroup == cg);
    BOOST_TEST(!w.is_open());
    BOOST_TEST(w.cgroup() == cg);  // still says which cgroup it was

    // The subscriber: its events in order, the failure last, then nothing.
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return !seen.empty() && seen.back().kind == event_kind::failed; }));
    tally t;
    for (auto& ev : seen) t.add(ev);
    BOOST_TEST(t[event_kind::oom_kill] == 1u);
    BOOST_TEST(t[event_kind::failed] == 1u);
    BOOST_TEST(seen.back().error == error::counters_vanished);
    BOOST_TEST(!sub.active());

    // Every later wait learns it too, with the file named.
    for (int i = 0; i < 2; ++i) {
        wait_result later;
        wait_once(w, later);
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return later.done; }));
        BOOST_TEST(later.ec == error::counters_vanished);
        BOOST_TEST(later.ev.kind == event_kind::failed);
    }
    auto f = w.failure();
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST(f->code() == error::counters_vanished);
    BOOST_TEST(f->path() == cg / "memory.events");
    BOOST_TEST(std::string(f->what()).find((cg / "memory.events").string()) != std::string::npos, f->what());

    // The awaitable form throws a cgroup_error naming the file.
    auto fut = asio::co_spawn(ctx, w.next_event(), asio::use_future);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }));
    try {
        fut.get();
        BOOST_FAIL("next_event() did not throw");
    } catch (const cgroup_error& e) {
        BOOST_TEST(e.code() == error::counters_vanished);
        BOOST_TEST(e.path() == cg / "memory.events");
    }

    // A subscription made afterwards is told at once rather than left waiting.
    std::optional<oom_event> late;
    auto sub2 = w.subscribe([&](const oom_event& ev) { late = ev; });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return late.has_value(); }));
    BOOST_TEST(late->kind == event_kind::failed);
    BOOST_TEST(late->error == error::counters_vanished);
}

// The cgroup removed (files and directory) is not a failure: removed, as before.
BOOST_FIXTURE_TEST_CASE(removal_is_not_a_failure, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    event_log log(w);
    log.arm();
    fake_v2_tree::remove_cgroup(cg);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1u || log.last_error; }));
    BOOST_TEST(log.t[event_kind::failed] == 0u);
    BOOST_TEST(!w.failure().has_value());
    BOOST_TEST(!w.is_open());
}

// A failing inotify read (EIO injected) fails every v2 watcher of the context, once,
// without a hot loop: the instance is closed. A watcher made afterwards gets a new one.
void inotify_failure_case(std::atomic<int>& seam, fixture& f) {
    auto a = f.tree.make_cgroup("a");
    auto b = f.tree.make_cgroup("b");
    watcher wa(f.ctx, a, fake_v2_options());
    watcher wb(f.ctx, b, fake_v2_options());
    auto& svc = asio::use_service<detail::inotify_service>(f.ctx);
    BOOST_TEST(svc.client_count() == 2u);
    run_ready(f.ctx);
    const auto fds = open_fd_count();
    event_log la(wa), lb(wb);
    la.arm();
    lb.arm();
    seam.store(EIO);
    fake_v2_tree::write_events(a, with(1, 1));  // wakes the reader, which fails
    BOOST_TEST_REQUIRE(run_until(f.ctx, [&] { return la.last_error && lb.last_error; }), "a watcher never learnt");
    BOOST_TEST(la.last_error == boost::system::errc::io_error);
    BOOST_TEST(lb.last_error == boost::system::errc::io_error);
    BOOST_TEST(la.t[event_kind::failed] == 0u);  // the wait's error carries it, not an event
    BOOST_TEST(!wa.is_open());
    BOOST_TEST(!wb.is_open());
    BOOST_TEST(svc.client_count() == 0u);
    BOOST_TEST(open_fd_count() == fds - 1);  // the failed instance is closed
    auto fa = wa.failure();
    BOOST_TEST_REQUIRE(fa.has_value());
    BOOST_TEST(fa->path().string().find("inotify") != std::string::npos, fa->path());
    // No hot loop: the context runs out of work instead of spinning on the error.
    f.ctx.restart();
    BOOST_TEST(f.ctx.run_for(std::chrono::milliseconds(200)) < 10u);

    // A new watcher works on a new instance.
    auto c = f.tree.make_cgroup("c");
    watcher wc(f.ctx, c, fake_v2_options());
    event_log lc(wc);
    lc.arm();
    fake_v2_tree::write_events(c, with(2, 2));
    BOOST_TEST_REQUIRE(run_until(f.ctx, [&] { return lc.t[event_kind::oom_kill] == 2u; }));
    BOOST_TEST(!lc.last_error);
}

BOOST_FIXTURE_TEST_CASE(a_failing_inotify_read_fails_every_watcher_once, fixture) {
    inotify_failure_case(detail::fault::inotify_read_errno, *this);
}

BOOST_FIXTURE_TEST_CASE(a_failing_inotify_wait_fails_every_watcher_once, fixture) {
    inotify_failure_case(detail::fault::inotify_wait_errno, *this);
}

BOOST_AUTO_TEST_SUITE_END()
