// The systemd service protocol of `oomwatch watch` (src/cli/service.cpp), against the
// built program: this test binds the AF_UNIX datagram socket systemd would, points
// NOTIFY_SOCKET at it, and reads what arrives: READY=1 once every watch is armed (an
// OOM from then on is reported), WATCHDOG=1 every WATCHDOG_USEC/2, STOPPING=1 at the end.
#define BOOST_TEST_MODULE oomwatch_service_tests
#include "test_support.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#ifndef OOMWATCH_CLI_PATH
#error "OOMWATCH_CLI_PATH (the built oomwatch program) must be defined"
#endif

extern char** environ;

using namespace oomwatch::test;  // scratch_oom, kernel_precondition, oom_kill_one
using namespace std::chrono_literals;
BOOST_TEST_GLOBAL_FIXTURE(log_to_stderr);

namespace {

namespace fs = std::filesystem;
namespace scratch = oomwatch::scratch;

[[noreturn]] void fail_errno(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// What systemd does for a Type=notify service: a datagram socket, at a path in a
// scratch folder or (`abstract`) in the abstract namespace ("@name" in NOTIFY_SOCKET).
class notify_socket {
public:
    notify_socket(const fs::path& dir, bool abstract) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) fail_errno("socket");
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        name_ = abstract ? "@oomwatch-test-" + scratch::unique_suffix() : (dir / "notify").string();
        BOOST_TEST_REQUIRE(name_.size() < sizeof addr.sun_path);
        name_.copy(addr.sun_path, name_.size());
        if (abstract) addr.sun_path[0] = '\0';
        const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size() + (abstract ? 0 : 1));
        if (::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), len) != 0) fail_errno("bind");
    }
    notify_socket(const notify_socket&) = delete;
    notify_socket& operator=(const notify_socket&) = delete;
    ~notify_socket() { ::close(fd_); }

    const std::string& name() const { return name_; }

    /// The next message, or nothing once `timeout` passed.
    std::optional<std::string> receive(std::chrono::milliseconds timeout) {
        pollfd p{fd_, POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
        if (r < 0 && errno != EINTR) fail_errno("poll");
        if (r <= 0) return std::nullopt;
        char buf[4096];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n < 0) fail_errno("recv");
        return std::string(buf, static_cast<std::size_t>(n));
    }

    /// Every message that arrives within `span`.
    std::vector<std::string> receive_for(std::chrono::milliseconds span) {
        std::vector<std::string> got;
        const auto end = std::chrono::steady_clock::now() + span;
        for (auto now = std::chrono::steady_clock::now(); now < end; now = std::chrono::steady_clock::now()) {
            if (auto m = receive(std::chrono::ceil<std::chrono::milliseconds>(end - now))) got.push_back(*m);
        }
        return got;
    }

private:
    int fd_ = -1;
    std::string name_;
};

// The program with a given environment added to ours (minus any systemd variables of
// our own), stdout and stderr in files; killed and reaped by the destructor.
class service_process {
public:
    service_process(const fs::path& dir, const std::vector<std::string>& args, const std::vector<std::string>& env)
        : out_(dir / "stdout"), err_(dir / "stderr") {
        std::vector<std::string> argv_s{OOMWATCH_CLI_PATH};
        argv_s.insert(argv_s.end(), args.begin(), args.end());
        std::vector<std::string> env_s;
        for (char** e = environ; *e; ++e) {
            const std::string_view v = *e;
            if (!v.starts_with("NOTIFY_SOCKET=") && !v.starts_with("WATCHDOG_")) env_s.emplace_back(v);
        }
        env_s.insert(env_s.end(), env.begin(), env.end());
        auto pointers = [](std::vector<std::string>& strings) {
            std::vector<char*> p;
            for (auto& s : strings) p.push_back(s.data());
            p.push_back(nullptr);
            return p;
        };
        auto argv = pointers(argv_s);
        auto envp = pointers(env_s);

        posix_spawn_file_actions_t fa;
        ::posix_spawn_file_actions_init(&fa);
        ::posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        ::posix_spawn_file_actions_addopen(&fa, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ::posix_spawn_file_actions_addopen(&fa, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        const int rc = ::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data());
        ::posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) throw std::system_error(rc, std::generic_category(), "posix_spawn");
    }
    service_process(const service_process&) = delete;
    service_process& operator=(const service_process&) = delete;
    ~service_process() {
        if (status_) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }

    std::string out() const { return slurp(out_); }
    std::string err() const { return slurp(err_); }
    void send(int sig) const { BOOST_TEST_REQUIRE(::kill(pid_, sig) == 0); }

    /// The exit status, or nothing if it still runs after `timeout`.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
        const auto end = std::chrono::steady_clock::now() + timeout;
        while (!status_) {
            int st = 0;
            const pid_t r = ::waitpid(pid_, &st, WNOHANG);
            if (r == pid_ && WIFEXITED(st)) status_ = WEXITSTATUS(st);
            else if (r == pid_) status_ = 128 + WTERMSIG(st);
            else if (std::chrono::steady_clock::now() >= end) break;
            else std::this_thread::sleep_for(10ms);
        }
        return status_;
    }

