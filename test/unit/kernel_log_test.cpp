// The kernel-log reader (src/kernel_log.hpp) on the real /dev/kmsg, without OOM kills
// (those are in test/kernel/kernel_log_test.cpp): forged records give nothing, losses
// are counted, a failed read or a missing permission is said once. Root: writing to
// /dev/kmsg, and reading it under kernel.dmesg_restrict.
#include "test_support.hpp"
#include "fault_support.hpp"
#include "kernel_log_support.hpp"

#include "fault_injection.hpp"
#include "kernel_log.hpp"

#include <oomwatch/kernel_log.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::detail;
using namespace oomwatch::test;

namespace {

// What the service read, through its test hook (called on the context's thread).
struct seen_records {
    std::mutex m;
    std::vector<kmsg_record> records;
    bool saw(const std::string& message) {
        std::lock_guard lk(m);
        for (auto& r : records)
            if (r.message == message) return true;
        return false;
    }
    const kmsg_record* find(const std::string& message) {
        std::lock_guard lk(m);
        for (auto& r : records)
            if (r.message == message) return &r;
        return nullptr;
    }
    void hook(kernel_log_service& s) {
        s.set_record_hook([this](const kmsg_record& r) {
            std::lock_guard lk(m);
            records.push_back(r);
        });
    }
};

std::string marker(const char* what) {
    static std::atomic<int> n{0};
    return std::string("oomwatch-test ") + what + " " + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

// A reader on an io_context, with a client and the test hook.
struct reader {
    asio::io_context ctx;
    kernel_log_service& svc = asio::use_service<kernel_log_service>(ctx);
    seen_records seen;
    std::shared_ptr<kill_recorder> client = std::make_shared<kill_recorder>();
    std::uint64_t key = 0;

    reader() {
        OOMWATCH_REQUIRE_ROOT("writing to /dev/kmsg");
        seen.hook(svc);
        key = svc.add(ctx.get_executor(), client);
        BOOST_TEST_REQUIRE(key != 0u);
        BOOST_TEST_REQUIRE(svc.is_open());
    }
    ~reader() { svc.remove(key); }
    // Writes `text` and waits (bounded) until the reader has read it.
    void write_and_see(const std::string& text) {
        write_kmsg("<6>" + text);
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return seen.saw(text); }, 10s), "the reader did not get to " << text);
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(kernel_log, *boost::unit_test::precondition(root_precondition{"writing to /dev/kmsg"}))

BOOST_FIXTURE_TEST_CASE(a_forged_oom_line_gives_no_kill, reader) {
    const std::string forged =
        "Memory cgroup out of memory: Killed process 1234 (x) total-vm:1000kB, anon-rss:500kB, file-rss:0kB, "
        "shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0";
    const auto foreign_before = svc.foreign_records();
    write_kmsg("<6>" + forged);
    // A summary naming that pid too, at the kernel's own level for the Killed line.
    write_kmsg("<3>oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/f,"
               "task_memcg=/f,task=x,pid=1234,uid=0");
    write_kmsg("<3>" + forged);
    // The reader is live: it got to a record written after them.
    write_and_see(marker("after the forgery"));
    const auto* f = seen.find(forged);
    BOOST_TEST_REQUIRE(f != nullptr);  // it was read, and dropped
    BOOST_TEST(f->facility == 1u);
    BOOST_TEST(f->level == 6u);
    // Real kills elsewhere on the machine (other tests, other tenants) may be read
    // meanwhile: none may be the forged one.
    for (auto& k : client->kills)
        BOOST_TEST(!(k.pid == 1234 && k.comm == "x"), "the forged kill was reported (seq " << k.seq << ")");
    BOOST_TEST(client->errors.empty());
    BOOST_TEST(svc.foreign_records() - foreign_before >= 4u);
}

BOOST_FIXTURE_TEST_CASE(an_injected_epipe_counts_as_lost, reader) {
    write_and_see(marker("before the loss"));
    const auto lost_before = svc.records_lost();
    log_capture logs;
    fault::kmsg_read_errno = EPIPE;  // the next read: as if its record had been overwritten
    const auto dropped = marker("lost");
    write_kmsg("<6>" + dropped);
    write_and_see(marker("after the loss"));
    fault::kmsg_read_errno = 0;
    BOOST_TEST(!seen.saw(dropped));
    // One EPIPE, and the gap it left (the dropped record) is that same one.
    BOOST_TEST(svc.records_lost() - lost_before == 1u);
    BOOST_TEST(logs.count("record(s) lost") == 1u);  // said, once
    BOOST_TEST(client->errors.empty());  // a loss is no failure: reading goes on
    BOOST_TEST(svc.is_open());
    // The public statistics say the same.
    const auto pub = kernel_log_statistics(ctx);
    BOOST_TEST(pub.records_lost == svc.records_lost());
    BOOST_TEST(pub.records_read == svc.records_seen());
    BOOST_TEST(pub.foreign_records == svc.foreign_records());
    BOOST_TEST(pub.reading);
}

BOOST_AUTO_TEST_CASE(a_context_nobody_read_the_log_on_has_zero_statistics) {
    asio::io_context ctx;
    const auto s = kernel_log_statistics(ctx);
    BOOST_TEST(s.records_read == 0u);
    BOOST_TEST(s.records_lost == 0u);
    BOOST_TEST(s.foreign_records == 0u);
    BOOST_TEST(!s.reading);
}

BOOST_AUTO_TEST_CASE(a_failed_read_is_said_once_and_the_context_runs_out) {
    OOMWATCH_REQUIRE_ROOT("writing to /dev/kmsg");
    asio::io_context ctx;
    auto& svc = asio::use_service<kernel_log_service>(ctx);
    auto client = std::make_shared<kill_recorder>();
    auto other = std::make_shared<kill_recorder>();
    BOOST_TEST_REQUIRE(svc.add(ctx.get_executor(), client) != 0u);
    BOOST_TEST_REQUIRE(svc.add(ctx.get_executor(), other) != 0u);
    fault::kmsg_read_errno = EIO;
    write_kmsg("<6>" + marker("to fail the read"));
    run_out_thread t(ctx);  // nothing else keeps it busy: it must end once the reader gave up
    BOOST_TEST_REQUIRE(t.ran_out_within(10s));
    t.join();
    fault::kmsg_read_errno = 0;
    BOOST_TEST_REQUIRE(client->errors.size() == 1u);
    BOOST_TEST(client->errors[0].value() == EIO);
    BOOST_TEST(other->errors.size() == 1u);
    BOOST_TEST(svc.client_count() == 0u);
    BOOST_TEST(!svc.is_open());
}

BOOST_AUTO_TEST_CASE(reads_only_while_it_has_clients_and_says_where_it_is) {
    OOMWATCH_REQUIRE_ROOT("writing to /dev/kmsg");
    asio::io_context ctx;
    auto& svc = asio::use_service<kernel_log_service>(ctx);
    seen_records seen;
    seen.hook(svc);
    BOOST_TEST(!svc.is_open());
    BOOST_TEST(!svc.position().last_seq.has_value());
    auto client = std::make_shared<kill_recorder>();
    auto key = svc.add(ctx.get_executor(), client);
    BOOST_TEST_REQUIRE(svc.is_open());
    const auto m1 = marker("position");
    write_kmsg("<6>" + m1);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return seen.saw(m1); }, 10s));
    auto pos = svc.position();
    BOOST_TEST_REQUIRE(pos.last_seq.has_value());
    BOOST_TEST(*pos.last_seq == seen.find(m1)->seq);
    BOOST_TEST(pos.boot_id + "\n" == read_text("/proc/sys/kernel/random/boot_id"));
    // The last client gone: the log is closed and the context runs out of work.
    svc.remove(key);
    BOOST_TEST(!svc.is_open());
    ctx.restart();
    run_out_thread t(ctx);
    BOOST_TEST_REQUIRE(t.ran_out_within(5s));
    t.join();
    // Written while nobody listened: not read when a client comes back (the end again).
    const auto unheard = marker("while closed");
    write_kmsg("<6>" + unheard);
    key = svc.add(ctx.get_executor(), client);
    BOOST_TEST_REQUIRE(svc.is_open());
    const auto m2 = marker("reopened");
    write_kmsg("<6>" + m2);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return seen.saw(m2); }, 10s));
    BOOST_TEST(!seen.saw(unheard));
    BOOST_TEST(svc.records_lost() == 0u);  // skipping ahead on a reopen is no loss
    svc.remove(key);
}

