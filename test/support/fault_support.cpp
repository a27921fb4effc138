#include "fault_support.hpp"

#include <boost/log/core.hpp>
#include <boost/log/expressions/message.hpp>
#include <boost/make_shared.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

namespace oomwatch::test {

// ---- descriptors ------------------------------------------------------------------------

void owned_fd::reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

rlim_t limit_leaving(int free) {
    int fd = 0;
    for (int left = free;; ++fd) {
        if (fd_is_open(fd)) continue;
        if (left == 0) return static_cast<rlim_t>(fd);
        --left;
    }
}

rlimit_guard::rlimit_guard(rlim_t soft) {
    BOOST_TEST_REQUIRE(::getrlimit(RLIMIT_NOFILE, &old_) == 0);
    rlimit r = old_;
    r.rlim_cur = soft;
    BOOST_TEST_REQUIRE(::setrlimit(RLIMIT_NOFILE, &r) == 0, "setrlimit: errno " << errno);
    active_ = true;
}

void rlimit_guard::restore() {
    if (active_) ::setrlimit(RLIMIT_NOFILE, &old_);
    active_ = false;
}

both_constructors try_both_constructors(boost::asio::io_context& ctx, boost::asio::io_context& ctx2,
                                        const std::filesystem::path& cgroup, const watch_options& opts) {
    both_constructors r;
    try {
        watcher w(ctx, cgroup, opts, r.ec);
        r.opened = w.is_open();
    } catch (const std::exception& e) {
        r.threw = e.what();
    }
    try {
        watcher w(ctx2, cgroup, opts);
    } catch (const cgroup_error& e) {
        r.what = e.what();
        r.what_path = e.path().string();
    } catch (const std::exception& e) {
        r.wrong = e.what();
    }
    return r;
}

run_out_thread::run_out_thread(boost::asio::io_context& ctx) : ctx_(ctx), ran_f_(ran_.get_future()) {
    t_ = std::thread([this] {
        try {
            ctx_.run();  // returns once the watchers are done: after `removed` nothing is pending
        } catch (...) {
        }
        ran_.set_value();
    });
}

run_out_thread::~run_out_thread() {
    ctx_.stop();
    if (t_.joinable()) t_.join();
}

std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// ---- sysctls ------------------------------------------------------------------------------

sysctl_guard::sysctl_guard(const char* knob, std::uint64_t value) : knob_(knob) {
    std::ifstream(knob_) >> old_;
    BOOST_TEST_REQUIRE(!old_.empty(), "cannot read " << knob_);
    start_guardian();
    set(value);
}

void sysctl_guard::set(std::uint64_t value) {
    std::ofstream out(knob_);
    out << value;
    out.flush();
    BOOST_TEST_REQUIRE(out.good(), "cannot write " << value << " to " << knob_);
    BOOST_TEST_REQUIRE(read_text(knob_) == std::to_string(value) + "\n");
}

void sysctl_guard::restore() {
    if (restored_) return;
    restored_ = true;
    std::ofstream(knob_) << old_;
    if (guardian_ > 0) {
        ::close(pipe_wr_);  // EOF: the guardian writes the old value too, and exits
        int st;
        while (::waitpid(guardian_, &st, 0) < 0 && errno == EINTR) {}
    }
}

void sysctl_guard::start_guardian() {
    // Everything the child needs is made before fork (no allocation after it).
    const std::string knob = knob_;
    const std::string value = old_ + "\n";
    int fds[2];
    BOOST_TEST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    pid_t pid = ::fork();
    if (pid == 0) {
        // Survive the signals that end a test run, not the run's own death.
        ::signal(SIGINT, SIG_IGN);
        ::signal(SIGTERM, SIG_IGN);
        ::signal(SIGHUP, SIG_IGN);
        ::signal(SIGUSR1, SIG_IGN);
        const int rd = fds[0];
        // Hold no descriptor of the test (an inotify instance or a watch must not
        // outlive the test because of this process).
        if (rd > 3) ::syscall(SYS_close_range, 3, rd - 1, 0);
        ::syscall(SYS_close_range, rd + 1, ~0U, 0);
        // Only EOF (the test process closed its end, or died) ends the wait.
        for (;;) {
            char c;
            ssize_t n = ::read(rd, &c, 1);
            if (n == 0 || (n < 0 && errno != EINTR)) break;
        }
        int fd = ::open(knob.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            (void)!::write(fd, value.data(), value.size());
            ::close(fd);
        }
        ::_exit(0);
    }
    ::close(fds[0]);
    if (pid < 0) {
        ::close(fds[1]);
        BOOST_TEST_REQUIRE(pid > 0, "fork: errno " << errno);
    }
    guardian_ = pid;
    pipe_wr_ = fds[1];
}

// ---- the library's log --------------------------------------------------------------------

void log_capture::backend::consume(const boost::log::record_view& rec) {
    if (auto m = rec[boost::log::expressions::smessage]) owner_->add(*m);
}

log_capture::log_capture() : sink_(boost::make_shared<sink_t>(boost::make_shared<backend>(this))) {
    boost::log::core::get()->add_sink(sink_);
}

log_capture::~log_capture() {
    boost::log::core::get()->remove_sink(sink_);
    sink_->flush();
}

std::size_t log_capture::count(std::string_view needle) const {
    std::lock_guard lk(m_);
    std::size_t n = 0;
    for (auto& s : lines_)
        if (s.find(needle) != std::string::npos) ++n;
    return n;
}

void log_capture::add(const std::string& s) {
    std::lock_guard lk(m_);
    lines_.push_back(s);
}

// ---- signals ------------------------------------------------------------------------------

std::atomic<unsigned long> sigusr1_seen{0};

namespace {
extern "C" void count_sigusr1(int) { sigusr1_seen.fetch_add(1, std::memory_order_relaxed); }
} // namespace

signal_storm::signal_storm(std::vector<pthread_t> targets, std::chrono::microseconds period)
    : targets_(std::move(targets)) {
    struct sigaction sa {};
    sa.sa_handler = count_sigusr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: interrupted system calls fail with EINTR
    BOOST_TEST_REQUIRE(::sigaction(SIGUSR1, &sa, &old_) == 0);
    installed_ = true;
    sender_ = std::thread([this, period] {
        timespec ts{0, static_cast<long>(std::chrono::nanoseconds(period).count())};
        while (!stop_.load(std::memory_order_relaxed)) {
            {
                std::lock_guard lk(m_);
                for (auto t : targets_) ::pthread_kill(t, SIGUSR1);
                sent_ += targets_.size();
            }
            ::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
        }
    });
}

void signal_storm::forget(pthread_t t) {
    std::lock_guard lk(m_);
    std::erase_if(targets_, [t](pthread_t x) { return ::pthread_equal(x, t); });
}

unsigned long signal_storm::sent() {
    std::lock_guard lk(m_);
    return sent_;
}

void signal_storm::stop() {
    if (sender_.joinable()) {
        stop_ = true;
        sender_.join();
    }
    if (!installed_) return;
    installed_ = false;
    // Every pthread_kill has returned: what is not delivered yet is pending on this
    // thread (the others have been forgotten or have ended). Take it, then restore.
    sigset_t usr1, old_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
    timespec zero{0, 0};
    while (::sigtimedwait(&usr1, nullptr, &zero) == SIGUSR1) {}
    ::sigaction(SIGUSR1, &old_, nullptr);
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
}

} // namespace oomwatch::test
