// The metrics of `oomwatch watch --metrics/--textfile`: counts per cgroup and kind, kept
// in memory, rendered in the Prometheus text exposition format (0.0.4). No I/O here:
// http_server serves the text, textfile writes it.
#pragma once

#include <oomwatch/event.hpp>
#include <oomwatch/kernel_log.hpp>
#include <oomwatch/pressure_event.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace oomwatch::cli {

/// "text/plain; version=0.0.4; charset=utf-8": what the rendering is.
inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

/// A label value escaped for the exposition format: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);

class metrics_registry {
public:
    using clock = std::chrono::steady_clock;

    struct options {
        std::string version;                                       ///< oomwatch_build_info{version}
        std::chrono::system_clock::time_point process_start;       ///< process_start_time_seconds
        std::chrono::steady_clock::duration retention = std::chrono::minutes(10);  ///< of a removed cgroup's series
        std::function<clock::time_point()> now = [] { return clock::now(); };   ///< injectable for tests
        std::function<std::size_t()> watched_cgroups = [] { return std::size_t{0}; };  ///< the gauge, read at render
        /// The kernel-log reader's statistics, read at render; none: not shown.
        std::function<kernel_log_stats()> kernel_log;
    };

    explicit metrics_registry(options opts);

    /// A cgroup watched from the start: its series of `kinds` (the counting kinds among
    /// them) are shown at 0 before its first event, so that a first kill is an increase.
    void add_cgroup(const std::string& cgroup, kind_set kinds);

    /// One event as printed: `ev.count` added to its series; a `removed` (or `skipped`:
    /// nothing more comes for it) cgroup's series are kept for the retention, then go.
    void record(const oom_event& ev);

    /// A `--pressure` trigger of `cgroup` (its SPEC's name): its event count is shown at
    /// 0 before its first event.
    void add_pressure_trigger(const std::string& cgroup, const std::string& trigger);

    /// A pressure event as printed, of the trigger named `trigger`: counted, and the
    /// cgroup's averages and stall totals replaced by the event's (when it has them).
    /// The series go with the cgroup's (a `removed` of its OOM watch).
    void record(const pressure_event& ev, const std::string& trigger);

    /// The whole exposition text. Drops the series whose retention has passed.
    std::string render();

    /// When the next removed cgroup's series expire, if any does.
    std::optional<clock::time_point> next_expiry() const;

private:
    struct cgroup_series {
        std::uint64_t counts[event_kind_count] = {};
        bool shown[event_kind_count] = {};  // a series exists (at 0 before any event)
        std::optional<clock::time_point> gone_at;  // removed or skipped: expires after the retention
        std::map<std::string, std::uint64_t> pressure_events;  // per --pressure trigger
        std::optional<pressure_averages> averages;             // of the last pressure event that had them
    };
    void render_pressure(std::string& out) const;
    void expire(clock::time_point now);

    options opts_;
    std::map<std::string, cgroup_series> cgroups_;  // sorted: a stable rendering
    std::uint64_t unattributed_ = 0;
    std::uint64_t by_constraint_[4] = {};  // named victims, per oom_constraint
};

} // namespace oomwatch::cli
