// Tests of the built `oomwatch` program, run as a child process: arguments and exit
// statuses, JSON lines for real OOM kills, signals, removal, and what happens when
// stdout cannot be written (/dev/full, a pipe nobody reads with SIGPIPE ignored); and
// `watch -r`: whole subtrees, cgroups created after the start, the whole hierarchy.
//
// Every wait is bounded: the child's output and exit are awaited with poll(2) on its
// pipes and a pidfd, with a deadline; a child still running at the end of a test is
// killed and reaped by its destructor, and scratch cgroups are removed by theirs.
#define BOOST_TEST_MODULE oomwatch_cli_tests
#include "cli_process.hpp"
#include "fault_support.hpp"
#include "kernel_log_support.hpp"
#include "test_support.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#ifndef OOMWATCH_CLI_PATH
#error "OOMWATCH_CLI_PATH (the built oomwatch program) must be defined"
#endif
#ifndef OOMWATCH_EXPECTED_VERSION
#error "OOMWATCH_EXPECTED_VERSION must be defined"
#endif

using namespace oomwatch;
using namespace oomwatch::test;
using namespace oomwatch::test::cli;
using namespace std::chrono_literals;

using oomwatch::test::log_to_stderr;
BOOST_TEST_GLOBAL_FIXTURE(log_to_stderr);

namespace {

// Runs the program to its end (bounded) and checks the exit status.
struct finished_run {
    explicit finished_run(const std::vector<std::string>& args, spawn_options opt = {}) : p(args, opt) {
        status = p.wait_exit(10s);
    }
    cli_process p;
    std::optional<int> status;
};

std::string fresh_name(std::string_view prefix) { return std::string(prefix) + "-" + scratch::unique_suffix(); }

// One parsed JSON line of `oomwatch watch`.
struct json_line {
    std::string cgroup, kind, time;
    std::uint64_t count = 0;
    std::int64_t version = 0;
    boost::json::object counters;
    std::optional<std::string> origin;  // only on lines whose origin is not "here"
    std::optional<std::string> error;   // only on lines with a reason (`skipped`)
    boost::json::array victims;         // oom_kill lines only (where the key is required)
    std::uint64_t unattributed = 0;     // oom_kill lines only (where the key is required)
};

// Parses every line of the program's stdout; fails the test on a line that is not the
// expected JSON object (all keys present, with the right types).
std::vector<json_line> parse_lines(const std::string& out) {
    std::vector<json_line> lines;
    std::string_view rest = out;
    while (!rest.empty()) {
        const auto nl = rest.find('\n');
        BOOST_TEST_REQUIRE(nl != std::string_view::npos, "unterminated line on stdout: " << rest);
        const auto text = rest.substr(0, nl);
        rest.remove_prefix(nl + 1);
        boost::system::error_code ec;
        auto v = boost::json::parse(text, ec);
        BOOST_TEST_REQUIRE(!ec, "not JSON: " << text << " (" << ec.message() << ")");
        BOOST_TEST_REQUIRE(v.is_object(), "not an object: " << text);
        const auto& o = v.as_object();
        try {
            json_line l;
            l.cgroup = o.at("cgroup").as_string().c_str();
            l.kind = o.at("kind").as_string().c_str();
            l.time = o.at("time").as_string().c_str();
            l.count = o.at("count").to_number<std::uint64_t>();
            l.version = o.at("version").as_int64();
            l.counters = o.at("counters").as_object();
            if (const auto* origin = o.if_contains("origin")) l.origin = origin->as_string().c_str();
            if (const auto* error = o.if_contains("error")) l.error = error->as_string().c_str();
            const bool kill = l.kind == "oom_kill";
            if (kill) {
                l.victims = o.at("victims").as_array();
                l.unattributed = o.at("unattributed").to_number<std::uint64_t>();
                BOOST_TEST(l.victims.size() + l.unattributed == l.count, "victims and unattributed do not add up: " << text);
            }
            BOOST_TEST_REQUIRE(o.size() == 6u + (l.origin ? 1u : 0u) + (l.error ? 1u : 0u) + (kill ? 2u : 0u),
                               "unexpected keys in " << text);
            lines.push_back(std::move(l));
        } catch (const std::exception& e) {
            BOOST_TEST_REQUIRE(false, "malformed event line " << text << ": " << e.what());
        }
    }
    return lines;
}

std::uint64_t total(const std::vector<json_line>& lines, std::string_view kind) {
    std::uint64_t n = 0;
    for (const auto& l : lines) {
        if (l.kind == kind) n += l.count;
    }
    return n;
}

// How many complete lines of stdout have `"kind":"<kind>"`: cheap enough to poll on.
std::uint64_t lines_of_kind(const std::string& out, std::string_view kind) {
    const std::string needle = "\"kind\":\"" + std::string(kind) + "\"";
    std::uint64_t n = 0;
    for (auto pos = out.find(needle); pos != std::string::npos; pos = out.find(needle, pos + 1)) ++n;
    return n;
}

// The lines of stdout complete so far (a line being written may be cut short).
std::vector<json_line> complete_lines(const std::string& out) {
    const auto end = out.rfind('\n');
    if (end == std::string::npos) return {};
    return parse_lines(out.substr(0, end + 1));
}

// How many lines of `kind` name `cgroup`.
std::size_t lines_for(const std::vector<json_line>& lines, std::string_view kind, const std::filesystem::path& cgroup) {
    return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](const json_line& l) {
        return l.kind == kind && l.cgroup == cgroup.string();
    }));
}

// Waits (bounded) until stdout has a line of `kind` for `cgroup`, with oomwatch running.
void require_line(cli_process& p, std::string_view kind, const std::filesystem::path& cgroup) {
    const bool seen = p.run_until(
        [&] { return lines_for(complete_lines(p.out()), kind, cgroup) >= 1 || p.status(); }, 10s);
    BOOST_TEST_REQUIRE(seen, "no " << kind << " line for " << cgroup.string() << " within 10 s; stdout: " << p.out()
                                   << "; stderr: " << p.err());
    BOOST_TEST_REQUIRE(lines_for(complete_lines(p.out()), kind, cgroup) >= 1u,
                       "oomwatch ended (" << describe(p.status()) << ") before a " << kind << " line for "
                                          << cgroup.string() << "; stdout: " << p.out() << "; stderr: " << p.err());
}

// The line `oomwatch -v watch` prints on stderr once every watch is armed.
std::string armed_line(const scratch::scratch_cgroup& cg) {
    return "oomwatch: watching " + cg.path().string() + " (cgroup v" + std::to_string(static_cast<int>(cg.version())) +
           ")\n";
}