// Without CAP_SYSLOG, under kernel.dmesg_restrict=1, opening /dev/kmsg fails (EPERM):
// the client hears it once, nothing hangs. In a child that became uid 65534.
BOOST_AUTO_TEST_CASE(without_permission_the_client_hears_it_once) {
    OOMWATCH_REQUIRE_ROOT("changing uid");
    std::optional<sysctl_guard> restrict;
    if (read_text("/proc/sys/kernel/dmesg_restrict") != "1\n") restrict.emplace("/proc/sys/kernel/dmesg_restrict", 1);
    const pid_t pid = ::fork();
    BOOST_TEST_REQUIRE(pid >= 0);
    if (pid == 0) {
        // The child reports by exit status only: 0 all well, else which check failed.
        if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
        asio::io_context ctx;
        auto& svc = asio::use_service<kernel_log_service>(ctx);
        auto client = std::make_shared<kill_recorder>();
        if (svc.add(ctx.get_executor(), client) != 0) ::_exit(11);
        ctx.run_for(std::chrono::seconds(5));  // returns as soon as the one handler ran
        if (client->errors.size() != 1) ::_exit(12);
        const int e = client->errors[0].value();
        if (e != EPERM && e != EACCES) ::_exit(13);
        if (svc.is_open() || svc.client_count() != 0) ::_exit(14);
        ::_exit(0);
    }
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    BOOST_TEST_REQUIRE(pidfd >= 0);
    pollfd p{pidfd, POLLIN, 0};
    const int ready = ::poll(&p, 1, 15000);
    ::close(pidfd);
    if (ready != 1) ::kill(pid, SIGKILL);
    int status = 0;
    BOOST_TEST_REQUIRE(::waitpid(pid, &status, 0) == pid);
    BOOST_TEST_REQUIRE(ready == 1, "the unprivileged child hung");
    BOOST_TEST_REQUIRE(WIFEXITED(status), "the child died: status " << status);
    BOOST_TEST(WEXITSTATUS(status) == 0, "the child's check " << WEXITSTATUS(status) << " failed");
}

BOOST_AUTO_TEST_SUITE_END()
