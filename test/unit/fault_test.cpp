// Fault injection on fake cgroup v2 folders (tmpfs):
//
// - the cgroup removed between the notification and the read, thousands of times (the
//   io_context not running yet, or running on another thread), and a namesake made in
//   its place before the read;
// - the inotify limits reached (max_user_watches, max_user_instances; root only, always
//   restored): a clear error naming the path, nothing left behind, the other watchers
//   keep counting;
// - out of descriptors (RLIMIT_NOFILE), on a fresh io_context and on one whose inotify
//   instance exists; a read that failed for lack of one;
// - EINTR: SIGUSR1 (no SA_RESTART) every ~100 us at the threads that wait;
// - garbage, binary, truncated, out-of-range and backwards counters files;
// - a path that is a file or no cgroup; symlinks (to the cgroup, to its parent).
//
// Every case asserts exact counts, no descriptor (or inotify watch) leak, and errors
// that name the path. What a real cgroup v2 kernel does differently from tmpfs is said
// where it matters (see docs/kernel.md): on a real kernel the watches on a cgroup's own
// files get nothing at rmdir; only the parent directory's watch sees it.
//
// OOMWATCH_FAULT_ITERATIONS=N runs the removal loops N times (default 2000).
#include "fault_support.hpp"
#include "test_support.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

std::string describe(const memory_counters& c) {
    std::ostringstream os;
    os << "oom " << c.oom << ", oom_kill " << c.oom_kill << ", oom_group_kill " << c.oom_group_kill;
    return os.str();
}

// Rewrites a file in place with exactly these bytes (O_TRUNC, one write), like
// fake_v2_tree::write_events does with valid text.
void write_raw(const fs::path& file, std::string_view bytes) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    BOOST_TEST_REQUIRE(fd >= 0, "open " << file << ": errno " << errno);
    std::size_t off = 0;
    while (off < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
    }
    ::close(fd);
    BOOST_TEST_REQUIRE(off == bytes.size(), "short write to " << file);
}

// Rewrites through a descriptor opened earlier (truncate, then one write at 0): needs no
// new descriptor, for the cases that take them all away.
void rewrite_through(int fd, const memory_counters& c) {
    auto text = events_text(c);
    BOOST_TEST_REQUIRE(::ftruncate(fd, 0) == 0);
    BOOST_TEST_REQUIRE(::pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()));
}

// OOMWATCH_FAULT_ITERATIONS overrides the default loop count.
int fault_iterations(int by_default) {
    if (const char* e = std::getenv("OOMWATCH_FAULT_ITERATIONS"); e && *e) {
        int n = std::atoi(e);
        if (n > 0) return n;
    }
    return by_default;
}

// ---- inotify as the kernel sees it ----------------------------------------------------

std::size_t count_wd_lines(const std::string& fdinfo) {
    std::size_t n = 0;
    for (std::size_t pos = 0; (pos = fdinfo.find("inotify wd:", pos)) != std::string::npos; ++pos) ++n;
    return n;
}

// The inotify watches this process holds (all its inotify instances), from fdinfo.
std::size_t inotify_watch_count() {
    std::size_t n = 0;
    std::error_code ec;
    for (auto& e : fs::directory_iterator("/proc/self/fd", ec)) {
        auto target = fs::read_symlink(e.path(), ec);
        if (ec || target != "anon_inode:inotify") continue;
        n += count_wd_lines(read_text(fs::path("/proc/self/fdinfo") / e.path().filename()));
    }
    return n;
}

// The inotify watches held by root's processes (an estimate from the side: an instance
// shared by several processes is counted once per descriptor).
std::size_t root_inotify_watches() {
    std::size_t n = 0;
    std::error_code ec;
    for (auto& p : fs::directory_iterator("/proc", ec)) {
        const auto name = p.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        struct stat st {};
        if (::stat(p.path().c_str(), &st) != 0 || st.st_uid != 0) continue;
        std::error_code ec2;
        for (auto& e : fs::directory_iterator(p.path() / "fd", ec2)) {
            std::error_code ec3;
            auto target = fs::read_symlink(e.path(), ec3);
            if (ec3 || target != "anon_inode:inotify") continue;
            n += count_wd_lines(read_text(p.path() / "fdinfo" / e.path().filename()));
        }
    }
    return n;
}

// A thread running an io_context until stopped, with a bounded join.
class io_thread {
public:
    explicit io_thread(asio::io_context& ctx) : ctx_(ctx), guard_(asio::make_work_guard(ctx)) {
        t_ = std::thread([this] {
            for (;;) {
                try {
                    ctx_.run();
                    break;
                } catch (...) {
                }
            }
        });
    }
    io_thread(const io_thread&) = delete;
    io_thread& operator=(const io_thread&) = delete;
    ~io_thread() { stop(); }
    pthread_t native() { return t_.native_handle(); }
    /// Called before the thread is joined (to stop signalling it).
    std::function<void()> before_join;
    void stop() {
        if (before_join) std::exchange(before_join, nullptr)();
        guard_.reset();
        ctx_.stop();
        if (t_.joinable()) t_.join();
    }

private:
    asio::io_context& ctx_;
    asio::executor_work_guard<asio::io_context::executor_type> guard_;
    std::thread t_;
};