// Waits until the program announced that it watches `cg` (bounded).
void require_armed(cli_process& p, const scratch::scratch_cgroup& cg) {
    const auto line = armed_line(cg);
    const bool armed = p.run_until([&] { return p.err().find(line) != std::string::npos || p.status(); }, 10s);
    BOOST_TEST_REQUIRE(armed, "no '" << line.substr(0, line.size() - 1) << "' on stderr within 10 s; stderr: " << p.err());
    BOOST_TEST_REQUIRE(!p.status(), "oomwatch ended early (" << describe(p.status()) << "); stderr: " << p.err());
}

// The line `oomwatch -v watch -r` prints for a tree once every watch is armed, up to
// " below it" when `below` is empty (any count).
std::string tree_armed_line(const std::filesystem::path& root, cgroup_version v, std::optional<std::size_t> below) {
    std::string line = "oomwatch: watching " + root.string() + " and ";
    if (!below) return line;
    line += std::to_string(*below) + (*below == 1 ? " cgroup" : " cgroups");
    return line + " below it (cgroup v" + std::to_string(static_cast<int>(v)) + ")\n";
}

// Waits until the program announced that it watches the tree at `root` with `below`
// cgroups under it (any number when empty; the line must then end as it should).
void require_tree_armed(cli_process& p, const std::filesystem::path& root, cgroup_version v,
                        std::optional<std::size_t> below) {
    const auto line = tree_armed_line(root, v, below);
    const std::string tail = " below it (cgroup v" + std::to_string(static_cast<int>(v)) + ")\n";
    auto announced = [&] {
        const auto pos = p.err().find(line);
        return pos != std::string::npos && p.err().find(tail, pos) != std::string::npos;
    };
    const bool armed = p.run_until([&] { return announced() || p.status(); }, 30s);
    BOOST_TEST_REQUIRE(armed, "no '" << line << "..." << tail.substr(0, tail.size() - 1)
                                     << "' on stderr within 30 s; stderr: " << p.err());
    BOOST_TEST_REQUIRE(!p.status(), "oomwatch ended early (" << describe(p.status()) << "); stderr: " << p.err());
    BOOST_TEST_REQUIRE(announced(), "stderr: " << p.err());
}

// The victim of `pid` in the oom_kill lines so far, with the line's cgroup.
struct found_victim {
    std::string cgroup;
    boost::json::object victim;
};
std::optional<found_victim> victim_of(const std::vector<json_line>& lines, pid_t pid) {
    for (const auto& l : lines) {
        for (const auto& v : l.victims) {
            const auto& o = v.as_object();
            if (o.at("pid").to_number<std::int64_t>() == pid) return found_victim{l.cgroup, o};
        }
    }
    return std::nullopt;
}

// OOM-kills one child in `cg` and returns its pid once `reported(pid)` holds for
// oomwatch's output, or oomwatch ended (bounded: 15 s). Only then is the child reaped:
// its /proc entry can complete a kill record whose report was rate limited, as for the
// library's own victims tests. Fails the test unless it died of SIGKILL.
pid_t oom_kill_reported(cli_process& p, const std::filesystem::path& cg, const std::function<bool(pid_t)>& reported) {
    auto v = scratch::victim::spawn(cg, oom_hog);
    BOOST_TEST_REQUIRE(v.has_value(), "cannot start a victim in " << cg << ": " << v.error().message());
    const pid_t pid = v->pid();
    const bool seen = p.run_until([&] { return reported(pid) || p.status(); }, 15s);
    BOOST_TEST_REQUIRE(seen, "victim " << pid << " not reported within 15 s; stdout: " << p.out() << "; stderr: "
                                       << p.err());
    BOOST_TEST_REQUIRE(!p.status(), "oomwatch ended (" << describe(p.status()) << "); stderr: " << p.err());
    auto status = v->wait(10s);
    BOOST_TEST_REQUIRE(status.has_value(), "the victim did not die: " << status.error().message());
    BOOST_TEST_REQUIRE(scratch::victim::killed_by_sigkill(*status), "victim status " << *status);
    return pid;
}

// The start of the line `oomwatch -v watch --system` prints on stderr once armed.
constexpr std::string_view system_armed_line = "oomwatch: watching every OOM kill on the machine (";

void require_system_armed(cli_process& p) {
    const bool armed = p.run_until(
        [&] { return p.err().find(system_armed_line) != std::string::npos || p.status(); }, 10s);
    BOOST_TEST_REQUIRE(armed, "no '" << system_armed_line << "...' on stderr within 10 s; stderr: " << p.err());
    BOOST_TEST_REQUIRE(!p.status(), "oomwatch ended early (" << describe(p.status()) << "); stderr: " << p.err());
}

} // namespace

// ---- no cgroups needed ----------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(cli_usage)

BOOST_AUTO_TEST_CASE(help_exits_0_and_documents_the_exit_statuses) {
    finished_run r({"--help"});
    BOOST_TEST(exited_with(r.status, exit_ok), describe(r.status));
    const auto& out = r.p.out();
    BOOST_TEST(out.starts_with("Usage: oomwatch"));
    BOOST_TEST(out.find("Exit status:") != std::string::npos);
    BOOST_TEST(out.find("  0  done") != std::string::npos);
    BOOST_TEST(out.find("  1  runtime failure") != std::string::npos);
    BOOST_TEST(out.find("  2  bad usage") != std::string::npos);
    BOOST_TEST(out.find("  3  a CGROUP cannot be watched") != std::string::npos);
    BOOST_TEST(out.find("oomwatch: watching DIR") != std::string::npos);  // the -v readiness line
    BOOST_TEST(out.find("oomwatch: watching DIR and N cgroups below it") != std::string::npos);  // with -r
    BOOST_TEST(out.find("-r, --recursive") != std::string::npos);
    BOOST_TEST(out.find("--max-depth N") != std::string::npos);
    BOOST_TEST(out.find("--state FILE") != std::string::npos);
    BOOST_TEST(out.find("created") != std::string::npos);
    BOOST_TEST(out.find("\"origin\":\"removed_descendant\"") != std::string::npos);
    BOOST_TEST(out.find("watch --system") != std::string::npos);
    BOOST_TEST(out.find(system_armed_line) != std::string::npos);  // its -v readiness line
    BOOST_TEST(out.find("--no-victims") != std::string::npos);
    BOOST_TEST(out.find("--victim-hold MS") != std::string::npos);
    BOOST_TEST(out.find("\"unattributed\"") != std::string::npos);
    BOOST_TEST(r.p.err().empty(), r.p.err());
    finished_run h({"-h"});
    BOOST_TEST(exited_with(h.status, exit_ok), describe(h.status));
    BOOST_TEST(h.p.out() == out);
}

