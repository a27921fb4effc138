// libFuzzer target: parse_proc_cgroup (/proc/PID/cgroup) and memory_cgroup_path.
//
// Invariants checked on every input:
// - it never throws; a failure is error::malformed_proc_file;
// - it accepts exactly what the documented grammar accepts
//   ("hierarchy-ID:controller-list:cgroup-path" a line, only the first two ':' split,
//   no empty controller names, the path starts with '/', no NUL, at least one line),
//   with the same entries (reference parser below);
// - the entries, written back as lines, parse to the same entries;
// - memory_cgroup_path, with both values of v2_has_memory, returns the path of the
//   first v1 line listing "memory", else (only when asked) the first "0::" line's,
//   else nothing; a v1 answer does not depend on v2_has_memory; any answer starts
//   with '/'.
#include "detail/parse.hpp"
#include "fuzz_common.hpp"

#include <oomwatch/error.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using oomwatch::proc_cgroup_entry;

bool same_entries(const std::vector<proc_cgroup_entry>& a, const std::vector<proc_cgroup_entry>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i].hierarchy_id != b[i].hierarchy_id || a[i].controllers != b[i].controllers || a[i].path != b[i].path)
            return false;
    }
    return true;
}

std::optional<std::vector<proc_cgroup_entry>> ref_parse(std::string_view text) {
    std::vector<proc_cgroup_entry> out;
    for (std::string_view line : fuzz::ref_lines(text)) {
        // The first two ':' split; the path keeps any further ones.
        std::vector<std::size_t> colons;
        for (std::size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '\0') return std::nullopt;
            if (line[i] == ':' && colons.size() < 2) colons.push_back(i);
        }
        if (colons.size() < 2) return std::nullopt;
        proc_cgroup_entry e;
        auto id = fuzz::ref_decimal<unsigned>(line.substr(0, colons[0]));
        if (!id) return std::nullopt;
        e.hierarchy_id = *id;
        std::string_view list = line.substr(colons[0] + 1, colons[1] - colons[0] - 1);
        if (!list.empty()) {
            std::string name;
            for (char c : list) {
                if (c == ',') {
                    if (name.empty()) return std::nullopt;
                    e.controllers.push_back(name);
                    name.clear();
                } else {
                    name += c;
                }
            }
            if (name.empty()) return std::nullopt;
            e.controllers.push_back(name);
        }
        e.path = std::string(line.substr(colons[1] + 1));
        if (e.path.empty() || e.path[0] != '/') return std::nullopt;
        out.push_back(e);
    }
    if (out.empty()) return std::nullopt;
    return out;
}

std::optional<std::string> ref_memory_path(const std::vector<proc_cgroup_entry>& entries, bool v2_has_memory) {
    for (const auto& e : entries) {
        for (const auto& c : e.controllers) {
            if (c == "memory") return e.path;
        }
    }
    if (!v2_has_memory) return std::nullopt;
    for (const auto& e : entries) {
        if (e.hierarchy_id == 0 && e.controllers.empty()) return e.path;
    }
    return std::nullopt;
}

void run(std::string_view text) {
    auto r = oomwatch::parse_proc_cgroup(text);
    if (!r) FUZZ_CHECK(r.error() == make_error_code(oomwatch::error::malformed_proc_file));

    auto ref = ref_parse(text);
    FUZZ_CHECK(r.has_value() == ref.has_value());
    if (!r) return;
    FUZZ_CHECK(same_entries(*r, *ref));

    // Written back, the same entries.
    std::string again;
    for (const auto& e : *r) {
        FUZZ_CHECK(!e.path.empty() && e.path.front() == '/');
        again += std::to_string(e.hierarchy_id) + ':';
        for (std::size_t i = 0; i < e.controllers.size(); ++i) {
            FUZZ_CHECK(!e.controllers[i].empty());
            FUZZ_CHECK(e.controllers[i].find_first_of(",:\n") == std::string::npos);
            if (i) again += ',';
            again += e.controllers[i];
        }
        again += ':' + e.path + '\n';
    }
    auto r2 = oomwatch::parse_proc_cgroup(again);
    FUZZ_CHECK(r2.has_value());
    FUZZ_CHECK(same_entries(*r2, *r));

    std::optional<std::string> paths[2];
    for (bool v2 : {false, true}) {
        auto& p = paths[v2];
        FUZZ_NO_THROW(p = oomwatch::memory_cgroup_path(*r, v2));
        FUZZ_CHECK(p == ref_memory_path(*r, v2));
        if (p) FUZZ_CHECK(!p->empty() && p->front() == '/');
    }
    // The v1 line wins whatever v2 says; asking about v2 can only add an answer.
    if (paths[0]) FUZZ_CHECK(paths[1] == paths[0]);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FUZZ_NO_THROW(run(fuzz::as_text(data, size)));
    return 0;
}
