// `oomwatch demo`: real OOM kills in a scratch cgroup, and a check that the watcher
// reported every one of them exactly once.
#include "cli.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/cgroup.hpp>
#include <oomwatch/error.hpp>
#include <oomwatch/watcher.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <string>

namespace oomwatch::cli {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t limit_bytes = 32u << 20;
constexpr std::size_t victim_bytes = 256u << 20;
constexpr int rounds = 3;
constexpr auto exit_timeout = 10s;   // a victim is killed in ~0.1 s
constexpr auto event_timeout = 5s;   // events follow within milliseconds

struct demo_state {
    explicit demo_state(asio::io_context& c) : ioc(c), changed(c) {}
    asio::io_context& ioc;
    asio::steady_timer changed;  // cancelled on every event: wakes wait_for()
    std::uint64_t oom_kills = 0;
    std::uint64_t ooms = 0;
    bool removed = false;
    bool stream_ended = false;
    bool output_failed = false;  // stdout cannot be written: the demo is stopped
};

void notify(demo_state& st) { st.changed.cancel(); }

// Waits until pred() holds or `timeout` passed; true when it holds.
template <class Pred>
asio::awaitable<bool> wait_for(demo_state& st, Pred pred, std::chrono::steady_clock::duration timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline) co_return false;
        st.changed.expires_at(deadline);
        co_await st.changed.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return true;
}

asio::awaitable<void> pump(watcher& w, demo_state& st) {
    for (;;) {
        auto [ec, ev] = co_await w.async_next_event(asio::as_tuple(asio::use_awaitable));
        if (ec) {
            if (ec != asio::error::operation_aborted && ec != error::watcher_closed &&
                ec != error::cgroup_removed) {
                std::cerr << "demo: watcher failed: " << ec.message() << '\n';
            }
            break;
        }
        if (auto wec = print_event(ev)) {
            report_stdout_error(wec);
            st.output_failed = true;
            st.ioc.stop();  // like an interrupt: destructors kill the children, remove the cgroup
            co_return;
        }
        switch (ev.kind) {
        case event_kind::oom_kill:
            st.oom_kills += ev.count;
            std::cerr << "demo: reported: " << ev.count << " OOM kill" << (ev.count == 1 ? "" : "s")
                      << " (oom_kill counter " << ev.counters.oom_kill << ")";
            for (const auto& v : ev.victims) std::cerr << "; victim: pid " << v.pid << " (" << v.comm << ")";
            if (ev.unattributed) std::cerr << "; " << ev.unattributed << " not named";
            std::cerr << '\n';
            break;
        case event_kind::oom:
            st.ooms += ev.count;
            std::cerr << "demo: reported: the cgroup hit its limit (" << ev.count << " OOM notification"
                      << (ev.count == 1 ? "" : "s") << ")\n";
            break;
        case event_kind::removed:
            st.removed = true;
            std::cerr << "demo: reported: the cgroup was removed\n";
            break;
        default:
            std::cerr << "demo: reported: " << to_string(ev.kind) << " x" << ev.count << '\n';
            break;
        }
        notify(st);
        if (ev.kind == event_kind::removed) break;
    }
    st.stream_ended = true;
    notify(st);
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* name = ::sigabbrev_np(WTERMSIG(status));
        return "killed by signal " + std::to_string(WTERMSIG(status)) + (name ? std::string(" (SIG") + name + ")" : "");
    }
    return "wait status " + std::to_string(status);
}