// A tally that another thread fills, and waiting on it without sleeping.
struct shared_tally {
    std::mutex m;
    std::condition_variable cv;
    tally t;
    void add(const oom_event& ev) {
        std::lock_guard lk(m);
        t.add(ev);
        cv.notify_all();
    }
    bool wait_for(const std::function<bool(const tally&)>& done, std::chrono::milliseconds timeout) {
        std::unique_lock lk(m);
        return cv.wait_for(lk, timeout, [&] { return done(t); });
    }
    tally get() {
        std::lock_guard lk(m);
        return t;
    }
};

struct fixture {
    asio::io_context ctx;
    fake_v2_tree tree;
};

// Runs only what is ready and checks that nothing was reported.
void expect_no_event(asio::io_context& ctx, const event_log& log, std::size_t events_before, const char* what) {
    run_ready(ctx);
    std::ostringstream got;
    for (std::size_t i = events_before; i < log.events.size(); ++i)
        got << " " << log.events[i].kind << " x" << log.events[i].count;
    BOOST_TEST(log.events.size() == events_before, what << ": unexpected event(s):" << got.str());
}

} // namespace

BOOST_AUTO_TEST_SUITE(faults_fake)

// ---- 1. removed between the notification and the read --------------------------------

// The counters change and the cgroup is removed before the io_context runs: the watcher's
// read finds the file gone (ENOENT). It must report `removed`, exactly once, and nothing
// false: the kills it could not read are not reported (README, "Known limits"), and
// never a wrong number. Thousands of times, with no descriptor or watch left behind.
BOOST_FIXTURE_TEST_CASE(removed_before_the_read_thousands_of_times, fixture) {
    { watcher warm(ctx, tree.make_cgroup("warm"), fake_v2_options()); }
    run_ready(ctx);
    const auto fds_before = open_fd_count();
    const auto wds_before = inotify_watch_count();
    const int n = fault_iterations(2000);
    int exact = 0, unread = 0;
    for (int i = 0; i < n; ++i) {
        BOOST_TEST_CONTEXT("iteration " << i) {
            auto cg = tree.make_cgroup("c" + std::to_string(i), with(3, 2));
            watcher w(ctx, cg, fake_v2_options());
            event_log log(w);
            log.arm();
            const std::uint64_t kills = static_cast<std::uint64_t>(i % 3);  // 0, 1 or 2 kills before the removal
            for (std::uint64_t k = 1; k <= kills; ++k) fake_v2_tree::write_events(cg, with(3 + k, 2 + k));
            fake_v2_tree::remove_cgroup(cg);
            BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1 || log.last_error; }, 2s),
                               "no removed event");
            run_ready(ctx);
            BOOST_TEST_REQUIRE(log.t[event_kind::removed] == 1u);
            BOOST_TEST(log.events.back().kind == event_kind::removed);
            const auto k = log.t[event_kind::oom_kill];
            BOOST_TEST((k == 0 || k == kills), "reported " << k << " kills of " << kills);
            BOOST_TEST(log.t[event_kind::oom] == k);
            if (kills > 0) ++(k == kills ? exact : unread);
            error_code ec;
            bool done = false;
            w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
            BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
            BOOST_TEST(ec == error::cgroup_removed);
        }
    }
    run_ready(ctx);
    BOOST_TEST(open_fd_count() == fds_before);
    BOOST_TEST(inotify_watch_count() == wds_before);
    BOOST_TEST_MESSAGE("removed_before_the_read: " << n << " iterations; kills read before the removal in " << exact
                                                   << ", unreadable (removed first) in " << unread);
}

// The same with the io_context running on another thread, so that the removal lands
// anywhere in the watcher's handling: before, between or during its reads.
BOOST_AUTO_TEST_CASE(removed_while_the_watcher_reads_thousands_of_times) {
    fake_v2_tree tree;
    const auto fds_before = open_fd_count();
    const int n = fault_iterations(2000);
    int exact = 0, unread = 0;
    for (int i = 0; i < n; ++i) {
        BOOST_TEST_CONTEXT("iteration " << i) {
            auto cg = tree.make_cgroup("c" + std::to_string(i), with(3, 2));
            asio::io_context ctx;
            watcher w(ctx, cg, fake_v2_options());
            event_log log(w);
            log.arm();
            run_out_thread io(ctx);  // run() returns once the watcher is done: after `removed` nothing is pending
            const std::uint64_t kills = 1 + static_cast<std::uint64_t>(i % 2);
            for (std::uint64_t k = 1; k <= kills; ++k) fake_v2_tree::write_events(cg, with(3 + k, 2 + k));
            fake_v2_tree::remove_cgroup(cg);
            BOOST_TEST_REQUIRE(io.ran_out_within(5s), "hang: no removed event");
            io.join();
            BOOST_TEST_REQUIRE(log.t[event_kind::removed] == 1u);
            BOOST_TEST(log.events.back().kind == event_kind::removed);
            // Each read sees the file before or after a whole write, or no file: the
            // kills reported are some prefix of the truth, never more, never made up.
            const auto k = log.t[event_kind::oom_kill];
            BOOST_TEST(k <= kills, "reported " << k << " kills of " << kills);
            BOOST_TEST(log.t[event_kind::oom] == k);
            ++(k == kills ? exact : unread);
        }
    }
    BOOST_TEST(open_fd_count() == fds_before);
    BOOST_TEST_MESSAGE("removed_while_the_watcher_reads: " << n << " iterations; every kill read in " << exact
                                                           << ", some unreadable (removed first) in " << unread);
}