BOOST_AUTO_TEST_CASE(help_to_a_full_device_exits_1) {
    finished_run r({"--help"}, {.out = stdout_to::dev_full});
    BOOST_TEST(exited_with(r.status, exit_failure), describe(r.status));
    BOOST_TEST(r.p.err() == "oomwatch: stdout: No space left on device\n");
}

BOOST_AUTO_TEST_CASE(version_prints_the_project_version) {
    finished_run r({"--version"});
    BOOST_TEST(exited_with(r.status, exit_ok), describe(r.status));
    BOOST_TEST(r.p.out() == "oomwatch " OOMWATCH_EXPECTED_VERSION "\n");
    BOOST_TEST(r.p.err().empty(), r.p.err());
}

// Bad usage: exit status 2, a message on stderr, nothing on stdout.
void check_usage_error(const std::vector<std::string>& args, std::string_view message) {
    finished_run r(args);
    BOOST_TEST(exited_with(r.status, exit_usage), describe(r.status) << "; stderr: " << r.p.err());
    BOOST_TEST(r.p.err().find(message) != std::string::npos, "stderr lacks '" << message << "': " << r.p.err());
    BOOST_TEST(r.p.out().empty(), "stdout: " << r.p.out());
}

BOOST_AUTO_TEST_CASE(unknown_option_is_bad_usage) {
    check_usage_error({"--bogus", "watch", "/tmp"}, "oomwatch: unknown option '--bogus'\nTry 'oomwatch --help'.\n");
}

BOOST_AUTO_TEST_CASE(unknown_event_kind_is_bad_usage) {
    check_usage_error({"--kinds", "oom,nonsense", "watch", "/tmp"}, "oomwatch: unknown event kind 'nonsense' in --kinds\n");
    check_usage_error({"--kinds=bogus", "watch", "/tmp"}, "oomwatch: unknown event kind 'bogus' in --kinds\n");
    check_usage_error({"watch", "/tmp", "--kinds"}, "oomwatch: --kinds needs a value\n");
}

BOOST_AUTO_TEST_CASE(watch_without_a_cgroup_is_bad_usage) {
    check_usage_error({"watch"}, "oomwatch: watch needs at least one cgroup\n");
}

BOOST_AUTO_TEST_CASE(no_command_or_an_unknown_one_is_bad_usage) {
    check_usage_error({}, "Usage: oomwatch");
    check_usage_error({"frobnicate"}, "oomwatch: unknown command 'frobnicate'\n");
    check_usage_error({"demo", "extra"}, "oomwatch: demo takes no arguments\n");
}

BOOST_AUTO_TEST_CASE(a_malformed_process_id_is_bad_usage) {
    check_usage_error({"watch", "pid:abc"}, "oomwatch: pid:abc: not a process ID\n");
    check_usage_error({"watch", "0"}, "oomwatch: 0: not a process ID\n");
}

// A cgroup that cannot be watched: its own status, the path and the reason on stderr
// ("oomwatch: PATH: REASON", REASON being the library's message), nothing on stdout.
void check_cannot_watch(const std::vector<std::string>& args, const std::string& target, std::string_view reason) {
    finished_run r(args);
    BOOST_TEST(exited_with(r.status, exit_cannot_watch), describe(r.status) << "; stderr: " << r.p.err());
    const std::string prefix = "oomwatch: " + target + ": ";
    BOOST_TEST(r.p.err().starts_with(prefix), "stderr: " << r.p.err());
    if (!reason.empty()) BOOST_TEST(r.p.err() == prefix + std::string(reason) + "\n");
    BOOST_TEST(r.p.err().size() > prefix.size() + 1, "no reason given: " << r.p.err());
    BOOST_TEST(r.p.out().empty(), "stdout: " << r.p.out());
}

BOOST_AUTO_TEST_CASE(a_missing_path_cannot_be_watched) {
    const std::string missing = "/tmp/" + fresh_name("oomwatch-cli-missing");
    check_cannot_watch({"watch", missing}, missing, std::strerror(ENOENT));
}

BOOST_AUTO_TEST_CASE(a_directory_that_is_no_cgroup_cannot_be_watched) {
    const auto reason = make_error_code(error::not_a_cgroup).message();
    check_cannot_watch({"watch", "/tmp"}, "/tmp", reason);
    // After --, what looks like an option is a path.
    check_cannot_watch({"watch", "--", "/tmp"}, "/tmp", reason);
}

BOOST_AUTO_TEST_CASE(a_process_that_does_not_exist_cannot_be_watched) {
    check_cannot_watch({"watch", "pid:2147483647"}, "pid:2147483647", {});  // above any pid_max
}

BOOST_AUTO_TEST_CASE(recursive_usage_errors) {
    check_usage_error({"watch", "-r", "--max-depth"}, "oomwatch: --max-depth needs a value\n");
    check_usage_error({"watch", "-r", "/tmp", "--max-depth"}, "oomwatch: --max-depth needs a value\n");
    // The next argument is taken as the value, and a path is no number.
    check_usage_error({"watch", "--recursive", "--max-depth", "/tmp"},
                      "oomwatch: --max-depth needs a number of levels (0, 1, ...), not '/tmp'\n");
    for (const std::string bad : {"", "-1", "+1", "1x", "x", "99999999999999999999"}) {
        BOOST_TEST_CONTEXT("--max-depth=" << bad) {
            check_usage_error({"watch", "-r", "--max-depth=" + bad, "/tmp"},
                              "oomwatch: --max-depth needs a number of levels (0, 1, ...), not '" + bad + "'\n");
        }
    }
    check_usage_error({"watch", "--max-depth", "1", "/tmp"}, "oomwatch: --max-depth needs --recursive (-r)\n");
    check_usage_error({"-r", "demo"}, "oomwatch: --recursive and --max-depth are options of watch\n");
    check_usage_error({"-r", "--kinds", "oom,bogus", "watch"}, "oomwatch: unknown event kind 'bogus' in --kinds\n");
    check_usage_error({"watch", "-r", "pid:abc"}, "oomwatch: pid:abc: not a process ID\n");
    // Without -r a cgroup is still required.
    check_usage_error({"--max-depth=1", "watch"}, "oomwatch: --max-depth needs --recursive (-r)\n");
}

