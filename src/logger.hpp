// The library's Boost.Log source. The library only emits records; sinks and filters
// are the application's business.
#pragma once

#include <oomwatch/log.hpp>

#include <boost/log/sources/record_ostream.hpp>
#include <boost/log/sources/severity_channel_logger.hpp>

#include <string>

namespace oomwatch::detail {

using logger_type = boost::log::sources::severity_channel_logger_mt<log_severity, std::string>;
logger_type& logger();

} // namespace oomwatch::detail

#define OOMWATCH_LOG(sev) BOOST_LOG_SEV(::oomwatch::detail::logger(), ::oomwatch::log_severity::sev)
