// oomwatch/log.hpp: what the library logs, and how an application turns it on.
//
// The library is silent unless asked: until the application calls `enable_logging()`
// it emits no log record at all, so nothing reaches Boost.Log (whose default sink, while
// an application has added no sink, prints every record on stdout).
//
// Once enabled, the library logs through a Boost.Log `severity_channel_logger_mt` whose
// records carry the attributes "Channel" (`std::string`, always "oomwatch") and
// "Severity" (`oomwatch::log_severity`). It never adds or configures sinks, filters or
// the core: that is the application's business.
//
// What is logged: `error` for a watch that failed for good (the error also reaches every
// consumer), `warning` for anything unexpected that the library works around (a counters
// file that cannot be read for a while, counters that went down, inotify queue
// overflow); `debug` and `trace` for the normal path (watch started, counters read, an
// event, removal). Nothing is logged at `info` per event.
#pragma once

#include <ostream>
#include <string_view>

namespace oomwatch {

enum class log_severity { trace, debug, info, warning, error };

inline constexpr std::string_view log_channel = "oomwatch";

/// Lets the library emit its Boost.Log records from now on: those of severity `min` and
/// above (the default: all of them). Records below `min` are not even formatted.
/// Thread safety: may be called from any thread at any time (an atomic store).
void enable_logging(log_severity min = log_severity::trace) noexcept;
/// Back to the default: the library emits no records.
void disable_logging() noexcept;

std::string_view to_string(log_severity s) noexcept;
std::ostream& operator<<(std::ostream& os, log_severity s);

} // namespace oomwatch
