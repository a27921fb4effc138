// The v2 watcher's logic on fake cgroup folders (tmpfs): baseline, deltas, coalescing,
// removal through the parent, overflow resync, cancellation, subscribers, lifetimes.
// The same behaviour on a real cgroup v2 kernel is proven by the kernel tests in a VM.
#include "fault_support.hpp"
#include "test_support.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

struct fixture {
    asio::io_context ctx;
    fake_v2_tree tree;
};

} // namespace

BOOST_AUTO_TEST_SUITE(v2_watcher_fake)

BOOST_FIXTURE_TEST_CASE(kills_before_the_watcher_give_no_event, fixture) {
    auto cg = tree.make_cgroup("a", with(7, 5));
    watcher w(ctx, cg, fake_v2_options());
    BOOST_TEST(w.version() == cgroup_version::v2);
    BOOST_TEST(w.counters().oom_kill == 5u);
    event_log c(w);
    c.arm();
    // A change of another counter alone gives nothing; the next kill gives exactly one.
    auto k = with(7, 5);
    k.high = 3;
    fake_v2_tree::write_events(cg, k);
    k.oom_kill = 6;
    fake_v2_tree::write_events(cg, k);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.t.events >= 1; }));
    BOOST_TEST(c.events[0].kind == event_kind::oom_kill);
    BOOST_TEST(c.events[0].count == 1u);
    BOOST_TEST(c.events[0].counters.oom_kill == 6u);
    BOOST_TEST(c.events[0].cgroup == cg);
    BOOST_TEST(c.t[event_kind::oom] == 0u);
    BOOST_TEST(c.t[event_kind::high] == 0u);  // not asked for
}

BOOST_FIXTURE_TEST_CASE(a_burst_is_counted_exactly, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    event_log c(w);
    c.arm();
    // Many writes before the watcher runs at all: inotify merges them, deltas do not.
    for (std::uint64_t i = 1; i <= 50; ++i) fake_v2_tree::write_events(cg, with(i, i, i / 10));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.t[event_kind::oom_kill] >= 50; }));
    run_ready(ctx);
    BOOST_TEST(c.t[event_kind::oom] == 50u);
    BOOST_TEST(c.t[event_kind::oom_kill] == 50u);
    BOOST_TEST(c.t[event_kind::oom_group_kill] == 5u);
    BOOST_TEST(c.events.size() < 150u);  // coalesced, not one per write
}

BOOST_FIXTURE_TEST_CASE(opted_in_kinds_and_local_counters, fixture) {
    auto cg = tree.make_cgroup("a");
    auto o = fake_v2_options(kind_set{event_kind::high, event_kind::max});
    o.counters = watch_options::scope::local;
    watcher w(ctx, cg, o);
    event_log c(w);
    c.arm();
    memory_counters m;
    m.high = 4;
    m.max = 2;
    m.oom_kill = 9;
    fake_v2_tree::write_events(cg, m, "memory.events");        // not the file watched
    m.oom_kill = 0;
    fake_v2_tree::write_events(cg, m, "memory.events.local");  // the file watched
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.t[event_kind::high] == 4 && c.t[event_kind::max] == 2; }));
    run_ready(ctx);
    BOOST_TEST(c.t[event_kind::oom_kill] == 0u);
}

BOOST_FIXTURE_TEST_CASE(removal_is_seen_through_the_parent_directory, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());  // liveness timer: 1 hour
    event_log c(w);
    c.arm();
    fake_v2_tree::write_events(cg, with(1, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.t[event_kind::oom_kill] == 1; }));
    fake_v2_tree::remove_cgroup(cg);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.t[event_kind::removed] == 1; }, 5s));
    BOOST_TEST(c.events.back().kind == event_kind::removed);
    BOOST_TEST(c.events.back().count == 1u);
    // After the terminal event: cgroup_removed, every time.
    error_code ec;
    bool done = false;
    w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == error::cgroup_removed);
}

BOOST_FIXTURE_TEST_CASE(a_namesake_sibling_does_not_end_the_watch, fixture) {
    auto a = tree.make_cgroup("a");
    auto b = tree.make_cgroup("b");
    watcher wa(ctx, a, fake_v2_options());
    watcher wb(ctx, b, fake_v2_options());
    event_log ca(wa), cb(wb);
    ca.arm();
    cb.arm();
    fake_v2_tree::remove_cgroup(b);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return cb.t[event_kind::removed] == 1; }));
    fake_v2_tree::write_events(a, with(0, 2));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return ca.t[event_kind::oom_kill] == 2; }));
    BOOST_TEST(ca.t[event_kind::removed] == 0u);
}

