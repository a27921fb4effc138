// The kernel-log reader (src/kernel_log.hpp) against real OOM kills in scratch cgroups:
// each kill comes with its victim's pid, comm and uid and the cgroups the kernel
// named; a kill from before the reader started is never replayed.
#include "test_support.hpp"
#include "fault_support.hpp"
#include "kernel_log_support.hpp"

#include "detail/cgroup.hpp"
#include "kernel_log.hpp"
#include "scratch/scratch_cgroup.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::detail;
using namespace oomwatch::test;
namespace fs = std::filesystem;

namespace {

struct log_fixture : kernel_fixture {
    kernel_log_service& svc = asio::use_service<kernel_log_service>(ctx);
    std::shared_ptr<kill_recorder> client = std::make_shared<kill_recorder>();
    std::uint64_t key = 0;

    void start() {
        key = svc.add(ctx.get_executor(), client);
        BOOST_TEST_REQUIRE(key != 0u, "the kernel log cannot be read here");
    }
    ~log_fixture() {
        if (key) svc.remove(key);
    }

    // OOM-kills one victim in `cg` and returns its kill record, read before the victim
    // is reaped (so a record whose report was rate limited can still be completed from
    // /proc). With `want_report`, kills again until one comes with its report (the
    // kernel prints at most 10 reports in 5 s; other tests may have used them up),
    // bounded by 15 s.
    kill_record kill_in(const fs::path& dir, bool want_report) {
        const auto deadline = std::chrono::steady_clock::now() + 15s;
        for (;;) {
            auto v = scratch::victim::spawn(dir, oom_hog);
            BOOST_TEST_REQUIRE(v.has_value(), "cannot start a victim: " << v.error().message());
            const pid_t pid = v->pid();
            BOOST_TEST_REQUIRE(run_until(ctx, [&] { return client->of(pid) != nullptr; }, 10s),
                               "no kill record for victim " << pid);
            auto status = v->wait(10s);
            BOOST_TEST_REQUIRE(status.has_value());
            BOOST_TEST_REQUIRE(scratch::victim::killed_by_sigkill(*status));
            kill_record k = *client->of(pid);
            if (!want_report || k.report_matched) return k;
            BOOST_TEST_MESSAGE("the report of victim " << pid << " was rate limited; again");
            // The limit is the machine's: OOMs elsewhere (other test runs) use it too.
            // Under ctest the kernel tests run alone and 15 s spans three 5 s windows.
            if (std::chrono::steady_clock::now() >= deadline) {
                BOOST_TEST_REQUIRE(!kernel_required(), "every OOM report rate limited for 15 s");
                return k;
            }
        }
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(kernel_log_real, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_FIXTURE_TEST_CASE(a_memcg_kill_names_its_victim, log_fixture) {
    start();
    const auto k = kill_in(cg->path(), false);
    BOOST_TEST(k.comm == own_comm());
    BOOST_TEST_REQUIRE(k.uid.has_value());
    BOOST_TEST(*k.uid == ::geteuid());
    BOOST_TEST((k.constraint == kmsg_constraint::memcg));
    BOOST_TEST(!k.constraint_guessed);
    BOOST_TEST(k.reason == "Memory cgroup out of memory");
    // From the report's summary, or (rate limited) from /proc while the victim still
    // lived; an exiting victim's /proc shows the root cgroup (v1), which is never taken.
    if (k.report_matched || k.task_memcg_from_proc) BOOST_TEST(k.task_memcg == hierarchy_path(cg->path()));
    else BOOST_TEST(k.task_memcg.empty());
    if (k.report_matched) BOOST_TEST(k.oom_memcg == hierarchy_path(cg->path()));
    BOOST_TEST(k.anon_rss > 0u);
    BOOST_TEST(k.anon_rss < oom_hog);  // killed long before it had all it wanted
    BOOST_TEST(!k.group);
    BOOST_TEST(client->errors.empty());
    auto pos = svc.position();
    BOOST_TEST_REQUIRE(pos.last_seq.has_value());
    BOOST_TEST(*pos.last_seq >= k.seq);
}

BOOST_FIXTURE_TEST_CASE(a_parent_limit_names_the_parent, log_fixture) {
    BOOST_TEST_REQUIRE(!cg->set_limit(oom_limit));
    auto child = this->child("child", 0);  // no limit of its own: the parent's is hit
    start();
    const auto k = kill_in(child.path(), true);
    if (k.report_matched || k.task_memcg_from_proc) BOOST_TEST(k.task_memcg == hierarchy_path(child.path()));
    BOOST_TEST((k.constraint == kmsg_constraint::memcg));
    if (k.report_matched) {
        BOOST_TEST(k.oom_memcg == hierarchy_path(cg->path()));
        BOOST_TEST(k.task_memcg == k.oom_memcg + "/child");
        BOOST_TEST(!k.task_memcg_from_proc);
    } else {
        BOOST_WARN_MESSAGE(false, "OOMs elsewhere on the machine kept the report rate limited: oom_memcg unchecked");
    }
}

BOOST_FIXTURE_TEST_CASE(a_kill_before_the_reader_started_is_not_replayed, log_fixture) {
    auto early = scratch::victim::spawn(cg->path(), oom_hog);
    BOOST_TEST_REQUIRE(early.has_value());
    const pid_t early_pid = early->pid();
    auto status = early->wait(10s);
    BOOST_TEST_REQUIRE(status.has_value());
    BOOST_TEST_REQUIRE(scratch::victim::killed_by_sigkill(*status));
    start();  // its record is in the ring buffer now, before the reader's start
    const auto k = kill_in(cg->path(), false);  // a later kill: read, so the reader is past the start
    BOOST_TEST(k.pid != early_pid);
    BOOST_TEST(client->of(early_pid) == nullptr);
    for (auto& r : client->kills) BOOST_TEST(r.seq >= k.seq);  // nothing older than the new kill
}

BOOST_AUTO_TEST_SUITE_END()
