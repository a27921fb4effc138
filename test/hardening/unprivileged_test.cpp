// Unprivileged use: run by run-unprivileged.sh as uid/gid 65534 with no groups and no
// capabilities. Root prepared, before this program started:
//
//   OOMWATCH_UNPRIV_PARENT   a real scratch memory cgroup, with the children
//   OOMWATCH_UNPRIV_OWNED      cgroup.event_control chowned to us (v1): we may register
//   OOMWATCH_UNPRIV_PLAIN      as the kernel made it (v1: cgroup.event_control is 0200 root)
//   OOMWATCH_UNPRIV_LOCKED     chmod 0700: we cannot look inside
//   OOMWATCH_UNPRIV_VERSION  1 or 2;  OOMWATCH_UNPRIV_MOUNT  the hierarchy's mount point
//   OOMWATCH_UNPRIV_FAKE     a fake cgroup v2 tree on /dev/shm: parent/ (ours) holding
//                              rooted/  root's, readable (root writes its counters)
//                              mine/    ours (we write the counters and remove it)
//                              locked/  root's, 0700
//                              secret/  root's, readable, but memory.events is 0600
//   OOMWATCH_UNPRIV_REQ/_REP fifos to ask root for what we may not do ourselves:
//                              "oom DIR N" (N real OOM kills in DIR), "write DIR OOM KILL"
//                              (fake counters), "rmfake DIR", "rmdir DIR"; root answers
//                              "ok [value]" or "fail reason". Every wait is bounded.
//
// What must hold: watching what we may read works and reports exactly; anything we may
// not do fails with permission_denied, and the thrown cgroup_error names the path;
// nothing crashes, no descriptor leaks on a failed construction.
#define BOOST_TEST_MODULE oomwatch_unprivileged_tests
#include "test_support.hpp"

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>

namespace asio = boost::asio;
namespace errc = boost::system::errc;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;
namespace fs = std::filesystem;

using oomwatch::test::log_to_stderr;
BOOST_TEST_GLOBAL_FIXTURE(log_to_stderr);

namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

// The whole suite needs the preparation done by run-unprivileged.sh.
struct prepared {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        if (!env("OOMWATCH_UNPRIV_REQ").empty()) return true;
        boost::test_tools::assertion_result r(false);
        r.message() << "skipped: run through test/hardening/run-unprivileged.sh (ctest -R unprivileged), "
                       "which prepares the cgroups as root and runs this as uid 65534";
        return r;
    }
};

