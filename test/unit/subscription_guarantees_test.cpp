// What the watcher promises under threads and churn: reset() means the handler is
// neither running nor invoked again; a pending wait keeps its handler's executor busy;
// subscribe/reset churn does not grow memory; a subscription sees events from its
// subscribe() on; liveness_interval is validated and the shared timer follows the
// watchers still open.
#include "test_support.hpp"

#include "inotify_service.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/test/unit_test.hpp>

#include <malloc.h>

#include <atomic>
#include <future>
#include <thread>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;
using namespace std::chrono_literals;

namespace {

struct fixture {
    asio::io_context ctx;
    fake_v2_tree tree;
};

// Waits (bounded) for a flag set by another thread.
bool wait_for_flag(const std::atomic<bool>& f, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!f.load()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::yield();
    }
    return true;
}

} // namespace

BOOST_AUTO_TEST_SUITE(subscription_guarantees)

// reset() from another thread while the handler runs: it returns only once the handler
// has returned, and no invocation starts after it. Before the fix reset() returned at
// once, with the handler still running (and one already taken could start later).
BOOST_FIXTURE_TEST_CASE(reset_waits_for_a_running_handler_and_stops_the_next, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    asio::thread_pool pool(2);
    std::atomic<bool> entered{false}, release{false};
    std::atomic<int> running{0}, calls{0};
    auto sub = w.subscribe(pool.get_executor(), [&](const oom_event&) {
        ++running;
        ++calls;
        entered = true;
        // Stays inside until told (bounded): reset() happens meanwhile.
        wait_for_flag(release, 5s);
        std::this_thread::sleep_for(20ms);  // so that a reset() that does not wait returns first
        --running;
    });
    fake_v2_tree::write_events(cg, with(1, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return entered.load(); }));
    // More events queue up for it while it runs.
    fake_v2_tree::write_events(cg, with(2, 2));
    run_until(ctx, [&] { return w.counters().oom_kill == 2u; });
    std::thread resetter([&] {
        release = true;
        sub.reset();
        BOOST_TEST(running.load() == 0, "reset() returned while the handler was still running");
    });
    resetter.join();
    const int after_reset = calls.load();
    fake_v2_tree::write_events(cg, with(3, 3));
    run_until(ctx, [&] { return w.counters().oom_kill == 3u; });
    pool.join();
    BOOST_TEST(calls.load() == after_reset, "the handler ran after reset() returned");
    BOOST_TEST(after_reset == 1);
}

// reset() from within the handler returns at once (it must not wait for itself), and
// nothing more is delivered.
BOOST_FIXTURE_TEST_CASE(reset_from_within_the_handler_does_not_deadlock, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    int calls = 0;
    subscription sub;
    sub = w.subscribe([&](const oom_event&) {
        ++calls;
        sub.reset();
    });
    fake_v2_tree::write_events(cg, with(1, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return calls >= 1; }));
    fake_v2_tree::write_events(cg, with(2, 2));
    run_until(ctx, [&] { return w.counters().oom_kill == 2u; });
    run_ready(ctx);
    BOOST_TEST(calls == 1);
    BOOST_TEST(!sub.active());
}

// A wait whose handler is bound to a strand of a second io_context keeps that context's
// run() from returning until the handler ran, there.
BOOST_FIXTURE_TEST_CASE(a_pending_wait_keeps_its_handlers_executor_busy, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    asio::io_context other;
    auto strand = asio::make_strand(other);
    std::atomic<bool> ran{false}, on_strand{false};
    w.async_next_event(asio::bind_executor(strand, [&](error_code ec, oom_event ev) {
        on_strand = strand.running_in_this_thread();
        ran = !ec && ev.kind == event_kind::oom_kill;
    }));
    auto runner = std::async(std::launch::async, [&] { other.run(); });
    // Without tracked work, run() returns at once: nothing else is queued on `other`.
    BOOST_TEST((runner.wait_for(200ms) == std::future_status::timeout), "run() returned while the wait was pending");
    fake_v2_tree::write_events(cg, with(0, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return runner.wait_for(0s) == std::future_status::ready; }),
                       "the other context never ran out of work");
    BOOST_TEST(ran.load());
    BOOST_TEST(on_strand.load());
}

