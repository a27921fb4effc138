// `oomwatch watch --pressure SPEC`: bad SPECs are bad usage; on a real kernel, a cgroup
// (v1 levels, v2 PSI) and the machine (--system) under a reclaim load print pressure
// lines that parse, and --textfile has their series; --pressure-interval merges a
// trigger's wake-ups into at most a line per interval (its rules, pressure_lines, are
// tested without a kernel too). Part of oomwatch_cli_tests (cli_test.cpp has the module).
//
// Every wait is bounded; the load is a child killed and reaped by its destructor (and
// ends by itself after 60 s), the scratch cgroups and files are removed by theirs.
#include "cli_process.hpp"
#include "pressure_lines.hpp"
#include "pressure_load.hpp"
#include "test_support.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace oomwatch;
using namespace oomwatch::test;
using namespace oomwatch::test::cli;
using namespace std::chrono_literals;

namespace fs = std::filesystem;

namespace {

// The first complete pressure line of stdout, parsed; checks the keys every such line has.
boost::json::object first_pressure_line(const std::string& out) {
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
        if (line.find("\"kind\":\"pressure\"") == std::string::npos) continue;
        boost::system::error_code ec;
        auto v = boost::json::parse(line, ec);
        BOOST_TEST_REQUIRE(!ec, "not JSON: " << line);
        BOOST_TEST_REQUIRE(v.is_object());
        const auto& o = v.as_object();
        for (const char* key : {"cgroup", "trigger", "time"}) BOOST_TEST_REQUIRE(o.at(key).is_string(), key);
        BOOST_TEST(o.at("count").to_number<std::uint64_t>() >= 1u);
        return o;
    }
    BOOST_TEST_REQUIRE(false, "no pressure line: " << out);
    return {};
}

// The averages of a pressure line: both stall kinds, with their four keys.
void check_averages(const boost::json::object& line) {
    const auto& a = line.at("averages").as_object();
    for (const char* kind : {"some", "full"}) {
        BOOST_TEST_CONTEXT(kind) {
            const auto& k = a.at(kind).as_object();
            for (const char* key : {"avg10", "avg60", "avg300"}) BOOST_TEST(k.at(key).to_number<double>() >= 0.0);
            (void)k.at("total").to_number<std::uint64_t>();
        }
    }
    BOOST_TEST(a.at("some").at("total").to_number<std::uint64_t>() > 0u);
}

std::string read_text(const fs::path& p) {
    std::ifstream in(p);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// `oomwatch -v watch --textfile FILE ARGS...` under `load`, until a pressure line (30 s
// at most: the kernel reports reclaim at its own pace).
struct pressure_run {
    pressure_run(std::vector<std::string> args, const fs::path& prom) : p(with(std::move(args), prom)), prom_(prom) {
        const bool armed = p.run_until(
            [&] { return p.err().find("oomwatch: watching memory pressure on ") != std::string::npos || p.status(); },
            10s);
        BOOST_TEST_REQUIRE((armed && !p.status()), "not armed within 10 s: " << describe(p.status()) << "; stderr: "
                                                                               << p.err());
    }
    static std::vector<std::string> with(std::vector<std::string> args, const fs::path& prom) {
        args.insert(args.begin(), {"-v", "watch", "--textfile", prom.string()});
        return args;
    }
    boost::json::object require_pressure_line() {
        const auto seen = [&] { return p.out().find("\"kind\":\"pressure\"") != std::string::npos; };
        BOOST_TEST_REQUIRE(p.run_until([&] { return (seen() && p.out().ends_with("\n")) || p.status(); }, 30s),
                           "no pressure line within 30 s; stdout: " << p.out() << "; stderr: " << p.err());
        BOOST_TEST_REQUIRE(!p.status(), "oomwatch ended: " << describe(p.status()) << "; stderr: " << p.err());
        return first_pressure_line(p.out());
    }
    // Waits (bounded: the text file is written at most once a second) for `series` in it.
    std::string require_in_textfile(const std::string& series) {
        const bool there =
            p.run_until([&] { return read_text(prom_).find("\n" + series + " ") != std::string::npos; }, 5s);
        const auto text = read_text(prom_);
        BOOST_TEST(there, series << " not in " << text);
        return text;
    }

    cli_process p;
    fs::path prom_;
};

std::string temp_prom(std::string_view name) {
    return (fs::temp_directory_path() / (std::string(name) + "-" + std::to_string(::getpid()) + ".prom")).string();
}

// Every pressure line of stdout, parsed (each must be JSON).
std::vector<boost::json::object> pressure_lines_of(const std::string& out) {
    std::vector<boost::json::object> lines;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);) {
        if (line.find("\"kind\":\"pressure\"") == std::string::npos) continue;
        boost::system::error_code ec;
        auto v = boost::json::parse(line, ec);
        BOOST_TEST_REQUIRE((!ec && v.is_object()), "not a JSON object: " << line);
        lines.push_back(v.as_object());
    }
    return lines;
}