// Asks the root side for something, over the fifos; returns its answer line.
class root_side {
public:
    root_side() {
        req_ = ::open(env("OOMWATCH_UNPRIV_REQ").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        rep_ = ::open(env("OOMWATCH_UNPRIV_REP").c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    }
    ~root_side() {
        if (req_ >= 0) ::close(req_);
        if (rep_ >= 0) ::close(rep_);
    }
    root_side(const root_side&) = delete;
    root_side& operator=(const root_side&) = delete;

    bool ok() const { return req_ >= 0 && rep_ >= 0; }

    std::string ask(const std::string& request, std::chrono::milliseconds timeout = 60s) {
        std::string line = request + "\n";  // one write, < PIPE_BUF: never interleaved
        if (::write(req_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
            return "fail cannot write the request: " + std::string(std::strerror(errno));
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (auto nl = buf_.find('\n'); nl != std::string::npos) {
                std::string answer = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return answer;
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return "fail no answer from the root side within the time limit";
            pollfd p{rep_, POLLIN, 0};
            int n = ::poll(&p, 1, static_cast<int>(left.count()));
            if (n < 0 && errno != EINTR) return "fail poll: " + std::string(std::strerror(errno));
            if (n <= 0) continue;
            char b[512];
            ssize_t r = ::read(rep_, b, sizeof b);
            if (r > 0) buf_.append(b, static_cast<std::size_t>(r));
        }
    }

private:
    int req_ = -1;
    int rep_ = -1;
    std::string buf_;
};

bool starts_with_ok(const std::string& s) { return s == "ok" || s.rfind("ok ", 0) == 0; }

struct unpriv_fixture {
    unpriv_fixture() {
        BOOST_TEST_REQUIRE(::geteuid() != 0u, "must run unprivileged (run-unprivileged.sh does that)");
        BOOST_TEST_REQUIRE(root.ok(), "cannot open the request fifos: " << std::strerror(errno));
        version = env("OOMWATCH_UNPRIV_VERSION") == "2" ? cgroup_version::v2 : cgroup_version::v1;
        mount = env("OOMWATCH_UNPRIV_MOUNT");
        parent = env("OOMWATCH_UNPRIV_PARENT");
        owned = env("OOMWATCH_UNPRIV_OWNED");
        plain = env("OOMWATCH_UNPRIV_PLAIN");
        locked = env("OOMWATCH_UNPRIV_LOCKED");
        fake = env("OOMWATCH_UNPRIV_FAKE");
        BOOST_TEST_REQUIRE(!owned.empty());
        BOOST_TEST_REQUIRE(!fake.empty());
    }

    // "/a/b" as /proc/PID/cgroup would show the cgroup at `dir`.
    fs::path hierarchy_path(const fs::path& dir) const { return "/" / dir.lexically_relative(mount); }

    root_side root;
    cgroup_version version = cgroup_version::v1;
    fs::path mount, parent, owned, plain, locked, fake;
};

bool mentions(const std::exception& e, const fs::path& p) {
    return std::string(e.what()).find(p.string()) != std::string::npos;
}

// Both forms of the constructor fail with `expected`, the exception names `named`,
// and no descriptor is left behind.
void expect_refused(const fs::path& cg, const watch_options& opts, boost::system::error_condition expected,
                    const fs::path& named) {
    auto fds = open_fd_count();
    {
        asio::io_context ctx;
        error_code ec;
        watcher w(ctx, cg, opts, ec);
        BOOST_TEST((ec == expected), cg << ": " << ec.message() << " [" << ec << "]");
        BOOST_TEST(!w.is_open());
        try {
            watcher t(ctx, cg, opts);
            BOOST_ERROR(cg << ": no exception");
        } catch (const cgroup_error& e) {
            BOOST_TEST((e.code() == expected), e.what());
            BOOST_TEST(mentions(e, named), e.what());
            BOOST_TEST(e.path() == named, e.path());
            BOOST_TEST_MESSAGE("as expected: " << e.what());
        }
    }
    BOOST_TEST(open_fd_count() == fds);
}

std::uint64_t read_kernel_oom_kill(const fs::path& dir, cgroup_version v) {
    std::ifstream in(dir / (v == cgroup_version::v1 ? "memory.oom_control" : "memory.events"));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (v == cgroup_version::v1) {
        auto oc = parse_oom_control(text);
        BOOST_TEST_REQUIRE(oc.has_value(), dir << ": " << text);
        return oc->oom_kill.value_or(0);
    }
    auto c = parse_memory_events(text);
    BOOST_TEST_REQUIRE(c.has_value(), dir << ": " << text);
    return c->oom_kill;
}

} // namespace

BOOST_AUTO_TEST_SUITE(unprivileged, *boost::unit_test::precondition(prepared{}))

BOOST_AUTO_TEST_CASE(runs_without_any_privilege) {
    BOOST_TEST(::getuid() != 0u);
    BOOST_TEST(::geteuid() != 0u);
    BOOST_TEST(::getegid() != 0u);
    BOOST_TEST(::getgroups(0, nullptr) == 0);
    std::ifstream st("/proc/self/status");
    std::string line;
    bool seen = false;
    while (std::getline(st, line)) {
        if (line.rfind("CapEff:", 0) == 0) {
            seen = true;
            BOOST_TEST(line.find_first_not_of("0 \t", 7) == std::string::npos, line);
        }
    }
    BOOST_TEST(seen);
    BOOST_TEST_MESSAGE("running as uid " << ::geteuid() << ", gid " << ::getegid());
}

// A fake v2 cgroup root owns and we may only read: root's writes are reported exactly.
BOOST_FIXTURE_TEST_CASE(fake_v2_root_writes_are_reported, unpriv_fixture) {
    const fs::path cg = fake / "parent" / "rooted";
    auto fds = open_fd_count();
    {
        asio::io_context ctx;
        watcher w(ctx, cg, fake_v2_options());
        BOOST_TEST(w.version() == cgroup_version::v2);
        event_log log(w);
        log.arm();
        tally sub;
        auto s = w.subscribe(asio::make_strand(ctx), [&](const oom_event& ev) { sub.add(ev); });

        auto a = root.ask("write " + cg.string() + " 1 1");
        BOOST_TEST_REQUIRE(starts_with_ok(a), a);
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 1; }));
        a = root.ask("write " + cg.string() + " 4 3");
        BOOST_TEST_REQUIRE(starts_with_ok(a), a);
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 3 && log.t[event_kind::oom] >= 4; }));
        a = root.ask("rmfake " + cg.string());
        BOOST_TEST_REQUIRE(starts_with_ok(a), a);
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1 && sub[event_kind::removed] == 1; }));
        run_ready(ctx);
        BOOST_TEST(log.t[event_kind::oom_kill] == 3u);
        BOOST_TEST(log.t[event_kind::oom] == 4u);
        BOOST_TEST(log.t[event_kind::removed] == 1u);
        BOOST_TEST(log.events.back().kind == event_kind::removed);
        BOOST_TEST(sub[event_kind::oom_kill] == 3u);
        BOOST_TEST(sub[event_kind::oom] == 4u);
        BOOST_TEST(sub[event_kind::removed] == 1u);
    }
    BOOST_TEST(open_fd_count() == fds);
}

