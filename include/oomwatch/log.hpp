// oomwatch/log.hpp: what the library logs, so applications can filter it.
//
// The library logs through a Boost.Log `severity_channel_logger_mt` whose records carry
// the attributes "Channel" (`std::string`, always "oomwatch") and "Severity"
// (`oomwatch::log_severity`). It never adds or configures sinks, filters or the core.
//
// Note Boost.Log's own default: while an application has added no sink at all, Boost.Log
// prints every record to stdout. An application that does not use Boost.Log should add
// a sink (for example one filtered to `channel == "oomwatch" && severity >= warning`) or
// call `boost::log::core::get()->set_logging_enabled(false)`.
//
// What is logged: warnings and errors for anything unexpected (a counters file that
// cannot be read, counters that went down, inotify queue overflow, a failed eventfd);
// debug and trace records for the normal path (watch started, counters read, removal).
#pragma once

#include <ostream>
#include <string_view>

namespace oomwatch {

enum class log_severity { trace, debug, info, warning, error };

inline constexpr std::string_view log_channel = "oomwatch";

std::string_view to_string(log_severity s) noexcept;
std::ostream& operator<<(std::ostream& os, log_severity s);

} // namespace oomwatch
