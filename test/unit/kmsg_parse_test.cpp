// The kernel log parsers (src/detail/kmsg_parse.hpp): /dev/kmsg record framing and every
// format of the OOM killer's lines from 4.x to 6.x. Each row names its source: a real
// capture on this project's host (test/data/kmsg/, kernel 6.18, cgroup v1; made by
// test/data/kmsg/capture-host), a real capture from Debian's 6.1 kernel in qemu with
// cgroup v2 (test/data/kmsg/vm61-v2-*; made by test/data/kmsg/capture-vm), or the kernel
// source that prints the format.
#include <oomwatch/error.hpp>

#include "detail/kmsg_parse.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

using namespace std::string_literals;
namespace data = boost::unit_test::data;

namespace {

using namespace oomwatch;

// ---- rendering a parsed line, so that a failing row prints every field --------------------

template <class T>
void field(std::ostream& os, const char* name, const std::optional<T>& v) {
    os << ' ' << name << '=';
    if (v) os << '[' << *v << ']';
    else os << '-';
}
template <class T>
void field(std::ostream& os, const char* name, const T& v) {
    os << ' ' << name << "=[" << v << ']';
}

struct render_visitor {
    std::ostream& os;
    void operator()(const oom_invoked_line& l) const {
        os << "invoked";
        field(os, "comm", l.comm);
        field(os, "gfp_mask", l.gfp_mask);
        field(os, "gfp_flags", l.gfp_flags);
        field(os, "nodemask", l.nodemask);
        field(os, "order", l.order);
        field(os, "oom_score_adj", l.oom_score_adj);
    }
    void operator()(const oom_summary_line& l) const {
        os << "summary";
        field(os, "constraint", static_cast<int>(l.constraint));
        field(os, "constraint_text", l.constraint_text);
        field(os, "nodemask", l.nodemask);
        field(os, "cpuset", l.cpuset);
        field(os, "mems_allowed", l.mems_allowed);
        field(os, "global_oom", l.global_oom);
        field(os, "oom_memcg", l.oom_memcg);
        field(os, "task_memcg", l.task_memcg);
        field(os, "task", l.task);
        field(os, "pid", l.pid);
        field(os, "uid", l.uid);
    }
    void operator()(const memcg_oom_info_line& l) const {
        os << "memcg_info";
        field(os, "task_memcg", l.task_memcg);
        field(os, "oom_memcg", l.oom_memcg);
    }
    void operator()(const kill_choice_line& l) const {
        os << "kill_choice";
        field(os, "reason", l.reason);
        field(os, "pid", l.pid);
        field(os, "comm", l.comm);
        field(os, "score", l.score);
    }
    void operator()(const killed_process_line& l) const {
        os << "killed";
        field(os, "reason", l.reason);
        field(os, "pid", l.pid);
        field(os, "comm", l.comm);
        field(os, "total_vm", l.total_vm);
        field(os, "anon_rss", l.anon_rss);
        field(os, "file_rss", l.file_rss);
        field(os, "shmem_rss", l.shmem_rss);
        field(os, "uid", l.uid);
        field(os, "pgtables", l.pgtables);
        field(os, "oom_score_adj", l.oom_score_adj);
    }
    void operator()(const oom_group_line& l) const {
        os << "group";
        field(os, "cgroup", l.cgroup);
    }
    void operator()(const victim_exiting_line& l) const {
        os << "victim_exiting";
        field(os, "reason", l.reason);
        field(os, "pid", l.pid);
        field(os, "comm", l.comm);
    }
    void operator()(const oom_reaped_line& l) const {
        os << "reaped";
        field(os, "pid", l.pid);
        field(os, "comm", l.comm);
        field(os, "anon_rss", l.anon_rss);
        field(os, "file_rss", l.file_rss);
        field(os, "shmem_rss", l.shmem_rss);
    }
};

std::string render(const std::optional<oom_log_line>& line) {
    if (!line) return "nullopt";
    std::ostringstream os;
    std::visit(render_visitor{os}, *line);
    return os.str();
}

// A table row: where the line comes from, the message (decoded, as parse_kmsg_record
// returns it), and what it must parse to.
struct line_case {
    const char* source;
    std::string message;
    std::optional<oom_log_line> expected;
};
std::ostream& operator<<(std::ostream& os, const line_case& c) { return os << c.source; }

constexpr std::uint64_t KiB = 1024;
const std::string host_root = "/process_api/7feab773329cb6d0de9942f7c954e883/kmsgcap-23612";

killed_process_line killed(std::string reason, pid_t pid, std::string comm, std::uint64_t vm_kb,
                           std::uint64_t anon_kb, std::uint64_t file_kb, std::optional<std::uint64_t> shmem_kb = {},
                           std::optional<uid_t> uid = {}, std::optional<std::uint64_t> pgtables_kb = {},
                           std::optional<int> adj = {}) {
    killed_process_line k;
    k.reason = std::move(reason);
    k.pid = pid;
    k.comm = std::move(comm);
    k.total_vm = vm_kb * KiB;
    k.anon_rss = anon_kb * KiB;
    k.file_rss = file_kb * KiB;
    if (shmem_kb) k.shmem_rss = *shmem_kb * KiB;
    k.uid = uid;
    if (pgtables_kb) k.pgtables = *pgtables_kb * KiB;
    k.oom_score_adj = adj;
    return k;
}

oom_summary_line summary(kmsg_constraint c, std::string text, std::string nodemask, std::optional<std::string> cpuset,
                         std::optional<std::string> mems, bool global, std::optional<std::string> oom_memcg,
                         std::optional<std::string> task_memcg, std::string task, pid_t pid, uid_t uid) {
    oom_summary_line s;
    s.constraint = c;
    s.constraint_text = std::move(text);
    s.nodemask = std::move(nodemask);
    s.cpuset = std::move(cpuset);
    s.mems_allowed = std::move(mems);
    s.global_oom = global;
    s.oom_memcg = std::move(oom_memcg);
    s.task_memcg = std::move(task_memcg);
    s.task = std::move(task);
    s.pid = pid;
    s.uid = uid;
    return s;
}

oom_invoked_line invoked(std::string comm, std::uint64_t gfp, std::string flags, std::optional<std::string> nodemask,
                         int order, int adj) {
    return {std::move(comm), gfp, std::move(flags), std::move(nodemask), order, adj};
}

std::vector<line_case> invoked_cases() {
    return {
        {"6.18 host capture host-memcg-kill (dump_header, 5.0+ format)",
         "dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
         invoked("dd", 0xcc0, "GFP_KERNEL", {}, 0, 0)},
        {"6.18 host capture host-comm-space: a comm with a space",
         "my dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
         invoked("my dd", 0xcc0, "GFP_KERNEL", {}, 0, 0)},
        {"6.18 host capture host-comm-escapes: '\\', ') (' and a tab in the comm",
         "x\\y) (z\tw invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
         invoked("x\\y) (z\tw", 0xcc0, "GFP_KERNEL", {}, 0, 0)},
        {"6.1 VM capture vm61-v2-memcg-kill (cgroup v2)",
         "dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
         invoked("dd", 0xcc0, "GFP_KERNEL", {}, 0, 0)},
        {"6.1 VM capture vm61-v2-global-oom: a page fault's flags, oom_score_adj 1000",
         "memhog invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, "
         "oom_score_adj=1000",
         invoked("memhog", 0x140dca, "GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO", {}, 0, 1000)},
        {"4.19 mm/oom_kill.c dump_header: nodemask= between gfp_mask and order (4.10 to 4.20)",
         "java invoked oom-killer: gfp_mask=0x6200ca(GFP_HIGHUSER_MOVABLE), nodemask=0-1,3, order=0, oom_score_adj=-999",
         invoked("java", 0x6200ca, "GFP_HIGHUSER_MOVABLE", "0-1,3"s, 0, -999)},
        {"4.19 dump_header: no nodemask given prints (null)",
         "stress invoked oom-killer: gfp_mask=0x14280ca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO), nodemask=(null), order=0, "
         "oom_score_adj=0",
         invoked("stress", 0x14280ca, "GFP_HIGHUSER_MOVABLE|__GFP_ZERO", "(null)"s, 0, 0)},
        {"4.9 dump_header: %pGg flags, no nodemask",
         "stress invoked oom-killer: gfp_mask=0x24280ca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO), order=0, oom_score_adj=0",
         invoked("stress", 0x24280ca, "GFP_HIGHUSER_MOVABLE|__GFP_ZERO", {}, 0, 0)},
        {"early 4.x dump_header (gfp_mask=0x%x, before %pGg)",
         "foo invoked oom-killer: gfp_mask=0x201da, order=0, oom_score_adj=0", invoked("foo", 0x201da, "", {}, 0, 0)},
        {"sysrq-f (moom_callback: order=-1)",
         "kworker/0:1 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=-1, oom_score_adj=0",
         invoked("kworker/0:1", 0xcc0, "GFP_KERNEL", {}, -1, 0)},
        {"%#x of an empty mask: 0x0 and no flags", "a invoked oom-killer: gfp_mask=0x0(), order=0, oom_score_adj=0",
         invoked("a", 0, "", {}, 0, 0)},
        {"gfp flags with unknown bits (%pGg prints them in hex)",
         "b invoked oom-killer: gfp_mask=0x1100cca(GFP_HIGHUSER_MOVABLE|0x1000000), order=3, oom_score_adj=1000",
         invoked("b", 0x1100cca, "GFP_HIGHUSER_MOVABLE|0x1000000", {}, 3, 1000)},
        {"synthetic: a comm holding the key text (the last occurrence splits)",
         "a invoked oom-killer:  invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
         invoked("a invoked oom-killer: ", 0xcc0, "GFP_KERNEL", {}, 0, 0)},
        {"synthetic: an unknown later field is skipped",
         "c invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, policy_name=default, oom_score_adj=5",
         invoked("c", 0xcc0, "GFP_KERNEL", {}, 0, 5)},
        {"no oom_score_adj", "c invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0", std::nullopt},
        {"gfp_mask not hex", "c invoked oom-killer: gfp_mask=0xzz(GFP_KERNEL), order=0, oom_score_adj=0", std::nullopt},
        {"gfp_mask without 0x", "c invoked oom-killer: gfp_mask=cc0(GFP_KERNEL), order=0, oom_score_adj=0",
         std::nullopt},
        {"flags not closed", "c invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL, order=0, oom_score_adj=0", std::nullopt},
        {"order not a number", "c invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=x, oom_score_adj=0",
         std::nullopt},
        {"order given twice", "c invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, order=0, oom_score_adj=0",
         std::nullopt},
        {"a bad node list", "c invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), nodemask=all, order=0, oom_score_adj=0",
         std::nullopt},
    };
}

std::vector<line_case> summary_cases() {
    const auto memcg = kmsg_constraint::memcg;
    const auto none = kmsg_constraint::none;
    return {
        {"6.18 host capture host-memcg-kill (dump_oom_victim)",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=" + host_root +
             "/kill,task_memcg=" + host_root + "/kill,task=dd,pid=23660,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, host_root + "/kill", host_root + "/kill", "dd",
                 23660, 0)},
        {"6.18 host capture host-parent-limit: the limit on P, the victim in P/child",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=" + host_root +
             "/P,task_memcg=" + host_root + "/P/child,task=dd,pid=23704,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, host_root + "/P", host_root + "/P/child", "dd",
                 23704, 0)},
        {"6.18 host capture host-comm-space",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=" + host_root +
             "/space,task_memcg=" + host_root + "/space,task=my dd,pid=23748,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, host_root + "/space", host_root + "/space",
                 "my dd", 23748, 0)},
        {"6.18 host capture host-comm-escapes",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=" + host_root +
             "/escapes,task_memcg=" + host_root + "/escapes,task=x\\y) (z\tw,pid=23791,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, host_root + "/escapes",
                 host_root + "/escapes", "x\\y) (z\tw", 23791, 0)},
        {"6.1 VM capture vm61-v2-memcg-kill (cgroup v2: paths from the cgroup2 root)",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kill,task_memcg=/"
         "kill,task=dd,pid=120,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, "/kill"s, "/kill"s, "dd", 120, 0)},
        {"6.1 VM capture vm61-v2-parent-limit: the limit on /P, the victim in /P/child",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/P,task_memcg=/P/"
         "child,task=dd,pid=130,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, "/P"s, "/P/child"s, "dd", 130, 0)},
        {"6.1 VM capture vm61-v2-oom-group: the one summary of a group kill (names the first victim)",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/group,task_memcg=/"
         "group,task=dd,pid=123,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, "/group"s, "/group"s, "dd", 123, 0)},
        {"6.1 VM capture vm61-v2-global-oom: ,global_oom and the victim's cgroup",
         "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/global,"
         "task=memhog,pid=135,uid=0",
         summary(none, "CONSTRAINT_NONE", "(null)", "/"s, "0"s, true, {}, "/global"s, "memhog", 135, 0)},
        {"5.0+ global OOM (mem_cgroup_print_oom_context: ,global_oom)",
         "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice/"
         "user-1000.slice/session-2.scope,task=stress,pid=4242,uid=1000",
         summary(none, "CONSTRAINT_NONE", "(null)", "/"s, "0"s, true, {}, "/user.slice/user-1000.slice/session-2.scope"s,
                 "stress", 4242, 1000)},
        {"5.0+ CONSTRAINT_CPUSET: a cpuset name and a node list with commas",
         "oom-kill:constraint=CONSTRAINT_CPUSET,nodemask=(null),cpuset=batch,mems_allowed=0-1,3,global_oom,task_memcg=/"
         "batch,task=hog,pid=77,uid=0",
         summary(kmsg_constraint::cpuset, "CONSTRAINT_CPUSET", "(null)", "batch"s, "0-1,3"s, true, {}, "/batch"s, "hog",
                 77, 0)},
        {"5.0+ CONSTRAINT_MEMORY_POLICY: the mempolicy's nodemask",
         "oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,3-4,cpuset=/,mems_allowed=0-4,global_oom,task_memcg=/,"
         "task=numa,pid=5,uid=0",
         summary(kmsg_constraint::memory_policy, "CONSTRAINT_MEMORY_POLICY", "1,3-4", "/"s, "0-4"s, true, {}, "/"s,
                 "numa", 5, 0)},
        {"5.0+ without CONFIG_CPUSETS (no cpuset part)",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/a,task_memcg=/a/b,task=x,pid=1,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", {}, {}, false, "/a"s, "/a/b"s, "x", 1, 0)},
        {"5.0+ without CONFIG_MEMCG (no memcg part)",
         "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,task=x,pid=1,uid=0",
         summary(none, "CONSTRAINT_NONE", "(null)", "/"s, "0"s, false, {}, {}, "x", 1, 0)},
        {"5.0 as first merged (v15 of the patch): no memcg part, uid printed with %d",
         "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,task=panic,pid=10737,uid=-1",
         summary(none, "CONSTRAINT_NONE", "(null)", "/"s, "0-1"s, false, {}, {}, "panic", 10737,
                 std::numeric_limits<uid_t>::max())},
        {"synthetic: a comm holding ',pid=' and ',task=' (prctl can set any comm)",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=a,"
         "task=b,pid=1,pid=7,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, "/a"s, "/a"s, "a,task=b,pid=1", 7, 0)},
        {"synthetic: cgroup names with commas and '='",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/k8s/pod,a=b,task_memcg="
         "/k8s/pod,a=b/c,d,task=e,pid=2,uid=3",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, "/k8s/pod,a=b"s, "/k8s/pod,a=b/c,d"s, "e", 2,
                 3)},
        {"synthetic: an oom_memcg name holding ',task_memcg=' (split where task_memcg is below)",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/x,task_memcg=/y,"
         "task_memcg=/x,task_memcg=/y/z,task=t,pid=9,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", "/"s, "0"s, false, "/x,task_memcg=/y"s, "/x,task_memcg=/y/z"s,
                 "t", 9, 0)},
        {"synthetic: oom_memcg without task_memcg",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/a,task=x,pid=1,uid=0",
         summary(memcg, "CONSTRAINT_MEMCG", "(null)", {}, {}, false, "/a"s, {}, "x", 1, 0)},
        {"a later kernel's own constraint text (a BPF OOM policy proposed on linux-mm)",
         "oom-kill:constraint=CONSTRAINT_BPF,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=x,"
         "pid=1,uid=0",
         summary(kmsg_constraint::other, "CONSTRAINT_BPF", "(null)", "/"s, "0"s, false, "/a"s, "/a"s, "x", 1, 0)},
        {"an empty comm", "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=,pid=1,uid=0",
         summary(none, "CONSTRAINT_NONE", "(null)", {}, {}, false, {}, {}, "", 1, 0)},
        // Cut short: a pr_cont() fragment on its own, as a 'c' record or the record before it.
        {"first fragment only (the pr_info before the pr_cont()s)",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null)", std::nullopt},
        {"fragment up to mems_allowed (cpuset_print_current_mems_allowed)",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0", std::nullopt},
        {"a 'c' fragment (the task part) on its own", ",task=dd,pid=23660,uid=0", std::nullopt},
        {"pid not a number", "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=x,pid=x,uid=0", std::nullopt},
        {"negative pid", "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=x,pid=-1,uid=0", std::nullopt},
        {"uid overflows int", "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=x,pid=1,uid=4294967295",
         std::nullopt},
        {"uid with trailing garbage", "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=x,pid=1,uid=0x",
         std::nullopt},
        {"no nodemask", "oom-kill:constraint=CONSTRAINT_NONE,cpuset=/,mems_allowed=0,task=x,pid=1,uid=0", std::nullopt},
        {"cpuset without mems_allowed", "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,task=x,pid=1,uid=0",
         std::nullopt},
        {"an unknown part", "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),future=1,task=x,pid=1,uid=0",
         std::nullopt},
        {"a path not starting with '/'",
         "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=a,task_memcg=a,task=x,pid=1,uid=0", std::nullopt},
        {"a comm longer than 63 bytes",
         "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=" + std::string(64, 'a') + ",pid=1,uid=0",
         std::nullopt},
        {"the other kernel's key: 'oom-kill: constrain=' (an unmerged draft)",
         "oom-kill: constrain=CONSTRAINT_NONE, nodemask=(null), task=x, pid=1, uid=0", std::nullopt},
    };
}

std::vector<line_case> memcg_info_cases() {
    return {
        {"4.x mm/memcontrol.c mem_cgroup_print_oom_info: the victim in its own limited cgroup",
         "Task in /docker/4b1c killed as a result of limit of /docker/4b1c",
         memcg_oom_info_line{"/docker/4b1c"s, "/docker/4b1c"}},
        {"4.x mem_cgroup_print_oom_info: a parent's limit", "Task in /P/child killed as a result of limit of /P",
         memcg_oom_info_line{"/P/child"s, "/P"}},
        {"4.x mem_cgroup_print_oom_info: the root's limit (hierarchy)", "Task in /a killed as a result of limit of /",
         memcg_oom_info_line{"/a"s, "/"}},
        {"4.x mem_cgroup_print_oom_info without a victim", "Memory limit reached of cgroup /x",
         memcg_oom_info_line{std::nullopt, "/x"}},
        {"synthetic: names holding the key text (split where the limit is an ancestor)",
         "Task in /x killed as a result of limit of /y/z killed as a result of limit of /x killed as a result of "
         "limit of /y",
         memcg_oom_info_line{"/x killed as a result of limit of /y/z"s, "/x killed as a result of limit of /y"}},
        {"synthetic: names holding the key text, no split with an ancestor (the first one)",
         "Task in /a killed as a result of limit of /b killed as a result of limit of /c",
         memcg_oom_info_line{"/a"s, "/b killed as a result of limit of /c"}},
        {"not a path", "Task in a killed as a result of limit of b", std::nullopt},
        {"cut short", "Task in /a killed as a", std::nullopt},
        {"no path after 'of cgroup'", "Memory limit reached of cgroup ", std::nullopt},
    };
}

std::vector<line_case> kill_choice_cases() {
    return {
        {"4.x-5.0 mm/oom_kill.c oom_kill_process, memcg OOM",
         "Memory cgroup out of memory: Kill process 1234 (stress) score 1000 or sacrifice child",
         kill_choice_line{"Memory cgroup out of memory", 1234, "stress", 1000}},
        {"4.x-5.0 oom_kill_process, global OOM", "Out of memory: Kill process 77 (java) score 912 or sacrifice child",
         kill_choice_line{"Out of memory", 77, "java", 912}},
        {"4.x-5.0 oom_kill_process with sysctl oom_kill_allocating_task",
         "Out of memory (oom_kill_allocating_task): Kill process 5 (a b) score 0 or sacrifice child",
         kill_choice_line{"Out of memory (oom_kill_allocating_task)", 5, "a b", 0}},
        {"synthetic: a comm holding ') score '", "Out of memory: Kill process 6 (x) score 1) score 2 or sacrifice child",
         kill_choice_line{"Out of memory", 6, "x) score 1", 2}},
        {"score not a number", "Out of memory: Kill process 6 (x) score high or sacrifice child", std::nullopt},
        {"cut short", "Out of memory: Kill process 6 (x) score 2", std::nullopt},
        {"no reason", ": Kill process 6 (x) score 2 or sacrifice child", std::nullopt},
    };
}

std::vector<line_case> killed_cases() {
    return {
        {"6.18 host capture host-memcg-kill (5.4+ format: UID, pgtables, oom_score_adj)",
         "Memory cgroup out of memory: Killed process 23660 (dd) total-vm:68512kB, anon-rss:32512kB, file-rss:1632kB, "
         "shmem-rss:0kB, UID:0 pgtables:112kB oom_score_adj:0",
         killed("Memory cgroup out of memory", 23660, "dd", 68512, 32512, 1632, 0, 0, 112, 0)},
        {"6.18 host capture host-parent-limit",
         "Memory cgroup out of memory: Killed process 23704 (dd) total-vm:68512kB, anon-rss:32512kB, file-rss:1624kB, "
         "shmem-rss:0kB, UID:0 pgtables:112kB oom_score_adj:0",
         killed("Memory cgroup out of memory", 23704, "dd", 68512, 32512, 1624, 0, 0, 112, 0)},
        {"6.18 host capture host-comm-space",
         "Memory cgroup out of memory: Killed process 23748 (my dd) total-vm:68512kB, anon-rss:32512kB, "
         "file-rss:1668kB, shmem-rss:0kB, UID:0 pgtables:120kB oom_score_adj:0",
         killed("Memory cgroup out of memory", 23748, "my dd", 68512, 32512, 1668, 0, 0, 120, 0)},
        {"6.18 host capture host-comm-escapes: ') (' in the comm",
         "Memory cgroup out of memory: Killed process 23791 (x\\y) (z\tw) total-vm:82292kB, anon-rss:32512kB, "
         "file-rss:6740kB, shmem-rss:0kB, UID:0 pgtables:124kB oom_score_adj:0",
         killed("Memory cgroup out of memory", 23791, "x\\y) (z\tw", 82292, 32512, 6740, 0, 0, 124, 0)},
        {"6.1 VM capture vm61-v2-memcg-kill (cgroup v2)",
         "Memory cgroup out of memory: Killed process 120 (dd) total-vm:67796kB, anon-rss:32616kB, file-rss:4kB, "
         "shmem-rss:1580kB, UID:0 pgtables:104kB oom_score_adj:0",
         killed("Memory cgroup out of memory", 120, "dd", 67796, 32616, 4, 1580, 0, 104, 0)},
        {"6.1 VM capture vm61-v2-oom-group: a sleeping member killed by the group scan",
         "Memory cgroup out of memory: Killed process 124 (sleep) total-vm:2260kB, anon-rss:4kB, file-rss:0kB, "
         "shmem-rss:0kB, UID:0 pgtables:28kB oom_score_adj:0",
         killed("Memory cgroup out of memory", 124, "sleep", 2260, 4, 0, 0, 0, 28, 0)},
        {"6.1 VM capture vm61-v2-global-oom",
         "Out of memory: Killed process 135 (memhog) total-vm:437880kB, anon-rss:434748kB, file-rss:4kB, "
         "shmem-rss:648kB, UID:0 pgtables:888kB oom_score_adj:1000",
         killed("Out of memory", 135, "memhog", 437880, 434748, 4, 648, 0, 888, 1000)},
        {"5.4+ (5.10, 6.1 __oom_kill_process) global OOM",
         "Out of memory: Killed process 4242 (stress) total-vm:4195088kB, anon-rss:2884696kB, file-rss:288kB, "
         "shmem-rss:0kB, UID:1000 pgtables:5696kB oom_score_adj:872",
         killed("Out of memory", 4242, "stress", 4195088, 2884696, 288, 0, 1000, 5696, 872)},
        {"5.4+ a negative oom_score_adj (a Kubernetes guaranteed pod)",
         "Memory cgroup out of memory: Killed process 3804876 (stress) total-vm:13632272kB, anon-rss:992376kB, "
         "file-rss:264kB, shmem-rss:0kB, UID:0 pgtables:1984kB oom_score_adj:-997",
         killed("Memory cgroup out of memory", 3804876, "stress", 13632272, 992376, 264, 0, 0, 1984, -997)},
        {"5.4+ with sysctl oom_kill_allocating_task",
         "Out of memory (oom_kill_allocating_task): Killed process 8 (a) total-vm:1kB, anon-rss:2kB, file-rss:3kB, "
         "shmem-rss:4kB, UID:5 pgtables:6kB oom_score_adj:-1000",
         killed("Out of memory (oom_kill_allocating_task)", 8, "a", 1, 2, 3, 4, 5, 6, -1000)},
        {"5.3 (UID added, Joel Savitz's patch, before pgtables)",
         "Out of memory: Killed process 1234 (the_ram) total-vm:133880028kB, anon-rss:129754836kB, file-rss:0kB, "
         "shmem-rss:0kB, UID:0",
         killed("Out of memory", 1234, "the_ram", 133880028, 129754836, 0, 0, 0)},
        {"5.1-5.2 (the reason prefix, after 'prefer children over parent' was removed)",
         "Memory cgroup out of memory: Killed process 9188 (a.out) total-vm:14456kB, anon-rss:10324kB, file-rss:504kB, "
         "shmem-rss:0kB",
         killed("Memory cgroup out of memory", 9188, "a.out", 14456, 10324, 504, 0)},
        {"4.5-5.0 (4.19 __oom_kill_process: no prefix)",
         "Killed process 1221 (allocate) total-vm:2257144kB, anon-rss:2009128kB, file-rss:4kB, shmem-rss:0kB",
         killed("", 1221, "allocate", 2257144, 2009128, 4, 0)},
        {"4.0-4.4 (before shmem-rss)", "Killed process 1221 (allocate) total-vm:2257144kB, anon-rss:2009128kB, file-rss:4kB",
         killed("", 1221, "allocate", 2257144, 2009128, 4)},
        {"synthetic: a comm holding ') total-vm:' (the last one splits)",
         "Out of memory: Killed process 3 (x) total-vm:1k) total-vm:5kB, anon-rss:6kB, file-rss:7kB, shmem-rss:8kB, "
         "UID:9 pgtables:10kB oom_score_adj:11",
         killed("Out of memory", 3, "x) total-vm:1k", 5, 6, 7, 8, 9, 10, 11)},
        {"synthetic: a comm that looks like an invoked line",
         "Out of memory: Killed process 3 ( invoked oom-killer: ) total-vm:5kB, anon-rss:6kB, file-rss:7kB",
         killed("Out of memory", 3, " invoked oom-killer: ", 5, 6, 7)},
        {"synthetic: an unknown later field is skipped",
         "Out of memory: Killed process 3 (x) total-vm:5kB, anon-rss:6kB, file-rss:7kB, shmem-rss:8kB, swap:9kB, "
         "UID:1 pgtables:2kB oom_score_adj:3",
         killed("Out of memory", 3, "x", 5, 6, 7, 8, 1, 2, 3)},
        {"the largest size that fits in bytes",
         "Killed process 1 (x) total-vm:18014398509481983kB, anon-rss:0kB, file-rss:0kB",
         killed("", 1, "x", 18014398509481983ULL, 0, 0)},
        {"a size whose bytes overflow 64 bits", "Killed process 1 (x) total-vm:18014398509481984kB, anon-rss:0kB, file-rss:0kB",
         std::nullopt},
        {"a size without kB", "Killed process 1 (x) total-vm:5, anon-rss:0kB, file-rss:0kB", std::nullopt},
        {"a size in MB", "Killed process 1 (x) total-vm:5MB, anon-rss:0kB, file-rss:0kB", std::nullopt},
        {"no file-rss", "Killed process 1 (x) total-vm:5kB, anon-rss:0kB", std::nullopt},
        {"a field given twice", "Killed process 1 (x) total-vm:5kB, anon-rss:0kB, file-rss:0kB, anon-rss:0kB",
         std::nullopt},
        {"oom_score_adj out of %hd's range",
         "Killed process 1 (x) total-vm:5kB, anon-rss:0kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:0kB "
         "oom_score_adj:40000",
         std::nullopt},
        {"UID negative", "Killed process 1 (x) total-vm:5kB, anon-rss:0kB, file-rss:0kB, shmem-rss:0kB, UID:-1",
         std::nullopt},
        {"two spaces between fields", "Killed process 1 (x) total-vm:5kB,  anon-rss:0kB, file-rss:0kB", std::nullopt},
        {"pid not a number", "Killed process x (x) total-vm:5kB, anon-rss:0kB, file-rss:0kB", std::nullopt},
        {"no comm", "Killed process 1 total-vm:5kB, anon-rss:0kB, file-rss:0kB", std::nullopt},
        {"cut short after the comm", "Out of memory: Killed process 1 (x)", std::nullopt},
        {"an empty reason", ": Killed process 1 (x) total-vm:5kB, anon-rss:0kB, file-rss:0kB", std::nullopt},
        {"text glued before 'Killed'", "xKilled process 1 (x) total-vm:5kB, anon-rss:0kB, file-rss:0kB", std::nullopt},
    };
}

std::vector<line_case> other_cases() {
    return {
        {"6.1 VM capture vm61-v2-oom-group (mem_cgroup_print_oom_group)",
         "Tasks in /group are going to be killed due to memory.oom.group set", oom_group_line{"/group"}},
        {"6.1 VM capture vm61-v2-global-oom: Mem-Info, one record with escaped newlines",
         "active_anon:498 inactive_anon:108962 isolated_anon:0\n active_file:0 inactive_file:0 isolated_file:0",
         std::nullopt},
        {"6.1 VM capture vm61-v2-memcg-kill: the v2 memcg stats header", "Memory cgroup stats for /kill:",
         std::nullopt},
        {"4.19+ mm/memcontrol.c mem_cgroup_print_oom_group",
         "Tasks in /test1 are going to be killed due to memory.oom.group set", oom_group_line{"/test1"}},
        {"mem_cgroup_print_oom_group: a path with spaces",
         "Tasks in /a b/c d are going to be killed due to memory.oom.group set", oom_group_line{"/a b/c d"}},
        {"mem_cgroup_print_oom_group: no path", "Tasks in  are going to be killed due to memory.oom.group set",
         std::nullopt},
        {"mem_cgroup_print_oom_group: the key text overlapping",
         "Tasks in are going to be killed due to memory.oom.group set", std::nullopt},
        {"5.x-6.x __oom_kill_process: the victim already exiting",
         "Memory cgroup out of memory: OOM victim 3804877 (stress) is already exiting. Skip killing the task",
         victim_exiting_line{"Memory cgroup out of memory", 3804877, "stress"}},
        {"__oom_kill_process: a comm with ') ('",
         "Out of memory: OOM victim 2 (a) (b) is already exiting. Skip killing the task",
         victim_exiting_line{"Out of memory", 2, "a) (b"}},
        {"victim exiting, cut short", "Out of memory: OOM victim 2 (a) is already exiting.", std::nullopt},
        {"4.6+ mm/oom_kill.c oom_reap_task_mm",
         "oom_reaper: reaped process 9188 (a.out), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
         oom_reaped_line{9188, "a.out", 0, 0, 0}},
        {"oom_reap_task_mm: memory left, a comm with '), now '",
         "oom_reaper: reaped process 7 (x), now y), now anon-rss:4kB, file-rss:8kB, shmem-rss:12kB",
         oom_reaped_line{7, "x), now y", 4 * KiB, 8 * KiB, 12 * KiB}},
        {"oom_reaper: no shmem-rss", "oom_reaper: reaped process 7 (x), now anon-rss:4kB, file-rss:8kB", std::nullopt},
        // Lines of an OOM report that are not parsed (from the host captures and 4.x sources).
        {"6.18 host capture: memcg stats header", "Memory cgroup stats for " + host_root + "/kill:", std::nullopt},
        {"6.18 host capture: tasks header", "Tasks state (memory values in pages):", std::nullopt},
        {"6.18 host capture: a task row",
         "[  23660]     0 23660    17128     8535     8128      407         0   114688        0             0 dd",
         std::nullopt},
        {"6.18 host capture: a stack frame", " oom_kill_process.cold+0x8/0x8a", std::nullopt},
        {"4.x kernel/cgroup/cpuset.c cpuset_print_current_mems_allowed", "dd cpuset=/ mems_allowed=0", std::nullopt},
        {"4.x-6.x memcontrol: usage line", "memory: usage 32768kB, limit 32768kB, failcnt 94", std::nullopt},
        {"oom_reaper: unable to reap (not parsed)", "oom_reaper: unable to reap pid:5 (x)", std::nullopt},
        {"panic line", "Out of memory and no killable processes...", std::nullopt},
        {"user space text", "kmsgcap: host-memcg-kill begin", std::nullopt},
        {"empty", "", std::nullopt},
        {"binary", "\0\xff\x01 (\n"s, std::nullopt},
    };
}

void check_line(const line_case& c) {
    auto got = parse_oom_line(c.message);
    BOOST_TEST(render(got) == render(c.expected));
    if (got && c.expected) BOOST_TEST((*got == *c.expected));
    // A trailing newline changes nothing.
    BOOST_TEST(render(parse_oom_line(c.message + "\n")) == render(c.expected));
}

// ---- test data: the host captures --------------------------------------------------------

std::filesystem::path data_dir() { return std::filesystem::path(__FILE__).parent_path().parent_path() / "data" / "kmsg"; }

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    BOOST_TEST_REQUIRE(in.good(), "cannot open " << p);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct capture_case {
    const char* file;
    std::string comm;
    std::string oom_memcg;
    std::string task_memcg;
};
std::ostream& operator<<(std::ostream& os, const capture_case& c) { return os << c.file; }

} // namespace

BOOST_AUTO_TEST_SUITE(kmsg_parse)

// ---- record framing ------------------------------------------------------------------------

BOOST_AUTO_TEST_SUITE(record)

BOOST_AUTO_TEST_CASE(real_record_from_the_host) {
    // test/data/kmsg/host-memcg-kill.kmsg, the summary record (kernel 6.18).
    const std::string text = "6,255729,23652147070,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
                             "mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=dd,pid=23660,uid=0\n";
    auto r = parse_kmsg_record(text);
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->facility == 0u);
    BOOST_TEST(r->level == 6u);
    BOOST_TEST(r->seq == 255729u);
    BOOST_TEST(r->ts_usec == 23652147070u);
    BOOST_TEST(r->flag == '-');
    BOOST_TEST(r->caller == "");
    BOOST_TEST(r->message == text.substr(23, text.size() - 24));
    BOOST_TEST(r->dict.empty());
}

