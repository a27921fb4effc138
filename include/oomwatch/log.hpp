// oomwatch/log.hpp: what the library logs, so applications can filter it.
//
// The library logs through a Boost.Log `severity_channel_logger_mt` whose records carry
// the attributes "Channel" (`std::string`, always "oomwatch") and "Severity"
// (`oomwatch::log_severity`). It never adds or configures sinks, filters or the core:
// without a sink set up by the application, nothing is printed.
#pragma once

#include <ostream>
#include <string_view>

namespace oomwatch {

enum class log_severity { trace, debug, info, warning, error };

inline constexpr std::string_view log_channel = "oomwatch";

std::string_view to_string(log_severity s) noexcept;
std::ostream& operator<<(std::ostream& os, log_severity s);

} // namespace oomwatch
