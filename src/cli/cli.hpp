// Pieces of the `oomwatch` command-line program shared between its source files.
#pragma once

#include <oomwatch/event.hpp>
#include <oomwatch/watcher.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace oomwatch::cli {

/// Exit codes.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

/// A console sink on stderr, "oomwatch[severity]: message"; warning and up, or
/// debug (verbosity 1) or trace (2 and more).
void setup_logging(int verbosity);

/// "2026-11-30T05:01:02.123456Z".
std::string format_rfc3339(std::chrono::system_clock::time_point tp);

/// One event as a single-line JSON object (no newline).
std::string event_to_json(const oom_event& ev);

/// Writes `event_to_json(ev)` and a newline to stdout, and flushes.
void print_event(const oom_event& ev);

/// `oomwatch watch TARGET...`
int run_watch(const std::vector<std::string>& targets, const watch_options& opts);

/// `oomwatch demo`
int run_demo(const watch_options& opts);

} // namespace oomwatch::cli