// --system reports every kill of the machine: it takes no cgroup, nor the options that
// shape cgroup watches (refused, not ignored), and belongs to watch alone.
BOOST_AUTO_TEST_CASE(system_usage_errors) {
    const std::string no_cgroup = "oomwatch: watch --system takes no cgroup: it reports every OOM kill on the machine\n";
    check_usage_error({"watch", "--system", "/tmp"}, no_cgroup);
    check_usage_error({"--system", "watch", "--", "1234"}, no_cgroup);
    const std::vector<std::pair<std::vector<std::string>, std::string>> refused = {
        {{"-r"}, "--recursive"},
        {{"--recursive"}, "--recursive"},
        {{"--max-depth", "1"}, "--max-depth"},
        {{"--local"}, "--local"},
        {{"--kinds", "oom_kill"}, "--kinds"},
        {{"--kinds=all"}, "--kinds"},
        {{"--no-victims"}, "--no-victims"},
        {{"--victim-hold", "0"}, "--victim-hold"},
        {{"--victim-hold=100", "--local"}, "--victim-hold"},  // the first one given
    };
    for (const auto& [extra, name] : refused) {
        BOOST_TEST_CONTEXT(name << " (" << extra.size() << " arguments)") {
            std::vector<std::string> args = {"watch", "--system"};
            args.insert(args.end(), extra.begin(), extra.end());
            check_usage_error(args, "oomwatch: " + name + " does not apply to watch --system\n");
        }
    }
    check_usage_error({"--system", "demo"}, "oomwatch: --system is an option of watch\n");
}

BOOST_AUTO_TEST_CASE(victim_option_usage_errors) {
    check_usage_error({"watch", "/tmp", "--victim-hold"}, "oomwatch: --victim-hold needs a value\n");
    for (const std::string bad : {"", "-1", "+5", "1.5", "50ms", "x", "99999999999999999999"}) {
        BOOST_TEST_CONTEXT("--victim-hold=" << bad) {
            check_usage_error({"watch", "--victim-hold=" + bad, "/tmp"},
                              "oomwatch: --victim-hold needs a number of milliseconds (0, 50, ...), not '" + bad +
                                  "'\n");
        }
    }
    // Accepted, with and without -r: the target then fails with its own status, 3.
    const auto reason = make_error_code(error::not_a_cgroup).message();
    check_cannot_watch({"--no-victims", "--victim-hold", "0", "watch", "/tmp"}, "/tmp", reason);
    check_cannot_watch({"watch", "-r", "--victim-hold=250", "--no-victims", "/tmp"}, "/tmp", reason);
}

// `created` is a kind like the others: accepted by --kinds (here the target then fails
// with its own status, 3, not with bad usage).
BOOST_AUTO_TEST_CASE(created_is_an_event_kind) {
    const auto reason = make_error_code(error::not_a_cgroup).message();
    check_cannot_watch({"--kinds", "oom_kill,created", "watch", "-r", "/tmp"}, "/tmp", reason);
    check_cannot_watch({"--kinds=created", "watch", "/tmp"}, "/tmp", reason);
}

BOOST_AUTO_TEST_CASE(a_tree_whose_root_cannot_be_watched_exits_3) {
    const auto reason = make_error_code(error::not_a_cgroup).message();
    check_cannot_watch({"watch", "-r", "/tmp"}, "/tmp", reason);
    check_cannot_watch({"watch", "-r", "--max-depth", "2", "--", "/tmp"}, "/tmp", reason);
    const std::string missing = "/tmp/" + fresh_name("oomwatch-cli-missing");
    check_cannot_watch({"watch", "--recursive", missing}, missing, std::strerror(ENOENT));
    check_cannot_watch({"watch", "-r", "pid:2147483647"}, "pid:2147483647", {});
}

BOOST_AUTO_TEST_SUITE_END()

// ---- real cgroups, real OOM kills --------------------------------------------------------

