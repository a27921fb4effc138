// The JSON line of one event (`event_to_json`, src/cli/output.cpp), built from events
// made here and parsed back with Boost.JSON's parser, which rejects bytes that are not
// UTF-8: the victims of oom_kill lines with every optional key, names with quotes and
// invalid UTF-8, and the lines of other kinds, which stay as they were.
#include "cli.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <sys/types.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

using namespace oomwatch;
using namespace std::chrono_literals;

namespace {

// 2026-11-30T05:01:02.123456Z
std::chrono::system_clock::time_point sample_time() {
    using namespace std::chrono;
    return sys_days{year{2026} / 11 / 30} + 5h + 1min + 2s + 123456us;
}

oom_event event_of(event_kind kind, std::uint64_t count) {
    oom_event ev;
    ev.cgroup = "/sys/fs/cgroup/memory/app";
    ev.kind = kind;
    ev.count = count;
    ev.counters.oom = 1;
    ev.counters.oom_kill = count;
    ev.counters.under_oom = true;
    ev.time = sample_time();
    ev.version = cgroup_version::v1;
    return ev;
}

// A victim with every field set and every optional key present but the group kill's.
victim full_victim() {
    victim v;
    v.pid = 4242;
    v.comm = "hog";
    v.uid = 1000;
    v.constraint = oom_constraint::memcg;
    v.task_cgroup = "/sys/fs/cgroup/memory/app/worker";
    v.oom_cgroup = "/sys/fs/cgroup/memory/app";
    v.total_vm = 270573568;
    v.anon_rss = 33116160;
    v.file_rss = 1331200;
    v.shmem_rss = 4096;
    v.oom_score_adj = -500;
    v.kernel_seq = 812;
    v.kernel_time = 123456789us;
    return v;
}

// The line parsed back; fails the test unless it is one valid JSON object.
boost::json::object parse_line(const std::string& line) {
    BOOST_TEST_REQUIRE(line.find('\n') == std::string::npos, "not one line: " << line);
    boost::system::error_code ec;
    auto v = boost::json::parse(line, ec);
    BOOST_TEST_REQUIRE(!ec, "not valid JSON: " << line << " (" << ec.message() << ")");
    BOOST_TEST_REQUIRE(v.is_object(), line);
    return std::move(v.as_object());
}

std::string text(const boost::json::value& v) { return std::string(v.as_string()); }

// The comm of the one victim of a line whose victim's comm was `comm`, parsed back.
std::string comm_round_trip(const std::string& comm) {
    auto ev = event_of(event_kind::oom_kill, 1);
    ev.victims.push_back(full_victim());
    ev.victims.back().comm = comm;
    const auto line = cli::event_to_json(ev);
    return text(parse_line(line).at("victims").as_array().at(0).as_object().at("comm"));
}

} // namespace

BOOST_AUTO_TEST_SUITE(cli_output)

BOOST_AUTO_TEST_CASE(a_kill_line_lists_its_victims_and_the_unattributed_kills) {
    auto ev = event_of(event_kind::oom_kill, 3);
    ev.victims.push_back(full_victim());
    victim g;  // named by a rate-limited report, killed with its memory.oom.group
    g.pid = 77;
    g.comm = std::string("a\"b\xff\xc3", 5);  // a quote, a byte never in UTF-8, a sequence cut short
    g.uid = static_cast<uid_t>(-1);
    g.constraint = oom_constraint::global;
    g.constraint_guessed = true;
    g.oom_score_adj = 1000;
    g.group_kill = true;
    g.group_cgroup = "/sys/fs/cgroup/memory/app";
    g.kernel_seq = 813;
    g.kernel_time = 123456790us;
    ev.victims.push_back(g);
    ev.unattributed = 1;

    const auto o = parse_line(cli::event_to_json(ev));
    BOOST_TEST(text(o.at("kind")) == "oom_kill");
    BOOST_TEST(o.at("count").to_number<std::uint64_t>() == 3u);
    BOOST_TEST(o.at("unattributed").to_number<std::uint64_t>() == 1u);
    const auto& vs = o.at("victims").as_array();
    BOOST_TEST_REQUIRE(vs.size() == 2u);

    const auto& a = vs.at(0).as_object();
    BOOST_TEST(a.size() == 13u, boost::json::serialize(a));  // no constraint_guessed, no group keys
    BOOST_TEST(a.at("pid").to_number<std::int64_t>() == 4242);
    BOOST_TEST(text(a.at("comm")) == "hog");
    BOOST_TEST(a.at("uid").to_number<std::int64_t>() == 1000);
    BOOST_TEST(text(a.at("constraint")) == "memcg");
    BOOST_TEST(!a.contains("constraint_guessed"));
    BOOST_TEST(text(a.at("task_cgroup")) == "/sys/fs/cgroup/memory/app/worker");
    BOOST_TEST(text(a.at("oom_cgroup")) == "/sys/fs/cgroup/memory/app");
    BOOST_TEST(a.at("total_vm").to_number<std::uint64_t>() == 270573568u);
    BOOST_TEST(a.at("anon_rss").to_number<std::uint64_t>() == 33116160u);
    BOOST_TEST(a.at("file_rss").to_number<std::uint64_t>() == 1331200u);
    BOOST_TEST(a.at("shmem_rss").to_number<std::uint64_t>() == 4096u);
    BOOST_TEST(a.at("oom_score_adj").to_number<std::int64_t>() == -500);
    BOOST_TEST(!a.contains("group_kill"));
    BOOST_TEST(!a.contains("group_cgroup"));
    BOOST_TEST(a.at("kernel_seq").to_number<std::uint64_t>() == 812u);
    BOOST_TEST(a.at("kernel_time_us").to_number<std::int64_t>() == 123456789);

    const auto& b = vs.at(1).as_object();
    BOOST_TEST(b.size() == 14u, boost::json::serialize(b));
    BOOST_TEST(b.at("pid").to_number<std::int64_t>() == 77);
    // The quote escaped by the serializer; 0xff and the lone 0xc3 as U+00FF and U+00C3.
    BOOST_TEST(text(b.at("comm")) == "a\"b\xc3\xbf\xc3\x83");
    BOOST_TEST(b.at("uid").is_null());
    BOOST_TEST(text(b.at("constraint")) == "global");
    BOOST_TEST(b.at("constraint_guessed").as_bool());
    BOOST_TEST(!b.contains("task_cgroup"));  // unknown: left out, not ""
    BOOST_TEST(!b.contains("oom_cgroup"));
    BOOST_TEST(b.at("total_vm").to_number<std::uint64_t>() == 0u);
    BOOST_TEST(b.at("oom_score_adj").to_number<std::int64_t>() == 1000);
    BOOST_TEST(b.at("group_kill").as_bool());
    BOOST_TEST(text(b.at("group_cgroup")) == "/sys/fs/cgroup/memory/app");
    BOOST_TEST(b.at("kernel_seq").to_number<std::uint64_t>() == 813u);
    BOOST_TEST(b.at("kernel_time_us").to_number<std::int64_t>() == 123456790);
}

