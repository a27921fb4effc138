// libFuzzer target: parse_mountinfo (/proc/PID/mountinfo), select_memory_hierarchy and
// has_option.
//
// Invariants checked on every input:
// - it never throws; a failure is error::malformed_proc_file;
// - it accepts exactly what the grammar in parse.hpp/parse.cpp accepts (single spaces
//   between fields, a "-" field at index 6 or later followed by at least three fields,
//   decimal IDs, a major:minor device, non-empty root, mount point and file system
//   type, no NUL), with the same entries: root and mount point octal-decoded, the super
//   options the rest of the line (reference parser below);
// - the entries, written back with the kernel's escaping, parse to the same entries;
// - select_memory_hierarchy, with a v2 predicate derived from the input, an
//   always-true one and none at all, picks what its documentation says (v1 "cgroup"
//   with the "memory" option first, then cgroup2 the predicate accepts; an absolute
//   mount point; root "/" preferred, else the first), or fails with
//   no_memory_hierarchy; it only asks the predicate about cgroup2 mount points (in the
//   library the predicate reads files under the path);
// - has_option agrees with a plain split at ','.
#include "detail/cgroup.hpp"
#include "detail/parse.hpp"
#include "fuzz_common.hpp"

#include <oomwatch/cgroup.hpp>
#include <oomwatch/error.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

using oomwatch::cgroup_version;
using oomwatch::mount_entry;

bool same_mounts(const std::vector<mount_entry>& a, const std::vector<mount_entry>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const auto& x = a[i];
        const auto& y = b[i];
        if (x.mount_id != y.mount_id || x.parent_id != y.parent_id || x.root != y.root ||
            x.mount_point != y.mount_point || x.fs_type != y.fs_type || x.source != y.source ||
            x.super_options != y.super_options)
            return false;
    }
    return true;
}

bool is_octal(char c) { return c >= '0' && c <= '7'; }

// "\ooo" with a value 1..255 becomes that byte; anything else stays as it is.
std::string ref_decode(std::string_view s) {
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        if (s[i] == '\\' && s.size() - i >= 4 && is_octal(s[i + 1]) && is_octal(s[i + 2]) && is_octal(s[i + 3])) {
            unsigned v = unsigned(s[i + 1] - '0') * 64 + unsigned(s[i + 2] - '0') * 8 + unsigned(s[i + 3] - '0');
            if (v >= 1 && v <= 255) {
                out += static_cast<char>(v);
                i += 4;
                continue;
            }
        }
        out += s[i];
        ++i;
    }
    return out;
}

// The kernel's escaping of mount points and roots (mangle(): space, tab, newline,
// backslash as \ooo).
std::string encode(std::string_view s) {
    static const char digits[] = "01234567";
    std::string out;
    for (char c : s) {
        if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
            auto u = static_cast<unsigned char>(c);
            out += '\\';
            out += digits[(u >> 6) & 7];
            out += digits[(u >> 3) & 7];
            out += digits[u & 7];
        } else {
            out += c;
        }
    }
    return out;
}

std::optional<std::vector<mount_entry>> ref_parse(std::string_view text) {
    std::vector<mount_entry> out;
    for (std::string_view line : fuzz::ref_lines(text)) {
        if (line.find('\0') != std::string_view::npos) return std::nullopt;
        std::vector<std::string_view> f;
        std::vector<std::size_t> starts;
        std::size_t start = 0;
        for (std::size_t i = 0; i <= line.size(); ++i) {
            if (i == line.size() || line[i] == ' ') {
                f.push_back(line.substr(start, i - start));
                starts.push_back(start);
                start = i + 1;
            }
        }
        std::optional<std::size_t> sep;
        for (std::size_t i = 6; i < f.size(); ++i) {
            if (f[i] == "-") {
                sep = i;
                break;
            }
        }
        if (!sep || f.size() < *sep + 4) return std::nullopt;
        auto id = fuzz::ref_decimal<unsigned>(f[0]);
        auto parent = fuzz::ref_decimal<unsigned>(f[1]);
        auto colon = f[2].find(':');
        if (!id || !parent || colon == std::string_view::npos) return std::nullopt;
        if (!fuzz::ref_decimal<unsigned>(f[2].substr(0, colon)) || !fuzz::ref_decimal<unsigned>(f[2].substr(colon + 1)))
            return std::nullopt;
        if (f[3].empty() || f[4].empty() || f[*sep + 1].empty()) return std::nullopt;
        mount_entry m;
        m.mount_id = *id;
        m.parent_id = *parent;
        m.root = ref_decode(f[3]);
        m.mount_point = ref_decode(f[4]);
        m.fs_type = std::string(f[*sep + 1]);
        m.source = std::string(f[*sep + 2]);
        m.super_options = std::string(line.substr(starts[*sep + 3]));
        out.push_back(m);
    }
    if (out.empty()) return std::nullopt;
    return out;
}