BOOST_AUTO_TEST_SUITE(cli_kernel, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_FIXTURE_TEST_CASE(an_oom_kill_is_reported_as_json_lines, scratch_oom) {
    cli_process p({"-v", "watch", cg->path().string()});
    require_armed(p, *cg);
    const pid_t pid = oom_kill_reported(p, cg->path(), [&](pid_t) { return lines_of_kind(p.out(), "oom_kill") >= 1; });
    p.send(SIGTERM);
    CHECK_EXIT(p, exit_ok, 10s);

    const auto lines = parse_lines(p.out());
    BOOST_TEST_REQUIRE(!lines.empty());
    BOOST_TEST(total(lines, "oom_kill") == 1u);  // one kill, exactly one reported
    BOOST_TEST(total(lines, "oom") >= 1u);
    BOOST_TEST(total(lines, "removed") == 0u);
    BOOST_TEST(lines.front().kind == "oom");  // the limit is hit before the kill
    for (const auto& l : lines) {
        BOOST_TEST(l.cgroup == cg->path().string());
        BOOST_TEST(l.version == static_cast<int>(cg->version()));
        BOOST_TEST(l.count >= 1u);
        BOOST_TEST(l.time.size() == std::string_view("2026-11-30T05:01:02.123456Z").size(), l.time);
        BOOST_TEST(l.time.ends_with("Z"));
    }
    const auto kill_line = std::find_if(lines.begin(), lines.end(), [](auto& l) { return l.kind == "oom_kill"; });
    BOOST_TEST_REQUIRE((kill_line != lines.end()));
    BOOST_TEST(kill_line->counters.at("oom_kill").to_number<std::uint64_t>() == 1u);
    // Its victim, named from the kernel log unless the record came too late for the
    // hold (a loaded machine): then counted as unattributed, never guessed.
    if (kill_line->victims.empty()) {
        BOOST_TEST(kill_line->unattributed == 1u);
        BOOST_TEST_MESSAGE("victim " << pid << " not named (its record came too late); unattributed");
    } else {
        BOOST_TEST_REQUIRE(kill_line->victims.size() == 1u);
        const auto& v = kill_line->victims.front().as_object();
        BOOST_TEST(v.at("pid").to_number<std::int64_t>() == pid);
        BOOST_TEST(std::string(v.at("comm").as_string()) == own_comm());
        BOOST_TEST(std::string(v.at("constraint").as_string()) == "memcg");
        BOOST_TEST(std::string(v.at("task_cgroup").as_string()) == cg->path().string());
        BOOST_TEST(v.at("anon_rss").to_number<std::uint64_t>() > 0u);
        BOOST_TEST(kill_line->unattributed == 0u);
    }
    BOOST_TEST(p.err().find("oomwatch: stdout") == std::string::npos, p.err());
}

// --no-victims: the kill is counted as before, and nobody is named.
BOOST_FIXTURE_TEST_CASE(no_victims_counts_each_kill_as_unattributed, scratch_oom) {
    cli_process p({"-v", "--no-victims", "--victim-hold", "0", "watch", cg->path().string()});
    require_armed(p, *cg);
    oom_kill_one(cg->path());
    BOOST_TEST_REQUIRE(p.run_until([&] { return lines_of_kind(p.out(), "oom_kill") >= 1 || p.status(); }),
                       "no oom_kill line within 10 s; stdout: " << p.out() << "; stderr: " << p.err());
    p.send(SIGTERM);
    CHECK_EXIT(p, exit_ok, 10s);
    std::uint64_t kills = 0;
    for (const auto& l : parse_lines(p.out())) {
        if (l.kind != "oom_kill") continue;
        kills += l.count;
        BOOST_TEST(l.victims.empty());
        BOOST_TEST(l.unattributed == l.count);
    }
    BOOST_TEST(kills == 1u);
}

BOOST_FIXTURE_TEST_CASE(rmdir_of_the_watched_cgroup_gives_removed_and_exit_0, scratch_oom) {
    cli_process p({"-v", "watch", cg->path().string()});
    require_armed(p, *cg);
    BOOST_TEST_REQUIRE(!cg->remove());
    CHECK_EXIT(p, exit_ok, 10s);
    const auto lines = parse_lines(p.out());
    BOOST_TEST_REQUIRE(lines.size() == 1u, "stdout: " << p.out());
    BOOST_TEST(lines.back().kind == "removed");
    BOOST_TEST(lines.back().count == 1u);
    BOOST_TEST(lines.back().cgroup == cg->path().string());
}

BOOST_FIXTURE_TEST_CASE(exit_0_only_once_every_cgroup_is_removed, scratch_oom) {
    auto other = make_scratch_cgroup("oomwatch-cli-b", oom_limit);
    cli_process p({"-v", "watch", cg->path().string(), other.path().string()});
    require_armed(p, *cg);
    require_armed(p, other);
    BOOST_TEST_REQUIRE(!cg->remove());
    BOOST_TEST_REQUIRE(p.run_until([&] { return lines_of_kind(p.out(), "removed") >= 1 || p.status(); }));
    // The other one is still watched: an OOM kill in it is reported.
    oom_kill_one(other.path());
    BOOST_TEST_REQUIRE(p.run_until([&] { return lines_of_kind(p.out(), "oom_kill") >= 1 || p.status(); }),
                       "stdout: " << p.out() << "; stderr: " << p.err());
    BOOST_TEST(!p.status(), "ended after the first removal: " << describe(p.status()));
    BOOST_TEST_REQUIRE(!other.remove());
    CHECK_EXIT(p, exit_ok, 10s);
    const auto lines = parse_lines(p.out());
    BOOST_TEST(total(lines, "removed") == 2u);
    BOOST_TEST(total(lines, "oom_kill") == 1u);
    BOOST_TEST_REQUIRE(!lines.empty());
    BOOST_TEST(lines.back().kind == "removed");
    BOOST_TEST(lines.back().cgroup == other.path().string());
}

BOOST_FIXTURE_TEST_CASE(sigterm_or_sigint_while_idle_exits_0, scratch_oom) {
    for (int sig : {SIGTERM, SIGINT}) {
        BOOST_TEST_CONTEXT("signal " << sig) {
            cli_process p({"-v", "watch", cg->path().string()});
            require_armed(p, *cg);
            p.send(sig);
            CHECK_EXIT(p, exit_ok, 5s);
            BOOST_TEST(p.out().empty(), "stdout: " << p.out());
        }
    }
}

BOOST_FIXTURE_TEST_CASE(a_process_is_watched_through_its_memory_cgroup, scratch_oom) {
    // A sleeping child of this test, moved into the scratch cgroup; killed and reaped
    // by the guard (and by the cgroup's removal) whatever happens.
    const pid_t pid = ::fork();
    BOOST_TEST_REQUIRE(pid >= 0, "fork: " << std::strerror(errno));
    if (pid == 0) {
        for (;;) ::pause();
    }
    struct reaper {
        pid_t pid;
        ~reaper() {
            ::kill(pid, SIGKILL);
            const auto deadline = clock_type::now() + 10s;  // bounded, though SIGKILL takes milliseconds
            int st = 0;
            while (::waitpid(pid, &st, WNOHANG) == 0 && clock_type::now() < deadline) ::usleep(1000);
        }
    } guard{pid};
    BOOST_TEST_REQUIRE(!cg->write_file("cgroup.procs", std::to_string(pid)));
    for (const std::string& target : {"pid:" + std::to_string(pid), std::to_string(pid)}) {
        BOOST_TEST_CONTEXT(target) {
            cli_process p({"-v", "watch", target});
            require_armed(p, *cg);
            p.send(SIGTERM);
            CHECK_EXIT(p, exit_ok, 5s);
        }
    }
}

BOOST_FIXTURE_TEST_CASE(one_cgroup_that_cannot_be_watched_stops_everything_before_output, scratch_oom) {
    const auto missing = (cg->path() / "no-such-child").string();
    finished_run r({"watch", cg->path().string(), missing});
    BOOST_TEST(exited_with(r.status, exit_cannot_watch), describe(r.status) << "; stderr: " << r.p.err());
    BOOST_TEST(r.p.err() == "oomwatch: " + missing + ": " + std::strerror(ENOENT) + "\n");
    BOOST_TEST(r.p.out().empty());
}

// stdout cannot be written: exit 1 with the reason, as soon as the first event is due,
// with two cgroups watched (the other watch must be stopped too, or it would not exit).
void check_output_error(scratch_oom& f, spawn_options opt, std::string_view message) {
    auto other = make_scratch_cgroup("oomwatch-cli-b", oom_limit);
    cli_process p({"-v", "watch", f.cg->path().string(), other.path().string()}, opt);
    require_armed(p, *f.cg);
    require_armed(p, other);
    oom_kill_one(f.cg->path());
    CHECK_EXIT(p, exit_failure, 10s);
    BOOST_TEST(p.err_count(message) == 1u, "stderr: " << p.err());
    BOOST_TEST(p.out().empty());
}

BOOST_FIXTURE_TEST_CASE(stdout_on_a_full_device_exits_1, scratch_oom) {
    check_output_error(*this, {.out = stdout_to::dev_full}, "oomwatch: stdout: No space left on device\n");
}

BOOST_FIXTURE_TEST_CASE(a_closed_pipe_with_sigpipe_ignored_exits_1, scratch_oom) {
    check_output_error(*this, {.out = stdout_to::closed_pipe, .ignore_sigpipe = true},
                       "oomwatch: stdout: Broken pipe\n");
}

BOOST_FIXTURE_TEST_CASE(a_closed_pipe_with_sigpipe_at_its_default_kills_it, scratch_oom) {
    cli_process p({"-v", "watch", cg->path().string()}, {.out = stdout_to::closed_pipe});
    require_armed(p, *cg);
    oom_kill_one(cg->path());
    const auto st = p.wait_exit(10s);
    BOOST_TEST((st && WIFSIGNALED(*st) && WTERMSIG(*st) == SIGPIPE), describe(st) << "; stderr: " << p.err());
}

// ---- watch --system: every kill of the machine ---------------------------------------------

// A kill in a scratch cgroup is an oom_kill line naming the victim by its pid, in its
// cgroup (or the hierarchy's root, when the kernel log did not name the cgroup). Other
// kills on the machine meanwhile (other tests) may add lines of their own.
BOOST_FIXTURE_TEST_CASE(system_watch_names_the_victim_of_a_kill, scratch_oom) {
    cli_process p({"-v", "watch", "--system"});
    require_system_armed(p);
    BOOST_TEST(p.err().find("counted from /proc/vmstat") != std::string::npos, "stderr: " << p.err());
    const pid_t pid = oom_kill_reported(
        p, cg->path(), [&](pid_t victim) { return victim_of(complete_lines(p.out()), victim).has_value(); });
    p.send(SIGTERM);
    CHECK_EXIT(p, exit_ok, 10s);

    const auto lines = parse_lines(p.out());
    for (const auto& l : lines) BOOST_TEST(l.kind == "oom_kill", "a " << l.kind << " line");
    const auto found = victim_of(lines, pid);
    BOOST_TEST_REQUIRE(found.has_value(), "stdout: " << p.out());
    const auto root = find_memory_hierarchy().mount_point.string();
    BOOST_TEST((found->cgroup == cg->path().string() || found->cgroup == root), found->cgroup);
    const auto& v = found->victim;
    BOOST_TEST(std::string(v.at("comm").as_string()) == own_comm());
    BOOST_TEST(std::string(v.at("constraint").as_string()) == "memcg");
    if (const auto* task = v.if_contains("task_cgroup")) BOOST_TEST(std::string(task->as_string()) == cg->path().string());
    if (const auto* oom = v.if_contains("oom_cgroup")) BOOST_TEST(std::string(oom->as_string()) == cg->path().string());
    BOOST_TEST(v.at("kernel_seq").to_number<std::uint64_t>() > 0u);
    BOOST_TEST(p.err().find("oomwatch: /dev/kmsg") == std::string::npos, p.err());
}

// Without CAP_SYSLOG under kernel.dmesg_restrict=1 the kernel log cannot be opened: the
// system watch cannot start (status 3, the file and the reason, last on stderr after
// the library's warning), before any output.
BOOST_AUTO_TEST_CASE(system_watch_without_permission_for_the_kernel_log_exits_3) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    std::optional<sysctl_guard> restrict;
    if (read_text("/proc/sys/kernel/dmesg_restrict") != "1\n") restrict.emplace("/proc/sys/kernel/dmesg_restrict", 1);
    finished_run r({"watch", "--system"}, {.as_nobody = true});
    BOOST_TEST(exited_with(r.status, exit_cannot_watch), describe(r.status) << "; stderr: " << r.p.err());
    const std::string prefix = "oomwatch: /dev/kmsg: ";
    const auto& err = r.p.err();
    BOOST_TEST((err.ends_with(prefix + std::strerror(EPERM) + "\n") || err.ends_with(prefix + std::strerror(EACCES) + "\n")),
               "stderr: " << err);
    BOOST_TEST(r.p.err_count(prefix) == 1u, "stderr: " << err);
    BOOST_TEST(r.p.out().empty(), "stdout: " << r.p.out());
}