BOOST_FIXTURE_TEST_CASE(one_inotify_instance_for_many_cgroups, fixture) {
    std::vector<std::filesystem::path> dirs;
    for (int i = 0; i < 300; ++i) dirs.push_back(tree.make_cgroup("cg" + std::to_string(i)));
    std::vector<watcher> ws;
    ws.emplace_back(ctx, dirs[0], fake_v2_options());
    auto fds_with_one = open_fd_count();
    for (std::size_t i = 1; i < dirs.size(); ++i) ws.emplace_back(ctx, dirs[i], fake_v2_options());
    BOOST_TEST(open_fd_count() == fds_with_one);

    // Kills in a subset: exactly those report, with exact counts.
    std::vector<tally> got(dirs.size());
    std::vector<subscription> subs;
    for (std::size_t i = 0; i < ws.size(); ++i)
        subs.push_back(ws[i].subscribe([&got, i](const oom_event& ev) { got[i].add(ev); }));
    std::uint64_t expected_total = 0;
    for (std::size_t i = 0; i < dirs.size(); i += 7) {
        fake_v2_tree::write_events(dirs[i], with(i % 3 + 1, i % 3 + 1));
        expected_total += i % 3 + 1;
    }
    auto total = [&] {
        std::uint64_t s = 0;
        for (auto& t : got) s += t[event_kind::oom_kill];
        return s;
    };
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return total() >= expected_total; }));
    run_ready(ctx);
    for (std::size_t i = 0; i < dirs.size(); ++i) {
        BOOST_TEST_CONTEXT("cgroup " << i) {
            std::uint64_t want = i % 7 == 0 ? i % 3 + 1 : 0;
            BOOST_TEST(got[i][event_kind::oom_kill] == want);
            BOOST_TEST(got[i][event_kind::oom] == want);
        }
    }
}

BOOST_AUTO_TEST_CASE(queue_overflow_resyncs_every_cgroup,
                     *boost::unit_test::precondition(root_precondition{"shrinking max_queued_events"})) {
    OOMWATCH_REQUIRE_ROOT("shrinking max_queued_events");
    // A queue of 16 events; the instance takes the limit when it is created, so the
    // io_context (and its inotify instance) is made after the change.
    sysctl_guard queue("/proc/sys/fs/inotify/max_queued_events", 16);

    fake_v2_tree tree;
    asio::io_context ctx;
    std::vector<std::filesystem::path> dirs;
    for (int i = 0; i < 40; ++i) dirs.push_back(tree.make_cgroup("cg" + std::to_string(i)));
    std::vector<watcher> ws;
    for (auto& d : dirs) ws.emplace_back(ctx, d, fake_v2_options());
    queue.restore();  // the instance keeps its small queue

    std::vector<tally> got(dirs.size());
    std::vector<subscription> subs;
    for (std::size_t i = 0; i < ws.size(); ++i)
        subs.push_back(ws[i].subscribe([&got, i](const oom_event& ev) { got[i].add(ev); }));
    // 40 cgroups x 2 writes x 2 events each (truncate, write) overflow a queue of 16.
    for (int round = 1; round <= 2; ++round)
        for (auto& d : dirs) fake_v2_tree::write_events(d, with(0, static_cast<std::uint64_t>(round)));
    auto all_done = [&] {
        for (auto& t : got)
            if (t[event_kind::oom_kill] < 2) return false;
        return true;
    };
    BOOST_TEST_REQUIRE(run_until(ctx, all_done));
    run_ready(ctx);
    for (std::size_t i = 0; i < got.size(); ++i)
        BOOST_TEST_CONTEXT("cgroup " << i) { BOOST_TEST(got[i][event_kind::oom_kill] == 2u); }
}

BOOST_FIXTURE_TEST_CASE(per_operation_cancellation_loses_nothing, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    asio::cancellation_signal sig;
    error_code ec;
    bool done = false;
    w.async_next_event(asio::bind_cancellation_slot(sig.slot(), [&](error_code e, oom_event) { ec = e, done = true; }));
    run_ready(ctx);
    BOOST_TEST(!done);
    sig.emit(asio::cancellation_type::terminal);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == asio::error::operation_aborted);

    // What happens while nobody waits is kept for the next wait.
    fake_v2_tree::write_events(cg, with(1, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return w.counters().oom_kill == 1; }));
    event_log c(w);
    c.arm();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.t[event_kind::oom_kill] == 1; }));
    BOOST_TEST(c.t[event_kind::oom] == 1u);

    // A stale emit after completion reaches nobody.
    sig.emit(asio::cancellation_type::terminal);
    fake_v2_tree::write_events(cg, with(2, 2));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.t[event_kind::oom_kill] == 2; }));
    BOOST_TEST(!c.last_error);
}