// The cgroup is removed and a namesake made in its place before the watcher reads (a
// service restarted by its manager does exactly this). The watcher must report the
// removal of its cgroup, and never the namesake's counters as its own kills.
BOOST_FIXTURE_TEST_CASE(a_namesake_made_before_the_read_is_not_counted, fixture) {
    struct variant {
        const char* what;
        memory_counters namesake;
    };
    // A real new cgroup starts at 0; one that had kills by the time the watcher reads
    // (or a fake with other numbers) must not be counted either.
    const variant variants[] = {{"namesake at zero", with(0, 0)}, {"namesake with kills", with(40, 30)}};
    for (auto& v : variants) {
        BOOST_TEST_CONTEXT(v.what) {
            auto cg = tree.make_cgroup("same", with(5, 5));
            watcher w(ctx, cg, fake_v2_options());
            event_log log(w);
            log.arm();
            fake_v2_tree::write_events(cg, with(6, 6));  // one kill, then the cgroup goes
            fake_v2_tree::remove_cgroup(cg);
            tree.make_cgroup("same", v.namesake);
            BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 2s));
            run_ready(ctx);
            BOOST_TEST(log.t[event_kind::oom_kill] <= 1u, "the namesake's kills were reported as ours");
            BOOST_TEST(log.t[event_kind::oom] <= 1u, "the namesake's OOMs were reported as ours");
            BOOST_TEST(log.events.back().kind == event_kind::removed);
            fake_v2_tree::remove_cgroup(cg);
        }
    }
}

// ---- 2. the inotify limits ---------------------------------------------------------------

// max_user_watches lowered to what root uses now plus a few: constructing more watchers
// fails with no_space_on_device naming the path; a cgroup that needs two new watches
// (its file and a parent nobody watches yet) when only one is left gets the first one
// back; the watchers that exist keep counting exactly; nothing is left behind.
BOOST_AUTO_TEST_CASE(inotify_watch_limit_gives_enospc_naming_the_path,
                     *boost::unit_test::precondition(root_precondition{"lowering max_user_watches"})) {
    OOMWATCH_REQUIRE_ROOT("lowering max_user_watches");
    fake_v2_tree tree, other;
    asio::io_context ctx;
    std::vector<fs::path> old_dirs;
    std::vector<watcher> ws;
    for (int i = 0; i < 3; ++i) {
        old_dirs.push_back(tree.make_cgroup("old" + std::to_string(i)));
        ws.emplace_back(ctx, old_dirs.back(), fake_v2_options());
    }
    std::vector<fs::path> candidates;
    for (int i = 0; i < 64; ++i) candidates.push_back(tree.make_cgroup("new" + std::to_string(i)));
    const auto lone = other.make_cgroup("lone");  // its parent is not watched by anyone
    run_ready(ctx);
    const auto fds_before = open_fd_count();

    std::vector<tally> got(80);
    std::vector<subscription> subs;
    std::size_t made = 0;
    error_code failure, lone_ec;
    fs::path failed_at;
    std::string what, what_path, wrong;
    bool lone_gave_back = false;
    std::size_t wds_before_lone = 0, wds_after_lone = 0;
    {
        const auto used = root_inotify_watches();
        sysctl_guard g("/proc/sys/fs/inotify/max_user_watches", used + 4);
        for (auto& d : candidates) {
            error_code ec;
            watcher w(ctx, d, fake_v2_options(), ec);
            if (ec) {
                failure = ec;
                failed_at = d;
                break;
            }
            ws.push_back(std::move(w));
            ++made;
        }
        if (failure) {
            try {
                watcher w(ctx, failed_at, fake_v2_options());
            } catch (const cgroup_error& e) {
                what = e.what();
                what_path = e.path().string();
            } catch (const std::exception& e) {
                wrong = e.what();
            }
            // Exactly at the limit now; allow one more watch. `lone` needs two: the one
            // its file takes must be given back when its parent's cannot be had.
            g.set(used + 4 + 1);
            wds_before_lone = inotify_watch_count();
            watcher wl(ctx, lone, fake_v2_options(), lone_ec);
            wds_after_lone = inotify_watch_count();
            // The slot is free again: a cgroup that needs one watch gets it.
            error_code ec;
            watcher w(ctx, failed_at, fake_v2_options(), ec);
            lone_gave_back = !ec;
            if (!ec) ws.push_back(std::move(w));
        }
        // The watchers that exist keep counting, exactly, while the limit is low.
        for (std::size_t i = 0; i < ws.size(); ++i)
            subs.push_back(ws[i].subscribe([&got, i](const oom_event& ev) { got[i].add(ev); }));
        for (std::size_t i = 0; i < ws.size(); ++i) fake_v2_tree::write_events(ws[i].cgroup(), with(i + 1, i + 1));
        auto all = [&] {
            for (std::size_t i = 0; i < ws.size(); ++i)
                if (got[i][event_kind::oom_kill] < i + 1) return false;
            return true;
        };
        BOOST_TEST(run_until(ctx, all, 5s));
    }
    BOOST_TEST_MESSAGE("max_user_watches: " << made << " more watcher(s) fit before the limit");
    BOOST_TEST_REQUIRE(bool(failure), "64 more watchers fit: the lowered limit had no effect");
    BOOST_TEST(failure == boost::system::errc::no_space_on_device, failure.message());
    BOOST_TEST(wrong.empty(), "not a cgroup_error: " << wrong);
    BOOST_TEST(what_path == failed_at.string());
    BOOST_TEST(what.find(failed_at.string()) != std::string::npos, what);
    BOOST_TEST(lone_ec == boost::system::errc::no_space_on_device, lone_ec.message());
    BOOST_TEST(wds_after_lone == wds_before_lone, "a failed construction left an inotify watch behind");
    BOOST_TEST(lone_gave_back, "the watch taken for the file of a cgroup that failed was not given back");
    run_ready(ctx);
    for (std::size_t i = 0; i < ws.size(); ++i)
        BOOST_TEST_CONTEXT(ws[i].cgroup()) {
            BOOST_TEST(got[i][event_kind::oom_kill] == i + 1);
            BOOST_TEST(got[i][event_kind::oom] == i + 1);
        }
    // With the limit back, what failed can be watched.
    watcher again(ctx, lone, fake_v2_options());
    BOOST_TEST(again.is_open());
    subs.clear();
    ws.clear();
    again.close();
    run_ready(ctx);
    BOOST_TEST(open_fd_count() == fds_before);
    BOOST_TEST(inotify_watch_count() == 0u, "inotify watches left after every watcher closed");
}

