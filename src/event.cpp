#include <oomwatch/event.hpp>

namespace oomwatch {

namespace {

constexpr std::pair<event_kind, std::string_view> kind_names[] = {
    {event_kind::oom, "oom"},   {event_kind::oom_kill, "oom_kill"}, {event_kind::oom_group_kill, "oom_group_kill"},
    {event_kind::high, "high"}, {event_kind::max, "max"},           {event_kind::low, "low"},
    {event_kind::removed, "removed"}, {event_kind::failed, "failed"},   {event_kind::created, "created"},
    {event_kind::skipped, "skipped"},
};
static_assert(std::size(kind_names) == event_kind_count);

} // namespace

std::string_view to_string(event_kind k) noexcept {
    for (const auto& [kind, name] : kind_names) {
        if (kind == k) return name;
    }
    return "unknown";
}

std::optional<event_kind> event_kind_from_string(std::string_view s) noexcept {
    for (const auto& [kind, name] : kind_names) {
        if (name == s) return kind;
    }
    return std::nullopt;
}

std::string_view to_string(oom_constraint c) noexcept {
    switch (c) {
    case oom_constraint::memcg: return "memcg";
    case oom_constraint::global: return "global";
    case oom_constraint::cpuset: return "cpuset";
    case oom_constraint::mempolicy: return "mempolicy";
    }
    return "unknown";
}

std::uint64_t memory_counters::get(event_kind k) const noexcept {
    switch (k) {
    case event_kind::oom: return oom;
    case event_kind::oom_kill: return oom_kill;
    case event_kind::oom_group_kill: return oom_group_kill;
    case event_kind::high: return high;
    case event_kind::max: return max;
    case event_kind::low: return low;
    case event_kind::removed:
    case event_kind::failed:
    case event_kind::created:
    case event_kind::skipped: return 0;
    }
    return 0;
}

} // namespace oomwatch
