// `oomwatch status` run for real: its JSON checked against what the test reads itself
// (mountinfo, find_memory_hierarchy(), /proc/vmstat), the counters and the last victim
// of a scratch cgroup after a real OOM kill, the kernel log as uid 65534 under
// kernel.dmesg_restrict=1, the table, bad usage and a missing cgroup. Part of
// oomwatch_cli_tests (cli_test.cpp has the module).
//
// Every wait is bounded (cli_process); scratch cgroups are removed by their destructors,
// and dmesg_restrict is restored by its guard.
#include "cli_process.hpp"
#include "fault_support.hpp"
#include "test_support.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/cgroup.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

using namespace oomwatch;
using namespace oomwatch::test;
using namespace oomwatch::test::cli;
using namespace std::chrono_literals;

namespace {

// `oomwatch ARGS...` run to its end (bounded); its stdout parsed as one JSON object.
struct status_run {
    explicit status_run(const std::vector<std::string>& args, spawn_options opt = {}) : p(args, opt) {
        status = p.wait_exit(20s);
        BOOST_TEST_REQUIRE(status.has_value(), "oomwatch status did not end within 20 s; stderr: " << p.err());
    }
    boost::json::object json() const {
        boost::system::error_code ec;
        auto v = boost::json::parse(p.out(), ec);
        BOOST_TEST_REQUIRE(!ec, "not JSON: " << p.out() << " (" << ec.message() << ")");
        BOOST_TEST_REQUIRE(v.is_object(), "not an object: " << p.out());
        return v.as_object();
    }
    cli_process p;
    std::optional<int> status;
};

// The layout the test reads from mountinfo itself: cgroup (v1) and cgroup2 mounts.
std::string expected_layout() {
    bool v1 = false, v2 = false;
    const auto text = read_text("/proc/self/mountinfo");
    for (std::size_t pos = 0; pos < text.size();) {
        const auto nl = text.find('\n', pos);
        const std::string line = text.substr(pos, nl - pos);
        pos = nl == std::string::npos ? text.size() : nl + 1;
        const auto sep = line.find(" - ");
        if (sep == std::string::npos) continue;
        const auto fstype = line.substr(sep + 3, line.find(' ', sep + 3) - sep - 3);
        v1 = v1 || fstype == "cgroup";
        v2 = v2 || fstype == "cgroup2";
    }
    return v1 && v2 ? "hybrid" : v1 ? "v1" : v2 ? "v2" : "none";
}

bool has_finding(const boost::json::object& o, std::string_view probe, std::string_view text) {
    for (const auto& f : o.at("findings").as_array()) {
        const auto& fo = f.as_object();
        if (fo.at("probe").as_string() == probe &&
            std::string_view(fo.at("message").as_string()).find(text) != std::string_view::npos)
            return true;
    }
    return false;
}

} // namespace

BOOST_AUTO_TEST_SUITE(cli_status_usage)

BOOST_AUTO_TEST_CASE(status_bad_usage_exits_2) {
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"status", "pid:abc"},
             {"status", "--max-depth", "1"},
             {"status", "--local"},
             {"status", "--system"},
             {"status", "--kinds", "all"},
             {"status", "--no-victims"},
             {"status", "--metrics", ":0"},
             {"--json", "watch", "/x"},
             {"--table", "demo"}}) {
        status_run r(args);
        BOOST_TEST(exited_with(r.status, exit_usage), args[0] << " " << args[1] << ": " << describe(r.status));
        BOOST_TEST(r.p.err().find("Try 'oomwatch --help'.") != std::string::npos, r.p.err());
        BOOST_TEST(r.p.out().empty(), r.p.out());
    }
}

BOOST_AUTO_TEST_CASE(status_of_a_missing_cgroup_exits_3_with_the_report) {
    const std::string missing = "/sys/fs/cgroup/no-such-cgroup-" + scratch::unique_suffix();
    status_run r({"status", "--json", missing});
    BOOST_TEST(exited_with(r.status, exit_cannot_watch), describe(r.status) << "; stderr: " << r.p.err());
    BOOST_TEST(r.p.err() == "oomwatch: " + missing + ": " + std::strerror(ENOENT) + "\n");
    const auto o = r.json();
    BOOST_TEST(o.at("ok").as_bool() == false);
    const auto& cg = o.at("cgroups").as_array().at(0).as_object();
    BOOST_TEST(cg.at("arg").as_string() == missing);
    BOOST_TEST(cg.at("error").as_string() == std::strerror(ENOENT));
}