// max_user_instances at what root holds already (this process's instance is one): the
// first v2 watcher of a new io_context needs a new instance and fails with EMFILE naming
// the path; more watchers on the old io_context share its instance and work; the old
// ones keep counting; the new io_context works once the limit is back.
BOOST_AUTO_TEST_CASE(inotify_instance_limit_gives_emfile_naming_the_path,
                     *boost::unit_test::precondition(root_precondition{"lowering max_user_instances"})) {
    OOMWATCH_REQUIRE_ROOT("lowering max_user_instances");
    fake_v2_tree tree;
    auto a = tree.make_cgroup("a");
    auto b = tree.make_cgroup("b");
    auto c = tree.make_cgroup("c");
    asio::io_context old_ctx, new_ctx;
    watcher wa(old_ctx, a, fake_v2_options());
    tally ta, tc;
    auto sa = wa.subscribe([&](const oom_event& ev) { ta.add(ev); });
    run_ready(old_ctx);
    const auto fds_before = open_fd_count();
    error_code ec;
    bool threw = false, opened = false;
    std::string what, what_path, wrong;
    {
        sysctl_guard g("/proc/sys/fs/inotify/max_user_instances", 1);
        try {
            watcher w(new_ctx, b, fake_v2_options(), ec);
            opened = w.is_open();
        } catch (const std::exception& e) {
            threw = true;
            wrong = e.what();
        }
        try {
            watcher w(new_ctx, b, fake_v2_options());
        } catch (const cgroup_error& e) {
            what = e.what();
            what_path = e.path().string();
        } catch (const std::exception& e) {
            wrong = e.what();
        }
        watcher wc(old_ctx, c, fake_v2_options());  // shares the old instance
        auto sc = wc.subscribe([&](const oom_event& ev) { tc.add(ev); });
        fake_v2_tree::write_events(a, with(2, 2));
        fake_v2_tree::write_events(c, with(3, 3));
        BOOST_TEST(run_until(old_ctx, [&] { return ta[event_kind::oom_kill] >= 2 && tc[event_kind::oom_kill] >= 3; }, 5s));
    }
    BOOST_TEST(!threw, "the error_code constructor threw: " << wrong);
    BOOST_TEST(!opened);
    BOOST_TEST(ec == boost::system::errc::too_many_files_open, ec.message());
    BOOST_TEST(wrong.empty(), "not a cgroup_error: " << wrong);
    BOOST_TEST(what_path == b.string());
    BOOST_TEST(what.find(b.string()) != std::string::npos, what);
    run_ready(old_ctx);
    BOOST_TEST(ta[event_kind::oom_kill] == 2u);
    BOOST_TEST(tc[event_kind::oom_kill] == 3u);
    BOOST_TEST(open_fd_count() == fds_before);
    // The limit is back: the new io_context makes its instance now.
    watcher wb(new_ctx, b, fake_v2_options());
    tally tb;
    auto sb = wb.subscribe([&](const oom_event& ev) { tb.add(ev); });
    fake_v2_tree::write_events(b, with(1, 1));
    BOOST_TEST(run_until(new_ctx, [&] { return tb[event_kind::oom_kill] >= 1; }, 5s));
}

// ---- 3. out of descriptors ---------------------------------------------------------------

