// Pressure subscriptions (issue 12) without a kernel: the pressure watcher's state driven
// directly, as its sources drive it. The delivery machinery is the OOM watchers' (see
// subscription_guarantees_test.cpp); these check what the pressure state adds: per-trigger
// coalescing per subscriber, independence, the terminal event, and close/reset.
#include "test_support.hpp"

#include "pressure_state.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::detail;
using namespace oomwatch::test;
using namespace std::chrono_literals;

namespace {

struct state_fixture {
    asio::io_context ctx;
    // Two PSI triggers.
    std::shared_ptr<pressure_state> st =
        std::make_shared<pressure_state>(ctx.get_executor(), "/sys/fs/cgroup/a", std::vector<std::optional<pressure_level>>(2));
    ~state_fixture() { st->close(); }

    std::shared_ptr<pressure_subscriber> collect(std::vector<pressure_event>& out) {
        return st->subscribe(ctx.get_executor(), [&out](const pressure_event& ev) { out.push_back(ev); });
    }
};

pressure_averages some_avg10(double v) {
    pressure_averages a;
    a.some.avg10 = v;
    return a;
}

} // namespace

BOOST_AUTO_TEST_SUITE(pressure_subscription)

BOOST_FIXTURE_TEST_CASE(coalesces_per_trigger_in_firing_order_then_removed, state_fixture) {
    std::vector<pressure_event> got;
    auto sub = collect(got);
    // Nothing runs meanwhile: one slot per trigger, counts add up, newest averages kept.
    st->publish(1, 1, some_avg10(1));
    st->publish(0, 2, std::nullopt);
    st->publish(1, 3, some_avg10(5));
    st->publish_end({}, "/sys/fs/cgroup/a");
    st->publish(0, 1, std::nullopt);  // after the end: nothing
    run_ready(ctx);
    BOOST_TEST_REQUIRE(got.size() == 3u);
    BOOST_TEST(got[0].trigger == 1u);
    BOOST_TEST(got[0].count == 4u);
    BOOST_TEST_REQUIRE(got[0].averages.has_value());
    BOOST_TEST(got[0].averages->some.avg10 == 5.0);
    BOOST_TEST(got[1].trigger == 0u);
    BOOST_TEST(got[1].count == 2u);
    BOOST_TEST(!got[1].averages.has_value());
    BOOST_TEST((got[2].kind == pressure_kind::removed));
    BOOST_TEST(got[2].cgroup == "/sys/fs/cgroup/a");
    BOOST_TEST(!sub->active(), "removed is the last event");
}

BOOST_FIXTURE_TEST_CASE(each_subscriber_and_the_waiter_are_independent, state_fixture) {
    std::vector<pressure_event> a, b;
    auto sa = collect(a);
    st->publish(0, 1, std::nullopt);
    run_ready(ctx);
    // b sees events from its subscribe() on only.
    auto sb = collect(b);
    st->publish(0, 1, std::nullopt);
    run_ready(ctx);
    BOOST_TEST(a.size() == 2u);
    BOOST_TEST(b.size() == 1u);
    // async_next_event has its own backlog: both wake-ups, coalesced.
    std::optional<pressure_event> waited;
    st->async_next([&](error_code ec, pressure_event ev) {
        BOOST_TEST(!ec);
        waited = ev;
    });
    run_ready(ctx);
    BOOST_TEST_REQUIRE(waited.has_value());
    BOOST_TEST(waited->count == 2u);
    // A reset subscriber does not hold the others back.
    sa->deactivate(true);
    st->publish(1, 1, std::nullopt);
    run_ready(ctx);
    BOOST_TEST(a.size() == 2u);
    BOOST_TEST(b.size() == 2u);
}

BOOST_FIXTURE_TEST_CASE(delivered_on_the_given_executor, state_fixture) {
    asio::thread_pool pool(2);
    auto strand = asio::make_strand(pool);
    std::atomic<int> on_strand{0}, calls{0};
    auto sub = st->subscribe(strand, [&](const pressure_event&) {
        ++calls;
        if (strand.running_in_this_thread()) ++on_strand;
    });
    for (int i = 0; i < 50; ++i) st->publish(static_cast<std::size_t>(i % 2), 1, std::nullopt);
    st->publish_end(make_error_code(boost::system::errc::io_error), "/sys/fs/cgroup/a/memory.pressure");
    pool.join();
    BOOST_TEST(calls.load() >= 2);
    BOOST_TEST(on_strand.load() == calls.load());
    BOOST_TEST(!sub->active(), "failed is the last event");
}

BOOST_FIXTURE_TEST_CASE(no_delivery_after_reset_or_close_and_reset_waits, state_fixture) {
    asio::thread_pool pool(2);
    std::atomic<bool> entered{false}, release{false};
    std::atomic<int> running{0}, calls{0};
    auto sub = st->subscribe(pool.get_executor(), [&](const pressure_event&) {
        ++running;
        ++calls;
        entered = true;
        while (!release.load()) std::this_thread::yield();
        std::this_thread::sleep_for(20ms);  // so that a reset that does not wait returns first
        --running;
    });
    st->publish(0, 1, std::nullopt);
    while (!entered.load()) std::this_thread::yield();
    st->publish(1, 1, std::nullopt);  // queued for it while it runs
    release = true;
    sub->deactivate(true);
    BOOST_TEST(running.load() == 0, "reset returned while the handler was running");
    st->publish(0, 1, std::nullopt);
    pool.join();
    BOOST_TEST(calls.load() == 1);

    // close(): nothing more for anyone, and a later subscription is inactive at once.
    std::vector<pressure_event> got;
    auto other = collect(got);
    st->publish(0, 1, std::nullopt);
    st->close();
    run_ready(ctx);
    BOOST_TEST(got.empty());
    BOOST_TEST(!other->active());
    BOOST_TEST(!collect(got)->active());
}

BOOST_FIXTURE_TEST_CASE(subscribed_after_the_end_gets_the_end_alone, state_fixture) {
    st->publish(0, 1, std::nullopt);
    st->publish_end({}, "/sys/fs/cgroup/a");
    std::vector<pressure_event> got;
    auto sub = collect(got);
    run_ready(ctx);
    BOOST_TEST_REQUIRE(got.size() == 1u);
    BOOST_TEST((got[0].kind == pressure_kind::removed));
}

BOOST_FIXTURE_TEST_CASE(reset_churn_keeps_the_list_small, state_fixture) {
    for (int i = 0; i < 10'000; ++i) {
        auto s = st->subscribe(ctx.get_executor(), [](const pressure_event&) {});
        s->deactivate(true);
        s->released();
    }
    BOOST_TEST(st->subscriber_slots() <= 16u);
}

BOOST_AUTO_TEST_SUITE_END()