// ---- watch -r: whole subtrees ------------------------------------------------------------

// A scratch tree: a parent without a limit; its children get theirs.
struct scratch_tree : scratch_oom {
    scratch_tree() : scratch_oom("oomwatch-cli-tree", 0) {}
};

BOOST_FIXTURE_TEST_CASE(recursive_watch_reports_each_kill_in_the_cgroup_where_it_happened, scratch_tree) {
    cli_process p({"-v", "watch", "-r", "--kinds", "oom,oom_kill,created", cg->path().string()});
    require_tree_armed(p, cg->path(), cg->version(), 0);

    // Made after the tool is armed; b two levels deep. Declared parent first: each is
    // removed (by its destructor, if the test stops early) before its parent.
    auto a = child("a", 0);
    auto b_made = a.create_child("b", oom_limit);
    BOOST_TEST_REQUIRE(b_made.has_value(), "cannot create a/b: " << b_made.error().message());
    auto b = std::move(*b_made);
    auto c = child("c", oom_limit);
    for (const auto* sub : {&a, &b, &c}) require_line(p, "created", sub->path());

    oom_kill_one(c.path());
    require_line(p, "oom_kill", c.path());
    // A descendant's removal is its `removed` line; the tree goes on.
    BOOST_TEST_REQUIRE(!c.remove());
    require_line(p, "removed", c.path());
    BOOST_TEST_REQUIRE(!p.status(), "ended after a descendant's removal: " << describe(p.status()) << "; stderr: "
                                                                            << p.err());
    oom_kill_one(b.path());
    require_line(p, "oom_kill", b.path());
    BOOST_TEST_REQUIRE(!b.remove());
    require_line(p, "removed", b.path());
    BOOST_TEST_REQUIRE(!a.remove());
    require_line(p, "removed", a.path());
    BOOST_TEST_REQUIRE(!p.status(), "ended before its root was removed: " << describe(p.status()));
    // The root's removal ends the tree, and with it the program.
    BOOST_TEST_REQUIRE(!cg->remove());
    CHECK_EXIT(p, exit_ok, 10s);

    const auto lines = parse_lines(p.out());
    BOOST_TEST_REQUIRE(!lines.empty());
    // One oom_kill line per kill, each in the cgroup where the victim was.
    BOOST_TEST(total(lines, "oom_kill") == 2u, "stdout: " << p.out());
    BOOST_TEST(lines_for(lines, "oom_kill", b.path()) == 1u);
    BOOST_TEST(lines_for(lines, "oom_kill", c.path()) == 1u);
    for (const auto& l : lines) {
        BOOST_TEST_CONTEXT(l.cgroup << " " << l.kind) {
            BOOST_TEST(l.count >= 1u);
            BOOST_TEST(l.version == static_cast<int>(cg->version()));
            if (l.kind == "oom_kill") {
                BOOST_TEST(l.count == 1u);
                BOOST_TEST(l.counters.at("oom_kill").to_number<std::uint64_t>() == 1u);  // counted from zero
            }
            // The limits are b's and c's: an OOM is theirs, never a's or the root's.
            if (l.kind == "oom") BOOST_TEST((l.cgroup == b.path().string() || l.cgroup == c.path().string()));
            if (v1()) BOOST_TEST(!l.origin);  // v1 counts nothing hierarchically
        }
    }
    // Each descendant: announced once, first; removed once, last. The root: no created
    // line (it is the tree), and its removed line ends the output.
    for (const auto* sub : {&a, &b, &c}) {
        BOOST_TEST_CONTEXT(sub->path().string()) {
            BOOST_TEST(lines_for(lines, "created", sub->path()) == 1u);
            BOOST_TEST(lines_for(lines, "removed", sub->path()) == 1u);
            std::vector<std::string> kinds;
            for (const auto& l : lines)
                if (l.cgroup == sub->path().string()) kinds.push_back(l.kind);
            BOOST_TEST_REQUIRE(!kinds.empty());
            BOOST_TEST(kinds.front() == "created");
            BOOST_TEST(kinds.back() == "removed");
        }
    }
    BOOST_TEST(lines_for(lines, "created", cg->path()) == 0u);
    BOOST_TEST(total(lines, "removed") == 4u);
    BOOST_TEST(lines.back().kind == "removed");
    BOOST_TEST(lines.back().cgroup == cg->path().string());
    BOOST_TEST(p.err().find("oomwatch: stdout") == std::string::npos, p.err());
}

