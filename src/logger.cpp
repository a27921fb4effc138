#include "logger.hpp"

#include <boost/log/keywords/channel.hpp>

namespace oomwatch::detail {

logger_type& logger() {
    // A function-local static: constructed on first use, thread-safe, and usable from
    // the constructors of other statics.
    static logger_type lg(boost::log::keywords::channel = std::string(log_channel));
    return lg;
}

} // namespace oomwatch::detail