// Waits for the victim's exit through its pidfd, at most `timeout`; true when it exited.
asio::awaitable<bool> wait_exit(scratch::victim& v, std::chrono::steady_clock::duration timeout) {
    using namespace asio::experimental::awaitable_operators;
    auto ex = co_await asio::this_coro::executor;
    // A duplicate, so that the descriptor object closes its own fd, never the victim's.
    const int fd = ::fcntl(v.pidfd(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw boost::system::system_error(errno, boost::system::system_category(), "dup(pidfd)");
    asio::posix::stream_descriptor pidfd(ex, fd);
    asio::steady_timer timer(ex, timeout);
    // Registered and waited on in one step: epoll reports an exit that already happened.
    auto r = co_await (pidfd.async_wait(asio::posix::descriptor_base::wait_read,
                                        asio::as_tuple(asio::use_awaitable)) ||
                       timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (r.index() == 0) {
        auto [ec] = std::get<0>(r);
        if (ec) throw boost::system::system_error(ec, "waiting for the child");
        co_return true;
    }
    co_return false;
}

// The kernel's own count of OOM kills in the cgroup: the `oom_kill` line of
// memory.oom_control (v1) or memory.events (v2). Read here, independently of the
// library, since this is what the demo checks the library against.
std::optional<std::uint64_t> kernel_oom_kill(const std::filesystem::path& dir, cgroup_version v) {
    std::ifstream f(dir / (v == cgroup_version::v1 ? "memory.oom_control" : "memory.events"));
    std::string key;
    std::uint64_t value = 0;
    while (f >> key >> value) {
        if (key == "oom_kill") return value;
    }
    return std::nullopt;
}

struct demo_result {
    int kills = 0;
    bool ok = true;
    std::optional<std::uint64_t> kernel_kills;
};

asio::awaitable<demo_result> demo(scratch::scratch_cgroup& cg, demo_state& st) {
    demo_result res;
    for (int round = 1; round <= rounds; ++round) {
        auto v = scratch::victim::spawn(cg.path(), victim_bytes);
        if (!v) {
            std::cerr << "demo: cannot start a child in " << cg.path().string() << ": " << v.error().message() << '\n';
            res.ok = false;
            co_return res;
        }
        std::cerr << "demo: round " << round << ": child " << v->pid() << " allocates "
                  << (victim_bytes >> 20) << " MiB in a " << (limit_bytes >> 20) << " MiB cgroup\n";
        if (!co_await wait_exit(*v, exit_timeout)) {
            std::cerr << "demo: child " << v->pid() << " still alive after 10 s; killing it\n";
            res.ok = false;
            co_return res;  // ~victim kills and reaps it
        }
        auto status = v->wait(0ms);
        if (!status) {
            std::cerr << "demo: cannot reap child " << v->pid() << ": " << status.error().message() << '\n';
            res.ok = false;
            co_return res;
        }
        if (scratch::victim::killed_by_sigkill(*status)) {
            ++res.kills;
            std::cerr << "demo: child " << v->pid() << " killed by the OOM killer (SIGKILL)\n";
        } else {
            std::cerr << "demo: child " << v->pid() << " " << describe_status(*status)
                      << ": not OOM-killed (is the memory limit enforced?)\n";
            res.ok = false;
        }
        // Let this round's events arrive before the next child starts.
        const auto want = static_cast<std::uint64_t>(res.kills);
        if (!co_await wait_for(st, [&] { return st.oom_kills >= want || st.stream_ended; }, event_timeout)) {
            std::cerr << "demo: no oom_kill event within 5 s of the kill\n";
        }
    }

    res.kernel_kills = kernel_oom_kill(cg.path(), cg.version());
    if (auto ec = cg.remove()) {
        std::cerr << "demo: cannot remove " << cg.path().string() << ": " << ec.message() << '\n';
        res.ok = false;
        co_return res;
    }
    std::cerr << "demo: removed " << cg.path().string() << '\n';
    if (!co_await wait_for(st, [&] { return st.removed || st.stream_ended; }, event_timeout)) {
        std::cerr << "demo: no removed event within 5 s\n";
    }
    if (!st.removed) res.ok = false;
    co_return res;
}

} // namespace

int run_demo(const watch_options& opts) {
    if (::geteuid() != 0) {
        std::cerr << "oomwatch demo: must run as root (it creates a memory cgroup and moves processes into it)\n";
        return exit_failure;
    }
    auto hierarchy = detail::find_memory_hierarchy();
    if (!hierarchy) {
        std::cerr << "oomwatch demo: no memory cgroup hierarchy on this machine: " << hierarchy.error().message()
                  << '\n';
        return exit_failure;
    }

    // The demo owns a cgroup and children: a reader that goes away (`| head`) must end
    // it through the write error, which cleans up, not through SIGPIPE, which would not.
    ::signal(SIGPIPE, SIG_IGN);

    asio::io_context ioc(1);
    auto cg = scratch::scratch_cgroup::create("oomwatch-demo", limit_bytes);
    if (!cg) {
        std::cerr << "oomwatch demo: cannot create a scratch cgroup: " << cg.error().message() << '\n';
        return exit_failure;
    }
    std::cerr << "demo: created " << cg->path().string() << " (cgroup v" << static_cast<int>(cg->version())
              << ", memory limit " << (limit_bytes >> 20) << " MiB)\n";

    // After cg and ioc: destroyed first, since it must not outlive either.
    boost::system::error_code ec;
    watcher w(ioc.get_executor(), cg->path(), opts, ec);
    if (ec) {
        std::cerr << "oomwatch: " << cg->path().string() << ": " << ec.message() << '\n';
        return exit_failure;
    }

    demo_state st(ioc);
    std::optional<demo_result> result;
    bool interrupted = false;
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& sec, int) {
        if (sec) return;
        interrupted = true;
        ioc.stop();  // destructors kill the children and remove the cgroup
    });

    asio::co_spawn(ioc, pump(w, st), [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
    });
    asio::co_spawn(ioc, demo(*cg, st), [&](std::exception_ptr e, demo_result r) {
        w.close();
        signals.cancel();
        if (e) std::rethrow_exception(e);
        result = r;
    });
    ioc.run();

    if (st.output_failed) return exit_failure;  // reported already
    if (interrupted || !result) {
        std::cerr << "demo: interrupted\n";
        return exit_failure;
    }
    const auto& r = *result;
    const bool exact = st.oom_kills == static_cast<std::uint64_t>(r.kills);
    std::cerr << "demo: " << r.kills << " of " << rounds << " children OOM-killed, " << st.oom_kills
              << " OOM kill" << (st.oom_kills == 1 ? "" : "s") << " reported"
              << (exact ? ", exact" : ", MISMATCH") << "; " << st.ooms << " OOM notification"
              << (st.ooms == 1 ? "" : "s");
    if (r.kernel_kills) std::cerr << "; the kernel counted " << *r.kernel_kills;
    std::cerr << '\n';
    const bool kernel_agrees = !r.kernel_kills || *r.kernel_kills == static_cast<std::uint64_t>(r.kills);
    return r.ok && exact && kernel_agrees && r.kills == rounds ? exit_ok : exit_failure;
}

} // namespace oomwatch::cli