BOOST_FIXTURE_TEST_CASE(awaitable_operators_and_cancel, fixture) {
    using namespace asio::experimental::awaitable_operators;
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    int timeouts = 0;
    std::uint64_t kills = 0;
    bool finished = false;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
            asio::steady_timer t(ctx);
            t.expires_after(10ms);
            auto r = co_await (w.next_event() || t.async_wait(asio::use_awaitable));
            if (r.index() == 1) ++timeouts;  // nothing happened yet: the timer won
            fake_v2_tree::write_events(cg, with(3, 3));
            auto ev = co_await w.next_event();  // the race above lost no event
            kills += ev.kind == event_kind::oom ? 0 : ev.count;
            ev = co_await w.next_event();
            kills += ev.kind == event_kind::oom_kill ? ev.count : 0;
            finished = true;
        },
        asio::detached);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return finished; }));
    BOOST_TEST(timeouts == 1);
    BOOST_TEST(kills == 3u);

    // cancel() aborts the pending wait and keeps watching.
    error_code ec;
    bool done = false;
    w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
    w.cancel();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == asio::error::operation_aborted);
    BOOST_TEST(w.is_open());
}

BOOST_FIXTURE_TEST_CASE(a_second_concurrent_wait_is_refused, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    error_code e1, e2;
    int done = 0;
    w.async_next_event([&](error_code e, oom_event) { e1 = e, ++done; });
    w.async_next_event([&](error_code e, oom_event) { e2 = e, ++done; });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done == 1; }));
    BOOST_TEST(e2 == error::operation_in_progress);
    fake_v2_tree::write_events(cg, with(1, 0));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done == 2; }));
    BOOST_TEST(!e1);
}

BOOST_FIXTURE_TEST_CASE(completion_is_never_inline, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    fake_v2_tree::write_events(cg, with(1, 0));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return w.counters().oom == 1; }));
    bool called = false;
    w.async_next_event([&](error_code, oom_event) { called = true; });
    BOOST_TEST(!called);  // an event was waiting, yet the handler was posted
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return called; }));
}

BOOST_FIXTURE_TEST_CASE(destruction_and_close_abort_pending_waits, fixture) {
    auto cg = tree.make_cgroup("a");
    error_code ec;
    bool done = false;
    {
        watcher w(ctx, cg, fake_v2_options());
        w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
    }
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == asio::error::operation_aborted);

    watcher w(ctx, cg, fake_v2_options());
    int delivered = 0;
    auto sub = w.subscribe([&](const oom_event&) { ++delivered; });
    done = false;
    w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
    w.close();
    BOOST_TEST(!w.is_open());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == asio::error::operation_aborted);
    fake_v2_tree::write_events(cg, with(1, 1));
    done = false;
    w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == error::watcher_closed);
    BOOST_TEST(delivered == 0);
    // With every watcher gone, the context runs out of work: nothing is left pending.
    ctx.restart();
    w = watcher(ctx, cg, fake_v2_options());
    w.close();
    auto ran = ctx.run_for(2s);
    BOOST_TEST(ctx.stopped(), "the io_context still had work after all watchers closed (" << ran << " handlers ran)");
}

