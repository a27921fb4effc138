// The system watcher's pure parts (issue 10): squaring kill records with /proc/vmstat's
// count (kill_ledger) and reading that count. The real kernel's side is in
// test/kernel/system_watcher_test.cpp.
#include "detail/parse.hpp"
#include "system_watcher.hpp"

#include <oomwatch/system_watcher.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

using namespace oomwatch;
using detail::kill_ledger;

BOOST_AUTO_TEST_SUITE(system_watcher_unit)

BOOST_AUTO_TEST_CASE(records_of_counted_kills_are_reported) {
    kill_ledger l(100);
    BOOST_TEST(l.exact());
    BOOST_TEST(l.needs_count());  // nothing counted yet
    l.update(102);
    BOOST_TEST(!l.needs_count());
    BOOST_TEST(l.on_record());
    BOOST_TEST(l.on_record());
    BOOST_TEST(l.needs_count());
    BOOST_TEST(l.on_check() == 0u);  // none missing
    BOOST_TEST(l.reported() == 2u);
    BOOST_TEST(l.unattributed() == 0u);
}

// The start: a kill counted in the base whose record is read after it is not reported
// (nor does it take a later kill's place while the counter shows none).
BOOST_AUTO_TEST_CASE(a_record_of_a_kill_before_the_start_is_dropped) {
    kill_ledger l(7);
    l.update(7);
    BOOST_TEST(!l.on_record());
    BOOST_TEST(l.dropped() == 1u);
    BOOST_TEST(l.reported() == 0u);
    l.update(8);
    BOOST_TEST(l.on_record());
    BOOST_TEST(l.reported() == 1u);
}

// A lost record: its kill is reported without it, but only once a whole check interval
// passed (the record follows the count by microseconds, its reading may be late).
BOOST_AUTO_TEST_CASE(a_kill_without_its_record_is_reported_after_one_interval) {
    kill_ledger l(0);
    l.update(3);
    BOOST_TEST(l.on_record());      // one record read
    BOOST_TEST(l.on_check() == 0u); // two missing: wait one interval
    BOOST_TEST(l.on_record());      // one of them came
    l.update(3);
    BOOST_TEST(l.on_check() == 1u); // the other did not
    BOOST_TEST(l.reported() == 3u);
    BOOST_TEST(l.unattributed() == 1u);
    // Its record after all, too late: dropped, never a kill twice.
    BOOST_TEST(!l.on_record());
    BOOST_TEST(l.reported() == 3u);
}

// Kills that come between checks are not reported early: only what was missing at the
// previous check too.
BOOST_AUTO_TEST_CASE(only_a_deficit_seen_at_two_checks_is_reported) {
    kill_ledger l(10);
    l.update(11);
    BOOST_TEST(l.on_check() == 0u);  // 1 missing, first seen
    l.update(15);
    BOOST_TEST(l.on_check() == 1u);  // 5 missing: 1 of them overdue
    for (int i = 0; i < 4; ++i) BOOST_TEST(l.on_record());
    BOOST_TEST(l.on_check() == 0u);
    BOOST_TEST(l.reported() == 5u);
}

BOOST_AUTO_TEST_CASE(a_counter_that_goes_down_is_ignored) {
    kill_ledger l(5);
    l.update(6);
    l.update(3);
    BOOST_TEST(l.count() == 6u);
    BOOST_TEST(l.on_record());
}

// Without the counter (kernels before 4.13): every record, no checks.
BOOST_AUTO_TEST_CASE(without_the_counter_every_record_is_reported) {
    kill_ledger l(std::nullopt);
    BOOST_TEST(!l.exact());
    BOOST_TEST(!l.needs_count());
    BOOST_TEST(l.on_record());
    BOOST_TEST(l.on_record());
    BOOST_TEST(l.on_check() == 0u);
    BOOST_TEST(l.reported() == 2u);
}

BOOST_AUTO_TEST_CASE(vmstat_oom_kill_is_read_strictly) {
    auto r = parse_vmstat_oom_kill("nr_free_pages 1234\noom_kill 17\nnuma_hit 5\n");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST((*r == std::optional<std::uint64_t>(17)));
    // Older kernels: no such line.
    r = parse_vmstat_oom_kill("nr_free_pages 1234\npgfault 99\n");
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(!r->has_value());
    // The line that counts must be right; the others are the kernel's business.
    for (const char* bad : {"oom_kill x\n", "oom_kill 1 2\n", "oom_kill\n", "oom_kill 1\noom_kill 2\n",
                            "oom_kill 99999999999999999999999\n", "", "\n\n"}) {
        BOOST_TEST(parse_vmstat_oom_kill(bad).error() == error::malformed_counters, "input: " << bad);
    }
    BOOST_TEST((parse_vmstat_oom_kill("weird line with words\noom_kill 3\n").value() == std::optional<std::uint64_t>(3)));
}

BOOST_AUTO_TEST_CASE(a_bad_check_interval_is_refused) {
    boost::asio::io_context ctx;
    for (auto interval : {std::chrono::milliseconds(0), std::chrono::milliseconds(-5)}) {
        system_options o;
        o.check_interval = interval;
        boost::system::error_code ec;
        system_watcher sw(ctx, o, ec);
        BOOST_TEST(ec == boost::system::errc::invalid_argument);
        BOOST_TEST(!sw.is_open());
        BOOST_CHECK_THROW(system_watcher(ctx, o), cgroup_error);
    }
}

BOOST_AUTO_TEST_SUITE_END()
