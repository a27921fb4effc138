// The `oomwatch` program run as a child process by the CLI tests: its stdout and stderr
// collected with bounded waits (poll(2) on its pipes and a pidfd, with a deadline); a
// child still running at the end of a test is killed and reaped by the destructor.
#pragma once

#include "fault_support.hpp"

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#ifndef OOMWATCH_CLI_PATH
#error "OOMWATCH_CLI_PATH (the built oomwatch program) must be defined"
#endif

namespace oomwatch::test::cli {

using namespace std::chrono_literals;

using clock_type = std::chrono::steady_clock;

// Exit statuses of the tool (its --help and README.md say the same).
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;
inline constexpr int exit_cannot_watch = 3;

[[noreturn]] inline void throw_errno(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

// A descriptor, closed by the destructor.
using fd_guard = owned_fd;

struct pipe_pair {
    fd_guard read, write;
    pipe_pair() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
        read = fd_guard(fds[0]);
        write = fd_guard(fds[1]);
    }
};

enum class stdout_to {
    pipe,         // a pipe this test reads
    dev_full,     // /dev/full: every write fails with ENOSPC
    closed_pipe,  // a pipe whose read end is closed before the program runs
};

struct spawn_options {
    stdout_to out = stdout_to::pipe;
    bool ignore_sigpipe = false;  // SIG_IGN survives exec, as under systemd
    std::optional<rlim_t> fd_limit = std::nullopt;  // RLIMIT_NOFILE, soft and hard (the program cannot raise it)
    bool as_nobody = false;  // uid and gid 65534, no supplementary groups: no root, no CAP_SYSLOG
    const char* program = OOMWATCH_CLI_PATH;  // another program (prometheus, promtool) for the metrics tests
};

// A copy of `program` that uid 65534 can run: the build tree may sit in a 0700 directory
// it cannot enter (CI's clone is in `mktemp -d`). One per test process, in a fresh 0755
// directory under /tmp, removed at exit.
inline std::string runnable_by_nobody(const std::string& program) {
    struct copy_dir {
        std::filesystem::path dir;
        ~copy_dir() {
            std::error_code ec;
            if (!dir.empty()) std::filesystem::remove_all(dir, ec);
        }
    };
    static copy_dir copies;
    if (copies.dir.empty()) {
        char tmpl[] = "/tmp/oomwatch-cli-nobody.XXXXXX";
        if (!::mkdtemp(tmpl)) throw_errno("mkdtemp");
        copies.dir = tmpl;
        if (::chmod(tmpl, 0755) != 0) throw_errno("chmod");
    }
    const auto copy = copies.dir / std::filesystem::path(program).filename();
    std::filesystem::copy_file(program, copy, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::permissions(copy, std::filesystem::perms(0755));
    return copy.string();
}

// The oomwatch program running as a child, with its stdout and stderr collected.
// The destructor kills (SIGKILL) and reaps it if it is still running.
class cli_process {
public:
    cli_process(const std::vector<std::string>& args, spawn_options opt = {}) {
        std::vector<std::string> argv_storage;
        argv_storage.emplace_back(opt.as_nobody ? runnable_by_nobody(opt.program) : std::string(opt.program));
        argv_storage.insert(argv_storage.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (auto& a : argv_storage) argv.push_back(a.data());
        argv.push_back(nullptr);

        // Everything the child needs is prepared before fork: after it, the child only
        // makes async-signal-safe calls.
        pipe_pair err;
        std::optional<pipe_pair> out;
        fd_guard full;
        if (opt.out == stdout_to::dev_full) {
            full = fd_guard(::open("/dev/full", O_WRONLY | O_CLOEXEC));
            if (!full) throw_errno("open /dev/full");
        } else {
            out.emplace();
        }
        fd_guard null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!null) throw_errno("open /dev/null");
        const int child_out = out ? out->write.get() : full.get();
        const int child_err = err.write.get();
        const bool ignore = opt.ignore_sigpipe;
        const bool limit_fds = opt.fd_limit.has_value();
        const bool as_nobody = opt.as_nobody;
        const rlimit fd_limit{opt.fd_limit.value_or(0), opt.fd_limit.value_or(0)};
        const char* path = argv_storage.front().c_str();

        pid_ = ::fork();
        if (pid_ < 0) throw_errno("fork");
        if (pid_ == 0) {
            // dup2 clears FD_CLOEXEC on the copies; everything else closes at exec.
            if (::dup2(null.get(), 0) < 0 || ::dup2(child_out, 1) < 0 || ::dup2(child_err, 2) < 0) ::_exit(126);
            sigset_t none;
            ::sigemptyset(&none);
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            struct sigaction sa {};
            sa.sa_handler = ignore ? SIG_IGN : SIG_DFL;
            ::sigemptyset(&sa.sa_mask);
            ::sigaction(SIGPIPE, &sa, nullptr);
            if (limit_fds && ::setrlimit(RLIMIT_NOFILE, &fd_limit) != 0) ::_exit(126);
            if (as_nobody && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(126);
            ::execv(path, argv.data());
            static const char msg[] = "cli_test: execv failed\n";
            [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
            ::_exit(127);
        }
        const long pidfd = ::syscall(SYS_pidfd_open, pid_, 0);
        if (pidfd < 0) {
            const int e = errno;
            kill_and_reap();
            throw std::system_error(e, std::generic_category(), "pidfd_open");
        }
        pidfd_ = fd_guard(static_cast<int>(pidfd));
        // Only the child holds the write ends now: EOF comes when it exits.
        err_ = std::move(err.read);
        if (out) {
            if (opt.out == stdout_to::pipe) out_ = std::move(out->read);
            // closed_pipe: both ends close here; the child's writes get EPIPE/SIGPIPE.
        }
        for (int fd : {out_.get(), err_.get()}) {
            if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        }
    }

    cli_process(const cli_process&) = delete;
    cli_process& operator=(const cli_process&) = delete;
    ~cli_process() { kill_and_reap(); }

    pid_t pid() const { return pid_; }
    const std::string& out() const { return out_text_; }
    const std::string& err() const { return err_text_; }
    const std::optional<int>& status() const { return status_; }

    void send(int sig) const {
        if (!status_) BOOST_TEST_REQUIRE(::kill(pid_, sig) == 0, "kill: " << std::strerror(errno));
    }

    /// Collects output and the exit until `done()` holds or `timeout` passed (true when
    /// it holds). Never blocks beyond the deadline.
    bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
        const auto deadline = clock_type::now() + timeout;
        while (!done()) {
            pollfd fds[3];
            nfds_t n = 0;
            if (out_) fds[n++] = {out_.get(), POLLIN, 0};
            if (err_) fds[n++] = {err_.get(), POLLIN, 0};
            if (!status_) fds[n++] = {pidfd_.get(), POLLIN, 0};
            if (n == 0) return done();  // exited, and all output read: nothing more can change
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock_type::now());
            if (left <= 0ms) return false;
            const int r = ::poll(fds, n, static_cast<int>(std::min<std::chrono::milliseconds::rep>(left.count(), 1000)));
            if (r < 0 && errno != EINTR) throw_errno("poll");
            drain(out_, out_text_);
            drain(err_, err_text_);
            if (!status_) reap(false);
        }
        return true;
    }

    /// Waits (bounded) for the exit and the end of its output; the wait status, or
    /// nothing on timeout (the destructor kills it then).
    std::optional<int> wait_exit(std::chrono::milliseconds timeout = 10s) {
        run_until([&] { return status_ && !out_ && !err_; }, timeout);
        return status_;
    }

    /// The number of times `needle` occurs in stderr.
    std::size_t err_count(std::string_view needle) const {
        std::size_t count = 0;
        for (auto pos = err_text_.find(needle); pos != std::string::npos; pos = err_text_.find(needle, pos + 1)) {
            ++count;
        }
        return count;
    }

private:
    static void drain(fd_guard& fd, std::string& text) {
        if (!fd) return;
        char buf[4096];
        for (;;) {
            const ssize_t r = ::read(fd.get(), buf, sizeof buf);
            if (r > 0) {
                text.append(buf, static_cast<std::size_t>(r));
                continue;
            }
            if (r < 0 && errno == EINTR) continue;
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) fd.reset();  // EOF or error
            return;
        }
    }

    void reap(bool block_bounded) {
        if (status_ || pid_ <= 0) return;
        // Bounded: after SIGKILL the child is gone within milliseconds; 10 s at most.
        const auto deadline = clock_type::now() + (block_bounded ? 10s : 0s);
        for (;;) {
            int st = 0;
            const pid_t r = ::waitpid(pid_, &st, WNOHANG);
            if (r == pid_) {
                status_ = st;
                return;
            }
            if (r < 0 && errno != EINTR) return;
            if (r < 0) continue;
            if (clock_type::now() >= deadline) return;
            if (pidfd_) {
                pollfd p{pidfd_.get(), POLLIN, 0};
                ::poll(&p, 1, 100);
            } else {
                ::usleep(10000);  // no pidfd (its creation failed): a short, bounded poll
            }
        }
    }

    void kill_and_reap() noexcept {
        if (pid_ <= 0 || status_) return;
        ::kill(pid_, SIGKILL);
        reap(true);
    }

    pid_t pid_ = -1;
    fd_guard pidfd_, out_, err_;
    std::string out_text_, err_text_;
    std::optional<int> status_;
};

inline bool exited_with(const std::optional<int>& status, int code) {
    return status && WIFEXITED(*status) && WEXITSTATUS(*status) == code;
}

inline std::string describe(const std::optional<int>& status) {
    if (!status) return "still running (timed out)";
    if (WIFEXITED(*status)) return "exit status " + std::to_string(WEXITSTATUS(*status));
    if (WIFSIGNALED(*status)) return "killed by signal " + std::to_string(WTERMSIG(*status));
    return "wait status " + std::to_string(*status);
}

#define CHECK_EXIT(proc, code, timeout)                                                              \
    do {                                                                                             \
        auto st_ = (proc).wait_exit(timeout);                                                        \
        BOOST_TEST(exited_with(st_, code), "expected exit status " << (code) << ", got " << describe(st_) \
                                                                   << "; stderr: " << (proc).err()); \
    } while (0)

// Arguments, and the message (after "oomwatch: ") their usage error must print.
using usage_case = std::pair<std::vector<std::string>, std::string>;

// Each case: status 2 and its message on stderr, nothing on stdout.
inline void check_usage_errors(const std::vector<usage_case>& cases) {
    for (const auto& [args, message] : cases) {
        BOOST_TEST_CONTEXT(args[1] << " " << args[2]) {
            cli_process p(args);
            const auto st = p.wait_exit(10s);
            BOOST_TEST(exited_with(st, exit_usage), describe(st) << "; stderr: " << p.err());
            BOOST_TEST(p.err().find("oomwatch: " + message) != std::string::npos, p.err());
            BOOST_TEST(p.out().empty());
        }
    }
}

} // namespace oomwatch::test::cli
