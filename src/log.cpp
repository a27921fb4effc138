#include <oomwatch/log.hpp>

namespace oomwatch {

std::string_view to_string(log_severity s) noexcept {
    switch (s) {
    case log_severity::trace: return "trace";
    case log_severity::debug: return "debug";
    case log_severity::info: return "info";
    case log_severity::warning: return "warning";
    case log_severity::error: return "error";
    }
    return "unknown";
}

std::ostream& operator<<(std::ostream& os, log_severity s) {
    return os << to_string(s);
}

} // namespace oomwatch
