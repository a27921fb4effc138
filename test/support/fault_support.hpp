// Helpers for the fault-injection tests (test/unit/fault_test.cpp on fake cgroups,
// test/kernel/fault_test.cpp on real ones): descriptors and RLIMIT_NOFILE, sysctls (the
// inotify limits; the watcher tests shrink max_queued_events with it too), the library's
// log, and a storm of signals that interrupt system calls. Everything they change is
// undone on destruction, even when the test fails.
#pragma once

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/log/sinks/basic_sink_backend.hpp>
#include <boost/log/sinks/sync_frontend.hpp>
#include <boost/shared_ptr.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace oomwatch::test {

// ---- descriptors ------------------------------------------------------------------------

/// A descriptor closed on destruction.
class owned_fd {
public:
    explicit owned_fd(int fd = -1) noexcept : fd_(fd) {}
    owned_fd(owned_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    owned_fd& operator=(owned_fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    ~owned_fd() { reset(); }
    void reset() noexcept;
    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }

private:
    int fd_;
};

/// True when `fd` is an open descriptor of this process.
bool fd_is_open(int fd);

/// The RLIMIT_NOFILE soft limit that leaves exactly `free` descriptors to open: the
/// limit caps descriptor numbers, not counts, so count the free numbers from the bottom.
rlim_t limit_leaving(int free);

/// Lowers the soft RLIMIT_NOFILE for a scope; restores it on destruction, even when the
/// test fails.
class rlimit_guard {
public:
    explicit rlimit_guard(rlim_t soft);
    rlimit_guard(const rlimit_guard&) = delete;
    rlimit_guard& operator=(const rlimit_guard&) = delete;
    ~rlimit_guard() { restore(); }
    void restore();

private:
    rlimit old_{};
    bool active_ = false;
};

/// What constructing a watcher both ways gave (for the out-of-descriptors cases).
struct both_constructors {
    /// The error_code form: its error, whether the watcher is open, and what it threw
    /// (it must not throw).
    boost::system::error_code ec;
    bool opened = false;
    std::string threw;
    /// The throwing form: the cgroup_error's what() and path, or what else it threw.
    std::string what, what_path, wrong;
};

/// Constructs a watcher of `cgroup` with `opts`, first the error_code form on `ctx`,
/// then the throwing form on `ctx2`, and says how each went.
both_constructors try_both_constructors(boost::asio::io_context& ctx, boost::asio::io_context& ctx2,
                                        const std::filesystem::path& cgroup, const watch_options& opts);

/// Runs `ctx.run()` once on a thread of its own (an exception ends it), so that the test
/// can wait, bounded, for the io_context to run out of work. The destructor stops the
/// io_context and joins the thread, even when the test fails.
class run_out_thread {
public:
    explicit run_out_thread(boost::asio::io_context& ctx);
    run_out_thread(const run_out_thread&) = delete;
    run_out_thread& operator=(const run_out_thread&) = delete;
    ~run_out_thread();

    /// True when run() returned within `timeout`.
    bool ran_out_within(std::chrono::milliseconds timeout) {
        return ran_f_.wait_for(timeout) == std::future_status::ready;
    }
    void join() { t_.join(); }

private:
    boost::asio::io_context& ctx_;
    std::promise<void> ran_;
    std::future<void> ran_f_;
    std::thread t_;
};

/// The whole content of a file (empty when it cannot be read).
std::string read_text(const std::filesystem::path& p);

// ---- sysctls ------------------------------------------------------------------------------

/// Sets a sysctl (a /proc/sys file) for a scope and restores it, even when the test fails,
/// and even when this process dies: a guardian process (forked when the value is first
/// changed) writes the old value back as soon as this process is gone. The inotify
/// limits are per user, so every root process on the machine shares them while the
/// window is open: keep it short.
class sysctl_guard {
public:
    sysctl_guard(const char* knob, std::uint64_t value);
    sysctl_guard(const sysctl_guard&) = delete;
    sysctl_guard& operator=(const sysctl_guard&) = delete;
    ~sysctl_guard() { restore(); }

    /// Writes `value` and requires that the knob reads it back.
    void set(std::uint64_t value);
    const std::string& old_value() const { return old_; }
    /// Writes the old value back (once; the destructor does nothing more after it).
    void restore();

private:
    void start_guardian();

    std::string knob_;
    std::string old_;
    pid_t guardian_ = -1;
    int pipe_wr_ = -1;
    bool restored_ = false;
};

// ---- the library's log --------------------------------------------------------------------

/// Keeps the library's log records (every severity) while it exists, to tell that the
/// watcher did try something and what it said.
class log_capture {
    class backend : public boost::log::sinks::basic_sink_backend<boost::log::sinks::synchronized_feeding> {
    public:
        explicit backend(log_capture* owner) : owner_(owner) {}
        void consume(const boost::log::record_view& rec);

    private:
        log_capture* owner_;
    };
    using sink_t = boost::log::sinks::synchronous_sink<backend>;

public:
    log_capture();
    ~log_capture();
    log_capture(const log_capture&) = delete;
    log_capture& operator=(const log_capture&) = delete;

    /// How many records contain `needle`.
    std::size_t count(std::string_view needle) const;

private:
    void add(const std::string& s);
    mutable std::mutex m_;
    std::vector<std::string> lines_;
    boost::shared_ptr<sink_t> sink_;
};

// ---- signals ------------------------------------------------------------------------------

/// SIGUSR1 deliveries to the handler that signal_storm installs.
extern std::atomic<unsigned long> sigusr1_seen;

/// SIGUSR1 with a handler installed WITHOUT SA_RESTART, sent to `targets` every `period`
/// by a thread of its own, so that every blocking call in them may fail with EINTR. The
/// destructor stops the storm, swallows what is still pending on this thread and
/// restores the old disposition (SIG_DFL would kill the process for a late one).
class signal_storm {
public:
    signal_storm(std::vector<pthread_t> targets, std::chrono::microseconds period);
    signal_storm(const signal_storm&) = delete;
    signal_storm& operator=(const signal_storm&) = delete;
    ~signal_storm() { stop(); }

    /// Stops sending to `t` (a thread about to end).
    void forget(pthread_t t);
    unsigned long sent();
    void stop();

private:
    std::mutex m_;
    std::vector<pthread_t> targets_;
    unsigned long sent_ = 0;
    std::atomic<bool> stop_{false};
    struct sigaction old_ {};
    bool installed_ = false;
    std::thread sender_;
};

} // namespace oomwatch::test
