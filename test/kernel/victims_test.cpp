// Victims in events (issue 10) on a real kernel, v1 on the host and v2 in the VM: a kill
// in a watched cgroup names the test's own child; a parent's limit names the parent as
// oom_cgroup; a forged /dev/kmsg line names nobody; without permission to read the log
// the counts stay exact.
#include "test_support.hpp"
#include "fault_support.hpp"
#include "kernel_log_support.hpp"
#include "victims_support.hpp"

#include "detail/cgroup.hpp"
#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

BOOST_AUTO_TEST_SUITE(victims_real_kernel, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_FIXTURE_TEST_CASE(a_kill_in_a_watched_cgroup_names_the_child, kernel_fixture) {
    watcher w(ctx, cg->path());
    BOOST_TEST_REQUIRE(w.victims_available(), "no victims: " << w.victims_error().message());
    collector<watcher> c{w, {}, {}};
    c.arm();
    kernel_witness kernel(cg->path(), cg->version());
    const auto named = kill_until_named(ctx, c, cg->path(), [&](pid_t p) { return find(c.victims(), p) != nullptr; });
    kernel.take();
    check_sums(c.events);
    BOOST_TEST(c.kills() == kernel.kills());  // named or not, each kill counted once
    if (!named) return;
    const auto vs = c.victims();
    const victim& v = *find(vs, *named);
    BOOST_TEST(v.pid == *named);
    BOOST_TEST(v.comm == own_comm());
    BOOST_TEST(v.uid == ::geteuid());
    BOOST_TEST((v.constraint == oom_constraint::memcg));
    BOOST_TEST(v.task_cgroup == cg->path());
    if (!v.oom_cgroup.empty()) BOOST_TEST(v.oom_cgroup == cg->path());  // empty: the report was rate limited
    BOOST_TEST(v.anon_rss > 0u);
    BOOST_TEST(v.kernel_seq > 0u);
    BOOST_TEST(!v.group_kill);
}

// A limit on P, the victim in P/child (no limit of its own): the kernel counts the kill
// in P/child (v1: there alone; v2: memory.events.local of P/child) and names P as the
// cgroup whose limit was hit. Both a tree on P and a watcher on P/child say so. The
// name of P comes from the kernel's OOM report, rate limited machine-wide: kills are
// repeated until one comes with it, bounded by 15 s.
BOOST_FIXTURE_TEST_CASE(a_parent_limit_names_the_parent, kernel_fixture) {
    auto child = this->child("child", 0);
    tree_watcher tw(ctx, cg->path());
    watcher w(ctx, child.path());
    collector<tree_watcher> tc{tw, {}, {}};
    collector<watcher> wc{w, {}, {}};
    tc.arm();
    wc.arm();
    // Named by both, with the parent: only with the kernel's report (rate limited).
    const auto named = kill_until_named(ctx, wc, child.path(), [&](pid_t pid) {
        run_until(ctx, [&] { return tc.kills() == wc.kills(); }, 10s);
        const auto tvs = tc.victims();
        const auto wvs = wc.victims();
        const victim* tv = find(tvs, pid);
        const victim* wv = find(wvs, pid);
        return tv && wv && !tv->oom_cgroup.empty() && !wv->oom_cgroup.empty();
    });
    if (named) {
        const auto tvs = tc.victims();
        const auto wvs = wc.victims();
        const victim* tv = find(tvs, *named);
        const victim* wv = find(wvs, *named);
        BOOST_TEST(tv->task_cgroup == child.path());
        BOOST_TEST(wv->task_cgroup == child.path());
        BOOST_TEST((tv->constraint == oom_constraint::memcg));
        BOOST_TEST(tv->oom_cgroup == cg->path());
        BOOST_TEST(wv->oom_cgroup == cg->path());
    }
    // The tree reported each kill once, at the child, with its victim.
    for (auto& e : tc.events)
        if (e.kind == event_kind::oom_kill) BOOST_TEST(e.cgroup == child.path());
    check_sums(tc.events);
    check_sums(wc.events);
    BOOST_TEST(tc.kills() == wc.kills());
}

// A line written to /dev/kmsg gets a user facility: however much it looks like the
// kernel's, it names nobody. The forged kill names this cgroup; the real kill that
// follows is the only victim reported.
BOOST_FIXTURE_TEST_CASE(a_forged_kill_line_names_nobody, kernel_fixture) {
    watcher w(ctx, cg->path());
    BOOST_TEST_REQUIRE(w.victims_available());
    collector<watcher> c{w, {}, {}};
    c.arm();
    const std::string where = hierarchy_path(cg->path());
    write_kmsg("<3>oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=" + where +
               ",task_memcg=" + where + ",task=forged,pid=999999,uid=0");
    write_kmsg("<3>Memory cgroup out of memory: Killed process 999999 (forged) total-vm:1000kB, anon-rss:500kB, "
               "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0");
    const auto named = kill_until_named(ctx, c, cg->path(), [&](pid_t p) { return find(c.victims(), p) != nullptr; });
    check_sums(c.events);
    auto vs = c.victims();
    BOOST_TEST(find(vs, 999999) == nullptr);
    for (auto& v : vs) BOOST_TEST(v.comm == own_comm());  // only real victims, ours
    if (named) BOOST_TEST(find(vs, *named) != nullptr);
}

// Without CAP_SYSLOG under kernel.dmesg_restrict=1, /dev/kmsg cannot be opened: a watcher
// in a child that became uid 65534 says so (victims_available() false, the error) and
// still counts the kill exactly, every one unattributed. The child reports by exit
// status; the parent makes the kill once the child says it is watching.
BOOST_FIXTURE_TEST_CASE(without_permission_the_counts_stay_exact, kernel_fixture) {
    std::optional<sysctl_guard> restrict;
    if (read_text("/proc/sys/kernel/dmesg_restrict") != "1\n") restrict.emplace("/proc/sys/kernel/dmesg_restrict", 1);
    // v1 registers eventfds through cgroup.event_control, which is root's alone (0200):
    // the cgroup is delegated to the user, as an unprivileged watcher's would be.
    if (v1()) BOOST_TEST_REQUIRE(::chown((cg->path() / "cgroup.event_control").c_str(), 65534, 65534) == 0);
    int ready[2];
    BOOST_TEST_REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    const std::string dir = cg->path().string();
    const pid_t pid = ::fork();
    BOOST_TEST_REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(ready[0]);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
        asio::io_context cctx;
        error_code ec;
        watcher cw(cctx, dir, {}, ec);
        if (ec) ::_exit(ec.value() < 100 ? 100 + ec.value() : 11);
        if (cw.victims_available()) ::_exit(12);
        const int e = cw.victims_error().value();
        if (e != EPERM && e != EACCES) ::_exit(13);
        std::uint64_t kills = 0, unattributed = 0, victims = 0;
        std::function<void()> arm = [&] {
            cw.async_next_event([&](error_code ec2, oom_event ev) {
                if (ec2) return;
                if (ev.kind == event_kind::oom_kill) {
                    kills += ev.count;
                    unattributed += ev.unattributed;
                    victims += ev.victims.size();
                }
                arm();
            });
        };
        arm();
        char byte = 1;
        if (::write(ready[1], &byte, 1) != 1) ::_exit(14);
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (kills < 1 && std::chrono::steady_clock::now() < deadline) cctx.run_one_for(100ms);
        if (kills != 1) ::_exit(15);
        if (unattributed != 1 || victims != 0) ::_exit(16);
        ::_exit(0);
    }
    ::close(ready[1]);
    pollfd p{ready[0], POLLIN, 0};
    const bool watching = ::poll(&p, 1, 15000) == 1;
    ::close(ready[0]);
    if (watching) oom_kill_one();
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    pollfd q{pidfd, POLLIN, 0};
    const int done = pidfd >= 0 ? ::poll(&q, 1, 25000) : -1;
    if (pidfd >= 0) ::close(pidfd);
    if (done != 1) ::kill(pid, SIGKILL);
    int status = 0;
    BOOST_TEST_REQUIRE(::waitpid(pid, &status, 0) == pid);
    BOOST_TEST_REQUIRE(watching, "the unprivileged child did not start watching");
    BOOST_TEST_REQUIRE(done == 1, "the unprivileged child hung");
    BOOST_TEST_REQUIRE(WIFEXITED(status), "the child died: status " << status);
    BOOST_TEST(WEXITSTATUS(status) == 0, "the child's check " << WEXITSTATUS(status) << " failed");
}

BOOST_AUTO_TEST_SUITE_END()