// A fresh io_context: the first v2 watcher makes the inotify instance and asio's reactor
// (its epoll descriptor and interrupter) and reads the baseline. With k descriptors left
// the constructor must either work or fail with too_many_files_open naming the path;
// the error_code form must not throw; nothing may leak.
BOOST_AUTO_TEST_CASE(out_of_fds_on_a_fresh_io_context) {
    fake_v2_tree tree;
    auto cg = tree.make_cgroup("a");
    for (int k = 0; k <= 6; ++k) {
        BOOST_TEST_CONTEXT(k << " descriptor(s) left") {
            const auto fds_before = open_fd_count();
            both_constructors r;
            {
                asio::io_context fresh, fresh2;
                rlimit_guard lim(limit_leaving(k));
                r = try_both_constructors(fresh, fresh2, cg, fake_v2_options());
                lim.restore();
            }
            const auto& [ec, opened, threw, what, what_path, wrong] = r;
            BOOST_TEST(threw.empty(), "the error_code constructor threw: " << threw);
            if (!opened) BOOST_TEST(ec == boost::system::errc::too_many_files_open, ec.message());
            // The second io_context had what the first left: it may fail where the
            // first did not; if it fails, it is with a cgroup_error naming the path.
            BOOST_TEST(wrong.empty(), "the throwing constructor threw something else than cgroup_error: " << wrong);
            if (!what.empty()) {
                BOOST_TEST(what_path == cg.string());
                BOOST_TEST(what.find(cg.string()) != std::string::npos, what);
            }
            BOOST_TEST(open_fd_count() == fds_before, "descriptors leaked");
        }
    }
}

// The io_context has its instance: a new watcher needs one descriptor (to read the
// baseline). Without it: too_many_files_open naming the path, its watches given back.
// The existing watcher cannot read while no descriptor is left; the next change after
// they are back reports everything since its last good read.
BOOST_FIXTURE_TEST_CASE(out_of_fds_a_new_watcher_fails_and_the_old_one_counts_exactly, fixture) {
    auto a = tree.make_cgroup("a");
    auto b = tree.make_cgroup("b");
    watcher wa(ctx, a, fake_v2_options());
    event_log log(wa);
    log.arm();
    owned_fd a_events(::open((a / "memory.events").c_str(), O_WRONLY | O_CLOEXEC));
    BOOST_TEST_REQUIRE(bool(a_events));
    log_capture logs;
    run_ready(ctx);
    const auto fds_before = open_fd_count();
    const auto wds_before = inotify_watch_count();
    both_constructors r;
    {
        rlimit_guard lim(limit_leaving(0));
        r = try_both_constructors(ctx, ctx, b, fake_v2_options());
        rewrite_through(a_events.get(), with(1, 1));
        run_ready(ctx);  // the watcher tries to read, and cannot
        BOOST_TEST(log.events.empty());
    }
    const auto& [ec, opened, threw, what, what_path, wrong] = r;
    BOOST_TEST(threw.empty(), "the error_code constructor threw: " << threw);
    BOOST_TEST(ec == boost::system::errc::too_many_files_open, ec.message());
    BOOST_TEST(wrong.empty(), "not a cgroup_error: " << wrong);
    BOOST_TEST(what_path == b.string());
    BOOST_TEST(what.find(b.string()) != std::string::npos, what);
    BOOST_TEST(logs.count("Too many open files") >= 1u, "the existing watcher's read did not fail: nothing tested");
    BOOST_TEST(open_fd_count() == fds_before);
    BOOST_TEST(inotify_watch_count() == wds_before, "the failed watcher left an inotify watch behind");
    rewrite_through(a_events.get(), with(2, 2));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 2; }, 5s));
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom_kill] == 2u);
    BOOST_TEST(log.t[event_kind::oom] == 2u);
}

// As above, but nothing changes after the descriptors are back: on a real cgroup v2 an
// OOM kill modifies memory.events three times within ~30 ms and then never again, so a
// failed read must be retried by the watcher itself. The liveness timer is the safety
// net that "re-reads the counters" (watch_options::liveness_interval).
BOOST_FIXTURE_TEST_CASE(a_read_that_failed_for_lack_of_fds_is_retried, fixture) {
    auto a = tree.make_cgroup("a");
    auto o = fake_v2_options();
    o.liveness_interval = 50ms;
    watcher wa(ctx, a, o);
    event_log log(wa);
    log.arm();
    owned_fd a_events(::open((a / "memory.events").c_str(), O_WRONLY | O_CLOEXEC));
    BOOST_TEST_REQUIRE(bool(a_events));
    log_capture logs;
    run_ready(ctx);
    {
        rlimit_guard lim(limit_leaving(0));
        rewrite_through(a_events.get(), with(1, 1));
        run_ready(ctx);
        BOOST_TEST(log.events.empty());
    }
    BOOST_TEST_REQUIRE(logs.count("Too many open files") >= 1u, "the read did not fail: nothing tested");
    const bool reported = run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }, 2s);
    BOOST_TEST(reported, "a kill whose read failed for lack of descriptors is not reported until the file changes "
                         "again (40 liveness intervals passed)");
    BOOST_TEST(log.t[event_kind::oom_kill] == (reported ? 1u : 0u));
}

// ---- 4. EINTR --------------------------------------------------------------------------

