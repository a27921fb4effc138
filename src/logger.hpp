// The library's Boost.Log source. The library only emits records, and only after the
// application called `enable_logging()`; sinks and filters are the application's business.
#pragma once

#include <oomwatch/log.hpp>

#include <boost/log/sources/record_ostream.hpp>
#include <boost/log/sources/severity_channel_logger.hpp>

#include <atomic>
#include <string>

namespace oomwatch::detail {

using logger_type = boost::log::sources::severity_channel_logger_mt<log_severity, std::string>;
logger_type& logger();

/// The lowest severity the application asked for; above `error` while logging is off.
extern std::atomic<int> log_threshold;

inline bool log_enabled(log_severity s) noexcept {
    return static_cast<int>(s) >= log_threshold.load(std::memory_order_relaxed);
}

} // namespace oomwatch::detail

// Disabled logging costs one relaxed load: Boost.Log is not touched at all. A `for`, not
// an `if`, so that an `else` after the macro cannot bind to it.
#define OOMWATCH_LOG(sev)                                                                              \
    for (bool oomwatch_log_once_ = ::oomwatch::detail::log_enabled(::oomwatch::log_severity::sev);     \
         oomwatch_log_once_; oomwatch_log_once_ = false)                                               \
    BOOST_LOG_SEV(::oomwatch::detail::logger(), ::oomwatch::log_severity::sev)