// A fake v2 cgroup of our own: we write the counters and remove it ourselves.
BOOST_FIXTURE_TEST_CASE(fake_v2_own_writes_are_reported, unpriv_fixture) {
    const fs::path cg = fake / "parent" / "mine";
    auto fds = open_fd_count();
    {
        asio::io_context ctx;
        watcher w(ctx, cg, fake_v2_options());
        event_log log(w);
        log.arm();
        for (std::uint64_t i = 1; i <= 20; ++i) fake_v2_tree::write_events(cg, with(i, i));
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 20; }));
        fake_v2_tree::remove_cgroup(cg);
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }));
        run_ready(ctx);
        BOOST_TEST(log.t[event_kind::oom_kill] == 20u);
        BOOST_TEST(log.t[event_kind::oom] == 20u);
        BOOST_TEST(log.t[event_kind::removed] == 1u);
        bool done = false;
        error_code ec;
        w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
        BOOST_TEST(ec == error::cgroup_removed);
    }
    BOOST_TEST(open_fd_count() == fds);
}

// A fake v2 cgroup we may not look into, and one whose counters we may not read.
BOOST_FIXTURE_TEST_CASE(fake_v2_unreadable_is_permission_denied, unpriv_fixture) {
    const auto denied = errc::make_error_condition(errc::permission_denied);
    const fs::path locked_cg = fake / "parent" / "locked";
    const fs::path secret_cg = fake / "parent" / "secret";

    auto r = check_cgroup_directory(locked_cg, cgroup_version::v2);
    BOOST_TEST_REQUIRE(!r.has_value());
    BOOST_TEST((r.error() == denied), r.error().message());
    expect_refused(locked_cg, fake_v2_options(), denied, locked_cg);

    // The directory can be listed, only memory.events itself is unreadable (0600 root):
    // arming the inotify watch or reading the baseline must say so.
    expect_refused(secret_cg, fake_v2_options(), denied, secret_cg);

    // A v2 watcher that works on the same context is not disturbed by the failures.
    asio::io_context ctx;
    const fs::path ok_cg = fake / "parent" / "rooted2";
    watcher good(ctx, ok_cg, fake_v2_options());
    error_code ec;
    watcher bad(ctx, secret_cg, fake_v2_options(), ec);
    BOOST_TEST((ec == denied));
    event_log log(good);
    log.arm();
    auto a = root.ask("write " + ok_cg.string() + " 2 2");
    BOOST_TEST_REQUIRE(starts_with_ok(a), a);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] >= 2; }));
    run_ready(ctx);
    BOOST_TEST(log.t[event_kind::oom_kill] == 2u);
}

