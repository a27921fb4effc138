#include <oomwatch/cgroup.hpp>

#include <oomwatch/error.hpp>

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"
#include "sys.hpp"

#include <cerrno>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace oomwatch {

namespace fs = std::filesystem;
using boost::system::error_code;

namespace {

error_code errno_code(int e) noexcept {
    return {e, boost::system::system_category()};
}

// Lexically normal and without a trailing separator ("/a/b/" -> "/a/b", "/" stays).
fs::path normal(const fs::path& p) {
    fs::path n = p.lexically_normal();
    if (!n.empty() && !n.has_filename() && n != n.root_path()) n = n.parent_path();
    return n;
}

fs::path proc_cgroup_file(pid_t pid) {
    return fs::path("/proc") / std::to_string(pid) / "cgroup";
}

std::size_t component_count(const fs::path& p) {
    return static_cast<std::size_t>(std::distance(p.begin(), p.end()));
}

// What is left of `p` below `base`, compared component by component (so /a/bc is
// not under /a/b); nullopt when p is not under base. Both must be normal().
std::optional<fs::path> relative_under(const fs::path& p, const fs::path& base) {
    auto pi = p.begin();
    for (const auto& b : base) {
        if (pi == p.end() || *pi != b) return std::nullopt;
        ++pi;
    }
    fs::path rest;
    for (; pi != p.end(); ++pi) rest /= *pi;
    return rest;
}

// A path inside a hierarchy ("/a/b", or "a/b" taken from the root) with "." and ".."
// resolved; nullopt when ".." climbs above the root (/proc shows "/.." for cgroups
// outside this process's cgroup namespace: they are not reachable from here).
std::optional<fs::path> hierarchy_path(const fs::path& spec) {
    std::vector<std::string> parts;
    for (const auto& c : spec) {
        const std::string& s = c.native();
        if (s.find_first_not_of('/') == std::string::npos || s == ".") continue;
        if (s == "..") {
            if (parts.empty()) return std::nullopt;
            parts.pop_back();
            continue;
        }
        parts.push_back(s);
    }
    fs::path out = "/";
    for (const auto& s : parts) out /= s;
    return out;
}

// Whether `dir/name` is a regular file; errors other than "missing" are passed on.
error_code regular_file_present(const fs::path& dir, const char* name, bool& present) {
    struct stat st {};
    present = false;
    if (auto ec = detail::stat_path(dir / name, st)) {
        if (ec.value() == ENOENT || ec.value() == ENOTDIR) return {};
        return ec;
    }
    present = S_ISREG(st.st_mode);
    return {};
}

result<std::vector<mount_entry>> read_mounts() {
    std::string text;
    if (auto ec = detail::read_file("/proc/self/mountinfo", text)) return ec;
    return parse_mountinfo(text);
}

// Whether a cgroup.controllers text (space separated) lists "memory".
bool lists_memory(std::string_view text) {
    std::size_t i = 0;
    while (i < text.size()) {
        auto start = text.find_first_not_of(" \t\n", i);
        if (start == std::string_view::npos) break;
        auto end = text.find_first_of(" \t\n", start);
        if (end == std::string_view::npos) end = text.size();
        if (text.substr(start, end - start) == "memory") return true;
        i = end;
    }
    return false;
}

// Maps a path inside the memory hierarchy onto the mounted directory and checks it.
result<cgroup_location> locate_in_hierarchy(const memory_hierarchy& h, const fs::path& spec) {
    auto inside = hierarchy_path(spec);
    auto root = hierarchy_path(h.root);
    if (!inside || !root) return errno_code(ENOENT);
    // A sub-tree mount (root "/docker/x") shows only what lies below its root.
    auto rel = relative_under(*inside, *root);
    if (!rel) return errno_code(ENOENT);
    return check_cgroup_directory(normal(h.mount_point / *rel), h.version);
}

// `dir` (normal, absolute) lies in the cgroup file system mounted as `m`.
result<cgroup_location> check_in_mount(const fs::path& dir, const mount_entry& m) {
    struct stat st {};
    if (auto ec = detail::stat_path(dir, st)) return ec;
    if (!S_ISDIR(st.st_mode)) return make_error_code(error::not_a_cgroup);
    if (m.fs_type == "cgroup") {
        if (!has_option(m.super_options, "memory")) return make_error_code(error::no_memory_controller);
        return check_cgroup_directory(dir, cgroup_version::v1);
    }
    // Without memory.events: no_memory_controller (the controller is not enabled here,
    // or the hierarchy has none), or root_cgroup (the root of the memory hierarchy,
    // which never has the file).
    return check_cgroup_directory(dir, cgroup_version::v2);
}

} // namespace

