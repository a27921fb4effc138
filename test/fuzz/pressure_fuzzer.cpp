// libFuzzer target: parse_pressure (PSI pressure files: cgroup v2 memory.pressure and
// /proc/pressure/memory).
//
// Invariants checked on every input:
// - it never throws; a failure is error::malformed_counters;
// - an accepted text re-serialised canonically ("some avg10=A avg60=A avg300=A total=N",
//   then "full ..." when there is one; the averages in the shortest fixed notation that
//   reads back the same double) parses back equal, and so does the same with the lines
//   swapped, the fields in another order, odd blanks, an unknown field and an unknown
//   line (a later kernel's);
// - an extra '\n' never changes the outcome;
// - the averages are finite and not negative.
#include "detail/parse.hpp"
#include "fuzz_common.hpp"

#include <oomwatch/error.hpp>
#include <oomwatch/pressure_event.hpp>

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

using oomwatch::pressure_averages;
using oomwatch::stall_averages;

std::string average(double v) {
    char buf[2048];  // the shortest fixed form of a double has at most ~1100 characters
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
    FUZZ_CHECK(ec == std::errc{});
    return std::string(buf, end);
}

std::string canonical_line(std::string_view name, const stall_averages& a) {
    return std::string(name) + " avg10=" + average(a.avg10) + " avg60=" + average(a.avg60) +
           " avg300=" + average(a.avg300) + " total=" + std::to_string(a.total) + "\n";
}

// The same fields, reordered, with tabs and an unknown field among them.
std::string shuffled_line(std::string_view name, const stall_averages& a) {
    return "\t" + std::string(name) + "  total=" + std::to_string(a.total) + "\tfuture=7 avg300=" +
           average(a.avg300) + " avg10=" + average(a.avg10) + "  avg60=" + average(a.avg60) + " ";
}

void check_same(const std::string& text, const pressure_averages& expected) {
    auto r = oomwatch::parse_pressure(text);
    FUZZ_CHECK(r.has_value());
    FUZZ_CHECK(*r == expected);
}

void check_averages(const stall_averages& a) {
    for (double v : {a.avg10, a.avg60, a.avg300}) FUZZ_CHECK(std::isfinite(v) && v >= 0);
}

void run(std::string_view text) {
    auto r = oomwatch::parse_pressure(text);
    if (!r) FUZZ_CHECK(r.error() == make_error_code(oomwatch::error::malformed_counters));

    std::string more(text);
    more += '\n';
    auto r_more = oomwatch::parse_pressure(more);
    FUZZ_CHECK(r_more.has_value() == r.has_value());
    if (!r) return;
    FUZZ_CHECK(*r_more == *r);

    const pressure_averages& p = *r;
    check_averages(p.some);
    if (p.full) check_averages(*p.full);

    std::string canonical = canonical_line("some", p.some);
    if (p.full) canonical += canonical_line("full", *p.full);
    check_same(canonical, p);

    std::string other = "later avg10=x\n";
    if (p.full) other += shuffled_line("full", *p.full) + "\n";
    other += shuffled_line("some", p.some);  // no final '\n'
    check_same(other, p);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FUZZ_NO_THROW(run(fuzz::as_text(data, size)));
    return 0;
}
