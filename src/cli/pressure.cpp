// `oomwatch watch --pressure SPEC`: the SPECs, and pressure events as JSON lines.
#include "cli.hpp"

#include <oomwatch/pressure_watcher.hpp>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <charconv>
#include <cstdint>

namespace oomwatch::cli {

// "150ms", "2s", "500us": digits and a unit, nothing else (no default unit: "2" could
// be seconds or milliseconds).
std::optional<std::chrono::microseconds> parse_psi_duration(std::string_view text) {
    std::int64_t unit = 0;
    if (text.ends_with("us")) {
        unit = 1;
        text.remove_suffix(2);
    } else if (text.ends_with("ms")) {
        unit = 1000;
        text.remove_suffix(2);
    } else if (text.ends_with("s")) {
        unit = 1'000'000;
        text.remove_suffix(1);
    } else {
        return std::nullopt;
    }
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || text.front() == '-' || ec != std::errc{} || end != text.data() + text.size() ||
        value > INT64_MAX / unit)
        return std::nullopt;
    return std::chrono::microseconds(value * unit);
}

namespace {

// The shortest exact form: "2s", "150ms", "1500us".
std::string format_psi_duration(std::chrono::microseconds d) {
    const auto us = d.count();
    if (us % 1'000'000 == 0) return std::to_string(us / 1'000'000) + "s";
    if (us % 1000 == 0) return std::to_string(us / 1000) + "ms";
    return std::to_string(us) + "us";
}

std::optional<pressure_level> level_from_string(std::string_view s) {
    for (auto l : {pressure_level::low, pressure_level::medium, pressure_level::critical})
        if (to_string(l) == s) return l;
    return std::nullopt;
}

boost::json::object averages_to_json(const stall_averages& a) {
    boost::json::object o;
    o["avg10"] = a.avg10;
    o["avg60"] = a.avg60;
    o["avg300"] = a.avg300;
    o["total"] = a.total;
    return o;
}

} // namespace

std::optional<pressure_spec> parse_pressure_spec(std::string_view text, std::string& problem) {
    const std::string expected = "--pressure needs some:THRESHOLD/WINDOW, full:THRESHOLD/WINDOW (e.g. some:150ms/2s) "
                                 "or low|medium|critical[,hierarchy|local], not '" +
                                 std::string(text) + "'";
    pressure_spec spec;
    if (text.starts_with("some:") || text.starts_with("full:")) {
        pressure_trigger t;
        t.kind = text.starts_with("some:") ? stall::some : stall::full;
        const auto rest = text.substr(5);
        const auto slash = rest.find('/');
        const auto threshold = parse_psi_duration(rest.substr(0, slash));
        const auto window = slash == std::string_view::npos ? std::nullopt : parse_psi_duration(rest.substr(slash + 1));
        if (!threshold || !window) {
            problem = expected;
            return std::nullopt;
        }
        t.threshold = *threshold;
        t.window = *window;
        // The kernel's rules, checked here: a bad SPEC is bad usage, not a cgroup's fault.
        if (validate(t)) {
            problem = "--pressure '" + std::string(text) +
                      "': the window must be 500ms to 10s and the threshold more than 0 and at most the window";
            return std::nullopt;
        }
        spec.trigger = t;
        spec.name = std::string(to_string(t.kind)) + " " + format_psi_duration(t.threshold) + "/" +
                    format_psi_duration(t.window);
        return spec;
    }
    pressure_level_trigger t;
    const auto comma = text.find(',');
    const auto level = level_from_string(text.substr(0, comma));
    if (!level) {
        problem = expected;
        return std::nullopt;
    }
    t.level = *level;
    if (comma != std::string_view::npos) {
        const auto mode = text.substr(comma + 1);
        if (mode == "hierarchy") {
            t.mode = pressure_mode::hierarchy;
        } else if (mode == "local") {
            t.mode = pressure_mode::local;
        } else {
            problem = expected;
            return std::nullopt;
        }
    }
    spec.trigger = t;
    spec.name = std::string(text);  // already canonical: "medium", "low,local"
    return spec;
}

std::string pressure_event_to_json(const pressure_event& ev, std::string_view trigger) {
    boost::json::object obj;
    obj["cgroup"] = json_path(ev.cgroup);
    obj["kind"] = std::string(to_string(ev.kind));
    obj["trigger"] = std::string(trigger);
    obj["count"] = ev.count;
    obj["time"] = format_rfc3339(ev.time);
    // Left out on cgroup v1 (no averages there) and when the re-read failed.
    if (ev.averages) {
        boost::json::object averages;
        averages["some"] = averages_to_json(ev.averages->some);
        if (ev.averages->full) averages["full"] = averages_to_json(*ev.averages->full);
        obj["averages"] = std::move(averages);
    }
    return boost::json::serialize(obj);
}

} // namespace oomwatch::cli
