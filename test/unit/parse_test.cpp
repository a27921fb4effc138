// Parsers, delta logic, event names, error codes and log severities: pure functions.
#include <oomwatch/error.hpp>
#include <oomwatch/event.hpp>
#include <oomwatch/log.hpp>

#include "detail/error.hpp"
#include "detail/parse.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <cerrno>
#include <limits>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace std::string_literals;
namespace data = boost::unit_test::data;

namespace oomwatch {
// How Boost.Test prints counters in failure messages (found by ADL).
static std::ostream& boost_test_print_type(std::ostream& os, const memory_counters& c) {
    os << "{low " << c.low << ", high " << c.high << ", max " << c.max << ", oom " << c.oom << ", oom_kill "
       << c.oom_kill << ", oom_group_kill " << c.oom_group_kill << ", under_oom " << c.under_oom << ", other [";
    for (const auto& [k, v] : c.other) os << ' ' << k << '=' << v;
    return os << " ]}";
}
} // namespace oomwatch

namespace {

using oomwatch::error;
using oomwatch::event_kind;
using oomwatch::memory_counters;

// A named input: the name is what the log prints (inputs may be binary).
struct text_case {
    const char* name;
    std::string text;
};
std::ostream& operator<<(std::ostream& os, const text_case& c) { return os << c.name; }

std::string u64_max = std::to_string(std::numeric_limits<std::uint64_t>::max());

memory_counters counters(std::uint64_t low, std::uint64_t high, std::uint64_t max, std::uint64_t oom,
                         std::uint64_t oom_kill, std::uint64_t oom_group_kill,
                         std::vector<std::pair<std::string, std::uint64_t>> other = {}) {
    memory_counters c;
    c.low = low;
    c.high = high;
    c.max = max;
    c.oom = oom;
    c.oom_kill = oom_kill;
    c.oom_group_kill = oom_group_kill;
    c.other = std::move(other);
    return c;
}

// Malformed for both flat-keyed parsers (memory.events and memory.oom_control).
std::vector<text_case> malformed_flat_keyed() {
    return {
        {"empty", ""},
        {"newline only", "\n"},
        {"whitespace only", " \t\n  \n\t"},
        {"missing value", "oom_kill_disable 0\nunder_oom\noom 1\n"},
        {"key only, no newline", "oom"},
        {"extra field", "oom_kill_disable 0\nunder_oom 0 0\n"},
        {"non-numeric", "oom_kill_disable 0\nunder_oom x\n"},
        {"negative", "oom_kill_disable 0\nunder_oom -1\n"},
        {"plus sign", "oom_kill_disable 0\nunder_oom +1\n"},
        {"hex", "oom_kill_disable 0\nunder_oom 0x1\n"},
        {"decimal point", "oom_kill_disable 0\nunder_oom 1.0\n"},
        {"trailing garbage", "oom_kill_disable 0\nunder_oom 0kB\n"},
        {"overflow", "oom_kill_disable 0\nunder_oom 0\noom 18446744073709551616\n"},
        {"huge overflow", "oom_kill_disable 0\nunder_oom 0\noom 99999999999999999999999999999\n"},
        {"duplicate key", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\noom_kill 2\n"},
        {"duplicate unknown key", "oom_kill_disable 0\nunder_oom 0\nfuture 1\nfuture 1\n"},
        {"CRLF", "oom_kill_disable 0\r\nunder_oom 0\r\n"},
        {"value glued to key", "oom_kill_disable0\nunder_oom 0\n"},
        {"NUL in value", "oom_kill_disable 0\nunder_oom 0\0\n"s},
        {"NUL as key", "oom_kill_disable 0\nunder_oom 0\n\0 1\n"s},
        {"control byte in key", "oom_kill_disable 0\nunder_oom 0\nfu\x01ture 1\n"},
        {"high byte in key", "oom_kill_disable 0\nunder_oom 0\n\xff\xfe 1\n"},
        {"binary garbage", "\x7f" "ELF\x02\x01\x01\0\0\0\xff\xff\n\x89PNG"s},
        {"truncated line", "oom_kill_disable 0\nunder_oom 0\noom_ki"},
    };
}

} // namespace

BOOST_AUTO_TEST_SUITE(parse)

// ---- memory.events -------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(memory_events)

namespace {
struct events_case {
    const char* name;
    std::string text;
    memory_counters expected;
};
std::ostream& operator<<(std::ostream& os, const events_case& c) { return os << c.name; }

std::vector<events_case> valid_events() {
    return {
        // As Debian's 6.1 kernel writes it after one OOM kill (docs/kernel.md).
        {"kernel 6.1 after a kill", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
         counters(0, 0, 3, 1, 1, 0)},
        {"all zero", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n", counters(0, 0, 0, 0, 0, 0)},
        {"no trailing newline", "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6",
         counters(1, 2, 3, 4, 5, 6)},
        {"older kernel without oom_group_kill", "low 0\nhigh 7\nmax 2\noom 2\noom_kill 1\n",
         counters(0, 7, 2, 2, 1, 0)},
        {"keys in another order", "oom_kill 5\nlow 1\noom 4\n", counters(1, 0, 0, 4, 5, 0)},
        {"unknown keys kept in order", "low 1\nsock_throttled 9\nhigh 2\nfuture 0\noom 3\n",
         counters(1, 2, 0, 3, 0, 0, {{"sock_throttled", 9}, {"future", 0}})},
        {"uint64 max", "oom_kill " + u64_max + "\n", counters(0, 0, 0, 0, std::numeric_limits<std::uint64_t>::max(), 0)},
        {"leading zeros", "oom 007\n", counters(0, 0, 0, 7, 0, 0)},
        {"blank lines skipped", "\nlow 1\n\n  \nhigh 2\n\n", counters(1, 2, 0, 0, 0, 0)},
        {"tabs and extra blanks", "low\t1\n  high   2  \n", counters(1, 2, 0, 0, 0, 0)},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(valid, data::make(valid_events()), c) {
    auto r = oomwatch::parse_memory_events(c.text);
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(*r == c.expected);
}

BOOST_DATA_TEST_CASE(malformed, data::make(malformed_flat_keyed()), c) {
    auto r = oomwatch::parse_memory_events(c.text);
    BOOST_TEST(!r.has_value());
    if (!r) BOOST_TEST(r.error() == make_error_code(error::malformed_counters));
}

BOOST_AUTO_TEST_CASE(every_prefix_of_a_real_file_is_safe) {
    // A fake file caught half-written: each prefix parses or fails, without UB.
    const std::string text = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
    for (std::size_t n = 0; n <= text.size(); ++n) {
        BOOST_TEST_CONTEXT("prefix of " << n << " bytes") {
            auto r = oomwatch::parse_memory_events(std::string_view(text).substr(0, n));
            if (n == 0) {
                BOOST_TEST(!r.has_value());
            } else if (r) {
                BOOST_TEST(r->oom <= 1u);
            } else {
                BOOST_TEST(r.error() == make_error_code(error::malformed_counters));
            }
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---- memory.oom_control ----------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(oom_control)

BOOST_AUTO_TEST_CASE(real_capture) {
    // /sys/fs/cgroup/memory/memory.oom_control on this machine (kernel 6.x, cgroup v1).
    auto r = oomwatch::parse_oom_control("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(!r->oom_kill_disable);
    BOOST_TEST(!r->under_oom);
    BOOST_TEST_REQUIRE(r->oom_kill.has_value());
    BOOST_TEST(*r->oom_kill == 0u);
}

BOOST_AUTO_TEST_CASE(under_oom_with_kills) {
    auto r = oomwatch::parse_oom_control("oom_kill_disable 1\nunder_oom 1\noom_kill 42");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->oom_kill_disable);
    BOOST_TEST(r->under_oom);
    BOOST_TEST(r->oom_kill.value_or(0) == 42u);
}

BOOST_AUTO_TEST_CASE(kernel_older_than_4_13_has_no_oom_kill) {
    auto r = oomwatch::parse_oom_control("oom_kill_disable 0\nunder_oom 0\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(!r->oom_kill.has_value());
}

BOOST_AUTO_TEST_CASE(unknown_keys_ignored) {
    auto r = oomwatch::parse_oom_control("oom_kill_disable 0\nfuture 5\nunder_oom 1\noom_kill 3\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->under_oom);
    BOOST_TEST(r->oom_kill.value_or(0) == 3u);
}

namespace {
std::vector<text_case> malformed_oom_control() {
    auto cases = malformed_flat_keyed();
    cases.push_back({"missing under_oom", "oom_kill_disable 0\noom_kill 0\n"});
    cases.push_back({"missing oom_kill_disable", "under_oom 0\noom_kill 0\n"});
    cases.push_back({"memory.events given instead", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"});
    cases.push_back({"flag above 1", "oom_kill_disable 2\nunder_oom 0\n"});
    cases.push_back({"oom_kill overflow", "oom_kill_disable 0\nunder_oom 0\noom_kill 18446744073709551616\n"});
    return cases;
}
} // namespace

BOOST_DATA_TEST_CASE(malformed, data::make(malformed_oom_control()), c) {
    auto r = oomwatch::parse_oom_control(c.text);
    BOOST_TEST(!r.has_value());
    if (!r) BOOST_TEST(r.error() == make_error_code(error::malformed_counters));
}

BOOST_AUTO_TEST_SUITE_END()

// ---- /proc/PID/cgroup ----------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(proc_cgroup)

// /proc/self/cgroup on this machine: hybrid, memory on v1.
const std::string real_hybrid = "9:name=systemd:/\n"
                                "8:pids:/\n"
                                "7:blkio:/\n"
                                "6:freezer:/\n"
                                "5:devices:/\n"
                                "4:memory:/process_api/bb365bc28758b2e9a8c81ff99e26c542\n"
                                "3:cpuset:/\n"
                                "2:cpuacct:/\n"
                                "1:cpu:/\n"
                                "0::/\n";

BOOST_AUTO_TEST_CASE(real_capture) {
    auto r = oomwatch::parse_proc_cgroup(real_hybrid);
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST_REQUIRE(r->size() == 10u);
    const auto& mem = (*r)[5];
    BOOST_TEST(mem.hierarchy_id == 4u);
    BOOST_TEST(mem.controllers == std::vector<std::string>{"memory"}, boost::test_tools::per_element());
    BOOST_TEST(mem.path == "/process_api/bb365bc28758b2e9a8c81ff99e26c542");
    BOOST_TEST((*r)[0].controllers == std::vector<std::string>{"name=systemd"}, boost::test_tools::per_element());
    const auto& v2 = r->back();
    BOOST_TEST(v2.hierarchy_id == 0u);
    BOOST_TEST(v2.controllers.empty());
    BOOST_TEST(v2.path == "/");
}

BOOST_AUTO_TEST_CASE(combined_controllers_and_colons_in_path) {
    auto r = oomwatch::parse_proc_cgroup("6:cpu,cpuacct:/a:b:c\n0::/user.slice/x:y.scope");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST_REQUIRE(r->size() == 2u);
    BOOST_TEST((*r)[0].controllers == (std::vector<std::string>{"cpu", "cpuacct"}), boost::test_tools::per_element());
    BOOST_TEST((*r)[0].path == "/a:b:c");
    BOOST_TEST((*r)[1].path == "/user.slice/x:y.scope");
}

namespace {
std::vector<text_case> malformed_proc_cgroup() {
    return {
        {"empty", ""},
        {"newline only", "\n"},
        {"whitespace only", "  \t \n"},
        {"no separator", "4memory/x\n"},
        {"one separator", "4:memory\n"},
        {"non-numeric id", "x:memory:/a\n"},
        {"negative id", "-1:memory:/a\n"},
        {"id overflow", "4294967296:memory:/a\n"},
        {"empty id", ":memory:/a\n"},
        {"relative path", "4:memory:a/b\n"},
        {"empty path", "4:memory:\n"},
        {"empty controller in list", "4:cpu,,memory:/a\n"},
        {"blank line in the middle", "4:memory:/a\n\n0::/\n"},
        {"CRLF line endings", "4:memory:/a\r\n\r\n"},
        {"NUL in path", "4:memory:/a\0b\n"s},
        {"binary garbage", "\x7f" "ELF\x02\x01\x01\0\0\0\xff\xff\n"s},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(malformed, data::make(malformed_proc_cgroup()), c) {
    auto r = oomwatch::parse_proc_cgroup(c.text);
    BOOST_TEST(!r.has_value());
    if (!r) BOOST_TEST(r.error() == make_error_code(error::malformed_proc_file));
}

namespace {
struct path_case {
    const char* name;
    std::string text;
    bool v2_has_memory;
    std::optional<std::string> expected;
};
std::ostream& operator<<(std::ostream& os, const path_case& c) { return os << c.name; }

std::vector<path_case> memory_path_cases() {
    return {
        {"hybrid: the v1 line", real_hybrid, false, "/process_api/bb365bc28758b2e9a8c81ff99e26c542"},
        {"v1 line wins over v2", real_hybrid, true, "/process_api/bb365bc28758b2e9a8c81ff99e26c542"},
        {"pure v2 with memory", "0::/system.slice/app.service\n", true, "/system.slice/app.service"},
        {"pure v2 without memory", "0::/system.slice/app.service\n", false, std::nullopt},
        {"combined v1 controllers", "3:cpu,memory,pids:/job\n0::/\n", false, "/job"},
        {"a named hierarchy called memory is not it", "2:name=memory:/x\n0::/y\n", false, std::nullopt},
        {"no memory line", "1:cpu:/x\n", true, std::nullopt},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(memory_cgroup_path, data::make(memory_path_cases()), c) {
    auto entries = oomwatch::parse_proc_cgroup(c.text);
    BOOST_TEST_REQUIRE(entries.has_value(), entries.error().message());
    auto path = oomwatch::memory_cgroup_path(*entries, c.v2_has_memory);
    BOOST_TEST(path.has_value() == c.expected.has_value());
    if (path && c.expected) BOOST_TEST(*path == *c.expected);
}

BOOST_AUTO_TEST_SUITE_END()

// ---- /proc/PID/mountinfo ---------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(mountinfo)

// Lines of /proc/self/mountinfo on this machine.
const std::string real_mountinfo =
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534\n"
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

BOOST_AUTO_TEST_CASE(real_capture) {
    auto r = oomwatch::parse_mountinfo(real_mountinfo);
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST_REQUIRE(r->size() == 7u);
    const auto& mem = (*r)[4];
    BOOST_TEST(mem.mount_id == 35u);
    BOOST_TEST(mem.parent_id == 31u);
    BOOST_TEST(mem.root == "/");
    BOOST_TEST(mem.mount_point == "/sys/fs/cgroup/memory");
    BOOST_TEST(mem.fs_type == "cgroup");
    BOOST_TEST(mem.source == "cgroup");
    BOOST_TEST(mem.super_options == "rw,memory");
    BOOST_TEST((*r)[1].super_options == "rw,discard,resv_strict,resuid=65534,resgid=65534");
    BOOST_TEST((*r)[6].fs_type == "cgroup2");
}

BOOST_AUTO_TEST_CASE(optional_fields_before_the_separator) {
    // systemd machines: shared/master/propagate_from/unbindable fields, any number of them.
    auto r = oomwatch::parse_mountinfo(
        "30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755\n"
        "35 30 0:31 /docker/x /sys/fs/cgroup/memory rw shared:16 master:3 propagate_from:2 unbindable - "
        "cgroup cgroup rw,memory\n"
        "36 30 0:32 / /x rw - - - rw\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST_REQUIRE(r->size() == 3u);
    BOOST_TEST((*r)[0].fs_type == "tmpfs");
    BOOST_TEST((*r)[0].super_options == "ro,mode=755");
    BOOST_TEST((*r)[1].root == "/docker/x");
    BOOST_TEST((*r)[1].fs_type == "cgroup");
    BOOST_TEST((*r)[1].super_options == "rw,memory");
    // A file system type or source spelled "-" comes after the real separator.
    BOOST_TEST((*r)[2].fs_type == "-");
    BOOST_TEST((*r)[2].source == "-");
}

BOOST_AUTO_TEST_CASE(octal_escapes_decoded) {
    auto r = oomwatch::parse_mountinfo(
        "50 27 0:40 /a\\040b\\011c\\012d\\134e /mnt/with\\040space rw - tmpfs my\\040src rw\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST_REQUIRE(r->size() == 1u);
    BOOST_TEST((*r)[0].root == "/a b\tc\nd\\e");
    BOOST_TEST((*r)[0].mount_point == "/mnt/with space");
    BOOST_TEST((*r)[0].source == "my\\040src");  // only root and mount point are decoded
}

BOOST_AUTO_TEST_CASE(bad_escapes_kept_literally) {
    // "\000" (NUL), "\400" (above a byte), non-octal and cut-short escapes.
    auto r = oomwatch::parse_mountinfo("50 27 0:40 /\\000\\400\\9x\\04 /m\\ rw - tmpfs t rw");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST((*r)[0].root == "/\\000\\400\\9x\\04");
    BOOST_TEST((*r)[0].mount_point == "/m\\");
}

BOOST_AUTO_TEST_CASE(empty_source_and_spaces_in_options) {
    // mount -t tmpfs "" /x gives an empty source; some file systems print unescaped spaces.
    auto r = oomwatch::parse_mountinfo("60 27 0:41 / /x rw - tmpfs  rw,a b");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST((*r)[0].source == "");
    BOOST_TEST((*r)[0].super_options == "rw,a b");
}

namespace {
std::vector<text_case> malformed_mountinfo() {
    return {
        {"empty", ""},
        {"newline only", "\n"},
        {"whitespace only", "   \n \t \n"},
        {"no separator", "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime cgroup cgroup rw,memory\n"},
        {"separator too early", "35 31 0:32 / /m - cgroup cgroup rw,memory\n"},
        {"no super options", "35 31 0:32 / /m rw - cgroup cgroup\n"},
        {"only fs type after separator", "35 31 0:32 / /m rw - cgroup\n"},
        {"non-numeric mount id", "x 31 0:32 / /m rw - cgroup cgroup rw\n"},
        {"non-numeric parent id", "35 y 0:32 / /m rw - cgroup cgroup rw\n"},
        {"negative id", "-35 31 0:32 / /m rw - cgroup cgroup rw\n"},
        {"id overflow", "4294967296 31 0:32 / /m rw - cgroup cgroup rw\n"},
        {"bad device", "35 31 032 / /m rw - cgroup cgroup rw\n"},
        {"empty fs type", "35 31 0:32 / /m rw -  cgroup rw\n"},
        {"empty root (two spaces)", "35 31 0:32  /m rw - cgroup cgroup rw\n"},
        {"tabs instead of spaces", "35\t31\t0:32\t/\t/m\trw\t-\tcgroup\tcgroup\trw\n"},
        {"blank line in the middle", "22 27 0:21 / /proc rw - proc proc rw\n\n27 1 254:0 / / rw - ext4 /dev/vda rw\n"},
        {"one good line then garbage", "22 27 0:21 / /proc rw - proc proc rw\ngarbage\n"},
        {"NUL in mount point", "35 31 0:32 / /m\0x rw - cgroup cgroup rw\n"s},
        {"binary garbage", "\x7f" "ELF\x02\x01\x01\0\0\0\xff\xff\n"s},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(malformed, data::make(malformed_mountinfo()), c) {
    auto r = oomwatch::parse_mountinfo(c.text);
    BOOST_TEST(!r.has_value());
    if (!r) BOOST_TEST(r.error() == make_error_code(error::malformed_proc_file));
}

namespace {
struct option_case {
    const char* options;
    const char* opt;
    bool expected;
};
std::ostream& operator<<(std::ostream& os, const option_case& c) {
    return os << '"' << c.options << "\" has \"" << c.opt << '"';
}

std::vector<option_case> option_cases() {
    return {
        {"rw,memory", "memory", true},
        {"memory", "memory", true},
        {"memory,rw", "memory", true},
        {"rw,cpu,memory,pids", "memory", true},
        {"rw,name=memory", "memory", false},
        {"rw,memoryx", "memory", false},
        {"rw,xmemory", "memory", false},
        {"rw,mem", "memory", false},
        {"", "memory", false},
        {"rw,,memory", "memory", true},
        {"rw,", "", false},
        {"", "", false},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(has_option, data::make(option_cases()), c) {
    BOOST_TEST(oomwatch::has_option(c.options, c.opt) == c.expected);
}

BOOST_AUTO_TEST_SUITE_END()

// ---- compute_delta ---------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(delta)

BOOST_AUTO_TEST_CASE(growth_per_kind) {
    memory_counters before = counters(1, 2, 3, 4, 5, 6);
    memory_counters after = counters(11, 12, 13, 15, 17, 19);
    auto d = oomwatch::compute_delta(before, after, oomwatch::kind_set::all());
    BOOST_TEST(!d.went_backwards);
    BOOST_TEST(!d.empty());
    BOOST_TEST(d.get(event_kind::low) == 10u);
    BOOST_TEST(d.get(event_kind::high) == 10u);
    BOOST_TEST(d.get(event_kind::max) == 10u);
    BOOST_TEST(d.get(event_kind::oom) == 11u);
    BOOST_TEST(d.get(event_kind::oom_kill) == 12u);
    BOOST_TEST(d.get(event_kind::oom_group_kill) == 13u);
    BOOST_TEST(d.get(event_kind::removed) == 0u);
}

BOOST_AUTO_TEST_CASE(no_change_is_empty) {
    memory_counters c = counters(1, 2, 3, 4, 5, 6, {{"future", 3}});
    auto d = oomwatch::compute_delta(c, c, oomwatch::kind_set::all());
    BOOST_TEST(!d.went_backwards);
    BOOST_TEST(d.empty());
}

BOOST_AUTO_TEST_CASE(from_zero_to_max) {
    const auto top = std::numeric_limits<std::uint64_t>::max();
    auto d = oomwatch::compute_delta(memory_counters{}, counters(0, 0, 0, 0, top, 0), oomwatch::kind_set::all());
    BOOST_TEST(d.get(event_kind::oom_kill) == top);
}

BOOST_AUTO_TEST_CASE(kinds_filter) {
    memory_counters before;
    memory_counters after = counters(1, 1, 1, 1, 1, 1);
    auto d = oomwatch::compute_delta(before, after, oomwatch::kind_set::defaults());
    BOOST_TEST(d.get(event_kind::oom) == 1u);
    BOOST_TEST(d.get(event_kind::oom_kill) == 1u);
    BOOST_TEST(d.get(event_kind::oom_group_kill) == 1u);
    BOOST_TEST(d.get(event_kind::high) == 0u);
    BOOST_TEST(d.get(event_kind::max) == 0u);
    BOOST_TEST(d.get(event_kind::low) == 0u);

    auto only_high = oomwatch::compute_delta(before, after, oomwatch::kind_set{event_kind::high});
    BOOST_TEST(only_high.get(event_kind::high) == 1u);
    BOOST_TEST(only_high.get(event_kind::oom) == 0u);

    auto none = oomwatch::compute_delta(before, after, oomwatch::kind_set{});
    BOOST_TEST(none.empty());
    BOOST_TEST(!none.went_backwards);
}

// Each known counter going down, alone, whatever the kinds asked for.
namespace {
std::vector<event_kind> counted_kinds() {
    return {event_kind::low, event_kind::high, event_kind::max, event_kind::oom, event_kind::oom_kill,
            event_kind::oom_group_kill};
}
} // namespace

BOOST_DATA_TEST_CASE(went_backwards, data::make(counted_kinds()), kind) {
    memory_counters before = counters(5, 5, 5, 5, 5, 5);
    memory_counters after = counters(9, 9, 9, 9, 9, 9);
    switch (kind) {
    case event_kind::low: after.low = 4; break;
    case event_kind::high: after.high = 4; break;
    case event_kind::max: after.max = 4; break;
    case event_kind::oom: after.oom = 4; break;
    case event_kind::oom_kill: after.oom_kill = 4; break;
    case event_kind::oom_group_kill: after.oom_group_kill = 4; break;
    default: break;
    }
    for (auto kinds : {oomwatch::kind_set::all(), oomwatch::kind_set::defaults(), oomwatch::kind_set{}}) {
        auto d = oomwatch::compute_delta(before, after, kinds);
        BOOST_TEST(d.went_backwards);
        BOOST_TEST(d.empty());  // no event is invented from the other counters
    }
}

BOOST_AUTO_TEST_CASE(unknown_keys_do_not_count) {
    memory_counters before = counters(0, 0, 0, 0, 0, 0, {{"future", 9}});
    memory_counters after = counters(0, 0, 0, 1, 0, 0, {{"future", 1}});
    auto d = oomwatch::compute_delta(before, after, oomwatch::kind_set::all());
    BOOST_TEST(!d.went_backwards);
    BOOST_TEST(d.get(event_kind::oom) == 1u);
}

BOOST_AUTO_TEST_CASE(empty_checks_every_kind) {
    for (std::size_t i = 0; i < oomwatch::event_kind_count; ++i) {
        BOOST_TEST_CONTEXT("kind index " << i) {
            oomwatch::counter_delta d;
            BOOST_TEST(d.empty());
            d.by_kind[i] = 1;
            BOOST_TEST(!d.empty());
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

// ---- event names, counters, errors, log severities -------------------------------------

BOOST_AUTO_TEST_SUITE(names)

BOOST_AUTO_TEST_CASE(event_kind_names_round_trip) {
    const std::vector<std::pair<event_kind, std::string>> expected = {
        {event_kind::oom, "oom"},   {event_kind::oom_kill, "oom_kill"}, {event_kind::oom_group_kill, "oom_group_kill"},
        {event_kind::high, "high"}, {event_kind::max, "max"},           {event_kind::low, "low"},
        {event_kind::removed, "removed"}, {event_kind::failed, "failed"}, {event_kind::created, "created"}, {event_kind::skipped, "skipped"},
    };
    BOOST_TEST(expected.size() == oomwatch::event_kind_count);
    for (const auto& [kind, name] : expected) {
        BOOST_TEST_CONTEXT(name) {
            BOOST_TEST(oomwatch::to_string(kind) == name);
            auto back = oomwatch::event_kind_from_string(name);
            BOOST_TEST_REQUIRE(back.has_value());
            BOOST_TEST(*back == kind);
        }
    }
    for (std::string_view bad : {"", "OOM", "oom ", "kill", "oom_kill\n", "removedx"}) {
        BOOST_TEST_CONTEXT('"' << bad << '"') { BOOST_TEST(!oomwatch::event_kind_from_string(bad).has_value()); }
    }
}

BOOST_AUTO_TEST_CASE(counters_get) {
    memory_counters c = counters(1, 2, 3, 4, 5, 6);
    BOOST_TEST(c.get(event_kind::low) == 1u);
    BOOST_TEST(c.get(event_kind::high) == 2u);
    BOOST_TEST(c.get(event_kind::max) == 3u);
    BOOST_TEST(c.get(event_kind::oom) == 4u);
    BOOST_TEST(c.get(event_kind::oom_kill) == 5u);
    BOOST_TEST(c.get(event_kind::oom_group_kill) == 6u);
    BOOST_TEST(c.get(event_kind::removed) == 0u);
}

BOOST_AUTO_TEST_CASE(error_category) {
    const auto& cat = oomwatch::error_category();
    BOOST_TEST(std::string(cat.name()) == "oomwatch");
    std::set<std::string> messages;
    for (int e = static_cast<int>(error::not_a_cgroup); e <= static_cast<int>(error::operation_in_progress); ++e) {
        BOOST_TEST_CONTEXT("value " << e) {
            auto ec = make_error_code(static_cast<error>(e));
            BOOST_TEST(ec.failed());
            BOOST_TEST(&ec.category() == &cat);
            BOOST_TEST(!ec.message().empty());
            BOOST_TEST(ec.message().find("Unknown") == std::string::npos);
            messages.insert(ec.message());
        }
    }
    BOOST_TEST(messages.size() == 8u);  // one distinct message each
    BOOST_TEST(cat.message(999).find("Unknown") != std::string::npos);
    // The enum converts implicitly, as is_error_code_enum promises.
    boost::system::error_code ec = error::no_memory_hierarchy;
    BOOST_TEST(ec == make_error_code(error::no_memory_hierarchy));
    BOOST_TEST(ec != make_error_code(error::not_a_cgroup));
}

BOOST_AUTO_TEST_CASE(cgroup_error_what) {
    boost::system::error_code enoent(ENOENT, boost::system::system_category());
    oomwatch::cgroup_error e(enoent, "/sys/fs/cgroup/memory/x");
    BOOST_TEST(std::string(e.what()) == "oomwatch: /sys/fs/cgroup/memory/x: " + enoent.message());
    BOOST_TEST(e.code() == enoent);
    BOOST_TEST(e.path() == "/sys/fs/cgroup/memory/x");

    oomwatch::cgroup_error own(make_error_code(error::not_a_cgroup), "/tmp");
    BOOST_TEST(std::string(own.what()) == "oomwatch: /tmp: Not a cgroup directory");

    oomwatch::cgroup_error copy = own;  // copies keep the message
    BOOST_TEST(std::string(copy.what()) == own.what());
}

BOOST_AUTO_TEST_CASE(throw_if) {
    BOOST_CHECK_NO_THROW(oomwatch::throw_if({}, "/x"));
    try {
        oomwatch::throw_if(make_error_code(error::no_memory_controller), "/sys/fs/cgroup/cpu");
        BOOST_FAIL("throw_if did not throw");
    } catch (const oomwatch::cgroup_error& e) {
        BOOST_TEST(e.code() == make_error_code(error::no_memory_controller));
        BOOST_TEST(e.path() == "/sys/fs/cgroup/cpu");
    }
    // Callers catching boost::system::system_error see it too.
    BOOST_CHECK_THROW(oomwatch::throw_if(make_error_code(error::not_a_cgroup), "/x"), boost::system::system_error);
}

BOOST_AUTO_TEST_CASE(log_severity_names) {
    using oomwatch::log_severity;
    const std::vector<std::pair<log_severity, std::string>> expected = {{log_severity::trace, "trace"},
                                                                        {log_severity::debug, "debug"},
                                                                        {log_severity::info, "info"},
                                                                        {log_severity::warning, "warning"},
                                                                        {log_severity::error, "error"}};
    for (const auto& [s, name] : expected) {
        BOOST_TEST_CONTEXT(name) {
            BOOST_TEST(oomwatch::to_string(s) == name);
            std::ostringstream os;
            os << s;
            BOOST_TEST(os.str() == name);
        }
    }
    BOOST_TEST(oomwatch::log_channel == "oomwatch");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE_END()
