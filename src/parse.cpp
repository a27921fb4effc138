#include "detail/parse.hpp"

#include <oomwatch/error.hpp>

#include <boost/container/small_vector.hpp>

#include <algorithm>
#include <charconv>
#include <system_error>

namespace oomwatch {

namespace {

// Splits text at '\n'. A final '\n' ends the last line and does not start an empty one.
class line_reader {
public:
    explicit line_reader(std::string_view text) noexcept : rest_(text) {}

    bool next(std::string_view& line) noexcept {
        if (rest_.empty()) return false;
        auto nl = rest_.find('\n');
        if (nl == std::string_view::npos) {
            line = rest_;
            rest_ = {};
        } else {
            line = rest_.substr(0, nl);
            rest_.remove_prefix(nl + 1);
        }
        return true;
    }

private:
    std::string_view rest_;
};

constexpr bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

// Decimal digits only: no sign, no blanks, nothing after, no overflow.
template <class T>
bool parse_decimal(std::string_view s, T& out) noexcept {
    if (s.empty()) return false;
    T v{};
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (ec != std::errc{} || end != s.data() + s.size()) return false;
    out = v;
    return true;
}

// Keys are printable ASCII: anything else is binary garbage, not a future kernel key.
bool valid_key(std::string_view key) noexcept {
    for (char c : key) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f) return false;
    }
    return !key.empty();
}

// Splits a line into blank-separated fields; returns how many there are (counting stops at 3).
std::size_t split_fields(std::string_view line, std::string_view& key, std::string_view& value) noexcept {
    std::size_t n = 0;
    std::size_t i = 0;
    while (n < 3) {
        while (i < line.size() && is_blank(line[i])) ++i;
        if (i == line.size()) break;
        std::size_t start = i;
        while (i < line.size() && !is_blank(line[i])) ++i;
        if (n == 0) key = line.substr(start, i - start);
        if (n == 1) value = line.substr(start, i - start);
        ++n;
    }
    return n;
}

// Flat keyed file ("key value" lines): calls on_pair for each; blank lines are skipped.
// False on any malformed line, a repeated key, or no pair at all.
template <class F>
bool parse_flat_keyed(std::string_view text, F&& on_pair) {
    // Real files have a handful of keys: a linear search in a small inline buffer costs
    // no allocation on the hot path (every notification parses one of these).
    boost::container::small_vector<std::string_view, 16> seen;
    bool any = false;
    line_reader lines(text);
    std::string_view line;
    while (lines.next(line)) {
        std::string_view key;
        std::string_view value;
        std::size_t n = split_fields(line, key, value);
        if (n == 0) continue;
        if (n != 2 || !valid_key(key)) return false;
        std::uint64_t v = 0;
        if (!parse_decimal(value, v)) return false;
        if (std::find(seen.begin(), seen.end(), key) != seen.end()) return false;
        seen.push_back(key);
        on_pair(key, v);
        any = true;
    }
    return any;
}

// Decodes the kernel's "\ooo" escapes (it escapes space, tab, newline and backslash).
// Anything else, including "\000", is kept as it is.
std::string decode_octal(std::string_view s) {
    auto is_octal = [](char c) { return c >= '0' && c <= '7'; };
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size() && is_octal(s[i + 1]) && is_octal(s[i + 2]) && is_octal(s[i + 3])) {
            int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
            if (v > 0 && v <= 0xff) {
                out.push_back(static_cast<char>(static_cast<unsigned char>(v)));
                i += 3;
                continue;
            }
        }
        out.push_back(s[i]);
    }
    return out;
}

bool valid_dev(std::string_view s) noexcept {
    auto colon = s.find(':');
    if (colon == std::string_view::npos) return false;
    unsigned major = 0;
    unsigned minor = 0;
    return parse_decimal(s.substr(0, colon), major) && parse_decimal(s.substr(colon + 1), minor);
}

// A PSI average: digits with at most one '.', as the kernel prints "12.34". Stricter
// than from_chars, which would take "inf", "nan", "1e5" and signs.
bool parse_average(std::string_view s, double& out) noexcept {
    if (s.empty() || s.front() == '.' || s.back() == '.') return false;
    bool dot = false;
    for (char c : s) {
        if (c == '.') {
            if (dot) return false;
            dot = true;
        } else if (c < '0' || c > '9') {
            return false;
        }
    }
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out, std::chars_format::fixed);
    return ec == std::errc{} && end == s.data() + s.size();
}