// SIGUSR1 every ~100 us (no SA_RESTART) at the io_context's thread and at the thread
// writing the counters, while thousands of changes are counted: exact, nothing fails.
BOOST_AUTO_TEST_CASE(signals_during_waits_change_no_count) {
    fake_v2_tree tree;
    auto cg = tree.make_cgroup("a");
    asio::io_context ctx;
    watcher w(ctx, cg, fake_v2_options());
    shared_tally got;
    auto sub = w.subscribe([&](const oom_event& ev) { got.add(ev); });
    run_ready(ctx);
    const auto fds_before = open_fd_count();
    const auto seen_before = sigusr1_seen.load();
    std::uint64_t n = 0;
    bool counted = false;
    {
        std::optional<signal_storm> storm;  // destroyed after the io thread is joined
        io_thread io(ctx);
        storm.emplace(std::vector<pthread_t>{::pthread_self(), io.native()}, 100us);
        io.before_join = [&] { storm->forget(io.native()); };
        // Changes in bursts, each waited for (so both threads block, and are
        // interrupted, in their waits), for at least half a second.
        const auto until = std::chrono::steady_clock::now() + 500ms;
        while (n < 2000 || std::chrono::steady_clock::now() < until) {
            ++n;
            fake_v2_tree::write_events(cg, with(n, n, n / 10));
            if (n % 20 == 0 && !got.wait_for([&](const tally& t) { return t[event_kind::oom_kill] >= n; }, 5s)) break;
        }
        counted = got.wait_for([&](const tally& t) { return t[event_kind::oom_kill] >= n; }, 10s);
        fake_v2_tree::remove_cgroup(cg);
        got.wait_for([&](const tally& t) { return t[event_kind::removed] >= 1; }, 5s);
        BOOST_TEST(storm->sent() > 200u);
        io.stop();
    }
    auto t = got.get();
    BOOST_TEST(counted);
    BOOST_TEST(sigusr1_seen.load() - seen_before > 200u, "few signals arrived: the case tested little");
    BOOST_TEST(t[event_kind::oom] == n);
    BOOST_TEST(t[event_kind::oom_kill] == n);
    BOOST_TEST(t[event_kind::oom_group_kill] == n / 10);
    BOOST_TEST(t[event_kind::removed] == 1u);
    BOOST_TEST_MESSAGE("signals: " << n << " changes counted under " << sigusr1_seen.load() - seen_before << " signals");
    BOOST_TEST(open_fd_count() == fds_before);
}

// ---- 5. garbage and truncated counters files ---------------------------------------------

// Files no kernel writes: each is ignored (no event, no crash, the baseline kept), and the
// next valid contents give exactly the growth since the last valid read.
BOOST_FIXTURE_TEST_CASE(garbage_counters_give_no_event_and_lose_nothing, fixture) {
    auto cg = tree.make_cgroup("a", with(5, 5));
    watcher w(ctx, cg, fake_v2_options());
    event_log log(w);
    log.arm();
    run_ready(ctx);
    const auto fds_before = open_fd_count();
    const auto file = cg / "memory.events";
    const std::string valid_prefix = "low 0\nhigh 0\nmax 0\n";
    const std::pair<const char*, std::string> bad[] = {
        {"empty", ""},
        {"words", "hello world\n"},
        {"no value", "oom\n"},
        {"three fields", valid_prefix + "oom 9 9\noom_kill 9\noom_group_kill 0\n"},
        {"negative", valid_prefix + "oom -1\noom_kill 9\noom_group_kill 0\n"},
        {"hex", valid_prefix + "oom 0x10\noom_kill 9\noom_group_kill 0\n"},
        {"exponent", valid_prefix + "oom 1e3\noom_kill 9\noom_group_kill 0\n"},
        {"beyond uint64", valid_prefix + "oom 9\noom_kill 99999999999999999999999\noom_group_kill 0\n"},
        {"uint64 + 1", valid_prefix + "oom 9\noom_kill 18446744073709551616\noom_group_kill 0\n"},
        {"a key twice", valid_prefix + "oom 9\noom 10\noom_kill 9\noom_group_kill 0\n"},
        {"binary", std::string("low 0\0\xff\xfe\x01oom 9\n\x80\x81 7\n", 20)},
        {"NUL in a key", std::string("oom\0kill 9\n", 11)},
        {"1 MiB of bytes", std::string(1 << 20, '\x07')},
        {"1 MiB of digits", "oom_kill " + std::string(1 << 20, '9') + "\n"},
    };
    for (auto& [what, bytes] : bad) {
        BOOST_TEST_CONTEXT(what) {
            write_raw(file, bytes);
            expect_no_event(ctx, log, 0, what);
            BOOST_TEST((w.counters() == with(5, 5)), "counters " << describe(w.counters()));
        }
    }
    // Bigger than the library reads (64 MiB): EFBIG, ignored, no hang.
    {
        std::string big(65u << 20, ' ');
        write_raw(file, big);
        expect_no_event(ctx, log, 0, "65 MiB");
    }
    fake_v2_tree::write_events(cg, with(7, 6));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1 && log.t[event_kind::oom] >= 2; }));
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom] == 2u);
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u);
    BOOST_TEST(w.is_open());
    BOOST_TEST(open_fd_count() == fds_before);
}

