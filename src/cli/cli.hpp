// Pieces of the `oomwatch` command-line program shared between its source files.
#pragma once

#include "exporter.hpp"

#include <oomwatch/event.hpp>
#include <oomwatch/pressure_event.hpp>
#include <oomwatch/watcher.hpp>

#include <boost/json/object.hpp>
#include <boost/system/error_code.hpp>

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace oomwatch::cli {

/// Exit statuses (documented in --help and README.md).
inline constexpr int exit_ok = 0;           ///< done: a signal, or every cgroup removed
inline constexpr int exit_failure = 1;      ///< runtime failure: stdout, a watch that failed later, ...
inline constexpr int exit_usage = 2;        ///< bad usage only
inline constexpr int exit_cannot_watch = 3; ///< a cgroup could not be watched at start

/// A console sink on stderr, "oomwatch[severity]: message"; warning and up, or
/// debug (verbosity 1) or trace (2 and more).
void setup_logging(int verbosity);

/// "2026-11-30T05:01:02.123456Z".
std::string format_rfc3339(std::chrono::system_clock::time_point tp);

/// One event as a single-line JSON object (no newline).
std::string event_to_json(const oom_event& ev);

/// A path as JSON text: a byte that is not UTF-8 becomes the character of its value.
std::string json_path(const std::filesystem::path& p);

/// A victim as the JSON object of the `victims` arrays.
boost::json::object victim_to_json(const victim& v);

/// Writes all of `text` to stdout with write(2) (retrying on EINTR, waiting on a
/// non-blocking descriptor); the error when it cannot, e.g. ENOSPC or EPIPE.
[[nodiscard]] boost::system::error_code write_stdout(std::string_view text);

/// Writes `event_to_json(ev)` and a newline to stdout, handed to write(2) whole (a line
/// is never held in a buffer). Returns the error of a write that failed.
[[nodiscard]] boost::system::error_code print_event(const oom_event& ev);

/// One `--pressure SPEC`: a PSI trigger (cgroup v2, --system) or a cgroup v1 level.
struct pressure_spec {
    std::variant<pressure_trigger, pressure_level_trigger> trigger;
    std::string name;  ///< in JSON lines and metrics: "some 150ms/2s", "medium", "low,local"
    bool psi() const { return std::holds_alternative<pressure_trigger>(trigger); }
};

/// `some:150ms/2s`, `full:…`, `low|medium|critical[,hierarchy|local]`; else nothing,
/// and `problem` says why (a usage error).
std::optional<pressure_spec> parse_pressure_spec(std::string_view text, std::string& problem);

/// A duration of a --pressure SPEC or of --pressure-interval: digits and a unit, us, ms
/// or s ("150ms", "2s", "0s"); nothing when malformed (no unit, a sign, too large).
std::optional<std::chrono::microseconds> parse_psi_duration(std::string_view text);

/// A pressure event as a single-line JSON object (no newline); `trigger` is its SPEC's name.
std::string pressure_event_to_json(const pressure_event& ev, std::string_view trigger);

/// "oomwatch: stdout: <message>" on stderr.
void report_stdout_error(const boost::system::error_code& ec);

/// What `oomwatch watch` was asked to do.
struct watch_request {
    std::vector<std::string> targets;  ///< as given; empty only with `recursive` (the whole hierarchy) or `system`
    watch_options opts;                ///< with -r, its kinds and victim options go to the trees
    bool recursive = false;            ///< -r: each target's whole subtree (tree_watcher)
    bool system = false;               ///< --system: every OOM kill on the machine (system_watcher), no targets
    std::optional<unsigned> max_depth; ///< --max-depth, with `recursive` only
    int verbosity = 0;                 ///< >= 1: announce each watch on stderr once armed
    metrics_config metrics;            ///< --metrics, --textfile, --metrics-retention
    std::optional<std::filesystem::path> state; ///< --state FILE: resume across restarts
    std::vector<pressure_spec> pressure;         ///< --pressure SPEC...: per CGROUP, or the machine with `system`
    /// --pressure-interval: at most one pressure line per trigger per this (0: one per wake-up)
    std::chrono::microseconds pressure_interval{std::chrono::seconds(1)};
};

/// `oomwatch watch [-r] TARGET...`, `oomwatch watch --system`
int run_watch(const watch_request& req);

/// A CGROUP argument that names a process ("1234", "pid:1234"); nothing for a path, and
/// then `malformed` says whether it was meant as a process ID but is none ("pid:abc").
std::optional<pid_t> parse_pid_target(std::string_view arg, bool& malformed);

/// How `oomwatch status` prints: `automatic` is a table on a terminal, else JSON.
enum class status_format { automatic, table, json };

/// Why `oomwatch status` cannot run with these options and targets (a usage error),
/// or nothing.
std::optional<std::string> status_usage_problem(const watch_request& req);

/// `oomwatch status [-r [--max-depth N]] [CGROUP...]`
int run_status(const watch_request& req, status_format format);

/// `oomwatch demo`
int run_demo(const watch_options& opts);

} // namespace oomwatch::cli