bool ref_has_option(std::string_view options, std::string_view opt) {
    if (opt.empty()) return false;
    std::string cur;
    for (std::size_t i = 0; i <= options.size(); ++i) {
        if (i == options.size() || options[i] == ',') {
            if (cur == opt) return true;
            cur.clear();
        } else {
            cur += options[i];
        }
    }
    return false;
}

using predicate = std::function<bool(const std::filesystem::path&)>;

// What select_memory_hierarchy's documentation says it picks.
std::optional<oomwatch::memory_hierarchy> ref_select(const std::vector<mount_entry>& mounts, const predicate& v2) {
    auto pick = [&](auto&& candidate, cgroup_version v) -> std::optional<oomwatch::memory_hierarchy> {
        std::optional<oomwatch::memory_hierarchy> first;
        for (const auto& m : mounts) {
            if (m.mount_point.empty() || m.mount_point[0] != '/' || !candidate(m)) continue;
            oomwatch::memory_hierarchy h{m.mount_point, m.root, v};
            if (m.root == "/") return h;
            if (!first) first = h;
        }
        return first;
    };
    if (auto h = pick([](const mount_entry& m) { return m.fs_type == "cgroup" && ref_has_option(m.super_options, "memory"); },
                      cgroup_version::v1))
        return h;
    return pick([&](const mount_entry& m) { return m.fs_type == "cgroup2" && v2 && v2(m.mount_point); },
                cgroup_version::v2);
}

void check_select(const std::vector<mount_entry>& mounts, const predicate& v2) {
    std::set<std::string> cgroup2_points;
    for (const auto& m : mounts) {
        if (m.fs_type == "cgroup2") cgroup2_points.insert(m.mount_point);
    }
    predicate watched;
    if (v2) {
        watched = [&](const std::filesystem::path& p) {
            // In the library this predicate reads p/cgroup.controllers: it must only be
            // asked about cgroup2 mounts.
            FUZZ_CHECK(cgroup2_points.count(p.native()) == 1);
            return v2(p);
        };
    }
    auto got = oomwatch::select_memory_hierarchy(mounts, watched);
    auto want = ref_select(mounts, v2);
    FUZZ_CHECK(got.has_value() == want.has_value());
    if (!got) {
        FUZZ_CHECK(got.error() == make_error_code(oomwatch::error::no_memory_hierarchy));
        return;
    }
    FUZZ_CHECK(got->mount_point == want->mount_point);
    FUZZ_CHECK(got->root == want->root);
    FUZZ_CHECK(got->version == want->version);
    FUZZ_CHECK(got->mount_point.is_absolute());
}

void run(std::string_view text) {
    auto r = oomwatch::parse_mountinfo(text);
    if (!r) FUZZ_CHECK(r.error() == make_error_code(oomwatch::error::malformed_proc_file));

    auto ref = ref_parse(text);
    FUZZ_CHECK(r.has_value() == ref.has_value());
    if (!r) return;
    FUZZ_CHECK(same_mounts(*r, *ref));

    // Written back as the kernel would print them (no optional fields, device 0:0).
    std::string again;
    for (const auto& m : *r) {
        FUZZ_CHECK(!m.root.empty() && !m.mount_point.empty() && !m.fs_type.empty());
        FUZZ_CHECK(m.fs_type.find(' ') == std::string::npos && m.source.find(' ') == std::string::npos);
        again += std::to_string(m.mount_id) + ' ' + std::to_string(m.parent_id) + " 0:0 " + encode(m.root) + ' ' +
                 encode(m.mount_point) + " rw - " + m.fs_type + ' ' + m.source + ' ' + m.super_options + '\n';
    }
    auto r2 = oomwatch::parse_mountinfo(again);
    FUZZ_CHECK(r2.has_value());
    FUZZ_CHECK(same_mounts(*r2, *r));

    // has_option on the real option lists, for a fixed option and one taken from the input.
    const std::uint64_t seed = fuzz::fnv1a(text);
    for (const auto& m : *r) {
        std::string_view opts = m.super_options;
        std::string_view some = opts.substr(0, opts.find(','));
        std::string_view prefix = std::string_view(m.fs_type).substr(0, 3);
        for (std::string_view opt : {std::string_view("memory"), std::string_view("rw"), some, prefix})
            FUZZ_CHECK(oomwatch::has_option(opts, opt) == ref_has_option(opts, opt));
    }

    // v2 "has memory" predicates: one derived from the input (stable per path), always
    // yes, and none.
    check_select(*r, [seed](const std::filesystem::path& p) { return (fuzz::fnv1a(p.native(), seed) & 1) != 0; });
    check_select(*r, [](const std::filesystem::path&) { return true; });
    check_select(*r, predicate{});
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FUZZ_NO_THROW(run(fuzz::as_text(data, size)));
    return 0;
}