// A file cut short. A real cgroup file is read whole (one seq_file show), so this is a
// torn fake, a broken file system, or a bug: either way not the truth. Cut inside a key
// it fails to parse and is ignored. Cut at a line end it parses, with a key missing
// (which would read as 0), and cut inside a number it parses to a smaller number: both
// look like counters that went down. Taking such a read as the new baseline turns the
// next valid read into false kills; the watcher must treat it as no change, and report
// exactly the growth since the last valid read.
BOOST_FIXTURE_TEST_CASE(a_truncated_counters_file_is_not_the_truth, fixture) {
    const std::string full = events_text(with(7, 12));  // the truth after 2 OOMs and 7 kills
    const std::pair<const char*, std::string> cuts[] = {
        {"cut inside a key", full.substr(0, full.find("oom_kill") + 6)},
        {"cut at a line end (oom_kill missing)", full.substr(0, full.find("oom_kill"))},
        {"cut inside a number", full.substr(0, full.find("oom_kill 12") + 10)},
        {"cut before the last newline", full.substr(0, full.size() - 1)},
    };
    int i = 0;
    for (auto& [what, bytes] : cuts) {
        BOOST_TEST_CONTEXT(what << ": \"" << bytes << "\"") {
            auto cg = tree.make_cgroup("t" + std::to_string(i++), with(5, 5));
            watcher w(ctx, cg, fake_v2_options());
            event_log log(w);
            log.arm();
            write_raw(cg / "memory.events", bytes);
            run_ready(ctx);
            // Nothing false: at most the truth (a cut that lost only the final newline
            // still holds every value).
            BOOST_TEST(log.t[event_kind::oom] <= 2u);
            BOOST_TEST(log.t[event_kind::oom_kill] <= 7u);
            write_raw(cg / "memory.events", full);
            BOOST_TEST_REQUIRE(run_until(ctx, [&] { return w.counters() == with(7, 12); }));
            run_ready(ctx);
            BOOST_TEST(log.t[event_kind::oom] == 2u);
            BOOST_TEST(log.t[event_kind::oom_kill] == 7u);
        }
    }
}

// A counter that really goes down (with every key there): which no real cgroup does. Per
// src/v2_watcher.cpp, compute_delta flags it and the watcher takes that read as the new
// baseline and reports nothing for it, not even the growth of the other counters in the
// same read (nothing can be known about a file that went backwards); the next read
// reports the growth from that new baseline.
BOOST_FIXTURE_TEST_CASE(a_counter_that_goes_down_is_a_new_baseline, fixture) {
    auto cg = tree.make_cgroup("a", with(5, 5));
    watcher w(ctx, cg, fake_v2_options());
    event_log log(w);
    log.arm();
    fake_v2_tree::write_events(cg, with(6, 3));  // oom +1, oom_kill -2: nothing reported
    expect_no_event(ctx, log, 0, "a counter went down");
    BOOST_TEST((w.counters() == with(6, 3)), "counters " << describe(w.counters()));  // the counters as last read
    fake_v2_tree::write_events(cg, with(8, 4));  // from (6, 3): oom +2, oom_kill +1
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom] == 2u);
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u);
    BOOST_TEST((w.counters() == with(8, 4)), "counters " << describe(w.counters()));
}

// Counters near the top of uint64_t add up without wrapping.
BOOST_FIXTURE_TEST_CASE(counters_near_the_top_of_uint64_add_up, fixture) {
    constexpr auto top = std::numeric_limits<std::uint64_t>::max();
    auto cg = tree.make_cgroup("a", with(top - 10, top - 3));
    watcher w(ctx, cg, fake_v2_options());
    event_log log(w);
    log.arm();
    fake_v2_tree::write_events(cg, with(top - 5, top - 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 2; }));
    fake_v2_tree::write_events(cg, with(top, top));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 3; }));
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom] == 10u);
    BOOST_TEST(log.t[event_kind::oom_kill] == 3u);
    BOOST_TEST(log.events.back().counters.oom_kill == top);
}

// ---- 6. not a cgroup; symlinks ------------------------------------------------------------

BOOST_FIXTURE_TEST_CASE(a_file_or_a_plain_directory_is_refused_naming_the_path, fixture) {
    auto cg = tree.make_cgroup("a");
    auto expect = [&](const fs::path& p, error_code want) {
        BOOST_TEST_CONTEXT(p) {
            error_code ec;
            watcher w(ctx, p, fake_v2_options(), ec);
            BOOST_TEST((ec.default_error_condition() == want.default_error_condition()), ec.message());
            BOOST_TEST(!w.is_open());
            try {
                watcher w2(ctx, p, fake_v2_options());
                BOOST_FAIL("no exception");
            } catch (const cgroup_error& e) {
                BOOST_TEST((e.code().default_error_condition() == want.default_error_condition()), e.what());
                BOOST_TEST(e.path() == p);
                BOOST_TEST(std::string(e.what()).find(p.string()) != std::string::npos, e.what());
            }
        }
    };
    expect(cg / "memory.events", error::not_a_cgroup);  // a file
    expect(tree.parent(), error::not_a_cgroup);         // a directory without memory.events
    fs::create_directory(tree.parent() / "controllers-only");
    std::ofstream(tree.parent() / "controllers-only" / "cgroup.controllers") << "cpu io\n";
    expect(tree.parent() / "controllers-only", error::no_memory_controller);  // a v2 cgroup without memory
    expect(tree.parent() / "missing", make_error_code(boost::system::errc::no_such_file_or_directory));
    // A dangling symlink.
    fs::create_directory_symlink(tree.parent() / "nowhere", tree.parent() / "dangling");
    expect(tree.parent() / "dangling", make_error_code(boost::system::errc::no_such_file_or_directory));
}

// Removal as a real cgroup v2 kernel reports it: the watch on memory.events gets nothing
// at rmdir, only the parent directory's watch does. On tmpfs, holding memory.events open
// keeps its watch silent (no IN_DELETE_SELF/IN_IGNORED until the last close), so only the
// parent tells. The control case for the symlink below.
BOOST_FIXTURE_TEST_CASE(removal_is_seen_through_the_parent_when_the_file_watch_is_silent, fixture) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    event_log log(w);
    log.arm();
    owned_fd hold(::open((cg / "memory.events").c_str(), O_RDONLY | O_CLOEXEC));
    BOOST_TEST_REQUIRE(bool(hold));
    fake_v2_tree::remove_cgroup(cg);
    BOOST_TEST(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 2s));
}

