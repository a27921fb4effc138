// oomwatch/pressure_event.hpp: memory-pressure triggers and the events they produce.
#pragma once

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string_view>

namespace oomwatch {

/// Which PSI stall a trigger measures: `some` (at least one task stalled on memory) or
/// `full` (all non-idle tasks stalled at once).
enum class stall : std::uint8_t { some, full };

/// A PSI trigger (cgroup v2 `memory.pressure`, or `/proc/pressure/memory`): fires when
/// tasks were stalled for `threshold` in total within a moving `window`.
///
/// oomwatch checks the kernel's rules before asking: the window 500 ms to 10 s, the
/// threshold more than 0 and at most the window (`error::invalid_pressure_trigger`).
/// Since Linux 6.4 a process without `CAP_SYS_RESOURCE` may only use a window that is a
/// multiple of 2 s (Debian's 6.1 has no such rule). The kernel's refusal is
/// `error::pressure_trigger_refused`. The default, `some` 200 ms in 2 s, works
/// unprivileged from 6.4 on.
struct pressure_trigger {
    stall kind = stall::some;
    std::chrono::microseconds threshold{std::chrono::milliseconds(200)};
    std::chrono::microseconds window{std::chrono::seconds(2)};
    friend bool operator==(const pressure_trigger&, const pressure_trigger&) = default;
};

/// cgroup v1 `memory.pressure_level`: the kernel's reclaim pressure levels.
enum class pressure_level : std::uint8_t { low, medium, critical };

/// cgroup v1 notification mode (`memory.pressure_level`'s `default`, `hierarchy`,
/// `local`): `standard` is the kernel's `default` (this cgroup's events, and its
/// descendants' when no one listens there); `hierarchy` every level of the subtree;
/// `local` this cgroup's own reclaim only.
enum class pressure_mode : std::uint8_t { standard, hierarchy, local };

/// A cgroup v1 pressure-level registration.
struct pressure_level_trigger {
    pressure_level level = pressure_level::medium;
    pressure_mode mode = pressure_mode::standard;
    friend bool operator==(const pressure_level_trigger&, const pressure_level_trigger&) = default;
};

/// Names the whole machine (`/proc/pressure/memory`) instead of a cgroup.
struct system_pressure {};

/// One line of a pressure file: `some avg10=0.12 avg60=0.00 avg300=0.00 total=1234`.
struct stall_averages {
    double avg10 = 0;   // percent of the last 10 s
    double avg60 = 0;
    double avg300 = 0;
    std::uint64_t total = 0;  // microseconds stalled since boot (or since the cgroup was made)
    friend bool operator==(const stall_averages&, const stall_averages&) = default;
};

/// A pressure file's contents: `some`, and `full` where the kernel prints it.
struct pressure_averages {
    stall_averages some;
    std::optional<stall_averages> full;
    friend bool operator==(const pressure_averages&, const pressure_averages&) = default;
};

/// What a pressure event reports.
enum class pressure_kind : std::uint8_t {
    /// A trigger fired (`count` times).
    pressure,
    /// The cgroup was removed. The last event.
    removed,
    /// The watch cannot go on (`pressure_event::error` says why). The last event.
    failed,
};

/// "pressure", "removed", "failed".
std::string_view to_string(pressure_kind k) noexcept;
/// "some", "full".
std::string_view to_string(stall s) noexcept;
/// "low", "medium", "critical".
std::string_view to_string(pressure_level l) noexcept;
inline std::ostream& operator<<(std::ostream& os, pressure_kind k) { return os << to_string(k); }

/// One event of a `pressure_watcher`.
struct pressure_event {
    /// The cgroup's directory; `/proc/pressure/memory` for `system_pressure`.
    std::filesystem::path cgroup;
    pressure_kind kind = pressure_kind::pressure;
    /// Which trigger fired: its index in the list the watcher was made with.
    std::size_t trigger = 0;
    /// cgroup v1: the level of that trigger. Empty for PSI triggers.
    std::optional<pressure_level> level;
    /// How many wake-ups of that trigger this event stands for (coalesced while nobody
    /// was waiting; >= 1).
    std::uint64_t count = 1;
    /// When the watcher observed the earliest of them (wall clock).
    std::chrono::system_clock::time_point time;
    /// PSI: the pressure file as read at the newest wake-up. Empty on cgroup v1 (which
    /// has no averages), and when that read failed.
    std::optional<pressure_averages> averages;
    /// `failed` events: why.
    boost::system::error_code error;
};

} // namespace oomwatch
