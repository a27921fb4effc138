// `oomwatch watch TARGET...`: one watcher per target, events as JSON lines.
#include "cli.hpp"

#include <oomwatch/error.hpp>
#include <oomwatch/watcher.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <climits>
#include <csignal>
#include <exception>
#include <iostream>
#include <optional>
#include <string_view>

namespace oomwatch::cli {

namespace asio = boost::asio;

namespace {

// "1234" or "pid:1234" name a process; anything else is a path.
std::optional<pid_t> parse_pid_target(std::string_view arg, bool& malformed) {
    malformed = false;
    const bool prefixed = arg.starts_with("pid:");
    if (prefixed) arg.remove_prefix(4);
    if (arg.empty()) {
        malformed = prefixed;
        return std::nullopt;
    }
    long long value = 0;
    for (char c : arg) {
        if (c < '0' || c > '9' || value > INT_MAX) {
            malformed = prefixed || value > INT_MAX;
            return std::nullopt;
        }
        value = value * 10 + (c - '0');
    }
    if (value <= 0 || value > INT_MAX) {
        malformed = true;
        return std::nullopt;
    }
    return static_cast<pid_t>(value);
}

struct watch_state {
    std::vector<watcher>& watchers;
    asio::signal_set& signals;
    std::size_t running = 0;
    bool stopping = false;  // a signal, a failure, or the last pump ended: no more output
    int status = exit_ok;
};

// Stops every watcher (their pending waits complete, so every pump ends) and the signal
// wait: the io_context then runs out of work and run_watch returns. Idempotent.
void stop_all(watch_state& st) {
    st.stopping = true;
    for (auto& w : st.watchers) w.close();
    st.signals.cancel();
}

// A failure: remember it, stop everything. The first message is the one printed.
void fail(watch_state& st) {
    st.status = exit_failure;
    stop_all(st);
}

asio::awaitable<void> pump(watcher& w, watch_state& st) {
    const std::string name = w.cgroup().string();
    for (;;) {
        auto [ec, ev] = co_await w.async_next_event(asio::as_tuple(asio::use_awaitable));
        if (st.stopping) break;  // an event that raced with the shutdown is not printed
        if (ec) {
            // Aborted or closed: we are shutting down. Removed: seen as the event already.
            if (ec != asio::error::operation_aborted && ec != error::watcher_closed &&
                ec != error::cgroup_removed) {
                // A watch that failed for good names the file it concerns.
                if (auto f = w.failure())
                    std::cerr << f->what() << '\n';
                else
                    std::cerr << "oomwatch: " << name << ": " << ec.message() << '\n';
                fail(st);
            }
            break;
        }
        if (auto wec = print_event(ev)) {
            // Nobody can read what we report any more (/dev/full, a closed pipe with
            // SIGPIPE ignored, ...): carrying on would only discard events.
            report_stdout_error(wec);
            fail(st);
            break;
        }
        if (ev.kind == event_kind::removed) break;  // always the last one
    }
    if (--st.running == 0) stop_all(st);  // every cgroup removed (or stopped)
}

} // namespace

int run_watch(const std::vector<std::string>& targets, const watch_options& opts, int verbosity) {
    asio::io_context ioc(1);
    // First: from the moment a watch is announced, SIGINT and SIGTERM end it cleanly.
    asio::signal_set signals(ioc, SIGINT, SIGTERM);

    std::vector<watcher> watchers;
    watchers.reserve(targets.size());  // the pumps hold references: no reallocation later

    // All of them first: a target that cannot be watched stops us before any output.
    for (const auto& target : targets) {
        bool malformed = false;
        const auto pid = parse_pid_target(target, malformed);
        if (malformed) {
            std::cerr << "oomwatch: " << target << ": not a process ID\nTry 'oomwatch --help'.\n";
            return exit_usage;
        }
        boost::system::error_code ec;
        if (pid) {
            watchers.emplace_back(ioc.get_executor(), process{*pid}, opts, ec);
        } else {
            watchers.emplace_back(ioc.get_executor(), std::filesystem::path(target), opts, ec);
        }
        if (ec) {
            std::cerr << "oomwatch: " << target << ": " << ec.message() << '\n';
            return exit_cannot_watch;
        }
    }

    // Every watch is armed once its constructor returned: an OOM from now on is reported.
    if (verbosity >= 1) {
        for (const auto& w : watchers) {
            std::cerr << "oomwatch: watching " << w.cgroup().string() << " (cgroup v"
                      << static_cast<int>(w.version()) << ")\n";
        }
    }

    watch_state st{watchers, signals};
    signals.async_wait([&st](const boost::system::error_code& ec, int) {
        if (!ec) stop_all(st);
    });

    auto rethrow = [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
    };
    for (auto& w : watchers) {
        ++st.running;
        asio::co_spawn(ioc, pump(w, st), rethrow);
    }
    ioc.run();
    return st.status;
}

} // namespace oomwatch::cli
