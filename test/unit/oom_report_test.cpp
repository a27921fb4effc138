// The assembly of the OOM killer's lines into kill records (src/detail/oom_report.hpp),
// on the real captures of test/data/kmsg/ (host, kernel 6.18, cgroup v1) and on
// sequences written from mm/oom_kill.c (oom_kill_process, dump_header,
// __oom_kill_process, oom_kill_memcg_member) for what the host cannot show.
#include "detail/oom_report.hpp"

#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace oomwatch;
using namespace oomwatch::detail;

namespace {

constexpr std::uint64_t KiB = 1024;
const std::string host_root = "/process_api/7feab773329cb6d0de9942f7c954e883/kmsgcap-23612";

std::filesystem::path data_dir() {
    return std::filesystem::path(__FILE__).parent_path().parent_path() / "data" / "kmsg";
}

// Every record of a capture, through the assembler.
std::vector<kill_record> assemble_capture(const std::string& name, oom_report_assembler& a) {
    std::ifstream in(data_dir() / name, std::ios::binary);
    BOOST_TEST_REQUIRE(in.good(), "cannot open " << name);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<kill_record> kills;
    for (auto piece : split_kmsg_records(text)) {
        auto r = parse_kmsg_record(piece);
        BOOST_TEST_REQUIRE(r.has_value(), "a record of " << name << " does not parse: " << piece);
        for (auto& k : a.feed_record(*r)) kills.push_back(std::move(k));
    }
    return kills;
}

// A synthetic sequence: records of the kernel (facility 0) unless told.
struct sequence {
    oom_report_assembler a;
    std::uint64_t seq = 1000;
    std::uint64_t ts = 5'000'000;
    std::vector<kill_record> kills;

    void add(const std::string& message, unsigned level = 6, unsigned facility = 0, char flag = '-',
             const std::string& caller = {}, std::uint64_t advance_usec = 10) {
        kmsg_record r;
        r.facility = facility;
        r.level = level;
        r.seq = seq++;
        ts += advance_usec;
        r.ts_usec = ts;
        r.flag = flag;
        r.caller = caller;
        r.message = message;
        for (auto& k : a.feed_record(r)) kills.push_back(std::move(k));
    }
};

std::string killed(const std::string& reason, int pid, const std::string& comm, int uid = 0) {
    return (reason.empty() ? std::string() : reason + ": ") + "Killed process " + std::to_string(pid) + " (" + comm +
           ") total-vm:1000kB, anon-rss:500kB, file-rss:20kB, shmem-rss:4kB, UID:" + std::to_string(uid) +
           " pgtables:40kB oom_score_adj:" + std::to_string(pid % 7);
}

std::string summary_memcg(const std::string& oom, const std::string& task, int pid, const std::string& comm) {
    return "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=" + oom +
           ",task_memcg=" + task + ",task=" + comm + ",pid=" + std::to_string(pid) + ",uid=0";
}

const std::string invoked = "hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0";
const std::string memcg_reason = "Memory cgroup out of memory";

} // namespace

BOOST_AUTO_TEST_SUITE(oom_report)

// ---- the host captures -----------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(host_memcg_kill) {
    oom_report_assembler a;
    auto kills = assemble_capture("host-memcg-kill.kmsg", a);
    BOOST_TEST_REQUIRE(kills.size() == 1u);
    const auto& k = kills[0];
    BOOST_TEST(k.seq == 255730u);
    BOOST_TEST(k.ts_usec == 23652147089u);
    BOOST_TEST(k.pid == 23660);
    BOOST_TEST(k.comm == "dd");
    BOOST_TEST_REQUIRE(k.uid.has_value());
    BOOST_TEST(*k.uid == 0u);
    BOOST_TEST((k.constraint == kmsg_constraint::memcg));
    BOOST_TEST(!k.constraint_guessed);
    BOOST_TEST(k.reason == memcg_reason);
    BOOST_TEST(k.oom_memcg == host_root + "/kill");
    BOOST_TEST(k.task_memcg == host_root + "/kill");
    BOOST_TEST(k.report_matched);
    BOOST_TEST(!k.task_memcg_from_proc);
    BOOST_TEST(k.total_vm == 68512 * KiB);
    BOOST_TEST(k.anon_rss == 32512 * KiB);
    BOOST_TEST(k.file_rss == 1632 * KiB);
    BOOST_TEST((k.shmem_rss == std::optional<std::uint64_t>(0)));
    BOOST_TEST((k.oom_score_adj == std::optional<int>(0)));
    BOOST_TEST(!k.group);
    BOOST_TEST(a.foreign_records() == 1u);  // the capture script's own marker (facility 1)
}