BOOST_FIXTURE_TEST_CASE(subscribers_on_strands_get_exact_counts, fixture) {
    auto cg = tree.make_cgroup("a");
    asio::thread_pool pool(2);
    watcher w(pool.get_executor(), cg, fake_v2_options());
    constexpr int n_subs = 4;
    std::mutex m;
    tally t[n_subs];
    std::vector<subscription> subs;
    for (int i = 0; i < n_subs; ++i) {
        auto strand = asio::make_strand(pool.get_executor());
        subs.push_back(w.subscribe(strand, [&m, &t, i](const oom_event& ev) {
            std::lock_guard lk(m);
            t[i].add(ev);
        }));
    }
    // Subscriber 3 is stuck (its strand is blocked) while everything happens.
    std::promise<void> release;
    auto blocked = release.get_future().share();
    auto stuck = asio::make_strand(pool.get_executor());
    subs[3] = w.subscribe(stuck, [&m, &t](const oom_event& ev) {
        std::lock_guard lk(m);
        t[3].add(ev);
    });
    asio::post(stuck, [blocked] { blocked.wait(); });

    for (std::uint64_t i = 1; i <= 200; ++i) fake_v2_tree::write_events(cg, with(i, i));
    auto reached = [&](int i, std::uint64_t n) {
        std::lock_guard lk(m);
        return t[i][event_kind::oom_kill] >= n;
    };
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!(reached(0, 200) && reached(1, 200) && reached(2, 200)) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
    release.set_value();
    while (!reached(3, 200) && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    w.close();
    pool.join();
    for (int i = 0; i < n_subs; ++i)
        BOOST_TEST_CONTEXT("subscriber " << i) {
            BOOST_TEST(t[i][event_kind::oom_kill] == 200u);
            BOOST_TEST(t[i][event_kind::oom] == 200u);
        }
    // The stuck one got its backlog coalesced: one event per kind.
    BOOST_TEST(t[3].events == 2u);
}

BOOST_FIXTURE_TEST_CASE(a_reset_subscription_gets_nothing_more, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    int a = 0, b = 0;
    auto sa = w.subscribe([&](const oom_event&) { ++a; });
    auto sb = w.subscribe([&](const oom_event& ev) {
        ++b;
        (void)ev;
    });
    fake_v2_tree::write_events(cg, with(0, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return a == 1 && b == 1; }));
    fake_v2_tree::write_events(cg, with(0, 2));
    // The change is read and posted, but sa is reset before its delivery runs.
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return w.counters().oom_kill == 2; }));
    sa.reset();
    BOOST_TEST(!sa.active());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return b == 2; }));
    run_ready(ctx);
    BOOST_TEST(a == 1);
}

BOOST_FIXTURE_TEST_CASE(the_removed_event_ends_subscriptions, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    std::vector<event_kind> kinds;
    auto s = w.subscribe([&](const oom_event& ev) { kinds.push_back(ev.kind); });
    fake_v2_tree::write_events(cg, with(1, 1));
    fake_v2_tree::remove_cgroup(cg);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return !kinds.empty() && kinds.back() == event_kind::removed; }));
    BOOST_TEST(!s.active());
    // A subscription made after the removal is told at once.
    bool told = false;
    auto late = w.subscribe([&](const oom_event& ev) { told = ev.kind == event_kind::removed; });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return told; }));
}

BOOST_FIXTURE_TEST_CASE(an_exception_in_a_subscriber_stops_nothing, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    int thrower_calls = 0, other = 0;
    auto s1 = w.subscribe([&](const oom_event&) {
        ++thrower_calls;
        throw std::runtime_error("subscriber failed");
    });
    auto s2 = w.subscribe([&](const oom_event& ev) { other += static_cast<int>(ev.count); });
    fake_v2_tree::write_events(cg, with(1, 1));
    int thrown = 0;
    auto step = [&] {
        try {
            return run_until(ctx, [&] { return other == 2 && thrower_calls == 2; }, 5s);
        } catch (const std::runtime_error&) {
            ++thrown;
            return false;
        }
    };
    for (int i = 0; i < 5 && !step(); ++i) {}
    BOOST_TEST(thrown == 2);  // both of its events reached it, each time through run()
    BOOST_TEST(other == 2);
    fake_v2_tree::write_events(cg, with(1, 2));
    for (int i = 0; i < 5 && !(other == 3); ++i) {
        try {
            run_until(ctx, [&] { return other == 3; }, 2s);
        } catch (const std::runtime_error&) {
        }
    }
    BOOST_TEST(other == 3);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(watcher_errors)

BOOST_AUTO_TEST_CASE(bad_paths_give_clear_errors) {
    asio::io_context ctx;
    fake_v2_tree tree;
    error_code ec;

    watcher w1(ctx, tree.parent() / "missing", fake_v2_options(), ec);
    BOOST_TEST(ec == boost::system::errc::no_such_file_or_directory);
    BOOST_TEST(!w1.is_open());

    std::ofstream(tree.parent() / "file") << "x";
    watcher w2(ctx, tree.parent() / "file", fake_v2_options(), ec);
    BOOST_TEST(ec == error::not_a_cgroup);

    watcher w3(ctx, tree.parent(), fake_v2_options(), ec);  // a directory without memory.events
    BOOST_TEST(ec);
    BOOST_TEST(!w3.is_open());

    // The throwing form names the path.
    try {
        watcher w4(ctx, tree.parent() / "missing", fake_v2_options());
        BOOST_FAIL("no exception");
    } catch (const cgroup_error& e) {
        BOOST_TEST(e.code() == boost::system::errc::no_such_file_or_directory);
        BOOST_TEST(e.path() == tree.parent() / "missing");
        BOOST_TEST(std::string(e.what()).find((tree.parent() / "missing").string()) != std::string::npos);
    }

    // A closed watcher answers every call with watcher_closed, on the executor.
    bool done = false;
    w1.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
    BOOST_TEST(!done);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == error::watcher_closed);
}

