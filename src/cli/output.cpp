// Events as JSON lines, and the logging sink.
#include "cli.hpp"

#include <oomwatch/log.hpp>

#include <boost/json/array.hpp>
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
#include <filesystem>
#include <string_view>
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

namespace {

// The length of the well-formed UTF-8 sequence at `s[i]` (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF), or 0 when the byte there starts none.
std::size_t utf8_sequence_at(std::string_view s, std::size_t i) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char lead = byte(i);
    if (lead < 0x80) return 1;
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (lead >= 0xC2 && lead <= 0xDF) {
        len = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        len = 3;
        if (lead == 0xE0) lo = 0xA0;  // overlong
        if (lead == 0xED) hi = 0x9F;  // surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        len = 4;
        if (lead == 0xF0) lo = 0x90;  // overlong
        if (lead == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
        return 0;
    }
    if (s.size() - i < len || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
    for (std::size_t k = 2; k < len; ++k)
        if ((byte(i + k) & 0xC0) != 0x80) return 0;
    return len;
}

// Text for a JSON string. A comm, and a cgroup's name, may hold any byte but NUL, while
// Boost.JSON copies a std::string's bytes as they are (escaping only '"', '\\' and
// control characters): a byte that is not UTF-8 would make the line invalid JSON, which
// parsers reject whole. Each such byte becomes the code point of the same value
// (0xFF: U+00FF, the byte read as Latin-1) rather than U+FFFD: the line stays valid and
// the byte's value is kept, for a reader that knows the name was not UTF-8.
// Well-formed UTF-8 passes unchanged.
std::string json_text(std::string_view bytes) {
    std::string out;
    std::size_t done = 0;  // bytes[0, done) are in `out`, or need no copy yet
    for (std::size_t i = 0; i < bytes.size();) {
        if (const auto n = utf8_sequence_at(bytes, i)) {
            i += n;
            continue;
        }
        out.append(bytes.substr(done, i - done));
        const auto b = static_cast<unsigned char>(bytes[i]);  // 0x80 and up: ASCII is UTF-8
        out += static_cast<char>(0xC0 | (b >> 6));
        out += static_cast<char>(0x80 | (b & 0x3F));
        done = ++i;
    }
    if (done == 0) return std::string(bytes);  // the usual case: all UTF-8
    out.append(bytes.substr(done));
    return out;
}

} // namespace

std::string json_path(const std::filesystem::path& p) { return json_text(p.native()); }

boost::json::object victim_to_json(const victim& v) {
    boost::json::object o;
    o["pid"] = v.pid;
    o["comm"] = json_text(v.comm);
    if (v.uid == static_cast<uid_t>(-1))
        o["uid"] = nullptr;  // not printed by the kernel (before 5.3, or a rate-limited report)
    else
        o["uid"] = v.uid;
    o["constraint"] = std::string(to_string(v.constraint));
    if (v.constraint_guessed) o["constraint_guessed"] = true;
    // Unknown cgroups are left out rather than given as "", which is no directory.
    if (!v.task_cgroup.empty()) o["task_cgroup"] = json_path(v.task_cgroup);
    if (!v.oom_cgroup.empty()) o["oom_cgroup"] = json_path(v.oom_cgroup);
    o["total_vm"] = v.total_vm;
    o["anon_rss"] = v.anon_rss;
    o["file_rss"] = v.file_rss;
    o["shmem_rss"] = v.shmem_rss;
    o["oom_score_adj"] = v.oom_score_adj;
    if (v.group_kill) {
        o["group_kill"] = true;
        if (!v.group_cgroup.empty()) o["group_cgroup"] = json_path(v.group_cgroup);
    }
    o["kernel_seq"] = v.kernel_seq;
    o["kernel_time_us"] = v.kernel_time.count();
    return o;
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
    obj["cgroup"] = json_path(ev.cgroup);
    obj["kind"] = std::string(to_string(ev.kind));
    obj["count"] = ev.count;
    obj["time"] = format_rfc3339(ev.time);
    obj["version"] = static_cast<int>(ev.version);
    obj["counters"] = std::move(counters);
    // Every oom_kill line says who was killed, even when nobody could be named: a reader
    // finds `victims` and `unattributed` there always, and their sum is `count`.
    if (ev.kind == event_kind::oom_kill) {
        boost::json::array victims;
        victims.reserve(ev.victims.size());
        for (const auto& v : ev.victims) victims.push_back(victim_to_json(v));
        obj["victims"] = std::move(victims);
        obj["unattributed"] = ev.unattributed;
    }
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