BOOST_AUTO_TEST_CASE(host_parent_limit) {
    oom_report_assembler a;
    auto kills = assemble_capture("host-parent-limit.kmsg", a);
    BOOST_TEST_REQUIRE(kills.size() == 1u);
    BOOST_TEST(kills[0].pid == 23704);
    BOOST_TEST(kills[0].oom_memcg == host_root + "/P");
    BOOST_TEST(kills[0].task_memcg == host_root + "/P/child");
    BOOST_TEST((kills[0].constraint == kmsg_constraint::memcg));
}

BOOST_AUTO_TEST_CASE(host_comm_with_space) {
    oom_report_assembler a;
    auto kills = assemble_capture("host-comm-space.kmsg", a);
    BOOST_TEST_REQUIRE(kills.size() == 1u);
    BOOST_TEST(kills[0].pid == 23748);
    BOOST_TEST(kills[0].comm == "my dd");
    BOOST_TEST(kills[0].task_memcg == host_root + "/space");
}

BOOST_AUTO_TEST_CASE(host_comm_with_escapes) {
    oom_report_assembler a;
    auto kills = assemble_capture("host-comm-escapes.kmsg", a);
    BOOST_TEST_REQUIRE(kills.size() == 1u);
    BOOST_TEST(kills[0].pid == 23791);
    BOOST_TEST(kills[0].comm == "x\\y) (z\tw");
    BOOST_TEST(kills[0].task_memcg == host_root + "/escapes");
    BOOST_TEST(kills[0].report_matched);
}

BOOST_AUTO_TEST_CASE(all_captures_in_a_row_give_one_kill_each) {
    oom_report_assembler a;
    std::vector<pid_t> pids;
    for (const char* f : {"host-memcg-kill.kmsg", "host-parent-limit.kmsg", "host-comm-space.kmsg",
                          "host-comm-escapes.kmsg"})
        for (auto& k : assemble_capture(f, a)) pids.push_back(k.pid);
    BOOST_TEST((pids == std::vector<pid_t>{23660, 23704, 23748, 23791}));
}

// The VM captures (kernel 6.1, cgroup v2; test/data/kmsg/capture-vm).
BOOST_AUTO_TEST_CASE(vm_memory_oom_group_kill) {
    // 3 tasks in /group: the kernel kills the chosen one, prints the group line, then
    // kills every member, the chosen one again; memory.events says oom_kill 4 (in
    // vm61-v2-oom-group.memory.events): one record per kill counted.
    oom_report_assembler a;
    auto kills = assemble_capture("vm61-v2-oom-group.kmsg", a);
    BOOST_TEST_REQUIRE(kills.size() == 4u);
    BOOST_TEST(kills[0].pid == 123);
    BOOST_TEST(!kills[0].group);
    BOOST_TEST(kills[0].task_memcg == "/group");
    std::vector<pid_t> members;
    for (std::size_t i = 1; i < kills.size(); ++i) {
        members.push_back(kills[i].pid);
        BOOST_TEST(kills[i].group);
        BOOST_TEST(kills[i].group_memcg == "/group");
        BOOST_TEST(kills[i].oom_memcg == "/group");
    }
    BOOST_TEST((members == std::vector<pid_t>{123, 124, 125}));
    BOOST_TEST(kills[2].comm == "sleep");
}

BOOST_AUTO_TEST_CASE(vm_global_oom) {
    oom_report_assembler a;
    auto kills = assemble_capture("vm61-v2-global-oom.kmsg", a);
    BOOST_TEST_REQUIRE(kills.size() == 1u);  // vmstat oom_kill rose by 1 (vm61-v2-global-oom.vmstat)
    BOOST_TEST(kills[0].pid == 135);
    BOOST_TEST((kills[0].constraint == kmsg_constraint::none));
    BOOST_TEST(!kills[0].constraint_guessed);
    BOOST_TEST(kills[0].oom_memcg.empty());
    BOOST_TEST(kills[0].task_memcg == "/global");
    BOOST_TEST((kills[0].oom_score_adj == std::optional<int>(1000)));
}

BOOST_AUTO_TEST_CASE(vm_memcg_and_parent_limit) {
    oom_report_assembler a;
    auto kills = assemble_capture("vm61-v2-memcg-kill.kmsg", a);
    for (auto& k : assemble_capture("vm61-v2-parent-limit.kmsg", a)) kills.push_back(k);
    BOOST_TEST_REQUIRE(kills.size() == 2u);
    BOOST_TEST(kills[0].task_memcg == "/kill");
    BOOST_TEST(kills[1].oom_memcg == "/P");
    BOOST_TEST(kills[1].task_memcg == "/P/child");
}