// 100,000 subscribe/reset cycles on a quiet cgroup: the heap stays where it was.
// Before, every reset subscription stayed in the watcher's list (with its memory) until
// an event came.
BOOST_FIXTURE_TEST_CASE(subscribe_reset_churn_does_not_grow_memory, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    auto warm = w.subscribe([](const oom_event&) {});
    warm.reset();
    const auto before = ::mallinfo2().uordblks;
    for (int i = 0; i < 100'000; ++i) {
        auto s = w.subscribe([](const oom_event&) {});
        s.reset();
    }
    const auto after = ::mallinfo2().uordblks;
    BOOST_TEST(after <= before + 64 * 1024, "heap grew by " << (after - before) << " bytes");
    // And many live subscriptions that then go: the list shrinks back.
    {
        std::vector<subscription> many;
        for (int i = 0; i < 10'000; ++i) many.push_back(w.subscribe([](const oom_event&) {}));
    }
    const auto after_crowd = ::mallinfo2().uordblks;
    BOOST_TEST(after_crowd <= before + 64 * 1024, "heap grew by " << (after_crowd - before) << " bytes");
    // Still delivers.
    int calls = 0;
    auto s = w.subscribe([&](const oom_event&) { ++calls; });
    fake_v2_tree::write_events(cg, with(1, 1));
    BOOST_TEST(run_until(ctx, [&] { return calls == 2; }));
}

// What a subscription sees of events between the watcher's construction and its
// subscribe(): nothing (they stay for async_next_event); everything after.
BOOST_FIXTURE_TEST_CASE(a_subscription_sees_events_from_its_subscribe_on, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    fake_v2_tree::write_events(cg, with(1, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return w.counters().oom_kill == 1u; }));
    tally sub_seen;
    auto sub = w.subscribe([&](const oom_event& ev) { sub_seen.add(ev); });
    fake_v2_tree::write_events(cg, with(3, 3));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return sub_seen[event_kind::oom_kill] >= 2u; }));
    run_ready(ctx);
    BOOST_TEST(sub_seen[event_kind::oom_kill] == 2u);
    BOOST_TEST(sub_seen[event_kind::oom] == 2u);
    // async_next_event has all of it, the earlier events included.
    event_log log(w);
    log.arm();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 3u; }));
    BOOST_TEST(log.t[event_kind::oom_kill] == 3u);
    BOOST_TEST(log.t[event_kind::oom] == 3u);
}

BOOST_FIXTURE_TEST_CASE(liveness_interval_must_be_positive, fixture) {
    auto cg = tree.make_cgroup("a");
    for (auto bad : {std::chrono::milliseconds(0), std::chrono::milliseconds(-5)}) {
        auto o = fake_v2_options();
        o.liveness_interval = bad;
        error_code ec;
        watcher w(ctx, cg, o, ec);
        BOOST_TEST(ec == boost::system::errc::invalid_argument);
        BOOST_TEST(!w.is_open());
        BOOST_CHECK_THROW(watcher(ctx, cg, o), cgroup_error);
    }
}

// The shared timer follows the shortest interval of the watchers still open.
BOOST_FIXTURE_TEST_CASE(the_liveness_timer_follows_the_open_watchers, fixture) {
    auto a = tree.make_cgroup("a");
    auto b = tree.make_cgroup("b");
    auto& svc = asio::use_service<detail::inotify_service>(ctx);
    auto slow = fake_v2_options();
    slow.liveness_interval = std::chrono::hours(1);
    auto fast = fake_v2_options();
    fast.liveness_interval = std::chrono::milliseconds(50);
    watcher ws(ctx, a, slow);
    BOOST_TEST(svc.liveness_interval() == std::chrono::milliseconds(std::chrono::hours(1)));
    {
        watcher wf(ctx, b, fast);
        BOOST_TEST(svc.liveness_interval() == std::chrono::milliseconds(50));
        run_ready(ctx);
    }
    BOOST_TEST(svc.liveness_interval() == std::chrono::milliseconds(std::chrono::hours(1)));
    ws.close();
    BOOST_TEST(svc.liveness_interval() == std::chrono::milliseconds::max());
}

BOOST_AUTO_TEST_SUITE_END()
