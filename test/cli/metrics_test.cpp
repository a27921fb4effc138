// Unit tests of the metrics registry of `oomwatch watch --metrics/--textfile`
// (src/cli/metrics.cpp): counts, label escaping, the retention of a removed cgroup's
// series (with a clock the test moves), the text exposition format.
#define BOOST_TEST_MODULE oomwatch_cli_metrics_tests
#include "cli/metrics.hpp"

#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>

using namespace oomwatch;
using namespace oomwatch::cli;
using namespace std::chrono_literals;

namespace {

// A registry on a clock that moves only when the test says so.
struct fake_clock_registry {
    metrics_registry::clock::time_point now{std::chrono::hours(1)};
    std::size_t watched = 2;
    metrics_registry reg{options()};

    metrics_registry::options options() {
        metrics_registry::options o;
        o.version = "1.2.3";
        o.process_start = std::chrono::system_clock::time_point(std::chrono::microseconds(1'700'000'000'250'000));
        o.retention = 10min;
        o.now = [this] { return now; };
        o.watched_cgroups = [this] { return watched; };
        return o;
    }
};

oom_event event(const std::string& cgroup, event_kind kind, std::uint64_t count, std::uint64_t unattributed = 0) {
    oom_event ev;
    ev.cgroup = cgroup;
    ev.kind = kind;
    ev.count = count;
    ev.unattributed = unattributed;
    return ev;
}

std::string series(const std::string& cgroup_label, std::string_view kind, std::uint64_t value) {
    return "oomwatch_events_total{cgroup=\"" + cgroup_label + "\",kind=\"" + std::string(kind) + "\"} " +
           std::to_string(value) + "\n";
}

bool has(const std::string& text, const std::string& line) { return text.find(line) != std::string::npos; }

} // namespace

BOOST_AUTO_TEST_CASE(label_values_are_escaped) {
    BOOST_TEST(escape_label_value("plain/path") == "plain/path");
    BOOST_TEST(escape_label_value("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
    BOOST_TEST(escape_label_value("") == "");
}

BOOST_FIXTURE_TEST_CASE(counts_add_up_per_cgroup_and_kind, fake_clock_registry) {
    reg.add_cgroup("/cg/a", kind_set::defaults());
    auto text = reg.render();
    // The counting kinds of a watched cgroup start at 0; once-only kinds do not show.
    BOOST_TEST(has(text, series("/cg/a", "oom", 0)));
    BOOST_TEST(has(text, series("/cg/a", "oom_kill", 0)));
    BOOST_TEST(has(text, series("/cg/a", "oom_group_kill", 0)));
    BOOST_TEST(!has(text, "kind=\"high\""));
    BOOST_TEST(!has(text, "kind=\"removed\""));

    reg.record(event("/cg/a", event_kind::oom_kill, 3, 1));
    reg.record(event("/cg/a", event_kind::oom_kill, 2, 2));
    reg.record(event("/cg/a", event_kind::oom, 4));
    reg.record(event("/cg/b", event_kind::created, 1));
    reg.record(event("/cg/b", event_kind::oom_kill, 1));
    text = reg.render();
    BOOST_TEST(has(text, series("/cg/a", "oom_kill", 5)), text);
    BOOST_TEST(has(text, series("/cg/a", "oom", 4)));
    BOOST_TEST(has(text, series("/cg/b", "created", 1)));
    BOOST_TEST(has(text, series("/cg/b", "oom_kill", 1)));
    BOOST_TEST(!has(text, "cgroup=\"/cg/b\",kind=\"oom\""));  // neither watched from the start nor seen
    // Only oom_kill events carry unattributed kills.
    reg.record(event("/cg/a", event_kind::oom, 1, 7));
    BOOST_TEST(has(reg.render(), "\noomwatch_unattributed_kills_total 3\n"));
}

BOOST_FIXTURE_TEST_CASE(the_rendering_is_the_exposition_format, fake_clock_registry) {
    reg.record(event("/cg/we\"ird\\name\nx", event_kind::oom_kill, 1));
    const auto text = reg.render();
    BOOST_TEST(has(text, series("/cg/we\\\"ird\\\\name\\nx", "oom_kill", 1)), text);
    for (const char* name : {"oomwatch_events_total", "oomwatch_unattributed_kills_total", "oomwatch_watched_cgroups",
                             "oomwatch_build_info", "process_start_time_seconds"}) {
        BOOST_TEST_CONTEXT(name) {
            BOOST_TEST(has(text, std::string("# HELP ") + name + " "));
            BOOST_TEST(has(text, std::string("# TYPE ") + name + " "));
        }
    }
    BOOST_TEST(has(text, "# TYPE oomwatch_events_total counter\n"));
    BOOST_TEST(has(text, "# TYPE oomwatch_watched_cgroups gauge\n"));
    BOOST_TEST(has(text, "\noomwatch_watched_cgroups 2\n"));
    BOOST_TEST(has(text, "\noomwatch_build_info{version=\"1.2.3\"} 1\n"));
    BOOST_TEST(has(text, "\nprocess_start_time_seconds 1700000000.250000\n"));
    BOOST_TEST(text.ends_with("\n"));
    // No pid or comm labels: the cardinality is the cgroups'.
    BOOST_TEST(!has(text, "pid="));
    BOOST_TEST(!has(text, "comm="));
}

BOOST_FIXTURE_TEST_CASE(a_removed_cgroups_series_stay_for_the_retention_then_go, fake_clock_registry) {
    reg.record(event("/cg/gone", event_kind::oom_kill, 2));
    reg.record(event("/cg/stays", event_kind::oom_kill, 1));
    BOOST_TEST(!reg.next_expiry());
    now += 1min;
    reg.record(event("/cg/gone", event_kind::removed, 1));
    BOOST_TEST((reg.next_expiry() == now + 10min));
    now += 10min - 1s;
    auto text = reg.render();
    BOOST_TEST(has(text, series("/cg/gone", "oom_kill", 2)), text);
    BOOST_TEST(has(text, series("/cg/gone", "removed", 1)));
    now += 1s;
    text = reg.render();
    BOOST_TEST(!has(text, "/cg/gone"), text);
    BOOST_TEST(has(text, series("/cg/stays", "oom_kill", 1)));
    BOOST_TEST(!reg.next_expiry());
    // A cgroup of the same name made later starts from 0.
    reg.record(event("/cg/gone", event_kind::oom_kill, 1));
    BOOST_TEST(has(reg.render(), series("/cg/gone", "oom_kill", 1)));
}

BOOST_FIXTURE_TEST_CASE(a_skipped_cgroup_expires_and_events_again_keep_it, fake_clock_registry) {
    reg.record(event("/cg/skipped", event_kind::skipped, 1));
    reg.record(event("/cg/back", event_kind::removed, 1));
    now += 5min;
    // Made anew and watched again within the retention: its series stay, counting on.
    reg.record(event("/cg/back", event_kind::created, 1));
    now += 5min;
    const auto text = reg.render();
    BOOST_TEST(!has(text, "/cg/skipped"), text);
    BOOST_TEST(has(text, series("/cg/back", "removed", 1)));
    BOOST_TEST(has(text, series("/cg/back", "created", 1)));
    BOOST_TEST(!reg.next_expiry());
}

// Named victims per cause (global OOMs among them, which no cgroup counter shows), and
// the kernel log's losses and forgeries when the registry is given its statistics.
BOOST_FIXTURE_TEST_CASE(victims_per_cause_and_the_kernel_log_are_counted, fake_clock_registry) {
    auto ev = event("/cg/a", event_kind::oom_kill, 3, 1);
    victim v;
    v.constraint = oom_constraint::global;
    ev.victims.push_back(v);
    v.constraint = oom_constraint::memcg;
    ev.victims.push_back(v);
    reg.record(ev);
    auto text = reg.render();
    BOOST_TEST(has(text, "\noomwatch_victims_total{constraint=\"global\"} 1\n"), text);
    BOOST_TEST(has(text, "\noomwatch_victims_total{constraint=\"memcg\"} 1\n"));
    BOOST_TEST(has(text, "\noomwatch_victims_total{constraint=\"cpuset\"} 0\n"));
    BOOST_TEST(has(text, "# TYPE oomwatch_victims_total counter\n"));
    BOOST_TEST(!has(text, "oomwatch_kernel_log_records_lost_total"));  // not given: not shown

    auto o = options();
    o.kernel_log = [] {
        kernel_log_stats k;
        k.records_lost = 7;
        k.foreign_records = 2;
        return k;
    };
    metrics_registry with_log(o);
    text = with_log.render();
    BOOST_TEST(has(text, "\noomwatch_kernel_log_records_lost_total 7\n"), text);
    BOOST_TEST(has(text, "\noomwatch_kernel_log_foreign_records_total 2\n"));
    BOOST_TEST(has(text, "# TYPE oomwatch_kernel_log_records_lost_total counter\n"));
}

// --pressure: event counts per trigger from 0, the averages as ratios per window and
// the stall totals in seconds, both as of the last event that had them; the series go
// with the cgroup's.
BOOST_FIXTURE_TEST_CASE(pressure_events_averages_and_stall_totals, fake_clock_registry) {
    BOOST_TEST(!has(reg.render(), "pressure"));  // no --pressure: no such families at all
    reg.add_pressure_trigger("/cg/a", "some 150ms/2s");
    reg.add_pressure_trigger("/proc/pressure/memory", "full 1s/2s");
    auto text = reg.render();
    BOOST_TEST(has(text, "# TYPE oomwatch_pressure_events_total counter\n"));
    BOOST_TEST(has(text, "\noomwatch_pressure_events_total{cgroup=\"/cg/a\",trigger=\"some 150ms/2s\"} 0\n"), text);
    BOOST_TEST(!has(text, "oomwatch_memory_pressure_ratio"));  // nothing read yet
    BOOST_TEST(!has(text, "cgroup=\"/proc/pressure/memory\",kind="));  // the machine has no OOM series here

    pressure_event ev;
    ev.cgroup = "/cg/a";
    ev.count = 2;
    ev.averages = pressure_averages{{12.5, 3.25, 0.5, 1'234'567}, stall_averages{1.0, 0, 0, 42}};
    reg.record(ev, "some 150ms/2s");
    ev.count = 1;
    ev.averages->some.avg10 = 50;
    reg.record(ev, "some 150ms/2s");
    pressure_event v1;  // cgroup v1: a level, no averages
    v1.cgroup = "/cg/v1";
    reg.record(v1, "medium,local");
    text = reg.render();
    BOOST_TEST(has(text, "\noomwatch_pressure_events_total{cgroup=\"/cg/a\",trigger=\"some 150ms/2s\"} 3\n"), text);
    BOOST_TEST(has(text, "\noomwatch_pressure_events_total{cgroup=\"/cg/v1\",trigger=\"medium,local\"} 1\n"), text);
    BOOST_TEST(has(text, "# TYPE oomwatch_memory_pressure_ratio gauge\n"));
    BOOST_TEST(has(text, "\noomwatch_memory_pressure_ratio{cgroup=\"/cg/a\",kind=\"some\",window=\"10s\"} 0.5\n"), text);
    BOOST_TEST(has(text, "\noomwatch_memory_pressure_ratio{cgroup=\"/cg/a\",kind=\"some\",window=\"60s\"} 0.0325\n"));
    BOOST_TEST(has(text, "\noomwatch_memory_pressure_ratio{cgroup=\"/cg/a\",kind=\"some\",window=\"300s\"} 0.005\n"));
    BOOST_TEST(has(text, "\noomwatch_memory_pressure_ratio{cgroup=\"/cg/a\",kind=\"full\",window=\"10s\"} 0.01\n"));
    BOOST_TEST(has(text, "# TYPE oomwatch_memory_pressure_stall_seconds_total counter\n"));
    BOOST_TEST(has(text, "\noomwatch_memory_pressure_stall_seconds_total{cgroup=\"/cg/a\",kind=\"some\"} 1.234567\n"));
    BOOST_TEST(has(text, "\noomwatch_memory_pressure_stall_seconds_total{cgroup=\"/cg/a\",kind=\"full\"} 0.000042\n"));
    BOOST_TEST(!has(text, "cgroup=\"/cg/v1\",kind="));  // v1: no averages

    // The cgroup's removal (its OOM watch) takes its pressure series with it.
    reg.record(event("/cg/a", event_kind::removed, 1));
    now += 10min;
    text = reg.render();
    BOOST_TEST(!has(text, "cgroup=\"/cg/a\""), text);
    BOOST_TEST(has(text, "cgroup=\"/proc/pressure/memory\",trigger=\"full 1s/2s\"} 0\n"));
}