BOOST_AUTO_TEST_CASE(no_fd_leaks_over_many_watchers) {
    asio::io_context ctx;
    fake_v2_tree tree;
    auto cg = tree.make_cgroup("a");
    { watcher warm(ctx, cg, fake_v2_options()); }  // the shared instance now exists
    auto before = open_fd_count();
    for (int i = 0; i < 1000; ++i) {
        auto d = tree.make_cgroup("c" + std::to_string(i));
        watcher w(ctx, d, fake_v2_options());
        fake_v2_tree::remove_cgroup(d);
    }
    run_ready(ctx);
    BOOST_TEST(open_fd_count() == before);
}

BOOST_AUTO_TEST_SUITE_END()

// watch_options::resume_from: what happened between an earlier watch and this one is
// reported once, first, against the baseline read at start.
BOOST_AUTO_TEST_SUITE(v2_resume_fake)

namespace {
watch_options resumed(const memory_counters& saved) {
    auto o = fake_v2_options();
    o.resume_from = saved;
    return o;
}
// Runs until `n` oom_kill counts came, then a little more: nothing else may come.
void settle(asio::io_context& ctx, event_log& c, std::uint64_t n) {
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return c.t[event_kind::oom_kill] >= n; }));
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(50));
}
} // namespace

BOOST_FIXTURE_TEST_CASE(the_growth_since_the_saved_counters_is_reported_once_then_live_events, fixture) {
    auto cg = tree.make_cgroup("a", with(7, 5));
    watcher w(ctx, cg, resumed(with(4, 2)));
    BOOST_TEST(w.counters().oom_kill == 5u);
    event_log c(w);
    c.arm();
    settle(ctx, c, 3);
    BOOST_TEST(c.t[event_kind::oom] == 3u);
    BOOST_TEST(c.t[event_kind::oom_kill] == 3u);
    for (const auto& ev : c.events) {
        BOOST_TEST(ev.counters.oom_kill == 5u);
        if (ev.kind == event_kind::oom_kill) BOOST_TEST(ev.unattributed == ev.count);  // no records replayed
    }
    fake_v2_tree::write_events(cg, with(8, 6));
    settle(ctx, c, 4);
    BOOST_TEST(c.t[event_kind::oom_kill] == 4u);
    BOOST_TEST(c.t[event_kind::oom] == 4u);
}

BOOST_FIXTURE_TEST_CASE(counters_below_the_saved_ones_are_a_namesake_reported_from_zero, fixture) {
    auto cg = tree.make_cgroup("a", with(2, 1));
    watcher w(ctx, cg, resumed(with(9, 9)));
    event_log c(w);
    c.arm();
    settle(ctx, c, 1);
    BOOST_TEST(c.t[event_kind::oom] == 2u);
    BOOST_TEST(c.t[event_kind::oom_kill] == 1u);
}

BOOST_FIXTURE_TEST_CASE(nothing_is_reported_when_nothing_happened_meanwhile, fixture) {
    auto cg = tree.make_cgroup("a", with(3, 3));
    auto saved = with(3, 3);
    saved.high = 1;  // a kind not asked for, lower than now: growth, not a namesake
    auto now = with(3, 3);
    now.high = 2;
    fake_v2_tree::write_events(cg, now);
    watcher w(ctx, cg, resumed(saved));
    event_log c(w);
    c.arm();
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(50));
    BOOST_TEST(c.events.empty());
    now.oom_kill = 4;
    fake_v2_tree::write_events(cg, now);
    settle(ctx, c, 1);
    BOOST_TEST(c.t[event_kind::oom_kill] == 1u);
    BOOST_TEST(c.events.size() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