// The value of `series` in a text file's contents; nothing when it is not there.
std::optional<std::uint64_t> series_value(const std::string& text, const std::string& series) {
    const auto pos = text.find("\n" + series + " ");
    if (pos == std::string::npos) return std::nullopt;
    return std::stoull(text.substr(pos + series.size() + 2));
}

// Removes the text file (and its temporary) at the end of the test, whatever happened.
struct file_guard {
    fs::path path;
    ~file_guard() {
        std::error_code ec;
        fs::remove(path, ec);
        fs::remove(path.string() + ".tmp", ec);
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(cli_pressure_usage)

// Bad SPECs, and --pressure where it does not apply: status 2 and the reason, before
// anything is watched.
BOOST_AUTO_TEST_CASE(bad_pressure_specs_are_bad_usage) {
    const std::vector<usage_case> cases = {
        {{"watch", "/tmp", "--pressure"}, "--pressure needs a value"},
        {{"watch", "--pressure", "some", "/tmp"}, "--pressure needs some:THRESHOLD/WINDOW"},
        {{"watch", "--pressure", "some:150ms", "/tmp"}, "--pressure needs some:THRESHOLD/WINDOW"},
        {{"watch", "--pressure", "some:150/2s", "/tmp"}, "--pressure needs some:THRESHOLD/WINDOW"},
        {{"watch", "--pressure", "half:150ms/2s", "/tmp"}, "--pressure needs some:THRESHOLD/WINDOW"},
        {{"watch", "--pressure=full:-1ms/2s", "/tmp"}, "--pressure needs some:THRESHOLD/WINDOW"},
        {{"watch", "--pressure", "some:3s/2s", "/tmp"}, "--pressure 'some:3s/2s': the window must be"},
        {{"watch", "--pressure", "some:100ms/20s", "/tmp"}, "--pressure 'some:100ms/20s': the window must be"},
        {{"watch", "--pressure", "some:0ms/2s", "/tmp"}, "--pressure 'some:0ms/2s': the window must be"},
        {{"watch", "--pressure", "high", "/tmp"}, "--pressure needs some:THRESHOLD/WINDOW"},
        {{"watch", "--pressure", "medium,global", "/tmp"}, "--pressure needs some:THRESHOLD/WINDOW"},
        {{"watch", "--system", "--pressure", "medium"}, "watch --system takes PSI triggers"},
        {{"watch", "-r", "--pressure", "medium", "/tmp"}, "--pressure does not apply to watch -r"},
        {{"status", "--pressure", "medium", "/tmp"}, "--pressure is an option of watch"},
        {{"demo", "--pressure", "medium"}, "--pressure is an option of watch"},
        {{"watch", "--pressure", "low", "--pressure-interval"}, "--pressure-interval needs a value"},
        {{"watch", "--pressure-interval", "1", "--pressure", "low", "/tmp"},
         "--pressure-interval needs a duration (1s, 250ms, 0s), not '1'"},
        {{"watch", "--pressure-interval", "-1s", "--pressure", "low", "/tmp"},
         "--pressure-interval needs a duration (1s, 250ms, 0s), not '-1s'"},
        {{"watch", "--pressure-interval=soon", "--pressure", "low", "/tmp"},
         "--pressure-interval needs a duration (1s, 250ms, 0s), not 'soon'"},
        {{"watch", "--pressure-interval=", "--pressure", "low", "/tmp"},
         "--pressure-interval needs a duration (1s, 250ms, 0s), not ''"},
        {{"watch", "--pressure-interval", "1s", "/tmp"}, "--pressure-interval needs --pressure"},
        {{"status", "--pressure-interval", "1s", "/tmp"}, "--pressure-interval needs --pressure"},
    };
    check_usage_errors(cases);
}

BOOST_AUTO_TEST_CASE(help_documents_pressure) {
    cli_process p({"--help"});
    BOOST_TEST_REQUIRE(exited_with(p.wait_exit(10s), exit_ok));
    for (const char* text : {"--pressure SPEC", "some:THRESHOLD/WINDOW", "low|medium|critical[,hierarchy|local]",
                             "--pressure-interval DURATION",
                             "oomwatch_pressure_events_total{cgroup,trigger}",
                             "oomwatch_memory_pressure_ratio{cgroup,kind,window}",
                             "oomwatch_memory_pressure_stall_seconds_total{cgroup,kind}"})
        BOOST_TEST(p.out().find(text) != std::string::npos, text);
}

// The merge rules of --pressure-interval, on a clock of the test's.
BOOST_AUTO_TEST_CASE(a_triggers_lines_are_merged_within_the_interval) {
    using oomwatch::cli::pressure_lines;
    const pressure_lines::clock::time_point t0{};
    const auto wall = std::chrono::system_clock::now();
    auto event = [&](std::chrono::milliseconds at, std::optional<double> avg10) {
        pressure_event ev;
        ev.level = pressure_level::low;
        ev.time = wall + at;
        if (avg10) ev.averages = pressure_averages{stall_averages{*avg10, 0, 0, 1}, std::nullopt};
        return ev;
    };
    pressure_lines lines(1s);
    // The first one at once; those within a second after it merged: counts added, the
    // earliest time, the newest averages there are.
    BOOST_TEST(lines.offer(event(0ms, 1.0), t0).has_value());
    BOOST_TEST(!lines.due());
    BOOST_TEST(!lines.offer(event(100ms, 2.0), t0 + 100ms));
    BOOST_TEST((lines.due() == t0 + 1s));
    BOOST_TEST(!lines.offer(event(200ms, std::nullopt), t0 + 200ms));
    BOOST_TEST(!lines.take_due(t0 + 999ms));
    const auto merged = lines.take_due(t0 + 1s);
    BOOST_TEST_REQUIRE(merged.has_value());
    BOOST_TEST(merged->count == 2u);
    BOOST_TEST((merged->time == wall + 100ms));
    BOOST_TEST(merged->averages->some.avg10 == 2.0);
    BOOST_TEST((merged->level == pressure_level::low));
    BOOST_TEST(!lines.due());
    // The merged line counts as the last one: the next within a second of it waits too.
    BOOST_TEST(!lines.offer(event(1500ms, 3.0), t0 + 1500ms));
    BOOST_TEST((lines.due() == t0 + 2s));
    // take() hands it over early (the end of the watch); after a quiet second, at once again.
    BOOST_TEST(lines.take()->count == 1u);
    BOOST_TEST(!lines.take());
    BOOST_TEST(lines.offer(event(3s, std::nullopt), t0 + 3s).has_value());
    // 0: every wake-up is a line.
    pressure_lines every(0s);
    BOOST_TEST(every.offer(event(0ms, std::nullopt), t0).has_value());
    BOOST_TEST(every.offer(event(0ms, std::nullopt), t0).has_value());
    BOOST_TEST(!every.due());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cli_pressure_kernel, *boost::unit_test::precondition(kernel_precondition{}))

// A SPEC of the other cgroup version: exit 3 naming the cgroup, nothing printed.
BOOST_FIXTURE_TEST_CASE(a_spec_of_the_other_version_exits_3_naming_the_cgroup, scratch_oom) {
    cli_process p({"watch", "--pressure", v1() ? "some:200ms/2s" : "medium", cg->path().string()});
    CHECK_EXIT(p, exit_cannot_watch, 10s);
    BOOST_TEST(p.err().find("oomwatch: " + cg->path().string() + ": cgroup v" + (v1() ? "1" : "2")) !=
                   std::string::npos,
               p.err());
    BOOST_TEST(p.out().empty());
}

BOOST_FIXTURE_TEST_CASE(a_cgroup_under_reclaim_prints_pressure_lines, scratch_oom) {
    if (v1() && std::getenv("OOMWATCH_IN_VM")) {
        BOOST_TEST_MESSAGE("v1 in the VM: no reclaimable page cache (an initramfs), tested on the host");
        return;
    }
    file_guard prom{temp_prom("oomwatch-psi-cg")};
    // v1: `low` in the default mode fires at any reclaim; `medium,local` shows a mode's name.
    std::vector<std::string> args = v1() ? std::vector<std::string>{"--pressure", "low", "--pressure", "medium,local"}
                                         : std::vector<std::string>{"--pressure", "some:10ms/2s"};
    args.push_back(cg->path().string());
    pressure_run r(args, prom.path);
    const std::vector<std::string> triggers = v1() ? std::vector<std::string>{"low", "medium,local"}
                                                   : std::vector<std::string>{"some 10ms/2s"};
    // Before any event the counts are there from 0.
    r.require_in_textfile("oomwatch_pressure_events_total{cgroup=\"" + cg->path().string() + "\",trigger=\"" +
                          triggers.front() + "\"}");
    boost::json::object line;
    {
        reclaim_load load(cg->path(), v1());
        line = r.require_pressure_line();
    }
    BOOST_TEST(std::string(line.at("cgroup").as_string()) == cg->path().string());
    const std::string trigger(line.at("trigger").as_string());
    BOOST_TEST((std::find(triggers.begin(), triggers.end(), trigger) != triggers.end()), trigger);
    if (v1()) {
        BOOST_TEST(!line.contains("averages"));  // the kernel keeps none on v1
        BOOST_TEST(line.size() == 5u);
    } else {
        check_averages(line);
        r.require_in_textfile("oomwatch_memory_pressure_ratio{cgroup=\"" + cg->path().string() +
                              "\",kind=\"some\",window=\"10s\"}");
    }
    // The OOM watch is unchanged: the removal is one removed line, and the end.
    BOOST_TEST_REQUIRE(!cg->remove());
    CHECK_EXIT(r.p, exit_ok, 10s);
    std::size_t removed = 0;
    for (auto pos = r.p.out().find("\"kind\":\"removed\""); pos != std::string::npos;
         pos = r.p.out().find("\"kind\":\"removed\"", pos + 1))
        ++removed;
    BOOST_TEST(removed == 1u, r.p.out());
    // A merged line still pending at the removal comes before it, never after.
    const auto removal = r.p.out().find("\"kind\":\"removed\"");
    BOOST_TEST(r.p.out().find("\"kind\":\"pressure\"", removal) == std::string::npos, r.p.out());
}

// `low` on cgroup v1 fires on every 512 pages scanned: under the load, many times a
// second. With --pressure-interval 1s its lines are at most one a second (and the end's),
// merged ones (count > 1) among them; with 0s there is a line per wake-up the program
// sees. Either way every wake-up is counted: the counts of the lines add up to the
// metrics' count at the end, the pending line printed at SIGINT included.
BOOST_FIXTURE_TEST_CASE(a_v1_level_under_reclaim_prints_a_line_per_interval_at_most, scratch_oom) {
    if (!v1() || std::getenv("OOMWATCH_IN_VM")) {
        BOOST_TEST_MESSAGE("needs cgroup v1 on the host (a level that fires on every reclaim scan)");
        return;
    }
    struct result {
        std::vector<boost::json::object> lines;
        std::uint64_t wakeups = 0;  // the sum of their counts
    };
    const auto run = [&](const std::string& interval) {
        BOOST_TEST_CONTEXT("--pressure-interval " << interval) {
            file_guard prom{temp_prom("oomwatch-psi-interval")};
            const auto start = clock_type::now();
            pressure_run r({"--pressure", "low", "--pressure-interval", interval, cg->path().string()}, prom.path);
            reclaim_load load(cg->path(), true);
            r.require_pressure_line();
            r.p.run_until([] { return false; }, 3s);  // collects what it prints meanwhile
            // Under load still: a merged line is likely pending, and must be printed at the end.
            r.p.send(SIGINT);
            const auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(clock_type::now() - start);
            CHECK_EXIT(r.p, exit_ok, 10s);
            result res{pressure_lines_of(r.p.out())};
            for (const auto& line : res.lines) {
                BOOST_TEST(std::string(line.at("cgroup").as_string()) == cg->path().string());
                BOOST_TEST(std::string(line.at("trigger").as_string()) == "low");
                const auto n = line.at("count").to_number<std::uint64_t>();
                BOOST_TEST(n >= 1u);
                res.wakeups += n;
            }
            BOOST_TEST_MESSAGE("--pressure-interval " << interval << ": " << res.lines.size() << " lines for "
                                                      << res.wakeups << " wake-ups in " << elapsed.count() << " s");
            if (interval == "1s") {
                // One at once, then at most one per second (the timer may be late, never
                // early), and the one at the end.
                BOOST_TEST(res.lines.size() <= static_cast<std::size_t>(elapsed.count()) + 3, r.p.out());
            }
            // (fault_support's read_text: this file's own is out of reach here.)
            const auto text = oomwatch::test::read_text(prom.path);
            const auto counted = series_value(
                text, "oomwatch_pressure_events_total{cgroup=\"" + cg->path().string() + "\",trigger=\"low\"}");
            BOOST_TEST_REQUIRE(counted.has_value(), text);
            BOOST_TEST(res.wakeups == *counted, r.p.out());
            return res;
        }
        return result{};
    };
    const auto merged = run("1s");
    BOOST_TEST((std::any_of(merged.lines.begin(), merged.lines.end(),
                            [](const auto& l) { return l.at("count").template to_number<std::uint64_t>() > 1u; })),
               "no line stands for more than one wake-up");
    const auto every = run("0s");
    BOOST_TEST(!every.lines.empty());
    BOOST_TEST(every.lines.size() > merged.lines.size());
}

BOOST_FIXTURE_TEST_CASE(the_machine_under_reclaim_prints_pressure_lines_with_averages, scratch_oom) {
    if (v1() && std::getenv("OOMWATCH_IN_VM")) {
        BOOST_TEST_MESSAGE("v1 in the VM: no reclaimable page cache (an initramfs), tested on the host");
        return;
    }
    file_guard prom{temp_prom("oomwatch-psi-sys")};
    // A 2 s window: allowed without CAP_SYS_RESOURCE (containers) on every kernel.
    pressure_run r({"--system", "--pressure", "some:10ms/2s"}, prom.path);
    boost::json::object line;
    {
        reclaim_load load(cg->path(), v1());
        line = r.require_pressure_line();
    }
    BOOST_TEST(std::string(line.at("cgroup").as_string()) == "/proc/pressure/memory");
    BOOST_TEST(std::string(line.at("trigger").as_string()) == "some 10ms/2s");
    check_averages(line);
    const auto text = r.require_in_textfile(
        "oomwatch_memory_pressure_stall_seconds_total{cgroup=\"/proc/pressure/memory\",kind=\"full\"}");
    for (const char* series :
         {"oomwatch_pressure_events_total{cgroup=\"/proc/pressure/memory\",trigger=\"some 10ms/2s\"}",
          "oomwatch_memory_pressure_ratio{cgroup=\"/proc/pressure/memory\",kind=\"some\",window=\"300s\"}",
          "oomwatch_memory_pressure_ratio{cgroup=\"/proc/pressure/memory\",kind=\"full\",window=\"60s\"}"})
        BOOST_TEST(text.find("\n" + std::string(series) + " ") != std::string::npos, series << " in " << text);
    r.p.send(SIGTERM);
    CHECK_EXIT(r.p, exit_ok, 10s);
}

BOOST_AUTO_TEST_SUITE_END()
