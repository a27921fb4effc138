#include "logger.hpp"

#include <boost/log/keywords/channel.hpp>

namespace oomwatch::detail {

std::atomic<int> log_threshold{static_cast<int>(log_severity::error) + 1};

logger_type& logger() {
    // A function-local static: constructed on first use, thread-safe, and usable from
    // the constructors of other statics.
    static logger_type lg(boost::log::keywords::channel = std::string(log_channel));
    return lg;
}

} // namespace oomwatch::detail

namespace oomwatch {

void enable_logging(log_severity min) noexcept {
    detail::log_threshold.store(static_cast<int>(min), std::memory_order_relaxed);
}

void disable_logging() noexcept {
    detail::log_threshold.store(static_cast<int>(log_severity::error) + 1, std::memory_order_relaxed);
}

} // namespace oomwatch