BOOST_AUTO_TEST_CASE(help_documents_status) {
    status_run r({"--help"});
    BOOST_TEST(r.p.out().find("status [CGROUP...]") != std::string::npos);
    BOOST_TEST(r.p.out().find("--json, --table") != std::string::npos);
    BOOST_TEST(r.p.out().find("status: a CGROUP cannot be found") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(cli_status_kernel, *boost::unit_test::precondition(kernel_precondition{}))

// What the test can check by itself: the layout, the memory hierarchy, vmstat, kmsg.
BOOST_AUTO_TEST_CASE(status_json_matches_the_machine) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    status_run r({"status", "--json"});
    BOOST_TEST(exited_with(r.status, exit_ok), describe(r.status) << "; stderr: " << r.p.err() << "; stdout: " << r.p.out());
    const auto o = r.json();
    for (const char* key : {"kernel", "cgroup_version", "mounts", "memory_hierarchy", "oom_group_kill", "psi", "kmsg",
                            "dmesg_restrict", "vmstat_oom_kill", "inotify", "rlimit_nofile", "ok", "findings"})
        BOOST_TEST(o.contains(key), "no " << key << " in " << r.p.out());
    BOOST_TEST(!o.contains("cgroups"));  // none asked for
    BOOST_TEST(o.at("cgroup_version").as_string() == expected_layout());
    const auto h = find_memory_hierarchy();
    const auto& mh = o.at("memory_hierarchy").as_object();
    BOOST_TEST(mh.at("mount_point").as_string() == h.mount_point.string());
    BOOST_TEST(mh.at("version").as_int64() == static_cast<int>(h.version));
    BOOST_TEST(o.at("vmstat_oom_kill").is_number());
    BOOST_TEST(o.at("kmsg").at("readable").as_bool());  // root
    BOOST_TEST(o.at("ok").as_bool());
    const auto& ino = o.at("inotify").as_object();
    BOOST_TEST(ino.at("max_user_watches").to_number<std::uint64_t>() ==
               std::stoull(read_text("/proc/sys/fs/inotify/max_user_watches")));
}

// A real kill in a scratch cgroup: the counters and the victim's pid.
BOOST_FIXTURE_TEST_CASE(status_of_a_cgroup_names_its_last_victim, scratch_oom) {
    auto v = scratch::victim::spawn(cg->path(), oom_hog);
    BOOST_TEST_REQUIRE(v.has_value(), "cannot start a victim: " << v.error().message());
    const pid_t pid = v->pid();
    auto st = v->wait(10s);
    BOOST_TEST_REQUIRE(st.has_value(), st.error().message());
    BOOST_TEST_REQUIRE(scratch::victim::killed_by_sigkill(*st), "victim status " << *st);

    // The record follows the kill within microseconds; a few tries, bounded.
    boost::json::object entry;
    for (int attempt = 0; attempt < 10; ++attempt) {
        status_run r({"status", "--json", cg->path().string()});
        BOOST_TEST_REQUIRE(r.status.has_value());
        const auto o = r.json();
        BOOST_TEST_REQUIRE(o.at("cgroups").as_array().size() == 1u, r.p.out());
        entry = o.at("cgroups").as_array().at(0).as_object();
        const auto& last = entry.at("last_victim");
        if (last.is_object() && last.at("pid").to_number<std::int64_t>() == pid) {
            BOOST_TEST(exited_with(r.status, exit_ok), describe(r.status) << "; stdout: " << r.p.out());
            break;
        }
        ::usleep(200'000);
    }
    BOOST_TEST(entry.at("cgroup").as_string() == cg->path().string());
    BOOST_TEST(entry.at("watchable").as_bool());
    BOOST_TEST_REQUIRE(entry.at("last_victim").is_object(), "no last victim: " << boost::json::serialize(entry));
    BOOST_TEST(entry.at("last_victim").at("pid").to_number<std::int64_t>() == pid);
    if (v1()) {
        BOOST_TEST(entry.at("counters").at("oom_kill").to_number<std::uint64_t>() >= 1u);
        BOOST_TEST(entry.at("limits").at("memory.limit_in_bytes").to_number<std::uint64_t>() == oom_limit);
    } else {
        BOOST_TEST(entry.at("events").at("oom_kill").to_number<std::uint64_t>() >= 1u);
        BOOST_TEST(entry.at("limits").at("memory.max").to_number<std::uint64_t>() == oom_limit);
    }
}

// With -r: the cgroup and its children, each with its depth.
BOOST_FIXTURE_TEST_CASE(status_recursive_lists_the_subtree, scratch_oom) {
    auto a = child("a");
    auto b = a.create_child("b", 0);
    BOOST_TEST_REQUIRE(b.has_value(), b.error().message());
    status_run r({"status", "--json", "-r", cg->path().string()});
    BOOST_TEST(exited_with(r.status, exit_ok), describe(r.status) << "; stdout: " << r.p.out());
    const auto o = r.json();
    const auto& list = o.at("cgroups").as_array();
    BOOST_TEST_REQUIRE(list.size() == 3u, r.p.out());
    BOOST_TEST(list.at(1).at("cgroup").as_string() == a.path().string());
    BOOST_TEST(list.at(2).at("depth").to_number<int>() == 2);
    status_run shallow({"status", "--json", "-r", "--max-depth", "1", cg->path().string()});
    BOOST_TEST(shallow.json().at("cgroups").as_array().size() == 2u, shallow.p.out());
}

// The table: the key lines, and for a cgroup its counters and limit.
BOOST_FIXTURE_TEST_CASE(status_table_has_the_key_lines, scratch_oom) {
    status_run r({"--table", "status", cg->path().string()});
    BOOST_TEST(exited_with(r.status, exit_ok), describe(r.status) << "; stdout: " << r.p.out());
    const auto& out = r.p.out();
    BOOST_TEST(out.starts_with("oomwatch status\n"), out);
    // The value of the row `label` (the text after the label's padding), or "(no row)".
    const auto row = [&](const std::string& label) -> std::string {
        const auto pos = out.find("\n  " + label + " ");
        if (pos == std::string::npos) return "(no row)";
        const auto start = out.find_first_not_of(' ', pos + 3 + label.size());
        return out.substr(start, out.find('\n', start) - start);
    };
    const auto h = find_memory_hierarchy();
    BOOST_TEST(row("cgroup version") == expected_layout());
    BOOST_TEST(row("memory controller") ==
               h.mount_point.string() + " (cgroup v" + std::to_string(static_cast<int>(h.version)) + ")");
    BOOST_TEST(row("/dev/kmsg") == "readable");
    for (const char* label : {"vmstat oom_kill", "inotify watches", "RLIMIT_NOFILE", "oom_kill", "last victim"})
        BOOST_TEST(row(label) != "(no row)", "no row '" << label << "' in:\n" << out);
    BOOST_TEST(out.find("\ncgroup " + cg->path().string() + " (v" + std::to_string(static_cast<int>(cg->version())) +
                        ")\n") != std::string::npos, out);
    BOOST_TEST(row(v1() ? "memory.limit_in_bytes" : "memory.max") == std::to_string(oom_limit));
}

// Without CAP_SYSLOG under dmesg_restrict=1: kmsg unreadable, with the hint; a warning only.
BOOST_AUTO_TEST_CASE(status_without_permission_for_the_kernel_log_says_what_to_do) {
    OOMWATCH_REQUIRE_KERNEL_READY();
    std::optional<sysctl_guard> restrict;
    if (read_text("/proc/sys/kernel/dmesg_restrict") != "1\n") restrict.emplace("/proc/sys/kernel/dmesg_restrict", 1);
    status_run r({"status", "--json"}, {.as_nobody = true});
    BOOST_TEST(exited_with(r.status, exit_ok), describe(r.status) << "; stdout: " << r.p.out());
    const auto o = r.json();
    BOOST_TEST(o.at("kmsg").at("readable").as_bool() == false);
    const std::string err(o.at("kmsg").at("error").as_string());
    BOOST_TEST((err == std::strerror(EPERM) || err == std::strerror(EACCES)), err);
    BOOST_TEST(o.at("dmesg_restrict").to_number<std::uint64_t>() == 1u);
    BOOST_TEST(has_finding(o, "kmsg", "(kernel.dmesg_restrict = 1)"), r.p.out());
    BOOST_TEST(has_finding(o, "kmsg", "needs CAP_SYSLOG"), r.p.out());
    BOOST_TEST(has_finding(o, "kmsg", "victims will not be named"), r.p.out());
}

BOOST_AUTO_TEST_SUITE_END()