// Real cgroup, v1: registering needs write access to cgroup.event_control (0200 root).
BOOST_FIXTURE_TEST_CASE(real_cgroup_without_write_access, unpriv_fixture) {
    if (version == cgroup_version::v2) {
        // v2 needs no write access at all: memory.events is world-readable.
        asio::io_context ctx;
        watcher w(ctx, plain);
        BOOST_TEST(w.is_open());
        return;
    }
    const auto denied = errc::make_error_condition(errc::permission_denied);
    expect_refused(plain, {}, denied, plain);
    // Named as /proc/PID/cgroup shows it: the error names the directory it resolved to.
    expect_refused(hierarchy_path(plain), {}, denied, plain);
    // Our own cgroup (the scratch cgroup's parent), by process.
    auto fds = open_fd_count();
    {
        asio::io_context ctx;
        error_code ec;
        watcher self(ctx, process{::getpid()}, {}, ec);
        BOOST_TEST((ec == denied), ec.message());
        try {
            watcher t(ctx, process{::getpid()});
            BOOST_ERROR("no exception");
        } catch (const cgroup_error& e) {
            BOOST_TEST((e.code() == denied), e.what());
            BOOST_TEST(mentions(e, parent.parent_path()), e.what());
        }
    }
    BOOST_TEST(open_fd_count() == fds);
}

// Real cgroup whose cgroup.event_control root handed to us (v1), or any v2 cgroup: real
// OOM kills, made by root after the watcher is armed, are reported exactly.
BOOST_FIXTURE_TEST_CASE(real_cgroup_delegated_reports_real_kills, unpriv_fixture) {
    auto fds = open_fd_count();
    {
        asio::io_context ctx;
        watcher w(ctx, owned);  // armed when constructed
        BOOST_TEST(w.version() == version);
        auto base = w.counters().oom_kill;
        BOOST_TEST(base == 0u);
        event_log log(w);
        log.arm();
        tally sub;
        auto s = w.subscribe(asio::make_strand(ctx), [&](const oom_event& ev) { sub.add(ev); });
        run_ready(ctx);

        auto a = root.ask("oom " + owned.string() + " 2");
        BOOST_TEST_REQUIRE(starts_with_ok(a), a);
        BOOST_TEST(a == "ok 2");
        BOOST_TEST_REQUIRE(run_until(ctx, [&] {
            return log.t[event_kind::oom_kill] >= 2 && sub[event_kind::oom_kill] >= 2;
        }, 20s), "oom_kill reported: " << log.t[event_kind::oom_kill]);
        BOOST_TEST(read_kernel_oom_kill(owned, version) == 2u);
        BOOST_TEST(log.t[event_kind::oom] >= 2u);
        BOOST_TEST(log.events.front().kind == event_kind::oom);
        BOOST_TEST(log.events.front().cgroup == owned);

        a = root.ask("rmdir " + owned.string());
        BOOST_TEST_REQUIRE(starts_with_ok(a), a);
        BOOST_TEST_REQUIRE(run_until(ctx, [&] {
            return log.t[event_kind::removed] == 1 && sub[event_kind::removed] == 1;
        }));
        run_ready(ctx);
        BOOST_TEST(log.t[event_kind::oom_kill] == 2u);
        BOOST_TEST(sub[event_kind::oom_kill] == 2u);
        BOOST_TEST(log.t[event_kind::removed] == 1u);
        BOOST_TEST(sub[event_kind::removed] == 1u);
        BOOST_TEST(log.events.back().kind == event_kind::removed);
        bool done = false;
        error_code ec;
        w.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
        BOOST_TEST(ec == error::cgroup_removed);
    }
    BOOST_TEST(open_fd_count() == fds);
}