// The fields after a pressure line's name: "avg10=A avg60=A avg300=A total=N".
bool parse_stall_fields(std::string_view rest, stall_averages& out) noexcept {
    unsigned seen = 0;  // a bit per known key
    std::size_t i = 0;
    while (true) {
        while (i < rest.size() && is_blank(rest[i])) ++i;
        if (i == rest.size()) break;
        std::size_t start = i;
        while (i < rest.size() && !is_blank(rest[i])) ++i;
        std::string_view field = rest.substr(start, i - start);
        auto eq = field.find('=');
        if (eq == std::string_view::npos || !valid_key(field.substr(0, eq))) return false;
        std::string_view key = field.substr(0, eq);
        std::string_view value = field.substr(eq + 1);
        unsigned bit = 0;
        bool ok = true;
        if (key == "avg10") bit = 1, ok = parse_average(value, out.avg10);
        else if (key == "avg60") bit = 2, ok = parse_average(value, out.avg60);
        else if (key == "avg300") bit = 4, ok = parse_average(value, out.avg300);
        else if (key == "total") bit = 8, ok = parse_decimal(value, out.total);
        else ok = !value.empty();  // a later kernel's field: kept out, not an error
        if (!ok || (seen & bit) != 0) return false;
        seen |= bit;
    }
    return seen == 15;
}

} // namespace

result<memory_counters> parse_memory_events(std::string_view text) {
    memory_counters c;
    bool ok = parse_flat_keyed(text, [&c](std::string_view key, std::uint64_t v) {
        if (key == "low") c.low = v;
        else if (key == "high") c.high = v;
        else if (key == "max") c.max = v;
        else if (key == "oom") c.oom = v;
        else if (key == "oom_kill") c.oom_kill = v;
        else if (key == "oom_group_kill") c.oom_group_kill = v;
        else c.other.emplace_back(std::string(key), v);
    });
    if (!ok) return make_error_code(error::malformed_counters);
    return c;
}

result<std::optional<std::uint64_t>> parse_vmstat_oom_kill(std::string_view text) {
    // Some 170 lines, read on every kill: only the one wanted is checked (the others
    // are the kernel's business), strictly: one decimal value, once.
    std::optional<std::uint64_t> oom_kill;
    line_reader lines(text);
    std::string_view line;
    bool any = false;
    while (lines.next(line)) {
        std::string_view key;
        std::string_view value;
        const std::size_t n = split_fields(line, key, value);
        if (n == 0) continue;
        any = true;
        if (key != "oom_kill") continue;
        std::uint64_t v = 0;
        if (n != 2 || oom_kill || !parse_decimal(value, v)) return make_error_code(error::malformed_counters);
        oom_kill = v;
    }
    if (!any) return make_error_code(error::malformed_counters);
    return oom_kill;
}

result<pressure_averages> parse_pressure(std::string_view text) {
    const auto malformed = make_error_code(error::malformed_counters);
    pressure_averages p;
    bool have_some = false;
    line_reader lines(text);
    std::string_view line;
    while (lines.next(line)) {
        std::size_t i = 0;
        while (i < line.size() && is_blank(line[i])) ++i;
        std::size_t start = i;
        while (i < line.size() && !is_blank(line[i])) ++i;
        std::string_view name = line.substr(start, i - start);
        if (name.empty()) continue;
        if (!valid_key(name)) return malformed;
        stall_averages a;
        if (name == "some") {
            if (have_some || !parse_stall_fields(line.substr(i), a)) return malformed;
            p.some = a;
            have_some = true;
        } else if (name == "full") {
            if (p.full || !parse_stall_fields(line.substr(i), a)) return malformed;
            p.full = a;
        }
    }
    if (!have_some) return malformed;
    return p;
}

result<oom_control> parse_oom_control(std::string_view text) {
    oom_control c;
    bool have_disable = false;
    bool have_under = false;
    bool bad_flag = false;
    auto flag = [&bad_flag](std::uint64_t v) {
        if (v > 1) bad_flag = true;  // the kernel prints these as 0 or 1
        return v == 1;
    };
    bool ok = parse_flat_keyed(text, [&](std::string_view key, std::uint64_t v) {
        if (key == "oom_kill_disable") {
            c.oom_kill_disable = flag(v);
            have_disable = true;
        } else if (key == "under_oom") {
            c.under_oom = flag(v);
            have_under = true;
        } else if (key == "oom_kill") {
            c.oom_kill = v;
        }
    });
    if (!ok || bad_flag || !have_disable || !have_under) return make_error_code(error::malformed_counters);
    return c;
}