bool v2_root_has_memory(const fs::path& mount_point) {
    std::string text;
    if (detail::read_file(mount_point / "cgroup.controllers", text)) return false;
    return lists_memory(text);
}

result<memory_hierarchy> select_memory_hierarchy(const std::vector<mount_entry>& mounts,
                                                 const v2_memory_probe& v2_root_has_memory_fn) {
    auto pick = [&mounts](auto&& is_candidate, cgroup_version v) -> std::optional<memory_hierarchy> {
        const mount_entry* first = nullptr;
        for (const auto& m : mounts) {
            if (m.mount_point.empty() || m.mount_point.front() != '/' || !is_candidate(m)) continue;
            if (m.root == "/") {
                first = &m;
                break;
            }
            if (!first) first = &m;
        }
        if (!first) return std::nullopt;
        return memory_hierarchy{fs::path(first->mount_point), first->root, v};
    };

    auto v1 = pick([](const mount_entry& m) { return m.fs_type == "cgroup" && has_option(m.super_options, "memory"); },
                   cgroup_version::v1);
    if (v1) return *v1;
    auto v2 = pick(
        [&v2_root_has_memory_fn](const mount_entry& m) {
            return m.fs_type == "cgroup2" && v2_root_has_memory_fn && v2_root_has_memory_fn(fs::path(m.mount_point));
        },
        cgroup_version::v2);
    if (v2) return *v2;
    return make_error_code(error::no_memory_hierarchy);
}

result<memory_hierarchy> detail::find_memory_hierarchy() {
    auto mounts = read_mounts();
    if (!mounts) return mounts.error();
    return select_memory_hierarchy(*mounts, v2_root_has_memory);
}

result<cgroup_location> check_cgroup_directory(const fs::path& dir, cgroup_version version) {
    if (dir.empty()) return errno_code(ENOENT);
    fs::path abs = dir;
    if (!abs.is_absolute()) {
        std::error_code ec;
        abs = fs::absolute(dir, ec);
        if (ec) return errno_code(ec.value());
    }
    abs = normal(abs);

    struct stat st {};
    if (auto ec = detail::stat_path(abs, st)) return ec;
    if (!S_ISDIR(st.st_mode)) return make_error_code(error::not_a_cgroup);

    if (version == cgroup_version::v1) {
        bool oom_control = false;
        bool event_control = false;
        if (auto ec = regular_file_present(abs, "memory.oom_control", oom_control)) return ec;
        if (auto ec = regular_file_present(abs, "cgroup.event_control", event_control)) return ec;
        if (!oom_control || !event_control) return make_error_code(error::not_a_cgroup);
    } else {
        bool events = false;
        if (auto ec = regular_file_present(abs, "memory.events", events)) return ec;
        if (!events) {
            bool controllers = false;
            if (auto ec = regular_file_present(abs, "cgroup.controllers", controllers)) return ec;
            if (!controllers) return make_error_code(error::not_a_cgroup);
            // The root of a hierarchy that has the memory controller: the kernel keeps
            // no memory.events there. Every cgroup but the root has cgroup.type.
            bool type = false;
            if (auto ec = regular_file_present(abs, "cgroup.type", type)) return ec;
            if (!type) {
                std::string text;
                if (!detail::read_file(abs / "cgroup.controllers", text) && lists_memory(text))
                    return make_error_code(error::root_cgroup);
            }
            return make_error_code(error::no_memory_controller);
        }
    }
    return cgroup_location{abs, version};
}