// ---- sequences from the kernel source -----------------------------------------------------------

// dump_header is rate limited (5 s / 10 reports), __oom_kill_process's line is not: a
// kill past the limit has its `Killed process` line alone.
BOOST_AUTO_TEST_CASE(summary_missing_rate_limited) {
    sequence s;
    s.add(killed(memcg_reason, 42, "hog"), 3);
    s.add(killed("Out of memory", 43, "big", 1000), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 2u);
    const auto& m = s.kills[0];
    BOOST_TEST(m.pid == 42);
    BOOST_TEST((m.constraint == kmsg_constraint::memcg));
    BOOST_TEST(!m.constraint_guessed);  // the reason says memcg for sure
    BOOST_TEST(m.task_memcg.empty());
    BOOST_TEST(m.oom_memcg.empty());
    BOOST_TEST(!m.report_matched);
    BOOST_TEST(m.total_vm == 1000 * KiB);
    const auto& g = s.kills[1];
    BOOST_TEST((g.constraint == kmsg_constraint::none));
    BOOST_TEST(g.constraint_guessed);  // "Out of memory" is also what cpuset and mempolicy OOMs say
    BOOST_TEST((g.uid == std::optional<uid_t>(1000)));
}

// oom_kill_process: the chosen victim is killed (and counted) first, then
// mem_cgroup_print_oom_group, then oom_kill_memcg_member for every task of the group,
// the chosen one included again (it still has its mm: killed and counted twice).
BOOST_AUTO_TEST_CASE(group_kill_with_three_victims) {
    sequence s;
    s.add(invoked, 4);
    s.add(summary_memcg("/g", "/g/a", 100, "a"));
    s.add(killed(memcg_reason, 100, "a"), 3);
    s.add("Tasks in /g are going to be killed due to memory.oom.group set");
    s.add(killed(memcg_reason, 100, "a"), 3);
    s.add(killed(memcg_reason, 101, "b"), 3);
    s.add("eth0: some unrelated kernel line");
    s.add(killed(memcg_reason, 102, "c"), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 4u);
    BOOST_TEST(!s.kills[0].group);
    BOOST_TEST(s.kills[0].task_memcg == "/g/a");
    BOOST_TEST(s.kills[0].group_memcg.empty());
    std::vector<pid_t> members;
    for (std::size_t i = 1; i < 4; ++i) {
        const auto& k = s.kills[i];
        members.push_back(k.pid);
        BOOST_TEST(k.group);
        BOOST_TEST(k.group_memcg == "/g");
        BOOST_TEST(k.task_memcg.empty());  // somewhere in /g: the kernel does not say
        BOOST_TEST(k.oom_memcg == "/g");   // the OOM's, from the summary
        BOOST_TEST((k.constraint == kmsg_constraint::memcg));
    }
    BOOST_TEST((members == std::vector<pid_t>{100, 101, 102}));
    // A later, rate-limited OOM's kill is not a member of the old group.
    s.add(killed(memcg_reason, 103, "d"), 3, 0, '-', {}, 2 * oom_report_assembler::group_window_usec);
    BOOST_TEST_REQUIRE(s.kills.size() == 5u);
    BOOST_TEST(!s.kills[4].group);
    BOOST_TEST(s.kills[4].oom_memcg.empty());
}

BOOST_AUTO_TEST_CASE(a_new_report_ends_a_group) {
    sequence s;
    s.add(summary_memcg("/g", "/g/a", 100, "a"));
    s.add(killed(memcg_reason, 100, "a"), 3);
    s.add("Tasks in /g are going to be killed due to memory.oom.group set");
    s.add(killed(memcg_reason, 101, "b"), 3);
    s.add(invoked, 4);
    s.add(summary_memcg("/h", "/h", 200, "z"));
    s.add(killed(memcg_reason, 200, "z"), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 3u);
    BOOST_TEST(s.kills[1].group);
    BOOST_TEST(!s.kills[2].group);
    BOOST_TEST(s.kills[2].task_memcg == "/h");
}