result<std::vector<proc_cgroup_entry>> parse_proc_cgroup(std::string_view text) {
    const auto malformed = make_error_code(error::malformed_proc_file);
    std::vector<proc_cgroup_entry> entries;
    line_reader lines(text);
    std::string_view line;
    while (lines.next(line)) {
        if (line.find('\0') != std::string_view::npos) return malformed;
        auto c1 = line.find(':');
        if (c1 == std::string_view::npos) return malformed;
        auto c2 = line.find(':', c1 + 1);
        if (c2 == std::string_view::npos) return malformed;

        proc_cgroup_entry e;
        if (!parse_decimal(line.substr(0, c1), e.hierarchy_id)) return malformed;
        std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1);
        std::string_view path = line.substr(c2 + 1);
        if (path.empty() || path.front() != '/') return malformed;
        if (!controllers.empty()) {
            for (;;) {
                auto comma = controllers.find(',');
                std::string_view name = controllers.substr(0, comma);
                if (name.empty()) return malformed;
                e.controllers.emplace_back(name);
                if (comma == std::string_view::npos) break;
                controllers.remove_prefix(comma + 1);
            }
        }
        e.path = std::string(path);
        entries.push_back(std::move(e));
    }
    if (entries.empty()) return malformed;
    return entries;
}

std::optional<std::string> memory_cgroup_path(const std::vector<proc_cgroup_entry>& entries, bool v2_has_memory) {
    for (const auto& e : entries) {
        for (const auto& c : e.controllers) {
            if (c == "memory") return e.path;
        }
    }
    if (v2_has_memory) {
        for (const auto& e : entries) {
            if (e.hierarchy_id == 0 && e.controllers.empty()) return e.path;
        }
    }
    return std::nullopt;
}

result<std::vector<mount_entry>> parse_mountinfo(std::string_view text) {
    const auto malformed = make_error_code(error::malformed_proc_file);
    std::vector<mount_entry> mounts;
    std::vector<std::string_view> fields;
    line_reader lines(text);
    std::string_view line;
    while (lines.next(line)) {
        if (line.find('\0') != std::string_view::npos) return malformed;
        // Single spaces separate fields; an empty field is real (a mount with an empty source).
        fields.clear();
        for (std::string_view rest = line;;) {
            auto sp = rest.find(' ');
            fields.push_back(rest.substr(0, sp));
            if (sp == std::string_view::npos) break;
            rest.remove_prefix(sp + 1);
        }
        // mount ID, parent ID, major:minor, root, mount point, options, optional fields..., "-",
        // fs type, source, super options.
        std::size_t sep = 6;
        while (sep < fields.size() && fields[sep] != "-") ++sep;
        if (sep + 3 >= fields.size()) return malformed;  // no separator, or fewer than three fields after it

        mount_entry m;
        if (!parse_decimal(fields[0], m.mount_id) || !parse_decimal(fields[1], m.parent_id) || !valid_dev(fields[2]))
            return malformed;
        if (fields[3].empty() || fields[4].empty() || fields[sep + 1].empty()) return malformed;
        m.root = decode_octal(fields[3]);
        m.mount_point = decode_octal(fields[4]);
        m.fs_type = std::string(fields[sep + 1]);
        m.source = std::string(fields[sep + 2]);
        // The rest of the line, so that a stray space in some file system's options loses nothing.
        auto offset = static_cast<std::size_t>(fields[sep + 3].data() - line.data());
        m.super_options = std::string(line.substr(offset));
        mounts.push_back(std::move(m));
    }
    if (mounts.empty()) return malformed;
    return mounts;
}

bool has_option(std::string_view options, std::string_view opt) noexcept {
    if (opt.empty()) return false;
    for (;;) {
        auto comma = options.find(',');
        if (options.substr(0, comma) == opt) return true;
        if (comma == std::string_view::npos) return false;
        options.remove_prefix(comma + 1);
    }
}

bool counter_delta::empty() const noexcept {
    for (auto n : by_kind) {
        if (n != 0) return false;
    }
    return true;
}

counter_delta compute_delta(const memory_counters& before, const memory_counters& after, kind_set kinds) noexcept {
    constexpr event_kind counted[] = {event_kind::oom,  event_kind::oom_kill, event_kind::oom_group_kill,
                                      event_kind::high, event_kind::max,      event_kind::low};
    counter_delta d;
    // One counter going down means the file is not the one the baseline came from:
    // nothing can be said about any kind.
    for (auto k : counted) {
        if (after.get(k) < before.get(k)) {
            d.went_backwards = true;
            return d;
        }
    }
    for (auto k : counted) {
        if (kinds.contains(k)) d.by_kind[static_cast<std::size_t>(k)] = after.get(k) - before.get(k);
    }
    return d;
}

counter_delta resume_delta(const memory_counters& saved, const memory_counters& now) noexcept {
    auto d = compute_delta(saved, now, kind_set::all());
    // Lower than saved: a namesake made while nobody watched, all of it news.
    if (d.went_backwards) d = compute_delta(memory_counters{}, now, kind_set::all());
    return d;
}

} // namespace oomwatch
