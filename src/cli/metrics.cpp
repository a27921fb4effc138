// The metrics registry and its text exposition format (Prometheus 0.0.4).
#include "metrics.hpp"

#include <cstdio>

namespace oomwatch::cli {

namespace {

// The kinds counted per cgroup before their first event (add_cgroup): the counters.
// removed, failed, created and skipped happen once per cgroup: they get a series when
// they happen.
constexpr event_kind counting_kinds[] = {event_kind::oom,  event_kind::oom_kill, event_kind::oom_group_kill,
                                         event_kind::high, event_kind::max,      event_kind::low};

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

// A value for a sample: enough digits for a ratio of the kernel's two decimals of percent.
std::string format_double(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

} // namespace

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        switch (c) {
        case '\\': out += "\\\\"; break;
        case '"': out += "\\\""; break;
        case '\n': out += "\\n"; break;
        default: out += c;
        }
    }
    return out;
}

metrics_registry::metrics_registry(options opts) : opts_(std::move(opts)) {}

void metrics_registry::add_cgroup(const std::string& cgroup, kind_set kinds) {
    auto& s = cgroups_[cgroup];
    for (auto k : counting_kinds) {
        if (kinds.contains(k)) s.shown[static_cast<std::size_t>(k)] = true;
    }
}

void metrics_registry::record(const oom_event& ev) {
    const auto now = opts_.now();
    expire(now);  // a series past its retention starts again from 0, not from its old count
    auto& s = cgroups_[ev.cgroup.string()];
    const auto k = static_cast<std::size_t>(ev.kind);
    s.counts[k] += ev.count;
    s.shown[k] = true;
    if (ev.kind == event_kind::oom_kill) {
        unattributed_ += ev.unattributed;
        for (const auto& v : ev.victims) {
            const auto c = static_cast<std::size_t>(v.constraint);
            if (c < std::size(by_constraint_)) ++by_constraint_[c];
        }
    }
    if (ev.kind == event_kind::removed || ev.kind == event_kind::skipped) {
        if (!s.gone_at) s.gone_at = now;
    } else {
        s.gone_at.reset();  // events again: a cgroup of that name is watched (made anew in a tree)
    }
}

void metrics_registry::add_pressure_trigger(const std::string& cgroup, const std::string& trigger) {
    cgroups_[cgroup].pressure_events.try_emplace(trigger, 0);
}

void metrics_registry::record(const pressure_event& ev, const std::string& trigger) {
    expire(opts_.now());
    auto& s = cgroups_[ev.cgroup.string()];
    s.pressure_events[trigger] += ev.count;
    if (ev.averages) s.averages = ev.averages;
}

void metrics_registry::render_pressure(std::string& out) const {
    bool events = false, averages = false;
    for (const auto& [name, s] : cgroups_) {
        events = events || !s.pressure_events.empty();
        averages = averages || s.averages;
    }
    if (events) {
        header(out, "oomwatch_pressure_events_total", "counter",
               "Memory pressure events per cgroup and --pressure trigger since oomwatch started (the sum of their "
               "counts); cgroup /proc/pressure/memory is the machine.");
        for (const auto& [name, s] : cgroups_) {
            for (const auto& [trigger, n] : s.pressure_events) {
                out.append("oomwatch_pressure_events_total{cgroup=\"").append(escape_label_value(name));
                out.append("\",trigger=\"").append(escape_label_value(trigger)).append("\"} ");
                out.append(std::to_string(n)).append("\n");
            }
        }
    }
    if (!averages) return;
    // Each stall kind the kernel reported: `full` is absent from some pressure files.
    const auto each_kind = [this](auto&& f) {
        for (const auto& [name, s] : cgroups_) {
            if (!s.averages) continue;
            f(escape_label_value(name), "some", s.averages->some);
            if (s.averages->full) f(escape_label_value(name), "full", *s.averages->full);
        }
    };
    header(out, "oomwatch_memory_pressure_ratio", "gauge",
           "Share of the last 10s, 60s or 300s (window) in which some or all (kind) tasks were stalled on memory "
           "(PSI avg10, avg60, avg300 as a ratio), as of the last pressure event.");
    each_kind([&out](const std::string& cgroup, std::string_view kind, const stall_averages& a) {
        const std::pair<std::string_view, double> windows[] = {{"10s", a.avg10}, {"60s", a.avg60}, {"300s", a.avg300}};
        for (const auto& [window, percent] : windows) {
            out.append("oomwatch_memory_pressure_ratio{cgroup=\"").append(cgroup).append("\",kind=\"").append(kind);
            out.append("\",window=\"").append(window).append("\"} ").append(format_double(percent / 100)).append("\n");
        }
    });
    header(out, "oomwatch_memory_pressure_stall_seconds_total", "counter",
           "Time some or all (kind) tasks were stalled on memory (PSI total), as of the last pressure event.");
    each_kind([&out](const std::string& cgroup, std::string_view kind, const stall_averages& a) {
        char buf[48];
        std::snprintf(buf, sizeof buf, "%llu.%06llu", static_cast<unsigned long long>(a.total / 1000000),
                      static_cast<unsigned long long>(a.total % 1000000));
        out.append("oomwatch_memory_pressure_stall_seconds_total{cgroup=\"").append(cgroup).append("\",kind=\"");
        out.append(kind).append("\"} ").append(buf).append("\n");
    });
}