BOOST_FIXTURE_TEST_CASE(recursive_readiness_counts_what_it_found_down_to_max_depth, scratch_tree) {
    auto a = child("a", 0);
    auto b_made = a.create_child("b", 0);
    BOOST_TEST_REQUIRE(b_made.has_value(), "cannot create a/b: " << b_made.error().message());
    auto b = std::move(*b_made);
    const std::vector<std::pair<std::vector<std::string>, std::size_t>> runs = {
        {{}, 2u}, {{"--max-depth", "1"}, 1u}, {{"--max-depth=0"}, 0u}, {{"--max-depth", "7"}, 2u}};
    for (const auto& [extra, below] : runs) {
        BOOST_TEST_CONTEXT("depth options: " << extra.size() << ", expecting " << below) {
            std::vector<std::string> args = {"-v", "watch", "--recursive"};
            args.insert(args.end(), extra.begin(), extra.end());
            args.push_back(cg->path().string());
            cli_process p(args);
            require_tree_armed(p, cg->path(), cg->version(), below);
            p.send(SIGTERM);
            CHECK_EXIT(p, exit_ok, 5s);
            BOOST_TEST(p.out().empty(), "stdout: " << p.out());
        }
    }
}

// A descendant the tree cannot watch (here: no descriptor left for its eventfds) is a
// `skipped` line with the reason; the program goes on.
BOOST_FIXTURE_TEST_CASE(a_descendant_that_cannot_be_watched_is_a_skipped_line, scratch_tree) {
    if (!v1()) {
        BOOST_TEST_MESSAGE("not applicable: a v2 tree needs no descriptor per cgroup");
        return;
    }
    cli_process p({"-v", "watch", "-r", "--kinds", "oom_kill,created", cg->path().string()}, {.fd_limit = 48});
    require_tree_armed(p, cg->path(), cg->version(), 0);
    std::vector<scratch::scratch_cgroup> children;  // removed in reverse order, by the destructors
    children.reserve(64);
    auto skipped = [&] { return total(complete_lines(p.out()), "skipped"); };
    while (skipped() == 0 && children.size() < 64 && !p.status()) {
        children.push_back(child("c" + std::to_string(children.size()), 0));
        require_line(p, "created", children.back().path());
    }
    // The skipped line of the last child may still be on its way.
    p.run_until([&] { return skipped() >= 1 || p.status(); }, 5s);
    BOOST_TEST_REQUIRE(skipped() >= 1u, children.size() << " children, none skipped; stdout: " << p.out()
                                                        << "; stderr: " << p.err());
    BOOST_TEST_REQUIRE(!p.status(), "ended: " << describe(p.status()) << "; stderr: " << p.err());
    for (const auto& l : complete_lines(p.out())) {
        if (l.kind != "skipped") continue;
        BOOST_TEST_CONTEXT(l.cgroup) {
            BOOST_TEST(l.error.value_or("(none)") == std::string(std::strerror(EMFILE)));
            BOOST_TEST(l.count == 1u);
            BOOST_TEST(lines_for(complete_lines(p.out()), "created", l.cgroup) == 1u);  // announced first
        }
    }
    BOOST_TEST(lines_for(complete_lines(p.out()), "skipped", children.front().path()) == 0u);  // the first fit
    p.send(SIGTERM);
    CHECK_EXIT(p, exit_ok, 10s);
    BOOST_TEST(p.err().find("oomwatch: " + cg->path().string() + ":") == std::string::npos, p.err());
}

// -r without a cgroup: the memory hierarchy's mount point, every cgroup of the machine
// (possibly hundreds, some made and removed by others meanwhile: their lines may come).
BOOST_AUTO_TEST_CASE(recursive_watch_without_a_cgroup_watches_the_whole_hierarchy) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    const auto h = find_memory_hierarchy();
    cli_process p({"-v", "watch", "-r"});
    require_tree_armed(p, h.mount_point, h.version, std::nullopt);
    p.send(SIGTERM);
    CHECK_EXIT(p, exit_ok, 10s);
    parse_lines(p.out());  // whatever others' cgroups did meanwhile: well-formed lines
    BOOST_TEST(p.err_count("oomwatch: watching ") == 1u, "stderr: " << p.err());
}

// ---- demo: the README's main job ------------------------------------------------------------

// The demo's scratch cgroups of the process `pid` still on disk (it makes
// oomwatch-demo-PID-N below its own memory cgroup, somewhere in the hierarchy).
std::vector<std::filesystem::path> demo_leftovers(pid_t pid) {
    const auto h = find_memory_hierarchy();
    const std::string prefix = "oomwatch-demo-" + std::to_string(pid) + "-";
    std::vector<std::filesystem::path> found;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(
             h.mount_point, std::filesystem::directory_options::skip_permission_denied, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        if (it.depth() > 4) it.disable_recursion_pending();
        if (it->path().filename().string().starts_with(prefix)) found.push_back(it->path());
    }
    return found;
}

BOOST_AUTO_TEST_CASE(demo_kills_three_children_reports_them_exactly_and_cleans_up) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    cli_process p({"demo"});
    CHECK_EXIT(p, exit_ok, 60s);
    BOOST_TEST(p.err_count("demo: 3 of 3 children OOM-killed, 3 OOM kills reported, exact") == 1u, "stderr: " << p.err());
    std::size_t kills = 0;
    for (const auto& l : parse_lines(p.out())) kills += l.kind == "oom_kill" ? l.count : 0;
    BOOST_TEST(kills == 3u, "stdout: " << p.out());
    BOOST_TEST(demo_leftovers(p.pid()).empty());
}