BOOST_AUTO_TEST_CASE(two_cgroups_killed_back_to_back) {
    sequence s;
    s.add(invoked, 4);
    s.add(summary_memcg("/a", "/a", 10, "hog"));
    s.add(killed(memcg_reason, 10, "hog"), 3);
    s.add(invoked, 4);
    s.add(summary_memcg("/b", "/b/c", 11, "hog"));
    s.add(killed(memcg_reason, 11, "hog"), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 2u);
    BOOST_TEST(s.kills[0].pid == 10);
    BOOST_TEST(s.kills[0].task_memcg == "/a");
    BOOST_TEST(s.kills[0].oom_memcg == "/a");
    BOOST_TEST(s.kills[1].pid == 11);
    BOOST_TEST(s.kills[1].task_memcg == "/b/c");
    BOOST_TEST(s.kills[1].oom_memcg == "/b");
    BOOST_TEST(s.kills[0].seq < s.kills[1].seq);
}

// A summary is matched by pid, never by position: one whose kill never came does not
// lend its cgroup to the next kill.
BOOST_AUTO_TEST_CASE(summaries_are_matched_by_pid) {
    sequence s;
    s.add(summary_memcg("/a", "/a", 10, "hog"));
    s.add(killed(memcg_reason, 11, "other"), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 1u);
    BOOST_TEST(s.kills[0].task_memcg.empty());
    BOOST_TEST(!s.kills[0].report_matched);
}

// 5.0+: `,global_oom` in place of oom_memcg; the reason is "Out of memory".
BOOST_AUTO_TEST_CASE(a_global_oom) {
    sequence s;
    s.add("big invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0", 4);
    s.add("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
          "task_memcg=/user.slice/user-1000.slice,task=big,pid=777,uid=1000");
    s.add(killed("Out of memory", 777, "big", 1000), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 1u);
    const auto& k = s.kills[0];
    BOOST_TEST((k.constraint == kmsg_constraint::none));
    BOOST_TEST(!k.constraint_guessed);
    BOOST_TEST(k.oom_memcg.empty());
    BOOST_TEST(k.task_memcg == "/user.slice/user-1000.slice");
    BOOST_TEST((k.uid == std::optional<uid_t>(1000)));
}

BOOST_AUTO_TEST_CASE(a_cpuset_oom) {
    sequence s;
    s.add("oom-kill:constraint=CONSTRAINT_CPUSET,nodemask=(null),cpuset=pinned,mems_allowed=1,global_oom,"
          "task_memcg=/x,task=big,pid=5,uid=0");
    s.add(killed("Out of memory", 5, "big"), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 1u);
    BOOST_TEST((s.kills[0].constraint == kmsg_constraint::cpuset));
    BOOST_TEST(!s.kills[0].constraint_guessed);
}

// __oom_kill_process: a victim without an mm is not killed and no counter rises
// (count_vm_event(OOM_KILL) and memcg_memory_event_mm(MEMCG_OOM_KILL) come after that
// check). Its summary must not be lent to a later kill of the same pid.
BOOST_AUTO_TEST_CASE(already_exiting_is_no_kill) {
    sequence s;
    s.add(invoked, 4);
    s.add(summary_memcg("/a", "/a", 9, "hog"));
    s.add(memcg_reason + ": OOM victim 9 (hog) is already exiting. Skip killing the task");
    BOOST_TEST(s.kills.empty());
    s.add(killed(memcg_reason, 9, "hog"), 3);  // a later OOM, its report rate limited
    BOOST_TEST_REQUIRE(s.kills.size() == 1u);
    BOOST_TEST(!s.kills[0].report_matched);
    BOOST_TEST(s.kills[0].task_memcg.empty());
}

BOOST_AUTO_TEST_CASE(interleaved_unrelated_records) {
    sequence s;
    s.add(invoked, 4);
    s.add("CPU: 0 UID: 0 PID: 10 Comm: hog Not tainted 6.18.0 #1");
    s.add(summary_memcg("/a", "/a/b", 10, "hog"));
    s.add("usb 1-1: new high-speed USB device number 2 using xhci_hcd");
    s.add("oom_reaper: reaped process 3 (old), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB");
    s.add("some user line", 6, 1);
    s.add(killed(memcg_reason, 10, "hog"), 3);
    s.add("oom_reaper: reaped process 10 (hog), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB");
    BOOST_TEST_REQUIRE(s.kills.size() == 1u);
    BOOST_TEST(s.kills[0].task_memcg == "/a/b");
    BOOST_TEST(s.a.foreign_records() == 1u);
}

