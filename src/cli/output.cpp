// Events as JSON lines, and the logging sink.
#include "cli.hpp"

#include <oomwatch/log.hpp>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/log/core/core.hpp>
#include <boost/log/expressions.hpp>
#include <boost/log/expressions/keyword.hpp>
#include <boost/log/utility/setup/console.hpp>
#include <boost/system/errc.hpp>

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <iostream>

namespace oomwatch::cli {

namespace {
BOOST_LOG_ATTRIBUTE_KEYWORD(severity_attr, "Severity", oomwatch::log_severity)
} // namespace

void setup_logging(int verbosity) {
    namespace expr = boost::log::expressions;
    namespace kw = boost::log::keywords;
    boost::log::add_console_log(std::clog,
                                kw::format = expr::stream << "oomwatch[" << severity_attr << "]: " << expr::smessage,
                                kw::auto_flush = true);
    const auto min = verbosity >= 2   ? log_severity::trace
                     : verbosity == 1 ? log_severity::debug
                                      : log_severity::warning;
    // Records without a Severity (none of ours) fail the comparison and are dropped.
    boost::log::core::get()->set_filter(severity_attr >= min);
    oomwatch::enable_logging(min);  // the library is silent until asked
}

std::string format_rfc3339(std::chrono::system_clock::time_point tp) {
    using namespace std::chrono;
    const auto us = floor<microseconds>(tp);
    const auto secs = floor<seconds>(us);  // floor, not truncation: right before 1970 too
    const auto frac = (us - secs).count();
    const std::time_t t = system_clock::to_time_t(time_point_cast<system_clock::duration>(secs));
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[64];
    const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(frac));
    return buf;
}

std::string event_to_json(const oom_event& ev) {
    const auto& c = ev.counters;
    boost::json::object counters;
    counters["oom"] = c.oom;
    counters["oom_kill"] = c.oom_kill;
    counters["oom_group_kill"] = c.oom_group_kill;
    if (ev.version == cgroup_version::v2) {
        counters["low"] = c.low;
        counters["high"] = c.high;
        counters["max"] = c.max;
        for (const auto& [key, value] : c.other) counters[key] = value;  // newer kernels' keys
    } else {
        counters["under_oom"] = c.under_oom;
    }

    boost::json::object obj;
    obj["cgroup"] = ev.cgroup.string();
    obj["kind"] = std::string(to_string(ev.kind));
    obj["count"] = ev.count;
    obj["time"] = format_rfc3339(ev.time);
    obj["version"] = static_cast<int>(ev.version);
    obj["counters"] = std::move(counters);
    // Only when not `here` (tree watches): lines of plain watches stay as they were.
    switch (ev.origin) {
    case event_origin::here: break;
    case event_origin::removed_descendant: obj["origin"] = "removed_descendant"; break;
    }
    // Only on events that carry a reason (`skipped`: why that cgroup is not watched).
    if (ev.error) obj["error"] = ev.error.message();
    return boost::json::serialize(obj);
}

boost::system::error_code write_stdout(std::string_view text) {
    const char* p = text.data();
    std::size_t left = text.size();
    while (left > 0) {
        const ssize_t n = ::write(STDOUT_FILENO, p, left);
        if (n > 0) {
            p += n;
            left -= static_cast<std::size_t>(n);
            continue;
        }
        if (n == 0) return boost::system::errc::make_error_code(boost::system::errc::io_error);
        const int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            // Someone made the (shared) descriptor non-blocking: wait until it takes more,
            // as a blocking write would.
            pollfd pfd{STDOUT_FILENO, POLLOUT, 0};
            if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) {
                return {errno, boost::system::system_category()};
            }
            continue;
        }
        return {err, boost::system::system_category()};
    }
    return {};
}

boost::system::error_code print_event(const oom_event& ev) {
    std::string line = event_to_json(ev);
    line += '\n';
    return write_stdout(line);  // the whole line at once: nothing waits in a buffer, for pipes
}

void report_stdout_error(const boost::system::error_code& ec) {
    std::cerr << "oomwatch: stdout: " << ec.message() << '\n';
}

} // namespace oomwatch::cli