// A cgroup directory we may not search: resolve_cgroup and the watcher say so.
BOOST_FIXTURE_TEST_CASE(an_unsearchable_cgroup_is_permission_denied, unpriv_fixture) {
    const auto denied = errc::make_error_condition(errc::permission_denied);
    error_code ec;
    resolve_cgroup(locked, ec);
    BOOST_TEST((ec == denied), ec.message());

    resolve_cgroup(hierarchy_path(locked), ec);
    BOOST_TEST((ec == denied), ec.message());

    // Below it: we cannot tell whether it exists.
    resolve_cgroup(locked / "child", ec);
    BOOST_TEST((ec == denied), ec.message());
    try {
        resolve_cgroup(locked / "child");
        BOOST_ERROR("no exception");
    } catch (const cgroup_error& e) {
        BOOST_TEST((e.code() == denied), e.what());
        BOOST_TEST(e.path() == locked / "child");
    }

    expect_refused(locked, {}, denied, locked);
    // The lookup itself fails: the error names the path as given.
    expect_refused(hierarchy_path(locked), {}, denied, hierarchy_path(locked));
}

// The same for a directory outside any cgroup file system.
BOOST_FIXTURE_TEST_CASE(an_unsearchable_directory_elsewhere, unpriv_fixture) {
    const auto denied = errc::make_error_condition(errc::permission_denied);
    const fs::path locked_fake = fake / "parent" / "locked";
    // The directory itself can be stat'ed (its parent is searchable): it is simply no
    // cgroup, as the mount table says.
    error_code ec;
    resolve_cgroup(locked_fake, ec);
    BOOST_TEST(ec == error::not_a_cgroup, ec.message());
    // What lies below it cannot be looked at: permission denied, not "no such file".
    resolve_cgroup(locked_fake / "child", ec);
    BOOST_TEST((ec == denied), ec.message());
}

// /proc/1/cgroup is readable to everyone here; its cgroup (the hierarchy root, or a
// container's) is found, and watching it either works or fails cleanly.
BOOST_FIXTURE_TEST_CASE(memory_cgroup_of_pid_1_works_or_fails_cleanly, unpriv_fixture) {
    error_code hec;
    auto h = find_memory_hierarchy(hec);
    BOOST_TEST_REQUIRE(!hec, hec.message());
    BOOST_TEST(h.mount_point == mount);

    error_code mec;
    auto mine = memory_cgroup_of(::getpid(), mec);
    BOOST_TEST_REQUIRE(!mec, mec.message());
    BOOST_TEST(mine.directory == parent.parent_path());

    error_code oec;
    auto one = memory_cgroup_of(1, oec);
    if (!oec) {
        BOOST_TEST_MESSAGE("pid 1 is in " << one.directory);
        BOOST_TEST(one.version == version);
    } else {
        BOOST_TEST_MESSAGE("memory_cgroup_of(1): " << oec.message());
        BOOST_TEST((oec == errc::permission_denied || oec == errc::no_such_process), oec.message());
    }
    auto fds = open_fd_count();
    {
        asio::io_context ctx;
        error_code ec;
        watcher w(ctx, process{1}, {}, ec);
        if (ec) {
            BOOST_TEST_MESSAGE("watching pid 1's cgroup: " << ec.message());
            BOOST_TEST(ec == errc::permission_denied, ec.message());
            BOOST_TEST(!w.is_open());
            try {
                watcher t(ctx, process{1});
                BOOST_ERROR("no exception");
            } catch (const cgroup_error& e) {
                BOOST_TEST(e.code() == ec, e.what());
                BOOST_TEST(!e.path().empty(), e.what());
                BOOST_TEST(mentions(e, e.path()), e.what());
            }
        } else {
            BOOST_TEST(w.is_open());
            BOOST_TEST_MESSAGE("watching pid 1's cgroup " << w.cgroup() << " works");
        }
    }
    BOOST_TEST(open_fd_count() == fds);
}

BOOST_AUTO_TEST_SUITE_END()
