// `oomwatch watch TARGET...`: one watcher per target (with -r: one tree_watcher per
// target, or one for the whole memory hierarchy; with --system: one system_watcher),
// events as JSON lines; with --pressure, a pressure_watcher next to each watcher (or the
// system watch), its events as JSON lines too.
#include "cli.hpp"
#include "pressure_lines.hpp"
#include "service.hpp"
#include "state.hpp"

#include <oomwatch/cgroup.hpp>
#include <oomwatch/error.hpp>
#include <oomwatch/pressure_watcher.hpp>
#include <oomwatch/system_watcher.hpp>
#include <oomwatch/tree_watcher.hpp>
#include <oomwatch/watcher.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/resource.h>

#include <climits>
#include <csignal>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace oomwatch::cli {

namespace asio = boost::asio;

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

namespace {

// The printing of one trigger: its lines (--pressure-interval), and the timer that
// prints a merged one when due.
struct trigger_output {
    pressure_lines lines;
    asio::steady_timer timer;  // armed only while a line is pending
};

// A pressure_watcher with the names of its triggers (pressure_event::trigger indexes them).
struct pressure_watch {
    pressure_watcher w;
    std::vector<std::string> triggers;
    std::vector<trigger_output> outputs;  // one per trigger
    bool removal_printed = false;  // the cgroup's removed line is out: no pressure line may follow it