// A symlink (in another tmpfs directory) to a cgroup: the watcher watches the cgroup it
// points to. Changes are counted; and its removal must be seen through the cgroup's real
// parent directory (the symlink's own directory sees nothing when the target goes).
BOOST_FIXTURE_TEST_CASE(a_symlink_to_a_cgroup_is_watched_through_its_target, fixture) {
    auto cg = tree.make_cgroup("a", with(1, 1));
    fake_v2_tree elsewhere;
    const auto link = elsewhere.parent() / "link-to-a";
    fs::create_directory_symlink(cg, link);
    watcher w(ctx, link, fake_v2_options());
    BOOST_TEST(fs::equivalent(w.cgroup(), cg));
    BOOST_TEST((w.counters() == with(1, 1)), "counters " << describe(w.counters()));
    event_log log(w);
    log.arm();
    fake_v2_tree::write_events(cg, with(3, 2));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom] == 2u);
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u);

    owned_fd hold(::open((cg / "memory.events").c_str(), O_RDONLY | O_CLOEXEC));  // as on a real kernel
    BOOST_TEST_REQUIRE(bool(hold));
    fake_v2_tree::remove_cgroup(cg);
    BOOST_TEST(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 2s),
               "the removal of a cgroup watched through a symlink was not seen (the parent watch is on the "
               "symlink's directory, " << elsewhere.parent() << ", not on the cgroup's, " << tree.parent() << ")");
}

// A path through a symlinked parent directory: the parent watch follows the symlink to
// the real parent, so the removal is seen there.
BOOST_FIXTURE_TEST_CASE(a_cgroup_under_a_symlinked_parent_is_watched, fixture) {
    auto cg = tree.make_cgroup("a");
    fake_v2_tree elsewhere;
    const auto linked_parent = elsewhere.parent() / "parent-link";
    fs::create_directory_symlink(tree.parent(), linked_parent);
    watcher w(ctx, linked_parent / "a", fake_v2_options());
    event_log log(w);
    log.arm();
    fake_v2_tree::write_events(cg, with(1, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
    owned_fd hold(::open((cg / "memory.events").c_str(), O_RDONLY | O_CLOEXEC));
    BOOST_TEST_REQUIRE(bool(hold));
    fake_v2_tree::remove_cgroup(cg);
    BOOST_TEST(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 2s));
    BOOST_TEST(log.t[event_kind::oom_kill] == 1u);
}

// A tree that meets max_user_watches: the descendants that no longer fit are reported
// as `skipped` (with no_space_on_device), never silently left out; the tree keeps
// counting what it watches.
BOOST_AUTO_TEST_CASE(a_tree_at_the_watch_limit_reports_skipped_and_keeps_counting,
                     *boost::unit_test::precondition(root_precondition{"lowering max_user_watches"})) {
    OOMWATCH_REQUIRE_ROOT("lowering max_user_watches");
    fake_v2_tree tree;
    asio::io_context ctx;
    const auto root = tree.make_cgroup("root");
    const auto early = tree.make_cgroup("root/early");
    tree_options o;
    o.force_version = cgroup_version::v2;
    o.liveness_interval = std::chrono::hours(1);
    tree_watcher tw(ctx, root, o);
    BOOST_TEST_REQUIRE(tw.size() == 2u);
    std::vector<oom_event> seen;
    auto sub = tw.subscribe([&](const oom_event& ev) { seen.push_back(ev); });
    run_ready(ctx);
    std::size_t skipped = 0, found = 0;
    {
        sysctl_guard g("/proc/sys/fs/inotify/max_user_watches", root_inotify_watches() + 6);
        // Made aside, moved in whole (as the kernel makes a cgroup: with its files).
        for (int i = 0; i < 12; ++i) {
            const auto aside = tree.make_cgroup("aside" + std::to_string(i));
            fs::rename(aside, root / ("late" + std::to_string(i)));
        }
        BOOST_TEST_REQUIRE(run_until(ctx, [&] {
            skipped = found = 0;
            for (auto& ev : seen) skipped += ev.kind == event_kind::skipped;
            found = tw.size() - 2;
            return found + skipped >= 12;
        }, 10s), "found " << found << ", skipped " << skipped << " of 12");
    }
    BOOST_TEST(skipped >= 1u, "the limit was never reached: nothing tested");
    BOOST_TEST(found >= 1u);
    for (auto& ev : seen)
        if (ev.kind == event_kind::skipped) {
            BOOST_TEST(ev.error == boost::system::errc::no_space_on_device, ev.error.message());
            BOOST_TEST(ev.cgroup.parent_path() == root);
        }
    // What is watched still counts, exactly.
    fake_v2_tree::write_events(early, with(0, 1), "memory.events.local");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        for (auto& ev : seen)
            if (ev.kind == event_kind::oom_kill && ev.cgroup == early) return true;
        return false;
    }));
    BOOST_TEST(tw.is_open());
    BOOST_TEST_MESSAGE("max_user_watches: " << found << " late cgroups watched, " << skipped << " skipped");
}

BOOST_AUTO_TEST_SUITE_END()