// A reader that went away: the demo ignores SIGPIPE (it owns a cgroup and children to
// clean up), so it stops with status 1 and the reason, and leaves nothing behind.
BOOST_AUTO_TEST_CASE(demo_with_a_closed_pipe_exits_1_and_cleans_up) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    cli_process p({"demo"}, {.out = stdout_to::closed_pipe});
    CHECK_EXIT(p, exit_failure, 60s);
    BOOST_TEST(p.err_count("oomwatch: stdout: Broken pipe\n") == 1u, "stderr: " << p.err());
    BOOST_TEST(demo_leftovers(p.pid()).empty());
}

BOOST_AUTO_TEST_SUITE_END()

// ---- --state: restarts report what happened while down, once ------------------------------

namespace {

// A state file path of this test's own, removed (with its .tmp) at the end.
struct state_file {
    std::filesystem::path path = std::filesystem::temp_directory_path() / (fresh_name("oomwatch-state") + ".json");
    ~state_file() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
        std::filesystem::remove(path.string() + ".tmp", ec);
    }
};

// Waits (bounded) until stdout has `n` oom_kill counts in all, with oomwatch running.
void require_kills(cli_process& p, std::uint64_t n) {
    const bool seen = p.run_until([&] { return total(complete_lines(p.out()), "oom_kill") >= n || p.status(); }, 15s);
    BOOST_TEST_REQUIRE(seen, "not " << n << " oom_kill within 15 s; stdout: " << p.out() << "; stderr: " << p.err());
    BOOST_TEST_REQUIRE(!p.status(), "oomwatch ended (" << describe(p.status()) << "); stderr: " << p.err());
}

// Runs `args` until one live kill in `cg` is reported, then stops it: its lines.
std::vector<json_line> run_with_one_kill(const std::vector<std::string>& args, const scratch::scratch_cgroup& cg) {
    cli_process p(args);
    require_armed(p, cg);
    oom_kill_one(cg.path());
    require_kills(p, 1);
    p.send(SIGTERM);
    CHECK_EXIT(p, exit_ok, 10s);
    return parse_lines(p.out());
}

} // namespace

BOOST_AUTO_TEST_SUITE(cli_state_usage)

BOOST_AUTO_TEST_CASE(a_file_that_is_no_state_exits_3_naming_it) {
    state_file f;
    {
        FILE* out = std::fopen(f.path.c_str(), "w");
        BOOST_TEST_REQUIRE(out != nullptr);
        std::fputs("{\"version\":1,\"boot_id\":", out);  // cut short
        std::fclose(out);
    }
    finished_run r({"watch", "--state", f.path.string(), "/tmp"});
    CHECK_EXIT(r.p, exit_cannot_watch, 1s);
    BOOST_TEST(r.p.err().find("oomwatch: " + f.path.string() + ": not an oomwatch state file") != std::string::npos,
               r.p.err());
    BOOST_TEST(r.p.out().empty());
}

BOOST_AUTO_TEST_CASE(state_needs_a_file_and_is_an_option_of_watch) {
    finished_run r({"watch", "/tmp", "--state"});
    CHECK_EXIT(r.p, exit_usage, 1s);
    finished_run d({"--state", "/tmp/x", "demo"});
    CHECK_EXIT(d.p, exit_usage, 1s);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cli_state, *boost::unit_test::precondition(kernel_precondition{}))

// The test: a kill, the tool stopped, two more kills, the tool started again:
// exactly those two are reported, and nothing for the first. Then a start without kills
// meanwhile reports nothing old: one live kill is one oom_kill.
BOOST_FIXTURE_TEST_CASE(a_restart_reports_exactly_the_kills_while_down, scratch_oom) {
    state_file f;
    const std::vector<std::string> args{"-v", "watch", "--state", f.path.string(), cg->path().string()};
    BOOST_TEST(total(run_with_one_kill(args, *cg), "oom_kill") == 1u);
    BOOST_TEST(read_text(f.path).find("\"oom_kill\":1") != std::string::npos, read_text(f.path));
    oom_kill_one(cg->path());
    oom_kill_one(cg->path());
    {
        cli_process p(args);
        require_armed(p, *cg);
        BOOST_TEST(p.err().find("resuming from " + f.path.string()) != std::string::npos, p.err());
        require_kills(p, 2);
        p.send(SIGTERM);
        CHECK_EXIT(p, exit_ok, 10s);
        const auto lines = parse_lines(p.out());
        BOOST_TEST(total(lines, "oom_kill") == 2u, "stdout: " << p.out());
        for (const auto& l : lines) {
            if (l.kind != "oom_kill") continue;
            BOOST_TEST(l.unattributed == l.count);  // their records are not replayed
            BOOST_TEST(l.counters.at("oom_kill").to_number<std::uint64_t>() == 3u);
        }
        // v2 counts OOMs too: those of the two kills while down; v1 does not (none).
        BOOST_TEST(total(lines, "oom") == (cg->version() == cgroup_version::v2 ? 2u : 0u), "stdout: " << p.out());
    }
    BOOST_TEST(read_text(f.path).find("\"oom_kill\":3") != std::string::npos, read_text(f.path));
    const auto lines = run_with_one_kill(args, *cg);
    BOOST_TEST(total(lines, "oom_kill") == 1u);
    for (const auto& l : lines)
        if (l.kind == "oom_kill") BOOST_TEST(l.counters.at("oom_kill").to_number<std::uint64_t>() == 4u);
}

// A state saved in another boot: its counters mean nothing now, the start is fresh.
BOOST_FIXTURE_TEST_CASE(a_state_of_another_boot_is_not_resumed, scratch_oom) {
    state_file f;
    {
        FILE* out = std::fopen(f.path.c_str(), "w");
        BOOST_TEST_REQUIRE(out != nullptr);
        std::fprintf(out, "{\"version\":1,\"boot_id\":\"not-this-boot\",\"mode\":\"hierarchical\",\"cgroups\":{\"%s\":{\"oom\":0,\"oom_kill\":0}}}\n",
                     cg->path().c_str());
        std::fclose(out);
    }
    oom_kill_one(cg->path());  // before the start: not to be reported
    cli_process p({"-v", "watch", "--state", f.path.string(), cg->path().string()});
    require_armed(p, *cg);
    BOOST_TEST(p.err().find(f.path.string() + ": saved before the last reboot; starting afresh") != std::string::npos,
               p.err());
    oom_kill_one(cg->path());
    require_kills(p, 1);
    p.send(SIGTERM);
    CHECK_EXIT(p, exit_ok, 10s);
    // Had the old kill been resumed, it would be in these (or coalesced with the live one).
    BOOST_TEST(total(parse_lines(p.out()), "oom_kill") == 1u, "stdout: " << p.out());
    BOOST_TEST(read_text(f.path).find("\"oom_kill\":2") != std::string::npos, read_text(f.path));
    BOOST_TEST(read_text(f.path).find("not-this-boot") == std::string::npos, read_text(f.path));
}

BOOST_AUTO_TEST_SUITE_END()