// Anyone with write access to /dev/kmsg writes with facility >= 1 (the kernel gives a
// writer LOG_USER unless it names another non-zero facility).
BOOST_AUTO_TEST_CASE(forged_records_are_dropped) {
    sequence s;
    s.add(killed(memcg_reason, 1234, "x"), 6, 1);
    BOOST_TEST(s.kills.empty());
    // A forged summary does not lend its cgroup to a real kill of that pid either.
    s.add(summary_memcg("/forged", "/forged", 55, "victim"), 6, 1);
    s.add(killed(memcg_reason, 55, "victim"), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 1u);
    BOOST_TEST(s.kills[0].task_memcg.empty());
    // Nor does a forged group line make the next kills members.
    s.add("Tasks in /forged are going to be killed due to memory.oom.group set", 6, 3);
    s.add(killed(memcg_reason, 56, "victim"), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 2u);
    BOOST_TEST(!s.kills[1].group);
    BOOST_TEST(s.a.foreign_records() == 3u);
}

// The summary is one pr_info() and two pr_cont(): a printk from another CPU in between
// makes the kernel store the start flagged 'c' and the rest as a record of its own.
BOOST_AUTO_TEST_CASE(a_summary_cut_by_another_printk_is_joined) {
    const std::string start = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a";
    const std::string rest = ",task_memcg=/a/b,task=hog,pid=10,uid=0";
    {  // with caller fields (CONFIG_PRINTK_CALLER): the other CPU's line comes in between
        sequence s;
        s.add(start, 6, 0, 'c', "T10");
        s.add("other cpu line", 6, 0, '-', "C1");
        s.add(rest, 6, 0, '-', "T10");
        s.add(killed(memcg_reason, 10, "hog"), 3, 0, '-', "T10");
        BOOST_TEST_REQUIRE(s.kills.size() == 1u);
        BOOST_TEST(s.kills[0].task_memcg == "/a/b");  // the fragment waited for its caller's rest
    }
    {  // without caller fields: joined when only the whole is an OOM line
        sequence s;
        s.add(start, 6, 0, 'c');
        s.add(rest);
        s.add(killed(memcg_reason, 10, "hog"), 3);
        BOOST_TEST_REQUIRE(s.kills.size() == 1u);
        BOOST_TEST(s.kills[0].task_memcg == "/a/b");
        BOOST_TEST(s.kills[0].oom_memcg == "/a");
    }
    {  // same caller, next record
        sequence s;
        s.add(start, 6, 0, 'c', "T10");
        s.add(rest, 6, 0, '-', "T10");
        s.add(killed(memcg_reason, 10, "hog"), 3, 0, '-', "T10");
        BOOST_TEST_REQUIRE(s.kills.size() == 1u);
        BOOST_TEST(s.kills[0].task_memcg == "/a/b");
    }
    {  // before 4.9: 'c' then '+' fragments
        sequence s;
        s.add("oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null)", 6, 0, 'c');
        s.add(",cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a", 6, 0, '+');
        s.add(",task=hog,pid=10,uid=0", 6, 0, '+');
        s.add(killed(memcg_reason, 10, "hog"), 3);
        BOOST_TEST_REQUIRE(s.kills.size() == 1u);
        BOOST_TEST(s.kills[0].task_memcg == "/a");
    }
}

// Before 5.0 there is no summary: the report's `Task in` line names the cgroups; before
// 5.1 the reason is on the `Kill process` line and the Killed line has none.
BOOST_AUTO_TEST_CASE(kernel_4_x_report) {
    sequence s;
    s.add("hog invoked oom-killer: gfp_mask=0x14000c0(GFP_KERNEL), nodemask=(null), order=0, oom_score_adj=0", 4);
    s.add("Task in /a/b killed as a result of limit of /a");
    s.add(memcg_reason + ": Kill process 77 (hog) score 987 or sacrifice child", 3);
    s.add("Killed process 77 (hog) total-vm:1000kB, anon-rss:500kB, file-rss:20kB, shmem-rss:0kB", 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 1u);
    const auto& k = s.kills[0];
    BOOST_TEST(k.reason == memcg_reason);
    BOOST_TEST((k.constraint == kmsg_constraint::memcg));
    BOOST_TEST(k.task_memcg == "/a/b");
    BOOST_TEST(k.oom_memcg == "/a");
    BOOST_TEST(!k.uid.has_value());
    BOOST_TEST(!k.oom_score_adj.has_value());
}

BOOST_AUTO_TEST_CASE(lost_records_end_a_group) {
    sequence s;
    s.add(summary_memcg("/g", "/g/a", 100, "a"));
    s.add(killed(memcg_reason, 100, "a"), 3);
    s.add("Tasks in /g are going to be killed due to memory.oom.group set");
    s.a.note_lost();
    s.add(killed(memcg_reason, 101, "b"), 3);
    BOOST_TEST_REQUIRE(s.kills.size() == 2u);
    BOOST_TEST(!s.kills[1].group);  // never invented: it may be a new OOM's
}

BOOST_AUTO_TEST_SUITE_END()