    template <class Token>
    auto async_next_event(Token&& token) {
        return w.async_next_event(std::forward<Token>(token));
    }
    std::optional<cgroup_error> failure() const { return w.failure(); }
    void close() { w.close(); }
};

struct watch_state {
    std::vector<watcher>& watchers;
    std::vector<tree_watcher>& trees;
    std::vector<system_watcher>& systems;  // one with --system, else none
    std::vector<pressure_watch>& pressures;  // --pressure: one per watcher, or for the machine
    asio::signal_set& signals;
    service_notifier& service;
    metrics_exporter* exporter = nullptr;  // --metrics/--textfile: fed each event printed, and each pressure event
    state_keeper* keeper = nullptr;        // --state: fed each event printed
    std::size_t running = 0;
    bool stopping = false;  // a signal, a failure, or the last pump ended: no more output
    bool stdout_failed = false;  // then the pending pressure lines are not even tried
    int status = exit_ok;
};

// One pressure line, handed to write(2) whole; the error of a write that failed.
boost::system::error_code print_pressure_line(const pressure_watch& p, const pressure_event& ev) {
    return write_stdout(pressure_event_to_json(ev, p.triggers.at(ev.trigger)) + '\n');
}

// Prints the pending (merged) lines of `p` now, due or not, and disarms its timers:
// nothing is lost at the end of a watch, and no timer keeps the io_context running. A
// failed write is reported (status 1) and ends the printing; the caller stops everything.
bool flush_pressure_lines(pressure_watch& p, watch_state& st) {
    for (auto& out : p.outputs) {
        out.timer.cancel();
        const auto ev = out.lines.take();
        if (!ev || st.stdout_failed) continue;
        if (auto ec = print_pressure_line(p, *ev)) {
            report_stdout_error(ec);
            st.stdout_failed = true;
            st.status = exit_failure;
        }
    }
    return !st.stdout_failed;
}

// Stops every watcher (their pending waits complete, so every pump ends) and the signal
// wait: the io_context then runs out of work and run_watch returns. Idempotent. The
// merged pressure lines still pending are printed first, unless stdout failed already.
void stop_all(watch_state& st) {
    st.stopping = true;
    for (auto& p : st.pressures) flush_pressure_lines(p, st);
    st.service.stopping();
    for (auto& w : st.watchers) w.close();
    for (auto& t : st.trees) t.close();
    for (auto& s : st.systems) s.close();
    for (auto& p : st.pressures) p.close();
    st.signals.cancel();
    if (st.exporter) st.exporter->stop();
    if (st.keeper) st.keeper->stop();
}

// A failure: remember it, stop everything. The first message is the one printed.
void fail(watch_state& st) {
    st.status = exit_failure;
    stop_all(st);
}

// What an error without a `failure()` is reported against: the watched cgroup, a
// tree's root; for the system watch, the kernel log it reads.
std::string watch_name(const watcher& w) { return w.cgroup().string(); }
std::string watch_name(const tree_watcher& t) { return t.root().string(); }
std::string watch_name(const system_watcher&) { return "/dev/kmsg"; }
std::string watch_name(const pressure_watch& p) { return p.w.cgroup().string(); }

// Whether `ev` ends the watch: a watcher's `removed` (always its last event); a tree's
// root's (its descendants' do not end it; should the root's event name it differently,
// the next wait ends with cgroup_removed). A system watch has no `removed`.
bool ends_watch(const watcher&, const oom_event& ev) { return ev.kind == event_kind::removed; }
bool ends_watch(const tree_watcher& t, const oom_event& ev) {
    return ev.kind == event_kind::removed && ev.cgroup == t.root();
}
bool ends_watch(const system_watcher&, const oom_event&) { return false; }
bool ends_watch(const pressure_watch&, const pressure_event& ev) { return ev.kind == pressure_kind::removed; }

// Whether a line was written; if not, nobody can read what we report any more (/dev/full,
// a closed pipe with SIGPIPE ignored, ...): carrying on would only discard events.
bool written(const boost::system::error_code& ec, watch_state& st) {
    if (!ec) return true;
    report_stdout_error(ec);
    st.stdout_failed = true;
    fail(st);
    return false;
}

// Prints an event and feeds the metrics and the state; false when stdout failed.
template <class Watch>
bool deliver(const Watch& w, const oom_event& ev, watch_state& st) {
    if constexpr (std::is_same_v<Watch, watcher>) {
        // The pressure lines of the cgroup come before its removal, none after it.
        if (ev.kind == event_kind::removed) {
            for (auto& p : st.pressures) {
                if (p.w.cgroup() != w.cgroup()) continue;
                if (!flush_pressure_lines(p, st)) {
                    fail(st);
                    return false;
                }
                p.removal_printed = true;
            }
        }
    }
    if (!written(print_event(ev), st)) return false;
    if (st.exporter) st.exporter->record(ev);
    if (st.keeper) st.keeper->record(ev, std::is_same_v<Watch, system_watcher>);
    return true;
}

// Prints the merged line of `out` when its timer fires (unless flushed or stopped meanwhile).
void arm_pressure_timer(pressure_watch& p, std::size_t trigger, watch_state& st) {
    auto& out = p.outputs.at(trigger);
    out.timer.expires_at(*out.lines.due());
    out.timer.async_wait([&p, &out, &st](const boost::system::error_code& ec) {
        if (ec || st.stopping) return;
        // Not due (a wait that completed before a flush and a new merge): the new wait prints it.
        if (auto ev = out.lines.take_due(pressure_lines::clock::now()))
            written(print_pressure_line(p, *ev), st);
    });
}

bool deliver(pressure_watch& p, const pressure_event& ev, watch_state& st) {
    // `removed` is printed by the cgroup's OOM watch already: one line per removal. Its
    // pending pressure lines go first (if that removal line is not out already).
    if (ev.kind != pressure_kind::pressure) {
        if (ev.kind == pressure_kind::removed && !p.removal_printed && !flush_pressure_lines(p, st)) {
            fail(st);
            return false;
        }
        return true;
    }
    const std::string& trigger = p.triggers.at(ev.trigger);
    // Every event counts, at once; only the lines are merged.
    if (st.exporter) st.exporter->record(ev, trigger);
    // A wake-up that raced with the removal: counted, but its line would follow the removal's.
    if (p.removal_printed) return true;
    auto& out = p.outputs.at(ev.trigger);
    const bool was_pending = out.lines.due().has_value();
    if (auto now = out.lines.offer(ev, pressure_lines::clock::now()))
        return written(print_pressure_line(p, *now), st);
    if (!was_pending) arm_pressure_timer(p, ev.trigger, st);
    return true;
}

template <class Watch>
asio::awaitable<void> pump(Watch& w, watch_state& st) {
    const std::string name = watch_name(w);
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
        if (!deliver(w, ev, st) || ends_watch(w, ev)) break;
    }
    if (--st.running == 0) stop_all(st);  // every cgroup removed (or stopped)
}

// A tree on v1 holds two eventfds per cgroup: a machine's whole hierarchy can need more
// descriptors than the usual soft limit of 1024. Raise it to the hard limit (we start no
// other programs that could mind); a failure only means the old limit stays.
void raise_fd_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max) return;
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
}