BOOST_AUTO_TEST_CASE(user_space_line_has_facility_1) {
    // The marker capture-host wrote with write(2) to /dev/kmsg: "<12>" is what the kernel
    // gives a line without a priority (LOG_USER | LOG_WARNING).
    auto r = parse_kmsg_record("12,255638,23652094995,-;kmsgcap: host-memcg-kill begin\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->facility == 1u);
    BOOST_TEST(r->level == 4u);
    BOOST_TEST(r->message == "kmsgcap: host-memcg-kill begin");
}

BOOST_AUTO_TEST_CASE(escapes_are_decoded) {
    // test/data/kmsg/host-comm-escapes.kmsg: the comm "x\y) (z<TAB>w".
    auto r = parse_kmsg_record("3,256043,23654741590,-;Memory cgroup out of memory: Killed process 23791 "
                               "(x\\x5cy) (z\\x09w) total-vm:82292kB\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->message == "Memory cgroup out of memory: Killed process 23791 (x\\y) (z\tw) total-vm:82292kB");
}

BOOST_AUTO_TEST_CASE(continuation_flags_and_caller) {
    // 'c' (4.9+: a pr_cont() fragment stored on its own), '+' (before 4.9), and the
    // caller field of CONFIG_PRINTK_CALLER (5.1+).
    auto c = parse_kmsg_record("6,10,20,c,caller=T9185;,task=dd,pid=1,uid=0\n");
    BOOST_TEST_REQUIRE(c.has_value(), c.error().message());
    BOOST_TEST(c->flag == 'c');
    BOOST_TEST(c->caller == "T9185");
    BOOST_TEST(c->message == ",task=dd,pid=1,uid=0");
    auto plus = parse_kmsg_record("6,11,21,+;more\n");
    BOOST_TEST_REQUIRE(plus.has_value(), plus.error().message());
    BOOST_TEST(plus->flag == '+');
    auto cpu = parse_kmsg_record("4,12,22,-,caller=C1;from an interrupt\n");
    BOOST_TEST_REQUIRE(cpu.has_value(), cpu.error().message());
    BOOST_TEST(cpu->caller == "C1");
    BOOST_TEST(cpu->flag == '-');
}

BOOST_AUTO_TEST_CASE(dictionary_lines) {
    // Documentation/ABI/testing/dev-kmsg, its example record.
    auto r = parse_kmsg_record("7,160,424069,-;pci_root PNP0A03:00: host bridge window [io  0x0000-0x0cf7] (ignored)\n"
                               " SUBSYSTEM=acpi\n"
                               " DEVICE=+acpi:PNP0A03:00\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->facility == 0u);
    BOOST_TEST(r->level == 7u);
    BOOST_TEST(r->message == "pci_root PNP0A03:00: host bridge window [io  0x0000-0x0cf7] (ignored)");
    using kv = std::pair<std::string, std::string>;
    BOOST_TEST_REQUIRE(r->dict.size() == 2u);
    BOOST_TEST((r->dict[0] == kv{"SUBSYSTEM", "acpi"}));
    BOOST_TEST((r->dict[1] == kv{"DEVICE", "+acpi:PNP0A03:00"}));
}

BOOST_AUTO_TEST_CASE(dictionary_values_are_decoded_and_may_hold_equals) {
    auto r = parse_kmsg_record("6,1,2,-;m\n DEVICE=a\\x3db=c\n");
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST_REQUIRE(r->dict.size() == 1u);
    BOOST_TEST(r->dict[0].first == "DEVICE");
    BOOST_TEST(r->dict[0].second == "a=b=c");
}

namespace {
struct record_case {
    const char* name;
    std::string text;
    unsigned facility;
    unsigned level;
    std::uint64_t seq;
    std::uint64_t ts;
    char flag;
    std::string message;
};
std::ostream& operator<<(std::ostream& os, const record_case& c) { return os << c.name; }

std::vector<record_case> valid_records() {
    const auto u64max = std::numeric_limits<std::uint64_t>::max();
    return {
        {"no final newline", "6,1,2,-;m", 0, 6, 1, 2, '-', "m"},
        {"empty message", "6,1,2,-;\n", 0, 6, 1, 2, '-', ""},
        {"a ';' in the message", "6,1,2,-;a;b\n", 0, 6, 1, 2, '-', "a;b"},
        {"unknown extra fields are skipped", "6,1,2,-,future=1,caller=T1;m\n", 0, 6, 1, 2, '-', "m"},
        {"largest facility", "4294967295,1,2,-;m\n", 536870911, 7, 1, 2, '-', "m"},
        {"prio 0 (KERN_EMERG from the kernel)", "0,0,0,-;m\n", 0, 0, 0, 0, '-', "m"},
        {"local7.debug", "191,1,2,-;m\n", 23, 7, 1, 2, '-', "m"},
        {"uint64 max seq and time", "6," + std::to_string(u64max) + "," + std::to_string(u64max) + ",-;m\n", 0, 6, u64max,
         u64max, '-', "m"},
        {"upper-case hex escape", "6,1,2,-;a\\x5Cb\n", 0, 6, 1, 2, '-', "a\\b"},
        {"an escaped newline stays inside the message", "6,1,2,-;a\\x0ab\n", 0, 6, 1, 2, '-', "a\nb"},
        {"escaped high bytes (UTF-8 of an e acute)", "6,1,2,-;caf\\xc3\\xa9\n", 0, 6, 1, 2, '-', "caf\xc3\xa9"},
        {"an escaped NUL", "6,1,2,-;a\\x00b\n", 0, 6, 1, 2, '-', "a\0b"s},
        {"a bad escape is kept", "6,1,2,-;a\\xzzb\n", 0, 6, 1, 2, '-', "a\\xzzb"},
        {"an escape cut short is kept", "6,1,2,-;a\\x5\n", 0, 6, 1, 2, '-', "a\\x5"},
        {"a lone backslash at the end is kept", "6,1,2,-;a\\\n", 0, 6, 1, 2, '-', "a\\"},
        {"a backslash not before x is kept", "6,1,2,-;a\\n\n", 0, 6, 1, 2, '-', "a\\n"},
        {"leading zeros", "006,001,002,-;m\n", 0, 6, 1, 2, '-', "m"},
    };
}

std::vector<record_case> malformed_records() {
    return {
        {"empty", "", 0, 0, 0, 0, 0, ""},
        {"newline only", "\n", 0, 0, 0, 0, 0, ""},
        {"no ';'", "6,1,2,-m\n", 0, 0, 0, 0, 0, ""},
        {"three fields", "6,1,2;m\n", 0, 0, 0, 0, 0, ""},
        {"semicolon only", ";\n", 0, 0, 0, 0, 0, ""},
        {"flag not one of - c +", "6,1,2,x;m\n", 0, 0, 0, 0, 0, ""},
        {"flag of two chars", "6,1,2,--;m\n", 0, 0, 0, 0, 0, ""},
        {"empty flag", "6,1,2,;m\n", 0, 0, 0, 0, 0, ""},
        {"prio not a number", "a,1,2,-;m\n", 0, 0, 0, 0, 0, ""},
        {"negative seq", "6,-1,2,-;m\n", 0, 0, 0, 0, 0, ""},
        {"plus sign", "+6,1,2,-;m\n", 0, 0, 0, 0, 0, ""},
        {"prio overflows 32 bits", "4294967296,1,2,-;m\n", 0, 0, 0, 0, 0, ""},
        {"seq overflows 64 bits", "6,18446744073709551616,2,-;m\n", 0, 0, 0, 0, 0, ""},
        {"empty time", "6,1,,-;m\n", 0, 0, 0, 0, 0, ""},
        {"blank in a number", "6, 1,2,-;m\n", 0, 0, 0, 0, 0, ""},
        {"two records glued together", "6,1,2,-;a\n6,2,3,-;b\n", 0, 0, 0, 0, 0, ""},
        {"a second line without the leading space", "6,1,2,-;a\nKEY=v\n", 0, 0, 0, 0, 0, ""},
        {"a dictionary line without '='", "6,1,2,-;a\n KEY\n", 0, 0, 0, 0, 0, ""},
        {"a dictionary line with an empty key", "6,1,2,-;a\n =v\n", 0, 0, 0, 0, 0, ""},
        {"an empty line after the record", "6,1,2,-;a\n\n", 0, 0, 0, 0, 0, ""},
        {"binary", "\x7f" "ELF\x02\x01;\0\0"s, 0, 0, 0, 0, 0, ""},
        {"a dmesg line (not kmsg)", "[ 1.000000] Linux version 6.1.0\n", 0, 0, 0, 0, 0, ""},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(valid, data::make(valid_records()), c) {
    auto r = parse_kmsg_record(c.text);
    BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
    BOOST_TEST(r->facility == c.facility);
    BOOST_TEST(r->level == c.level);
    BOOST_TEST(r->seq == c.seq);
    BOOST_TEST(r->ts_usec == c.ts);
    BOOST_TEST(r->flag == c.flag);
    BOOST_TEST(r->message == c.message);
}

BOOST_DATA_TEST_CASE(malformed, data::make(malformed_records()), c) {
    auto r = parse_kmsg_record(c.text);
    BOOST_TEST(!r.has_value());
    if (!r) BOOST_TEST(r.error() == make_error_code(error::malformed_log_record));
}

BOOST_AUTO_TEST_CASE(error_code_has_a_message) {
    auto ec = make_error_code(error::malformed_log_record);
    BOOST_TEST(ec.message() == "Malformed kernel log record");
    BOOST_TEST(&ec.category() == &error_category());
}

BOOST_AUTO_TEST_CASE(every_prefix_of_a_record_is_safe) {
    // A record cut anywhere: malformed while the header is cut, whole once the message
    // line is; a cut inside a dictionary line before its '=' is malformed. No UB.
    const std::string text = "6,160,424069,-,caller=T1;a\\x5cb (c) d\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A03:00\n";
    const auto semi = text.find(';');
    const auto first_nl = text.find('\n');
    std::size_t parsed = 0;
    for (std::size_t n = 0; n <= text.size(); ++n) {
        BOOST_TEST_CONTEXT("prefix of " << n << " bytes") {
            auto r = parse_kmsg_record(std::string_view(text).substr(0, n));
            if (n <= semi) {
                BOOST_TEST(!r.has_value());
            } else if (n <= first_nl + 1) {
                BOOST_TEST_REQUIRE(r.has_value(), r.error().message());
                BOOST_TEST(r->caller == "T1");
                BOOST_TEST(r->dict.empty());
            }
            if (r) {
                ++parsed;
                BOOST_TEST(r->seq == 160u);
                BOOST_TEST(r->dict.size() <= 2u);
            } else {
                BOOST_TEST(r.error() == make_error_code(error::malformed_log_record));
            }
        }
    }
    BOOST_TEST(parsed >= 30u);  // all but the header cuts and the cuts before a dictionary line's "="
}

BOOST_AUTO_TEST_SUITE_END()

// ---- splitting a stream of records -----------------------------------------------------------

BOOST_AUTO_TEST_SUITE(split)

BOOST_AUTO_TEST_CASE(records_with_dictionaries) {
    const std::string stream = "6,1,2,-;a\n SUBSYSTEM=x\n DEVICE=y\n4,2,3,-; starts with a space\n\n5,3,4,c;b";
    auto parts = split_kmsg_records(stream);
    BOOST_TEST_REQUIRE(parts.size() == 3u);
    BOOST_TEST(parts[0] == "6,1,2,-;a\n SUBSYSTEM=x\n DEVICE=y\n");
    BOOST_TEST(parts[1] == "4,2,3,-; starts with a space\n");
    BOOST_TEST(parts[2] == "5,3,4,c;b");
    for (auto p : parts) BOOST_TEST(parse_kmsg_record(p).has_value());
}

BOOST_AUTO_TEST_CASE(edge_cases) {
    BOOST_TEST(split_kmsg_records("").empty());
    BOOST_TEST(split_kmsg_records("\n\n").empty());
    // A dictionary line with no record before it is a record of its own (malformed).
    auto parts = split_kmsg_records(" KEY=v\n6,1,2,-;a\n");
    BOOST_TEST_REQUIRE(parts.size() == 2u);
    BOOST_TEST(parts[0] == " KEY=v\n");
    BOOST_TEST(!parse_kmsg_record(parts[0]).has_value());
    // An empty line ends a record: a dictionary line after it belongs to none.
    auto q = split_kmsg_records("a\n\n b\nc\n");
    BOOST_TEST_REQUIRE(q.size() == 3u);
    BOOST_TEST(q[0] == "a\n");
    BOOST_TEST(q[1] == " b\n");
    BOOST_TEST(q[2] == "c\n");
}

BOOST_AUTO_TEST_SUITE_END()

// ---- the OOM killer's lines -------------------------------------------------------------------

BOOST_DATA_TEST_CASE(invoked_lines, data::make(invoked_cases()), c) { check_line(c); }
BOOST_DATA_TEST_CASE(summary_lines, data::make(summary_cases()), c) { check_line(c); }
BOOST_DATA_TEST_CASE(memcg_info_lines, data::make(memcg_info_cases()), c) { check_line(c); }
BOOST_DATA_TEST_CASE(kill_choice_lines, data::make(kill_choice_cases()), c) { check_line(c); }
BOOST_DATA_TEST_CASE(killed_process_lines, data::make(killed_cases()), c) { check_line(c); }
BOOST_DATA_TEST_CASE(other_lines, data::make(other_cases()), c) { check_line(c); }

BOOST_AUTO_TEST_CASE(constraint_names) {
    BOOST_TEST(to_string(kmsg_constraint::none) == "CONSTRAINT_NONE");
    BOOST_TEST(to_string(kmsg_constraint::cpuset) == "CONSTRAINT_CPUSET");
    BOOST_TEST(to_string(kmsg_constraint::memory_policy) == "CONSTRAINT_MEMORY_POLICY");
    BOOST_TEST(to_string(kmsg_constraint::memcg) == "CONSTRAINT_MEMCG");
    BOOST_TEST(to_string(kmsg_constraint::other) == "");
}

BOOST_AUTO_TEST_CASE(every_prefix_of_a_line_is_safe) {
    // Cut anywhere, a line parses as nothing or as the same kind of line, never as another.
    std::vector<line_case> all;
    for (auto&& cases : {invoked_cases(), summary_cases(), memcg_info_cases(), kill_choice_cases(), killed_cases(),
                         other_cases()}) {
        for (auto& c : cases) {
            if (c.expected) all.push_back(c);
        }
    }
    for (const auto& c : all) {
        for (std::size_t n = 0; n <= c.message.size(); ++n) {
            BOOST_TEST_CONTEXT(c.source << ", prefix of " << n << " bytes") {
                auto got = parse_oom_line(std::string_view(c.message).substr(0, n));
                if (got) BOOST_TEST(got->index() == c.expected->index());
            }
        }
    }
}

// ---- the real captures, whole -----------------------------------------------------------------

namespace {
std::vector<capture_case> captures() {
    return {
        {"host-memcg-kill.kmsg", "dd", host_root + "/kill", host_root + "/kill"},
        {"host-parent-limit.kmsg", "dd", host_root + "/P", host_root + "/P/child"},
        {"host-comm-space.kmsg", "my dd", host_root + "/space", host_root + "/space"},
        {"host-comm-escapes.kmsg", "x\\y) (z\tw", host_root + "/escapes", host_root + "/escapes"},
    };
}
} // namespace

BOOST_DATA_TEST_CASE(host_captures, data::make(captures()), c) {
    // Every record of a whole OOM report (stack, meminfo, task list...) parses; exactly
    // one invoked, one summary and one killed line come out of it, and they agree.
    const std::string stream = read_file(data_dir() / c.file);
    auto records = split_kmsg_records(stream);
    BOOST_TEST(records.size() > 50u);
    std::map<std::size_t, int> kinds;
    std::optional<oom_summary_line> sum;
    std::optional<killed_process_line> kill;
    std::optional<oom_invoked_line> inv;
    std::uint64_t last_seq = 0;
    unsigned user_records = 0;
    for (auto text : records) {
        auto r = parse_kmsg_record(text);
        BOOST_TEST_REQUIRE(r.has_value(), "record: " << text);
        BOOST_TEST(r->seq > last_seq);  // one capture, in order, nothing lost in between
        last_seq = r->seq;
        if (r->facility != 0) {
            ++user_records;
            BOOST_TEST(r->message.starts_with("kmsgcap: "));
            continue;
        }
        auto line = parse_oom_line(r->message);
        if (!line) continue;
        ++kinds[line->index()];
        if (auto* s = std::get_if<oom_summary_line>(&*line)) sum = *s;
        if (auto* k = std::get_if<killed_process_line>(&*line)) kill = *k;
        if (auto* i = std::get_if<oom_invoked_line>(&*line)) inv = *i;
    }
    BOOST_TEST(user_records == 1u);
    BOOST_TEST(kinds.size() == 3u);
    for (const auto& [kind, n] : kinds) BOOST_TEST(n == 1, "line kind " << kind << " seen " << n << " times");
    BOOST_TEST_REQUIRE(sum.has_value());
    BOOST_TEST_REQUIRE(kill.has_value());
    BOOST_TEST_REQUIRE(inv.has_value());
    BOOST_TEST(inv->comm == c.comm);
    BOOST_TEST((sum->constraint == kmsg_constraint::memcg));
    BOOST_TEST(sum->oom_memcg.value_or("") == c.oom_memcg);
    BOOST_TEST(sum->task_memcg.value_or("") == c.task_memcg);
    BOOST_TEST(sum->task == c.comm);
    BOOST_TEST(kill->comm == c.comm);
    BOOST_TEST(kill->pid == sum->pid);
    BOOST_TEST(kill->reason == "Memory cgroup out of memory");
    BOOST_TEST(kill->uid.value_or(1) == 0u);
    BOOST_TEST(kill->anon_rss >= (31u << 20));  // the 32 MiB limit, nearly all of it anonymous
}

namespace {
// A capture from Debian's 6.1 kernel with cgroup v2 (test/data/kmsg/capture-vm): what every
// OOM line of it parses to, in log order.
struct vm_capture_case {
    const char* name;                   // vm61-v2-NAME.kmsg
    std::string kinds;                  // the kind of each OOM line, in order (render's first word)
    kmsg_constraint constraint;
    bool global_oom;
    std::optional<std::string> oom_memcg;
    std::string task_memcg;
    std::string invoked_comm;           // whose allocation failed
    int invoked_adj;
    std::string reason;                 // of every Killed process line
    std::optional<std::string> group;   // the memory.oom.group line's cgroup
    std::vector<std::pair<pid_t, std::string>> killed;  // every Killed process line, in order
};
std::ostream& operator<<(std::ostream& os, const vm_capture_case& c) { return os << c.name; }

std::vector<vm_capture_case> vm_captures() {
    const auto memcg = kmsg_constraint::memcg;
    const std::string one = "invoked summary killed";
    const std::string mc = "Memory cgroup out of memory";
    return {
        {"memcg-kill", one, memcg, false, "/kill"s, "/kill", "dd", 0, mc, {}, {{120, "dd"}}},
        {"parent-limit", one, memcg, false, "/P"s, "/P/child", "dd", 0, mc, {}, {{130, "dd"}}},
        // One summary for the group; the first victim is killed again by the group scan.
        {"oom-group", "invoked summary killed group killed killed killed", memcg, false, "/group"s, "/group", "dd", 0,
         mc, "/group"s, {{123, "dd"}, {123, "dd"}, {124, "sleep"}, {125, "sleep"}}},
        {"global-oom", one, kmsg_constraint::none, true, {}, "/global", "memhog", 1000, "Out of memory", {},
         {{135, "memhog"}}},
    };
}

// "key value" lines (memory.events), or "label: key value" (the .vmstat files), as a map.
std::map<std::string, std::uint64_t> counters(const std::string& text) {
    std::map<std::string, std::uint64_t> m;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        const auto sp = line.rfind(' ');
        BOOST_TEST_REQUIRE(sp != std::string::npos, "line: " << line);
        m[line.substr(0, sp)] = std::stoull(line.substr(sp + 1));
    }
    return m;
}
} // namespace

BOOST_DATA_TEST_CASE(vm_v2_captures, data::make(vm_captures()), c) {
    const std::string file = "vm61-v2-"s + c.name + ".kmsg";
    const std::string stream = read_file(data_dir() / file);
    auto records = split_kmsg_records(stream);
    BOOST_TEST(records.size() > 40u);
    std::string kinds;
    std::vector<oom_summary_line> sums;
    std::vector<killed_process_line> kills;
    std::vector<oom_invoked_line> invs;
    std::vector<oom_group_line> groups;
    std::uint64_t last_seq = 0;
    for (std::size_t i = 0; i < records.size(); ++i) {
        auto r = parse_kmsg_record(records[i]);
        BOOST_TEST_REQUIRE(r.has_value(), "record: " << records[i]);
        if (i > 0) BOOST_TEST(r->seq == last_seq + 1);  // nothing lost, nothing else in between
        last_seq = r->seq;
        if (r->facility != 0) {
            // Only the marker the capture wrote, first: the kill's records all have facility 0.
            BOOST_TEST(i == 0u);
            BOOST_TEST(r->message == "kmsgcap: vm61-v2-"s + c.name + " begin");
            continue;
        }
        auto line = parse_oom_line(r->message);
        if (!line) continue;
        const std::string shown = render(line);
        kinds += (kinds.empty() ? "" : " ") + shown.substr(0, shown.find(' '));
        if (auto* s = std::get_if<oom_summary_line>(&*line)) sums.push_back(*s);
        if (auto* k = std::get_if<killed_process_line>(&*line)) kills.push_back(*k);
        if (auto* v = std::get_if<oom_invoked_line>(&*line)) invs.push_back(*v);
        if (auto* g = std::get_if<oom_group_line>(&*line)) groups.push_back(*g);
    }
    BOOST_TEST(kinds == c.kinds);
    BOOST_TEST_REQUIRE(sums.size() == 1u);
    BOOST_TEST_REQUIRE(invs.size() == 1u);
    BOOST_TEST_REQUIRE(!kills.empty());
    BOOST_TEST(invs[0].comm == c.invoked_comm);
    BOOST_TEST(invs[0].oom_score_adj == c.invoked_adj);
    const auto& sum = sums[0];
    BOOST_TEST((sum.constraint == c.constraint));
    BOOST_TEST(sum.global_oom == c.global_oom);
    BOOST_TEST(sum.oom_memcg.value_or("(none)") == c.oom_memcg.value_or("(none)"));
    BOOST_TEST(sum.task_memcg.value_or("") == c.task_memcg);
    // The summary names the first victim, the one the killer chose.
    BOOST_TEST(sum.pid == kills[0].pid);
    BOOST_TEST(sum.task == kills[0].comm);
    BOOST_TEST(sum.uid == 0u);
    BOOST_TEST_REQUIRE(kills.size() == c.killed.size());
    for (std::size_t i = 0; i < kills.size(); ++i) {
        BOOST_TEST_CONTEXT("Killed process line " << i) {
            BOOST_TEST(kills[i].pid == c.killed[i].first);
            BOOST_TEST(kills[i].comm == c.killed[i].second);
            BOOST_TEST(kills[i].reason == c.reason);
            BOOST_TEST(kills[i].uid.value_or(1) == 0u);
            BOOST_TEST(kills[i].oom_score_adj.value_or(-1) == c.invoked_adj);
        }
    }
    BOOST_TEST_REQUIRE(groups.size() == (c.group ? 1u : 0u));
    if (c.group) BOOST_TEST(groups[0].cgroup == *c.group);
}

BOOST_AUTO_TEST_CASE(vm_v2_group_kill_counters_match_the_log) {
    // memory.events of /group after the capture: oom_kill counts every Killed process line
    // (the first victim twice: once chosen, once in the group scan), oom_group_kill the
    // one "Tasks in ... memory.oom.group" line.
    auto events = counters(read_file(data_dir() / "vm61-v2-oom-group.memory.events"));
    BOOST_TEST(events["oom"] == 1u);
    BOOST_TEST(events["oom_kill"] == 4u);
    BOOST_TEST(events["oom_group_kill"] == 1u);
}

BOOST_AUTO_TEST_CASE(vm_v2_global_oom_counts_one_kill_in_vmstat) {
    // /proc/vmstat's oom_kill around the global OOM: one kill, one Killed process line.
    auto v = counters(read_file(data_dir() / "vm61-v2-global-oom.vmstat"));
    BOOST_TEST_REQUIRE(v.count("before: oom_kill") == 1u);
    BOOST_TEST_REQUIRE(v.count("after: oom_kill") == 1u);
    BOOST_TEST(v["after: oom_kill"] - v["before: oom_kill"] == 1u);
}

BOOST_AUTO_TEST_CASE(every_truncation_of_a_capture_is_safe) {
    // Cut the stream anywhere: each piece parses or is malformed; an OOM line in it is
    // recognised or not, without UB (the sanitizer builds run this too).
    const std::string stream = read_file(data_dir() / "host-comm-escapes.kmsg");
    std::size_t parsed = 0;
    for (std::size_t n = 0; n <= stream.size(); n += 7) {
        for (auto text : split_kmsg_records(std::string_view(stream).substr(0, n))) {
            auto r = parse_kmsg_record(text);
            if (!r) {
                BOOST_TEST(r.error() == make_error_code(error::malformed_log_record));
                continue;
            }
            ++parsed;
            (void)parse_oom_line(r->message);
        }
    }
    BOOST_TEST(parsed > 1000u);
}

BOOST_AUTO_TEST_SUITE_END()