BOOST_AUTO_TEST_CASE(a_kill_line_without_victims_still_has_both_keys) {
    auto ev = event_of(event_kind::oom_kill, 2);
    ev.unattributed = 2;
    const auto line = cli::event_to_json(ev);
    BOOST_TEST(line.find(R"("victims":[],"unattributed":2)") != std::string::npos, line);
    parse_line(line);
}

// Lines of other kinds are exactly what they were before victims existed.
BOOST_AUTO_TEST_CASE(lines_of_other_kinds_are_unchanged) {
    BOOST_TEST(cli::event_to_json(event_of(event_kind::oom, 1)) ==
               R"({"cgroup":"/sys/fs/cgroup/memory/app","kind":"oom","count":1,"time":"2026-11-30T05:01:02.123456Z",)"
               R"("version":1,"counters":{"oom":1,"oom_kill":1,"oom_group_kill":0,"under_oom":true}})");
    auto skipped = event_of(event_kind::skipped, 1);
    skipped.version = cgroup_version::v2;
    skipped.origin = event_origin::removed_descendant;
    skipped.error = boost::system::error_code(EMFILE, boost::system::system_category());
    BOOST_TEST(cli::event_to_json(skipped) ==
               R"({"cgroup":"/sys/fs/cgroup/memory/app","kind":"skipped","count":1,"time":"2026-11-30T05:01:02.123456Z",)"
               R"("version":2,"counters":{"oom":1,"oom_kill":1,"oom_group_kill":0,"low":0,"high":0,"max":0},)"
               R"("origin":"removed_descendant","error":"Too many open files"})");
    for (auto kind : {event_kind::oom_group_kill, event_kind::removed, event_kind::high}) {
        BOOST_TEST_CONTEXT(kind) {
            const auto o = parse_line(cli::event_to_json(event_of(kind, 1)));
            BOOST_TEST(!o.contains("victims"));
            BOOST_TEST(!o.contains("unattributed"));
        }
    }
}

// Well-formed UTF-8 passes unchanged; every byte outside it becomes the character of
// its value, and the line stays valid JSON.
BOOST_AUTO_TEST_CASE(bytes_that_are_not_utf8_keep_the_line_valid) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"plain", "plain"},
        {"\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9"},                   // two-byte sequences
        {"\xe2\x82\xac", "\xe2\x82\xac"},                             // three bytes
        {"\xf0\x9f\x92\xa5", "\xf0\x9f\x92\xa5"},                     // four bytes
        {"\x01\t\\", "\x01\t\\"},                                     // escaped by the serializer
        {"\xff", "\xc3\xbf"},                                         // never in UTF-8
        {"\x80x", "\xc2\x80x"},                                       // a continuation byte alone
        {"\xc0\x80", "\xc3\x80\xc2\x80"},                             // overlong
        {"\xe0\x80\xaf", "\xc3\xa0\xc2\x80\xc2\xaf"},                 // overlong, three bytes
        {"\xed\xa0\x80", "\xc3\xad\xc2\xa0\xc2\x80"},                 // a surrogate
        {"\xf4\x90\x80\x80", "\xc3\xb4\xc2\x90\xc2\x80\xc2\x80"},     // above U+10FFFF
        {"x\xe2\x82", "x\xc3\xa2\xc2\x82"},                           // cut short at the end
        {"\xe2\x82x\xe2\x82\xac", "\xc3\xa2\xc2\x82x\xe2\x82\xac"},   // cut short, then whole
    };
    for (const auto& [comm, expected] : cases) {
        BOOST_TEST_CONTEXT("comm of " << comm.size() << " bytes, expecting " << expected) {
            BOOST_TEST(comm_round_trip(comm) == expected);
        }
    }
    // A cgroup may be named with any byte too.
    auto ev = event_of(event_kind::oom, 1);
    ev.cgroup = "/sys/fs/cgroup/memory/\xfe";
    BOOST_TEST(text(parse_line(cli::event_to_json(ev)).at("cgroup")) == "/sys/fs/cgroup/memory/\xc3\xbe");
}

BOOST_AUTO_TEST_SUITE_END()