result<cgroup_location> resolve_cgroup_in(const std::vector<mount_entry>& mounts, const fs::path& spec,
                                          const v2_memory_probe& v2_root_has_memory_fn) {
    if (spec.empty()) return errno_code(ENOENT);
    if (spec.is_absolute()) {
        fs::path p = normal(spec);
        // The mount the path is on: the longest mount point above it; of mounts on the
        // same point the last, which hides the others.
        const mount_entry* on = nullptr;
        std::size_t on_depth = 0;
        for (const auto& m : mounts) {
            fs::path mp = normal(fs::path(m.mount_point));
            if (!mp.is_absolute() || !relative_under(p, mp)) continue;
            std::size_t depth = component_count(mp);
            if (!on || depth >= on_depth) {
                on = &m;
                on_depth = depth;
            }
        }
        if (on && (on->fs_type == "cgroup" || on->fs_type == "cgroup2")) return check_in_mount(p, *on);
    }

    auto h = select_memory_hierarchy(mounts, v2_root_has_memory_fn);
    if (!h) return h.error();
    auto loc = locate_in_hierarchy(*h, spec);
    if (!loc && loc.error() == boost::system::errc::no_such_file_or_directory && spec.is_absolute()) {
        // Not in the hierarchy, but the path exists elsewhere: it is no cgroup. When it
        // cannot even be looked at (a directory above it is not searchable), say so:
        // "no such file" would be a guess.
        struct stat st {};
        auto ec = detail::stat_path(spec, st);
        if (!ec) return make_error_code(error::not_a_cgroup);
        if (ec != boost::system::errc::no_such_file_or_directory && ec != boost::system::errc::not_a_directory)
            return ec;
    }
    return loc;
}

result<cgroup_location> detail::resolve_cgroup(const fs::path& spec) {
    if (spec.empty()) return errno_code(ENOENT);
    auto mounts = read_mounts();
    if (!mounts) return mounts.error();
    return resolve_cgroup_in(*mounts, spec, v2_root_has_memory);
}

result<cgroup_location> detail::memory_cgroup_of(pid_t pid) {
    std::string text;
    if (auto ec = detail::read_file(proc_cgroup_file(pid), text)) {
        // A process that exits while its file is read gives ESRCH.
        if (ec.value() == ENOENT || ec.value() == ESRCH)
            return make_error_code(boost::system::errc::no_such_process);
        return ec;
    }
    auto entries = parse_proc_cgroup(text);
    if (!entries) return entries.error();

    auto mounts = read_mounts();
    if (!mounts) return mounts.error();
    auto h = select_memory_hierarchy(*mounts, v2_root_has_memory);
    if (!h) return h.error();

    auto path = memory_cgroup_path(*entries, h->version == cgroup_version::v2);
    if (!path) return make_error_code(error::no_memory_hierarchy);
    return locate_in_hierarchy(*h, fs::path(*path));
}

// ---- the public forms -----------------------------------------------------------------

namespace {

// The value of `r`, or `T{}` with `ec` set to its error.
template <class T>
T value_or_code(result<T>&& r, error_code& ec) {
    if (!r) {
        ec = r.error();
        return T{};
    }
    ec = {};
    return std::move(*r);
}

// The value of `r`, or a thrown cgroup_error naming `path`.
template <class T>
T value_or_throw(result<T>&& r, const fs::path& path) {
    if (!r) throw cgroup_error(r.error(), path);
    return std::move(*r);
}

} // namespace

memory_hierarchy find_memory_hierarchy() {
    return value_or_throw(detail::find_memory_hierarchy(), "/proc/self/mountinfo");
}

memory_hierarchy find_memory_hierarchy(error_code& ec) {
    return value_or_code(detail::find_memory_hierarchy(), ec);
}

cgroup_location resolve_cgroup(const fs::path& spec) {
    return value_or_throw(detail::resolve_cgroup(spec), spec);
}

cgroup_location resolve_cgroup(const fs::path& spec, error_code& ec) {
    return value_or_code(detail::resolve_cgroup(spec), ec);
}

cgroup_location memory_cgroup_of(pid_t pid) {
    return value_or_throw(detail::memory_cgroup_of(pid), proc_cgroup_file(pid));
}

cgroup_location memory_cgroup_of(pid_t pid, error_code& ec) {
    return value_or_code(detail::memory_cgroup_of(pid), ec);
}

} // namespace oomwatch