// The pressure watch of the cgroup `dir` of version `v` (none: the machine) with the
// --pressure triggers; false, with the reason on stderr, when it cannot be made. The
// kind of trigger follows the version: PSI on v2 and the machine, levels on v1.
bool add_pressure_watch(std::vector<pressure_watch>& out, const asio::any_io_executor& ex,
                        const std::filesystem::path& dir, std::optional<cgroup_version> v,
                        const std::vector<pressure_spec>& specs, std::chrono::microseconds interval) {
    const bool v1 = v == cgroup_version::v1;
    std::vector<pressure_trigger> psi;
    std::vector<pressure_level_trigger> levels;
    std::vector<std::string> names;
    for (const auto& s : specs) {
        if (s.psi() == v1) {
            std::cerr << "oomwatch: " << dir.string() << ": "
                      << (v1 ? "cgroup v1 has pressure levels (low, medium, critical), not PSI triggers such as '"
                             : "cgroup v2 has PSI triggers (some:THRESHOLD/WINDOW, full:...), not pressure levels "
                               "such as '")
                      << s.name << "'\n";
            return false;
        }
        if (v1)
            levels.push_back(std::get<pressure_level_trigger>(s.trigger));
        else
            psi.push_back(std::get<pressure_trigger>(s.trigger));
        names.push_back(s.name);
    }
    std::vector<trigger_output> outputs;
    for (std::size_t i = 0; i < names.size(); ++i)
        outputs.push_back({pressure_lines(interval), asio::steady_timer(ex)});
    // The throwing forms: their errors name the file (memory.pressure, cgroup.event_control, ...).
    try {
        if (!v)
            out.push_back(
                {pressure_watcher(ex, system_pressure{}, std::move(psi)), std::move(names), std::move(outputs)});
        else if (v1)
            out.push_back({pressure_watcher(ex, dir, std::move(levels)), std::move(names), std::move(outputs)});
        else
            out.push_back({pressure_watcher(ex, dir, std::move(psi)), std::move(names), std::move(outputs)});
    } catch (const cgroup_error& e) {
        std::cerr << e.what() << '\n';
        return false;
    }
    return true;
}

// "cgroup" or "cgroups".
std::string count_of_cgroups(std::size_t n) { return std::to_string(n) + (n == 1 ? " cgroup" : " cgroups"); }

} // namespace