private:
    fs::path out_, err_;
    pid_t pid_ = -1;
    std::optional<int> status_;
};

// A scratch folder for the socket and the output files, removed at the end.
struct scratch_dir {
    fs::path path = fs::temp_directory_path() / ("oomwatch-service-" + scratch::unique_suffix());
    scratch_dir() { fs::create_directories(path); }
    ~scratch_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

std::string armed_line(const scratch::scratch_cgroup& cg) {
    return "oomwatch: watching " + cg.path().string() + " (cgroup v" + std::to_string(static_cast<int>(cg.version())) +
           ")\n";
}

std::size_t count(const std::vector<std::string>& messages, std::string_view m) {
    return static_cast<std::size_t>(std::count(messages.begin(), messages.end(), m));
}

} // namespace

BOOST_AUTO_TEST_SUITE(service_usage)

// Exit 3 (a cgroup that cannot be watched): systemd must see a failed start, not a ready one.
BOOST_AUTO_TEST_CASE(no_ready_when_a_cgroup_cannot_be_watched) {
    scratch_dir dir;
    notify_socket sock(dir.path, false);
    service_process p(dir.path, {"watch", "/oomwatch-no-such-cgroup"}, {"NOTIFY_SOCKET=" + sock.name()});
    const auto st = p.wait_exit(10s);
    BOOST_TEST_REQUIRE(st.has_value());
    BOOST_TEST(*st == 3, "stderr: " << p.err());
    BOOST_TEST(!sock.receive(0ms).has_value());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(service_kernel, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_FIXTURE_TEST_CASE(ready_once_every_watch_is_armed_then_stopping_at_sigterm, scratch_oom) {
    scratch_dir dir;
    notify_socket sock(dir.path, false);
    service_process p(dir.path, {"-v", "watch", cg->path().string()}, {"NOTIFY_SOCKET=" + sock.name()});
    const auto ready = sock.receive(10s);
    BOOST_TEST_REQUIRE(ready.has_value(), "no message within 10 s; stderr: " << p.err());
    BOOST_TEST_REQUIRE(*ready == "READY=1");
    // Sent after the watch was armed (and announced): an OOM from now on is reported.
    BOOST_TEST(p.err().find(armed_line(*cg)) != std::string::npos, "stderr: " << p.err());
    oom_kill_one(cg->path());
    const auto end = std::chrono::steady_clock::now() + 10s;
    while (p.out().find("\"kind\":\"oom_kill\"") == std::string::npos && std::chrono::steady_clock::now() < end)
        std::this_thread::sleep_for(20ms);
    BOOST_TEST(p.out().find("\"kind\":\"oom_kill\"") != std::string::npos, "stdout: " << p.out());

    p.send(SIGTERM);
    BOOST_TEST(sock.receive(10s).value_or("(nothing)") == "STOPPING=1");
    BOOST_TEST(p.wait_exit(10s).value_or(-1) == 0, "stderr: " << p.err());
    BOOST_TEST(!sock.receive(0ms).has_value());  // no watchdog was asked for: no ping
}

// WATCHDOG_USEC=200 ms: a ping every 100 ms, from the event loop, until the end.
// An abstract socket name ("@...") and a tree (-r), as the unit runs it.
BOOST_FIXTURE_TEST_CASE(watchdog_pings_every_half_interval, scratch_oom) {
    scratch_dir dir;
    notify_socket sock(dir.path, true);
    service_process p(dir.path, {"watch", "-r", cg->path().string()},
                      {"NOTIFY_SOCKET=" + sock.name(), "WATCHDOG_USEC=200000"});
    const auto ready = sock.receive(10s);
    BOOST_TEST_REQUIRE(ready.has_value(), "no message within 10 s; stderr: " << p.err());
    BOOST_TEST_REQUIRE(*ready == "READY=1");
    const auto pings = sock.receive_for(1000ms);
    BOOST_TEST(count(pings, "WATCHDOG=1") == pings.size());
    // About 10; a loaded machine may delay some, never add any.
    BOOST_TEST(pings.size() >= 4u);
    BOOST_TEST(pings.size() <= 12u);
    p.send(SIGTERM);
    BOOST_TEST(p.wait_exit(10s).value_or(-1) == 0, "stderr: " << p.err());
    const auto rest = sock.receive_for(300ms);
    BOOST_TEST(count(rest, "STOPPING=1") == 1u);
    BOOST_TEST_REQUIRE(!rest.empty());
    BOOST_TEST(rest.back() == "STOPPING=1");  // no ping after it
}

// WATCHDOG_PID names another process: the watchdog is not ours to feed.
BOOST_FIXTURE_TEST_CASE(no_pings_when_the_watchdog_is_another_process, scratch_oom) {
    scratch_dir dir;
    notify_socket sock(dir.path, false);
    service_process p(dir.path, {"watch", cg->path().string()},
                      {"NOTIFY_SOCKET=" + sock.name(), "WATCHDOG_USEC=200000", "WATCHDOG_PID=1"});
    BOOST_TEST_REQUIRE(sock.receive(10s).value_or("(nothing)") == "READY=1", "stderr: " << p.err());
    BOOST_TEST(sock.receive_for(500ms).empty());
}

BOOST_AUTO_TEST_SUITE_END()
