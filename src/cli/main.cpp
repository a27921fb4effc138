// oomwatch: the command-line program. Argument parsing and dispatch.
#include "cli.hpp"

#include <oomwatch/event.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <optional>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#ifndef OOMWATCH_VERSION
#define OOMWATCH_VERSION "0.1.0"
#endif

namespace {

using namespace oomwatch;

constexpr std::string_view usage_text =
    R"usage(Usage: oomwatch [options] watch [--pressure SPEC]... CGROUP...
       oomwatch [options] watch -r [--max-depth N] [CGROUP...]
       oomwatch [-v] watch --system [--pressure SPEC]... [--pressure-interval DURATION]
       oomwatch [options] demo
       oomwatch [--json|--table] status [-r [--max-depth N]] [CGROUP...]
       oomwatch --help | --version

Watches Linux memory cgroups (v1 and v2) for OOM events and prints one JSON object
per event on stdout, one a line:
  {"cgroup":"/sys/fs/cgroup/memory/app","kind":"oom_kill","count":1,
   "time":"2026-11-30T05:01:02.123456Z","version":1,"counters":{...}}
and on oom_kill lines also "victims":[...],"unattributed":N (see Victims below).

Commands:
  watch CGROUP...   Watch every CGROUP until SIGINT or SIGTERM, or until all of them
                    are removed. CGROUP is a cgroup directory
                    (/sys/fs/cgroup/memory/app), a path inside the memory hierarchy
                    as /proc/PID/cgroup shows it (/app), or a process whose memory
                    cgroup to watch: PID or pid:PID.
  watch -r [CGROUP...]
                    Watch the whole subtree of every CGROUP (see -r); without a
                    CGROUP, the whole memory hierarchy of the machine.
  watch --system    Report every OOM kill on the machine, global ones included, until
                    SIGINT or SIGTERM: the victims from the kernel log (/dev/kmsg:
                    root, or CAP_SYSLOG when kernel.dmesg_restrict is 1), the count
                    from oom_kill in /proc/vmstat. One oom_kill line per kill, in the
                    victim's memory cgroup; a kill whose cgroup is unknown, or whose
                    record was lost ("unattributed"), is reported in the hierarchy's
                    root; "counters" has the machine's oom_kill count, the others 0.
                    Takes no CGROUP, and none of -r, --max-depth, --local, --kinds,
                    --no-victims, --victim-hold.
  status [CGROUP...]
                    Say why OOM events might not be seen: the cgroup version and
                    mounts, the memory controller, oom_group_kill, PSI, /dev/kmsg and
                    kernel.dmesg_restrict, oom_kill in /proc/vmstat, inotify limits and
                    use, RLIMIT_NOFILE; for each CGROUP (with -r its subtree, down to
                    --max-depth) its counters, limits, usage and the last victim the
                    kernel log still holds. Each problem found says what to do. A table
                    on a terminal (or with --table), else one JSON object (--json).
  demo              (root) Create a scratch cgroup limited to 32 MiB, let the OOM
                    killer kill three children in it, and check that every kill is
                    reported exactly once.

Options:
  --kinds K[,K...]  Event kinds to report: oom, oom_kill, oom_group_kill, high, max,
                    low, created (with -r: a cgroup appeared in the tree), or all
                    (default: oom,oom_kill,oom_group_kill). Always reported: removed,
                    and with -r skipped (a cgroup found but not watched: a descriptor
                    or inotify limit, permission denied; its line has "error":REASON).
  --local           cgroup v2: count this cgroup alone (memory.events.local), not its
                    descendants. (With -r every cgroup's own counters are reported
                    anyway.)
  -r, --recursive   watch: watch each CGROUP and every cgroup below it, those that
                    exist now and those created later, at any depth; each event names
                    the cgroup where it happened ("cgroup"). Without a CGROUP: the
                    whole memory hierarchy of the machine (its mount point, e.g.
                    /sys/fs/cgroup/memory on v1, /sys/fs/cgroup on v2). A descendant's
                    removal is a removed line for it; a tree ends when its CGROUP is
                    removed. cgroup v2: an event counted in descendants that were
                    removed before they could be read is reported in their nearest
                    ancestor still there, with "origin":"removed_descendant" added to
                    its line.
  --pressure SPEC   watch: also report memory pressure, lines per trigger (at most one
                    per --pressure-interval), on every CGROUP (with --system: on the
                    whole machine, /proc/pressure/memory). Repeat it for several
                    triggers; a value is required. SPEC is, after the cgroup's version:
                      some:THRESHOLD/WINDOW, full:THRESHOLD/WINDOW  (cgroup v2,
                        --system) a PSI trigger: some (or all, full) tasks stalled on
                        memory for THRESHOLD in total within WINDOW, e.g. some:150ms/2s
                        (durations in us, ms or s; WINDOW 500ms to 10s, THRESHOLD at
                        most WINDOW; without CAP_SYS_RESOURCE, from Linux 6.4, WINDOW
                        must be a multiple of 2s)
                      low|medium|critical[,hierarchy|local]  (cgroup v1) a level of
                        memory.pressure_level, in the kernel's default mode or the one
                        given
                    A SPEC of the other version: exit 3, naming the cgroup. Not with -r.
                    A line:
                      {"cgroup":"/sys/fs/cgroup/app","kind":"pressure",
                       "trigger":"some 150ms/2s","count":1,"time":"...",
                       "averages":{"some":{"avg10":1.5,"avg60":0.3,"avg300":0.06,
                       "total":123456},"full":{...}}}
                    "trigger" is the SPEC ("medium", "low,local" on v1); "count" is
                    how many wake-ups of the trigger the line stands for, "time" the
                    earliest of them; "averages" is the pressure file at the newest
                    (avg* in percent, total in microseconds), absent on cgroup v1.
  --pressure-interval DURATION
                    With --pressure: at most one line per trigger per DURATION (us,
                    ms or s; default 1s). A trigger's first wake-up after a quiet
                    DURATION is printed at once; those within DURATION of its last
                    line are merged into one line ("count" adds up), printed when
                    DURATION has passed, or at the end. 0s: a line per wake-up, but
                    for those while a line was being written (a cgroup v1 level can
                    fire thousands of times a second under reclaim). The metrics
                    count every wake-up at once either way.
  --max-depth N     With -r: watch N levels below each CGROUP at most (0: the CGROUP
                    alone, 1: its children too, ...). Default: every level.
  --no-victims      Do not name the processes killed: every kill is counted in
                    "unattributed", and no line waits for the kernel log.
  --victim-hold MS  How long an oom_kill line may wait for the kernel log to name its
                    victims, in milliseconds (default 50; 0: never wait); a kill not
                    named by then is counted in "unattributed".
  --metrics ADDR:PORT
                    watch: serve the counts for Prometheus at http://ADDR:PORT/metrics
                    (text format 0.0.4; HTTP/1.1, GET or HEAD; 127.0.0.1:9101,
                    [::1]:9101, :9101 for every IPv4 address; port 0: any free port).
                    Metrics:
                      oomwatch_events_total{cgroup,kind}  events per cgroup and kind
                        since the start (the sum of their counts), every kind reported;
                        the watched cgroups' counting kinds from 0
                      oomwatch_unattributed_kills_total  OOM kills without a victim named
                      oomwatch_victims_total{constraint}  OOM kills with their victim
                        named, per cause: memcg, global, cpuset, mempolicy
                      oomwatch_kernel_log_records_lost_total  kernel log records lost
                      oomwatch_kernel_log_foreign_records_total  forged records ignored
                      oomwatch_pressure_events_total{cgroup,trigger}  --pressure
                        events per trigger (from 0); cgroup /proc/pressure/memory
                        is the machine
                      oomwatch_memory_pressure_ratio{cgroup,kind,window}  PSI avg10,
                        avg60, avg300 (window 10s, 60s, 300s) of kind some or full, as
                        a ratio (0 to 1), as of the last pressure event
                      oomwatch_memory_pressure_stall_seconds_total{cgroup,kind}  PSI
                        total in seconds, as of the last pressure event
                      oomwatch_watched_cgroups  cgroups watched now
                      oomwatch_build_info{version}  always 1
                      process_start_time_seconds
                    Limits: request headers of 8 KiB (else 431), no body, 10 s to send
                    a request (idle keep-alive included) or read the answer, 64
                    connections (more are closed at once).
  --textfile PATH   watch: write the same metrics to PATH for node_exporter's textfile
                    collector (name it *.prom): at start, then at most once a second
                    after events, and at the end; replaced atomically (written to
                    PATH.tmp, then renamed).
  --metrics-retention DURATION
                    How long a removed cgroup's series stay in the metrics (90s, 10m,
                    2h; default 10m): its last counts can still be scraped; then they
                    go, so that cgroups coming and going do not pile up.
  --json, --table   status: print one JSON object, or the table.
  --state FILE      watch: remember in FILE what was reported, so that after a restart
                    with the same FILE what happened while oomwatch was down is
                    reported at start, once, and nothing is reported twice: per
                    cgroup the counters of the last line printed of each kind (with
                    --system the machine's oom_kill count), and the boot ID. The
                    kills while down are "unattributed" (the kernel log is not
                    replayed); a cgroup removed and made again meanwhile, or (with
                    -r) made meanwhile, is reported from zero; on cgroup v1 only
                    oom_kill is resumed (the kernel counts no OOMs there). A FILE
                    saved before a reboot, or with other counters (--local, -r,
                    --system), is ignored: a fresh start. Written atomically
                    (FILE.tmp, renamed, flushed to disk) at start, at most once a
                    second after events, and at the end. A FILE that is not a state
                    file: exit 3.
  -v, --verbose     Show the library's debug log on stderr (twice: trace). With watch,
                    also print on stderr, once every watch is armed (an OOM from then
                    on is reported), for every cgroup:
                      oomwatch: watching DIR (cgroup vN)
                    and with -r, for every tree:
                      oomwatch: watching DIR and N cgroups below it (cgroup vN)
                    and with --system:
                      oomwatch: watching every OOM kill on the machine (kernel log,
                      counted from /proc/vmstat)
                    and with --pressure:
                      oomwatch: watching memory pressure on DIR (SPEC, ...)
                    and with --metrics, after them:
                      oomwatch: serving metrics on http://ADDR:PORT/metrics
  -h, --help        Show this help.
  --version         Show the version.

Victims: every oom_kill line has "victims", the processes killed as the kernel log
named them, and "unattributed", the kills it could not name (no permission to read
/dev/kmsg, a record lost, --no-victims); the two add up to "count". A victim:
  {"pid":1234,"comm":"app","uid":0,"constraint":"memcg",
   "task_cgroup":"/sys/fs/cgroup/memory/app","oom_cgroup":"/sys/fs/cgroup/memory/app",
   "total_vm":270573568,"anon_rss":33116160,"file_rss":1331200,"shmem_rss":0,
   "oom_score_adj":0,"kernel_seq":8123,"kernel_time_us":1234567890}
Sizes are in bytes. "uid" is null when the kernel did not print it. "constraint" is
why the OOM killer ran: memcg (a cgroup's limit: "oom_cgroup" says whose), global,
cpuset or mempolicy; "constraint_guessed":true when the kernel's report was rate
limited and it was inferred. "task_cgroup" and "oom_cgroup" are left out when
unknown. A memory.oom.group kill adds "group_kill":true and "group_cgroup". A byte of
a name that is not UTF-8 is written as the character of the same value (0xff: U+00FF),
so every line stays valid JSON.

Output: each line is handed to write(2) whole, never held in a buffer. When stdout
cannot be written (a full disk, a pipe whose reader is gone while SIGPIPE is ignored),
oomwatch stops every watch, prints "oomwatch: stdout: REASON" on stderr and exits 1.
With SIGPIPE at its default, a closed pipe kills watch with SIGPIPE as usual; demo
ignores SIGPIPE, so that it still removes its cgroup and children and exits 1.

Exit status:
  0  done: SIGINT or SIGTERM, or every watched cgroup was removed (with -r: the root
     of every tree; with --system only a signal ends it).
  1  runtime failure: stdout cannot be written, or a watch failed after it started
     ("oomwatch: CGROUP: REASON" on stderr, with --system "oomwatch: FILE: REASON";
     every other watch is stopped too), or --metrics cannot listen or --textfile
     cannot be written at start, or --state cannot be written at start; for demo: a
     kill not reported exactly once, or the demo could not run; for status:
     something prevents watching (no memory hierarchy, a CGROUP that cannot be
     watched, ...).
  2  bad usage: an unknown option, command or event kind, a missing or malformed
     argument (a --pressure SPEC, a --pressure-interval DURATION); watch --system
     with a CGROUP or an option of cgroup watches, or a cgroup v1 --pressure level;
     --pressure with -r; --pressure-interval without --pressure.
  3  a CGROUP cannot be watched at start: no such file, not a cgroup, permission
     denied, no memory controller, the cgroup v2 root (without -r), no such process,
     no memory hierarchy, a --pressure SPEC of the other cgroup version, a PSI
     trigger the kernel refuses or PSI disabled, ... ("oomwatch: CGROUP: REASON" on
     stderr, before any output; nothing is watched); with --system: the kernel log
     or /proc/vmstat cannot be read ("oomwatch: /dev/kmsg: REASON"); the --state
     FILE cannot be read or is not a state file ("oomwatch: FILE: REASON"); for
     status: a CGROUP cannot be found (the report is printed all the same).
)usage";

int usage_error(std::string_view message) {
    std::cerr << "oomwatch: " << message << "\nTry 'oomwatch --help'.\n";
    return cli::exit_usage;
}

// --help and --version: output errors count here too (`oomwatch --help > /dev/full`).
int print_or_fail(std::string_view text) {
    if (auto ec = cli::write_stdout(text)) {
        cli::report_stdout_error(ec);
        return cli::exit_failure;
    }
    return cli::exit_ok;
}

bool parse_kinds(std::string_view list, kind_set& out, std::string& bad) {
    out = kind_set{};
    while (true) {
        const auto comma = list.find(',');
        const auto name = list.substr(0, comma);
        if (name == "all") {
            out = kind_set::all();
        } else if (auto k = event_kind_from_string(name)) {
            out.insert(*k);
        } else {
            bad = std::string(name);
            return false;
        }
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    out.insert(event_kind::removed);  // reported anyway; keeps the set honest
    return true;
}

// A depth or milliseconds: decimal digits only, no sign, no more than an unsigned holds.
bool parse_unsigned(std::string_view text, unsigned& out) {
    if (text.empty()) return false;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size();
}

// An option with a value, "NAME VALUE" (the next argument, whatever it looks like) or
// "NAME=VALUE".
struct option_value {
    bool matched = false;  // the argument is this option
    bool missing = false;  // ... but "NAME" came last, without its value
    std::string_view value;
};

option_value take_value(std::string_view name, int& i, int argc, char** argv) {
    const std::string_view arg = argv[i];
    if (arg == name) {
        if (i + 1 >= argc) return {true, true, {}};
        return {true, false, argv[++i]};
    }
    if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=')
        return {true, false, arg.substr(name.size() + 1)};
    return {};
}

int missing_value(std::string_view name) { return usage_error(std::string(name) + " needs a value"); }

// An option whose value is a count ("NAME N" or "NAME=N"); `unit` names what it counts,
// for the usage error.
struct number_value {
    bool matched = false;       // the argument is this option
    std::optional<int> status;  // the usage error, already reported
    unsigned value = 0;
};

number_value take_number(std::string_view name, std::string_view unit, int& i, int argc, char** argv) {
    const auto v = take_value(name, i, argc, argv);
    if (!v.matched) return {};
    if (v.missing) return {true, missing_value(name)};
    unsigned n = 0;
    if (!parse_unsigned(v.value, n)) {
        return {true, usage_error(std::string(name) + " needs a number of " + std::string(unit) + ", not '" +
                                  std::string(v.value) + "'")};
    }
    return {true, std::nullopt, n};
}

// --metrics ADDR:PORT, --textfile PATH, --metrics-retention DURATION (also as
// --name=value): nothing when `arg` is none of them, else an error message, empty when
// the option was taken.
std::optional<std::string> metrics_option(std::string_view arg, int& i, int argc, char** argv,
                                          cli::metrics_config& cfg) {
    static constexpr std::string_view names[] = {"--metrics", "--textfile", "--metrics-retention"};
    const auto name = arg.substr(0, arg.find('='));
    if (std::find(std::begin(names), std::end(names), name) == std::end(names)) return std::nullopt;
    std::string_view value;
    if (name.size() < arg.size()) {
        value = arg.substr(name.size() + 1);
    } else if (i + 1 < argc) {
        value = argv[++i];
    } else {
        return std::string(name) + " needs a value";
    }
    if (name == "--metrics") {
        cfg.listen = cli::parse_listen_address(value);
        if (!cfg.listen) return "--metrics needs ADDR:PORT (127.0.0.1:9101, [::1]:9101, :9101), not '" + std::string(value) + "'";
    } else if (name == "--textfile") {
        if (value.empty()) return std::string("--textfile needs a file name");
        cfg.textfile = std::filesystem::path(value);
    } else {
        auto d = cli::parse_duration(value);
        if (!d) return "--metrics-retention needs a duration (90s, 10m, 2h), not '" + std::string(value) + "'";
        cfg.retention = *d;
    }
    return std::string();
}

int run(int argc, char** argv) {
    std::vector<std::string> positional;
    cli::watch_request req;
    watch_options& opts = req.opts;
    int& verbosity = req.verbosity;
    bool options_done = false;
    auto status_format = cli::status_format::automatic;  // --json, --table: of status only
    // `watch --system` reports the oom_kill lines of a system_watcher only: the options
    // that shape cgroup watches have nothing to act on there, and are refused rather
    // than silently ignored. The first one given.
    std::string_view cgroup_only;
    bool pressure_interval_given = false;  // --pressure-interval: shapes --pressure lines only
    const auto shapes_cgroup_watches = [&cgroup_only](std::string_view name) {
        if (cgroup_only.empty()) cgroup_only = name;
    };

    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (options_done || arg.empty() || arg[0] != '-' || arg == "-") {
            positional.emplace_back(arg);
            continue;
        }
        if (arg == "--") {
            options_done = true;
        } else if (arg == "-h" || arg == "--help") {
            return print_or_fail(usage_text);
        } else if (arg == "--version") {
            return print_or_fail("oomwatch " OOMWATCH_VERSION "\n");
        } else if (arg == "--json" || arg == "--table") {
            status_format = arg == "--json" ? cli::status_format::json : cli::status_format::table;
        } else if (arg == "-v" || arg == "--verbose") {
            ++verbosity;
        } else if (arg == "-vv") {
            verbosity += 2;
        } else if (arg == "--local") {
            opts.counters = watch_options::scope::local;
            shapes_cgroup_watches("--local");
        } else if (arg == "-r" || arg == "--recursive") {
            req.recursive = true;
            shapes_cgroup_watches("--recursive");
        } else if (arg == "--system") {
            req.system = true;
        } else if (arg == "--no-victims") {
            opts.victims = false;
            shapes_cgroup_watches("--no-victims");
        } else if (auto depth = take_number("--max-depth", "levels (0, 1, ...)", i, argc, argv); depth.matched) {
            if (depth.status) return *depth.status;
            req.max_depth = depth.value;
            shapes_cgroup_watches("--max-depth");
        } else if (auto hold = take_number("--victim-hold", "milliseconds (0, 50, ...)", i, argc, argv);
                   hold.matched) {
            if (hold.status) return *hold.status;
            opts.victim_hold = std::chrono::milliseconds(hold.value);
            shapes_cgroup_watches("--victim-hold");
        } else if (auto kinds_arg = take_value("--kinds", i, argc, argv); kinds_arg.matched) {
            if (kinds_arg.missing) return missing_value("--kinds");
            std::string bad;
            if (!parse_kinds(kinds_arg.value, opts.kinds, bad)) {
                return usage_error("unknown event kind '" + bad + "' in --kinds");
            }
            shapes_cgroup_watches("--kinds");
        } else if (auto pr = take_value("--pressure", i, argc, argv); pr.matched) {
            if (pr.missing) return missing_value("--pressure");
            std::string problem;
            auto spec = cli::parse_pressure_spec(pr.value, problem);
            if (!spec) return usage_error(problem);
            req.pressure.push_back(std::move(*spec));
        } else if (auto pi = take_value("--pressure-interval", i, argc, argv); pi.matched) {
            if (pi.missing) return missing_value("--pressure-interval");
            auto d = cli::parse_psi_duration(pi.value);
            if (!d)
                return usage_error("--pressure-interval needs a duration (1s, 250ms, 0s), not '" +
                                   std::string(pi.value) + "'");
            req.pressure_interval = *d;
            pressure_interval_given = true;
        } else if (auto st = take_value("--state", i, argc, argv); st.matched) {
            if (st.missing || st.value.empty()) return usage_error("--state needs a file name");
            req.state = std::filesystem::path(st.value);
        } else if (auto m = metrics_option(arg, i, argc, argv, req.metrics)) {
            if (!m->empty()) return usage_error(*m);
        } else {
            return usage_error("unknown option '" + std::string(arg) + "'");
        }
    }

    if (positional.empty()) {
        std::cerr << usage_text;
        return cli::exit_usage;
    }
    cli::setup_logging(verbosity);

    const std::string& command = positional.front();
    if (!req.pressure.empty() && command != "watch") return usage_error("--pressure is an option of watch");
    if (pressure_interval_given && req.pressure.empty()) return usage_error("--pressure-interval needs --pressure");
    if (command == "status") {
        req.targets.assign(positional.begin() + 1, positional.end());
        if (auto problem = cli::status_usage_problem(req)) return usage_error(*problem);
        return cli::run_status(req, status_format);
    }
    if (status_format != cli::status_format::automatic) return usage_error("--json and --table are options of status");
    if (command == "watch") {
        if (req.system) {
            if (positional.size() > 1) {
                return usage_error("watch --system takes no cgroup: it reports every OOM kill on the machine");
            }
            if (!cgroup_only.empty()) return usage_error(std::string(cgroup_only) + " does not apply to watch --system");
            for (const auto& p : req.pressure) {
                if (!p.psi())
                    return usage_error("watch --system takes PSI triggers (some:THRESHOLD/WINDOW, full:...), not the "
                                       "cgroup v1 level '" + p.name + "'");
            }
            return cli::run_watch(req);
        }
        if (req.recursive && !req.pressure.empty()) return usage_error("--pressure does not apply to watch -r");
        if (req.max_depth && !req.recursive) return usage_error("--max-depth needs --recursive (-r)");
        if (!req.metrics.enabled() && req.metrics.retention != cli::metrics_config{}.retention)
            return usage_error("--metrics-retention needs --metrics or --textfile");
        // With -r and no cgroup: the whole memory hierarchy.
        if (positional.size() < 2 && !req.recursive) return usage_error("watch needs at least one cgroup");
        req.targets.assign(positional.begin() + 1, positional.end());
        return cli::run_watch(req);
    }
    if (command == "demo") {
        if (positional.size() > 1) return usage_error("demo takes no arguments");
        if (req.recursive || req.max_depth) return usage_error("--recursive and --max-depth are options of watch");
        if (req.system) return usage_error("--system is an option of watch");
        if (req.metrics.enabled()) return usage_error("--metrics and --textfile are options of watch");
        if (req.state) return usage_error("--state is an option of watch");
        return cli::run_demo(opts);
    }
    return usage_error("unknown command '" + command + "'");
}

} // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "oomwatch: " << e.what() << '\n';
        return oomwatch::cli::exit_failure;
    }
}