int run_watch(const watch_request& req) {
    asio::io_context ioc(1);
    // First: from the moment a watch is announced, SIGINT and SIGTERM end it cleanly.
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    service_notifier service(ioc);

    // The pumps hold references: no reallocation once they run.
    std::vector<watcher> watchers;
    std::vector<tree_watcher> trees;
    std::vector<system_watcher> systems;
    std::vector<pressure_watch> pressures;
    pressures.reserve(req.targets.size() + 1);

    tree_options topts;
    topts.kinds = req.opts.kinds;
    topts.max_depth = req.max_depth;
    topts.victims = req.opts.victims;
    topts.victim_hold = req.opts.victim_hold;
    if (req.recursive) raise_fd_limit();

    // --state: read before the watches, which resume from it.
    std::optional<state_keeper> keeper;
    if (req.state) {
        const bool local = req.recursive || req.opts.counters == watch_options::scope::local;
        keeper.emplace(ioc.get_executor(), *req.state, req.system ? "system" : local ? "local" : "hierarchical",
                       req.verbosity >= 1);
        if (!keeper->error().empty()) {
            std::cerr << "oomwatch: " << keeper->error() << '\n';
            return exit_cannot_watch;
        }
        if (keeper->resuming()) {
            // Present at start and not saved: made while we were down, all of it news.
            topts.resume_from = [&keeper](const std::filesystem::path& dir) {
                return std::optional<memory_counters>(keeper->saved(dir.native()).value_or(memory_counters{}));
            };
        }
    }

    if (req.system) {
        system_options sopts;
        if (keeper) sopts.resume_from = keeper->saved_vmstat();
        // The throwing form: its error names the file that failed (/dev/kmsg, /proc/vmstat).
        try {
            systems.emplace_back(ioc.get_executor(), sopts);
        } catch (const cgroup_error& e) {
            std::cerr << e.what() << '\n';
            return exit_cannot_watch;
        }
        if (keeper) keeper->start_system(systems.back().counted_from());
        if (!req.pressure.empty() &&
            !add_pressure_watch(pressures, ioc.get_executor(), "/proc/pressure/memory", std::nullopt, req.pressure,
                                req.pressure_interval))
            return exit_cannot_watch;
    }

    // -r without a cgroup: the whole memory hierarchy, from its mount point.
    std::vector<std::string> targets = req.targets;
    if (targets.empty() && req.recursive) {
        boost::system::error_code ec;
        const auto h = find_memory_hierarchy(ec);
        if (ec) {
            std::cerr << "oomwatch: cannot find the memory cgroup hierarchy: " << ec.message() << '\n';
            return exit_cannot_watch;
        }
        targets.push_back(h.mount_point.string());
    }
    if (req.recursive)
        trees.reserve(targets.size());
    else
        watchers.reserve(targets.size());

    // All of them first: a target that cannot be watched stops us before any output.
    for (const auto& target : targets) {
        bool malformed = false;
        const auto pid = parse_pid_target(target, malformed);
        if (malformed) {
            std::cerr << "oomwatch: " << target << ": not a process ID\nTry 'oomwatch --help'.\n";
            return exit_usage;
        }
        boost::system::error_code ec;
        if (req.recursive) {
            std::filesystem::path root(target);
            if (pid) {
                root = memory_cgroup_of(*pid, ec).directory;
                // A process in the root of the v2 hierarchy: a tree may start there.
                if (ec == error::root_cgroup) root = find_memory_hierarchy(ec).mount_point;
            }
            if (!ec) trees.emplace_back(ioc.get_executor(), root, topts, ec);
        } else {
            watch_options opts = req.opts;
            if (keeper && keeper->resuming()) {
                // The directory the watcher will take, to find what was saved for it.
                boost::system::error_code rec;
                const auto loc = pid ? memory_cgroup_of(*pid, rec) : resolve_cgroup(target, rec);
                if (!rec) opts.resume_from = keeper->saved(loc.directory.native());
            }
            if (pid)
                watchers.emplace_back(ioc.get_executor(), process{*pid}, opts, ec);
            else
                watchers.emplace_back(ioc.get_executor(), std::filesystem::path(target), opts, ec);
        }
        if (ec) {
            std::cerr << "oomwatch: " << target << ": " << ec.message() << '\n';
            return exit_cannot_watch;
        }
        // (Not with -r: main refuses it; a tree's cgroups come and go.)
        if (!req.recursive && !req.pressure.empty() &&
            !add_pressure_watch(pressures, ioc.get_executor(), watchers.back().cgroup(), watchers.back().version(),
                                req.pressure, req.pressure_interval))
            return exit_cannot_watch;
    }

    if (keeper) {
        // Taken before anything is printed: the baselines, or what is still owed.
        for (const auto& w : watchers) keeper->start_cgroup(w.cgroup().native(), w.version(), w.counters(), false);
        for (const auto& t : trees)
            for (const auto& [dir, c] : t.counters()) keeper->start_cgroup(dir.native(), t.version(), c, keeper->resuming());
        if (auto e = keeper->write_now()) {
            std::cerr << "oomwatch: " << *e << '\n';
            return exit_failure;
        }
    }

    // After the watches: a cgroup that cannot be watched is reported first (status 3).
    std::unique_ptr<metrics_exporter> exporter;
    if (req.metrics.enabled()) {
        std::vector<std::string> dirs;
        for (const auto& w : watchers) dirs.push_back(w.cgroup().string());
        for (const auto& t : trees) dirs.push_back(t.root().string());
        std::vector<std::pair<std::string, std::string>> triggers;
        for (const auto& p : pressures)
            for (const auto& t : p.triggers) triggers.emplace_back(p.w.cgroup().string(), t);
        exporter = start_exporter(ioc.get_executor(), req.metrics, req.opts.kinds, dirs, triggers, [&watchers, &trees] {
            std::size_t n = 0;
            for (const auto& w : watchers) n += w.is_open() ? 1 : 0;
            for (const auto& t : trees) n += t.is_open() ? t.size() : 0;
            return n;
        });
        if (!exporter) return exit_failure;
    }

    // Every watch is armed once its constructor returned: an OOM from now on is reported
    // (in a tree: in every cgroup it found; those created later are counted from zero).
    if (req.verbosity >= 1) {
        for (const auto& w : watchers) {
            std::cerr << "oomwatch: watching " << w.cgroup().string() << " (cgroup v"
                      << static_cast<int>(w.version()) << ")\n";
        }
        for (const auto& t : trees) {
            const auto n = t.size();
            std::cerr << "oomwatch: watching " << t.root().string() << " and "
                      << count_of_cgroups(n > 0 ? n - 1 : 0) << " below it (cgroup v"
                      << static_cast<int>(t.version()) << ")\n";
        }
        for (const auto& s : systems) {
            std::cerr << "oomwatch: watching every OOM kill on the machine "
                      << (s.exact() ? "(kernel log, counted from /proc/vmstat)\n"
                                    : "(kernel log; this kernel's /proc/vmstat has no oom_kill: kills whose "
                                      "record was lost are not counted)\n");
        }
        for (const auto& p : pressures) {
            std::string triggers;
            for (const auto& t : p.triggers) triggers += (triggers.empty() ? "" : ", ") + t;
            std::cerr << "oomwatch: watching memory pressure on " << p.w.cgroup().string() << " (" << triggers << ")\n";
        }
        if (exporter && exporter->url()) std::cerr << "oomwatch: serving metrics on " << *exporter->url() << '\n';
    }

    service.ready();  // under systemd: READY=1, and the watchdog pings start
    watch_state st{watchers, trees, systems, pressures, signals, service, exporter.get(), keeper ? &*keeper : nullptr};
    signals.async_wait([&st](const boost::system::error_code& ec, int) {
        if (!ec) stop_all(st);
    });

    auto rethrow = [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
    };
    auto start_pumps = [&](auto& watches) {
        for (auto& w : watches) {
            ++st.running;
            asio::co_spawn(ioc, pump(w, st), rethrow);
        }
    };
    start_pumps(watchers);
    start_pumps(trees);
    start_pumps(systems);
    start_pumps(pressures);
    ioc.run();
    return st.status;
}

} // namespace oomwatch::cli