void metrics_registry::expire(clock::time_point now) {
    std::erase_if(cgroups_, [&](const auto& entry) {
        const auto& gone = entry.second.gone_at;
        return gone && now - *gone >= opts_.retention;
    });
}

std::optional<metrics_registry::clock::time_point> metrics_registry::next_expiry() const {
    std::optional<clock::time_point> next;
    for (const auto& [name, s] : cgroups_) {
        if (s.gone_at && (!next || *s.gone_at + opts_.retention < *next)) next = *s.gone_at + opts_.retention;
    }
    return next;
}

std::string metrics_registry::render() {
    expire(opts_.now());
    std::string out;
    header(out, "oomwatch_events_total", "counter",
           "Events reported per cgroup and kind since oomwatch started (the sum of their counts); "
           "a removed cgroup's series stay for the retention.");
    for (const auto& [name, s] : cgroups_) {
        const std::string cgroup = escape_label_value(name);
        for (std::size_t k = 0; k < event_kind_count; ++k) {
            if (!s.shown[k]) continue;
            out.append("oomwatch_events_total{cgroup=\"").append(cgroup).append("\",kind=\"");
            out.append(to_string(static_cast<event_kind>(k))).append("\"} ");
            out.append(std::to_string(s.counts[k])).append("\n");
        }
    }
    render_pressure(out);
    header(out, "oomwatch_unattributed_kills_total", "counter",
           "OOM kills reported without their victim (its kernel log record lost, not read in time, or not readable).");
    out.append("oomwatch_unattributed_kills_total ").append(std::to_string(unattributed_)).append("\n");
    header(out, "oomwatch_victims_total", "counter",
           "OOM kills reported with their victim named, per cause: a cgroup's limit (memcg), the whole "
           "machine out of memory (global), a cpuset or a memory policy.");
    for (std::size_t c = 0; c < std::size(by_constraint_); ++c) {
        out.append("oomwatch_victims_total{constraint=\"").append(to_string(static_cast<oom_constraint>(c)));
        out.append("\"} ").append(std::to_string(by_constraint_[c])).append("\n");
    }
    if (opts_.kernel_log) {
        const auto k = opts_.kernel_log();
        header(out, "oomwatch_kernel_log_records_lost_total", "counter",
               "Kernel log records overwritten before oomwatch read them (a kill among them goes unnamed).");
        out.append("oomwatch_kernel_log_records_lost_total ").append(std::to_string(k.records_lost)).append("\n");
        header(out, "oomwatch_kernel_log_foreign_records_total", "counter",
               "Kernel log records written by processes, not the kernel: ignored, however much they look like OOM lines.");
        out.append("oomwatch_kernel_log_foreign_records_total ").append(std::to_string(k.foreign_records)).append("\n");
    }
    header(out, "oomwatch_watched_cgroups", "gauge", "Cgroups watched now.");
    out.append("oomwatch_watched_cgroups ").append(std::to_string(opts_.watched_cgroups())).append("\n");
    header(out, "oomwatch_build_info", "gauge", "The oomwatch version, as a label; always 1.");
    out.append("oomwatch_build_info{version=\"").append(escape_label_value(opts_.version)).append("\"} 1\n");
    header(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    const auto start_us = std::chrono::duration_cast<std::chrono::microseconds>(opts_.process_start.time_since_epoch());
    char buf[64];
    std::snprintf(buf, sizeof buf, "%lld.%06lld", static_cast<long long>(start_us.count() / 1000000),
                  static_cast<long long>(start_us.count() % 1000000));
    out.append("process_start_time_seconds ").append(buf).append("\n");
    return out;
}

} // namespace oomwatch::cli
