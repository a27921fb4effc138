// `oomwatch status [-r [--max-depth N]] [CGROUP...]`: "why do I see no OOM events?".
// Probes what watching needs on this machine (the cgroup layout, the memory controller,
// the kernel log, inotify and descriptor limits) and, for each CGROUP, its counters,
// limits, usage and the last victim the kernel log still holds. Prints a table on a
// terminal, else (or with --json) one JSON object; every probe that fails says what to do.
#include "cli.hpp"

#include "detail/cgroup.hpp"
#include "detail/kmsg_parse.hpp"
#include "detail/oom_report.hpp"
#include "detail/parse.hpp"
#include "sys.hpp"
#include "victims.hpp"

#include <oomwatch/cgroup.hpp>
#include <oomwatch/error.hpp>
#include <oomwatch/watcher.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace oomwatch::cli {

namespace fs = std::filesystem;
namespace json = boost::json;
using boost::system::error_code;

namespace {

// How much a finding matters: `error` means watching cannot work (exit 1).
enum class severity { info, warning, error };

std::string_view to_string(severity s) {
    switch (s) {
    case severity::info: return "info";
    case severity::warning: return "warning";
    case severity::error: return "error";
    }
    return "error";
}

// What the probes found, for both outputs: the JSON object, the table's rows (an empty
// label starts a section), and the findings that say what to do.
struct report {
    json::object obj;
    std::vector<std::pair<std::string, std::string>> rows;
    json::array findings;
    severity worst = severity::info;
    bool any_finding = false;

    void row(std::string label, std::string value) { rows.emplace_back(std::move(label), std::move(value)); }
    void section(std::string title) { rows.emplace_back(std::string(), std::move(title)); }
    void find(severity s, std::string_view probe, std::string message) {
        if (!any_finding || s > worst) worst = s;
        any_finding = true;
        findings.push_back(json::object{{"severity", to_string(s)}, {"probe", probe}, {"message", std::move(message)}});
    }
};

// A small kernel file's text without its trailing newline; nothing when unreadable.
std::optional<std::string> read_trimmed(const fs::path& p, error_code* why = nullptr) {
    std::string text;
    if (auto ec = detail::read_file(p, text)) {
        if (why) *why = ec;
        return std::nullopt;
    }
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
}

// A decimal value as a number, anything else ("max") as it is.
json::value number_or_text(std::string_view text) {
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec == std::errc{} && end == text.data() + text.size() && !text.empty()) return n;
    return json::string(text);
}

// Whether a space-separated list (cgroup.controllers) holds `word`.
bool lists_word(std::string_view list, std::string_view word) {
    while (!list.empty()) {
        const auto sp = list.find_first_of(" \n");
        if (list.substr(0, sp) == word) return true;
        if (sp == std::string_view::npos) break;
        list.remove_prefix(sp + 1);
    }
    return false;
}

std::string errno_text(int e) { return std::generic_category().message(e); }

// ---- the machine -------------------------------------------------------------------------

// The kernel release and whether it is at least major.minor.
struct kernel_release {
    std::string text;
    unsigned major = 0, minor = 0;
    bool at_least(unsigned ma, unsigned mi) const { return major > ma || (major == ma && minor >= mi); }
};

kernel_release read_kernel_release() {
    kernel_release k;
    utsname u{};
    if (::uname(&u) != 0) return k;
    k.text = u.release;
    const char* end = k.text.data() + k.text.size();
    auto r = std::from_chars(k.text.data(), end, k.major);
    if (r.ec == std::errc{} && r.ptr < end && *r.ptr == '.') std::from_chars(r.ptr + 1, end, k.minor);
    return k;
}

// The cgroup mounts of /proc/self/mountinfo, and the layout they make.
std::vector<mount_entry> cgroup_mounts(report& r) {
    std::string text;
    std::vector<mount_entry> out;
    if (auto ec = detail::read_file("/proc/self/mountinfo", text)) {
        r.find(severity::error, "mounts", "/proc/self/mountinfo: " + ec.message() + ": mount /proc");
        return out;
    }
    auto mounts = parse_mountinfo(text);
    if (!mounts) {
        r.find(severity::error, "mounts", "/proc/self/mountinfo: " + mounts.error().message());
        return out;
    }
    for (auto& m : *mounts)
        if (m.fs_type == "cgroup" || m.fs_type == "cgroup2") out.push_back(std::move(m));
    return out;
}

void probe_layout(report& r, const std::vector<mount_entry>& mounts) {
    bool v1 = false, v2 = false;
    json::array arr;
    std::string v1_list, v2_list;
    for (const auto& m : mounts) {
        const bool is_v2 = m.fs_type == "cgroup2";
        (is_v2 ? v2 : v1) = true;
        auto& list = is_v2 ? v2_list : v1_list;
        list += (list.empty() ? "" : ", ") + m.mount_point;
        arr.push_back(json::object{{"type", m.fs_type},
                                   {"mount_point", json_path(m.mount_point)},
                                   {"root", json_path(m.root)},
                                   {"options", m.super_options}});
    }
    const std::string_view layout = v1 && v2 ? "hybrid" : v1 ? "v1" : v2 ? "v2" : "none";
    r.obj["cgroup_version"] = layout;
    r.obj["mounts"] = std::move(arr);
    r.row("cgroup version", std::string(layout));
    if (v1) r.row("cgroup v1 mounts", v1_list);
    if (v2) r.row("cgroup2 mounts", v2_list);
    if (!v1 && !v2) r.find(severity::error, "mounts", "no cgroup file system is mounted: mount cgroup2 on /sys/fs/cgroup");
}

// The memory hierarchy, and on v2 whether the controller reaches the cgroups below the root.
std::optional<memory_hierarchy> probe_memory(report& r, const std::vector<mount_entry>& mounts) {
    auto h = detail::find_memory_hierarchy();
    if (!h) {
        r.obj["memory_hierarchy"] = nullptr;
        r.row("memory controller", "none");
        r.find(severity::error, "memory_controller",
               "no memory controller (" + h.error().message() +
                   "): boot with cgroup_enable=memory (and without cgroup_disable=memory), or mount it");
        return std::nullopt;
    }
    json::object o{{"mount_point", json_path(h->mount_point)},
                   {"root", json_path(h->root)},
                   {"version", static_cast<int>(h->version)}};
    r.row("memory controller", h->mount_point.string() + " (cgroup v" + std::to_string(static_cast<int>(h->version)) + ")");
    if (h->version == cgroup_version::v2) {
        const auto controllers = read_trimmed(h->mount_point / "cgroup.controllers").value_or("");
        const auto subtree = read_trimmed(h->mount_point / "cgroup.subtree_control").value_or("");
        const bool in_subtree = lists_word(subtree, "memory");
        o["root_controllers"] = lists_word(controllers, "memory");
        o["root_subtree_control"] = in_subtree;
        r.row("memory in subtree_control", in_subtree ? "yes" : "no");
        if (!in_subtree) {
            r.find(severity::warning, "memory_controller",
                   "memory is not in " + (h->mount_point / "cgroup.subtree_control").string() +
                       ": the cgroups below the root have no memory.events; echo +memory > " +
                       (h->mount_point / "cgroup.subtree_control").string());
        }
        bool local = false;
        for (const auto& m : mounts)
            if (m.fs_type == "cgroup2" && fs::path(m.mount_point) == h->mount_point)
                local = local || has_option(m.super_options, "memory_localevents");
        o["memory_localevents"] = local;
        r.row("memory_localevents", local ? "yes" : "no");
        if (local) {
            r.find(severity::info, "memory_localevents",
                   "cgroup2 is mounted with memory_localevents: memory.events counts each cgroup alone, not its "
                   "descendants; watch the cgroups themselves or use -r");
        }
    }
    r.obj["memory_hierarchy"] = std::move(o);
    return *h;
}

// A cgroup below the v2 root with memory.events, to see what this kernel's files hold.
std::optional<fs::path> some_v2_cgroup(const memory_hierarchy& h) {
    error_code ec;
    for (fs::directory_iterator it(h.mount_point, fs::directory_options::skip_permission_denied, ec), end;
         !ec && it != end; it.increment(ec)) {
        if (it->is_directory(ec) && fs::exists(it->path() / "memory.events", ec)) return it->path();
    }
    return std::nullopt;
}

void probe_group_kill_and_psi(report& r, const std::optional<memory_hierarchy>& h, const kernel_release& k) {
    json::object group{{"supported", false}};
    std::string why;
    const auto sample = h && h->version == cgroup_version::v2 ? some_v2_cgroup(*h) : std::nullopt;
    if (!h) {
        why = "no memory hierarchy";
    } else if (h->version == cgroup_version::v1) {
        why = "cgroup v1 has no memory.oom.group";
    } else if (sample && read_trimmed(*sample / "memory.events").value_or("").find("oom_group_kill") != std::string::npos) {
        group["supported"] = true;
        why = "memory.events has oom_group_kill";
    } else if (k.at_least(5, 17)) {
        group["supported"] = true;
        why = "kernel 5.17 or later";
    } else if (sample && fs::exists(*sample / "memory.oom.group")) {
        why = "memory.oom.group exists, but this kernel (before 5.17) does not count oom_group_kill";
    } else {
        why = "no memory.oom.group";
    }
    group["why"] = why;
    r.row("oom_group_kill", (group["supported"].as_bool() ? "yes (" : "no (") + why + ")");
    r.obj["oom_group_kill"] = std::move(group);

    error_code ec;
    json::object psi{{"file", "/proc/pressure/memory"}};
    const bool psi_ok = read_trimmed("/proc/pressure/memory", &ec).has_value();
    psi["available"] = psi_ok;
    // PSI off: older kernels keep the file and fail reads with EOPNOTSUPP; recent ones
    // (6.1) have no /proc/pressure at all, as without CONFIG_PSI. psi=0 on the command
    // line tells which.
    const bool cmdline_off = [] {
        std::istringstream words(read_trimmed("/proc/cmdline").value_or(""));
        for (std::string w; words >> w;)
            if (w == "psi=0" || w == "psi=off" || w == "psi=n") return true;
        return false;
    }();
    const bool psi_off = !psi_ok && (ec == boost::system::errc::operation_not_supported ||
                                     (ec == boost::system::errc::no_such_file_or_directory && cmdline_off));
    const std::string psi_why = psi_off ? (cmdline_off ? "PSI disabled (psi=0 on the kernel command line)" : "PSI disabled")
                            : ec == boost::system::errc::no_such_file_or_directory
                                ? "no /proc/pressure: PSI disabled (CONFIG_PSI_DEFAULT_DISABLED) or not built in"
                                : "/proc/pressure/memory: " + ec.message();
    if (!psi_ok) psi["error"] = psi_why;
    if (psi_off) psi["disabled"] = true;
    std::string text = psi_ok ? "yes" : "no (" + psi_why + ")";
    if (sample) {
        const bool cg_psi = fs::exists(*sample / "memory.pressure", ec);
        psi["cgroup_memory_pressure"] = cg_psi;
        text += cg_psi ? ", memory.pressure in cgroups" : ", no memory.pressure in cgroups";
    }
    r.row("PSI", text);
    r.obj["psi"] = std::move(psi);
    if (!psi_ok) {
        r.find(severity::info, "psi",
               "PSI unavailable (" + psi_why + "): only informational; boot with psi=1 (CONFIG_PSI) to see memory pressure");
    }
}

// kernel.dmesg_restrict, or nothing when it cannot be read.
std::optional<std::uint64_t> dmesg_restrict() {
    const auto text = read_trimmed("/proc/sys/kernel/dmesg_restrict");
    if (!text) return std::nullopt;
    const auto v = number_or_text(*text);
    return v.is_uint64() ? std::optional(v.as_uint64()) : std::nullopt;
}

// The kernel log, opened (non-blocking) to read it from its start; -1 and the errno.
struct kmsg_probe {
    int fd = -1;
    int error = 0;
};

kmsg_probe probe_kmsg(report& r) {
    kmsg_probe k;
    k.fd = ::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (k.fd < 0) k.error = errno;
    const auto restrict = dmesg_restrict();
    json::object o{{"readable", k.fd >= 0}};
    if (k.error) o["error"] = errno_text(k.error);
    r.obj["kmsg"] = std::move(o);
    r.obj["dmesg_restrict"] = restrict ? json::value(*restrict) : json::value(nullptr);
    const std::string restrict_text = restrict ? std::to_string(*restrict) : "unknown";
    r.row("/dev/kmsg", k.fd >= 0 ? "readable" : "not readable: " + errno_text(k.error));
    r.row("kernel.dmesg_restrict", restrict_text);
    if (k.error == EPERM || k.error == EACCES) {
        r.find(severity::warning, "kmsg",
               "/dev/kmsg: " + errno_text(k.error) + " (kernel.dmesg_restrict = " + restrict_text +
                   "): needs CAP_SYSLOG: run as root or give it CAP_SYSLOG; victims will not be named");
    } else if (k.error) {
        r.find(severity::warning, "kmsg",
               "/dev/kmsg: " + errno_text(k.error) + ": victims will not be named (the device is missing: mount "
                                                     "devtmpfs on /dev)");
    }
    return k;
}

void probe_vmstat(report& r) {
    std::string text;
    std::optional<std::uint64_t> kills;
    std::string problem;
    if (auto ec = detail::read_file("/proc/vmstat", text)) {
        problem = "/proc/vmstat: " + ec.message();
    } else if (auto v = parse_vmstat_oom_kill(text); !v) {
        problem = "/proc/vmstat: " + v.error().message();
    } else if (!*v) {
        problem = "/proc/vmstat has no oom_kill (a kernel before 4.13)";
    } else {
        kills = **v;
    }
    r.obj["vmstat_oom_kill"] = kills ? json::value(*kills) : json::value(nullptr);
    r.row("vmstat oom_kill", kills ? std::to_string(*kills) : "none");
    if (!problem.empty()) {
        r.find(severity::info, "vmstat",
               problem + ": watch --system cannot count kills whose kernel log record was lost");
    }
}

// Inotify use of this user's processes: instances and watches, from /proc/*/fd and
// /proc/*/fdinfo. Bounded effort: at most `max_processes` processes; those that cannot
// be read (another user's, gone meanwhile) are skipped.
struct inotify_use {
    std::uint64_t instances = 0, watches = 0, processes = 0, skipped = 0;
};

inotify_use scan_inotify_use() {
    static constexpr std::uint64_t max_processes = 4096;
    inotify_use use;
    const uid_t me = ::getuid();
    error_code ec;
    for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
        const auto pid = it->path().filename().string();
        if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
        struct stat st {};
        if (::stat(it->path().c_str(), &st) != 0 || st.st_uid != me) continue;
        if (++use.processes > max_processes) break;
        error_code fec;
        fs::directory_iterator fds(it->path() / "fd", fec);
        if (fec) {
            ++use.skipped;
            continue;
        }
        for (fs::directory_iterator fend; !fec && fds != fend; fds.increment(fec)) {
            error_code lec;
            if (fs::read_symlink(fds->path(), lec).native() != "anon_inode:inotify") continue;
            ++use.instances;
            std::string info;
            if (detail::read_file(it->path() / "fdinfo" / fds->path().filename(), info)) continue;
            for (std::string_view rest = info; !rest.empty();) {
                const auto nl = rest.find('\n');
                if (rest.starts_with("inotify wd:")) ++use.watches;
                rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
            }
        }
    }
    return use;
}

struct limits {
    std::optional<std::uint64_t> max_watches, max_instances;
    inotify_use use;
    rlimit nofile{};
};

limits probe_limits(report& r) {
    limits l;
    const auto read_number = [](const char* p) -> std::optional<std::uint64_t> {
        const auto text = read_trimmed(p);
        if (!text) return std::nullopt;
        const auto v = number_or_text(*text);
        return v.is_uint64() ? std::optional(v.as_uint64()) : std::nullopt;
    };
    const auto or_null = [](const std::optional<std::uint64_t>& v) { return v ? json::value(*v) : json::value(nullptr); };
    l.max_watches = read_number("/proc/sys/fs/inotify/max_user_watches");
    l.max_instances = read_number("/proc/sys/fs/inotify/max_user_instances");
    l.use = scan_inotify_use();
    r.obj["inotify"] = json::object{{"max_user_watches", or_null(l.max_watches)},
                                    {"max_user_instances", or_null(l.max_instances)},
                                    {"watches", l.use.watches},
                                    {"instances", l.use.instances},
                                    {"processes_scanned", l.use.processes},
                                    {"processes_skipped", l.use.skipped}};
    const auto of = [](const std::optional<std::uint64_t>& v) { return v ? std::to_string(*v) : std::string("?"); };
    r.row("inotify watches", std::to_string(l.use.watches) + " of " + of(l.max_watches) + " used by this user");
    r.row("inotify instances", std::to_string(l.use.instances) + " of " + of(l.max_instances) + " used by this user");
    if (l.max_instances && l.use.instances >= *l.max_instances) {
        r.find(severity::error, "inotify",
               "inotify: this user has all " + of(l.max_instances) +
                   " instances (fs.inotify.max_user_instances) in use: raise fs.inotify.max_user_instances");
    }
    ::getrlimit(RLIMIT_NOFILE, &l.nofile);
    const auto lim = [](rlim_t v) { return v == RLIM_INFINITY ? json::value("unlimited") : json::value(std::uint64_t(v)); };
    r.obj["rlimit_nofile"] = json::object{{"soft", lim(l.nofile.rlim_cur)}, {"hard", lim(l.nofile.rlim_max)}};
    r.row("RLIMIT_NOFILE", json::serialize(lim(l.nofile.rlim_cur)) + " (hard " + json::serialize(lim(l.nofile.rlim_max)) +
                               ")");
    return l;
}

// Whether watching `cgroups` cgroups of `version` (trees when `trees`) fits the limits.
void check_capacity(report& r, const limits& l, std::uint64_t cgroups, cgroup_version version, bool trees) {
    if (cgroups == 0) return;
    // A tree watches each directory; a v2 cgroup's memory.events is watched too.
    const std::uint64_t watches = (trees ? cgroups : 0) + (version == cgroup_version::v2 ? cgroups : 0);
    if (l.max_watches && watches > 0 && l.use.watches + watches > *l.max_watches) {
        r.find(severity::warning, "inotify",
               "inotify max_user_watches " + std::to_string(*l.max_watches) + " (" + std::to_string(l.use.watches) +
                   " in use) is below the " + std::to_string(watches) + " watches of these " +
                   std::to_string(cgroups) + " cgroups: raise fs.inotify.max_user_watches");
    }
    // v1: two eventfds per cgroup; watch -r raises the soft limit to the hard one.
    if (version == cgroup_version::v1) {
        const std::uint64_t fds = 2 * cgroups + 16;
        const rlim_t limit = trees ? l.nofile.rlim_max : l.nofile.rlim_cur;
        if (limit != RLIM_INFINITY && fds > limit) {
            r.find(severity::warning, "rlimit_nofile",
                   "RLIMIT_NOFILE " + std::to_string(limit) + " is below the about " + std::to_string(fds) +
                       " descriptors " + std::to_string(cgroups) +
                       " cgroup v1 cgroups need (2 each): raise it (ulimit -n, LimitNOFILE=)");
        }
    }
}

// ---- the kernel log's kills --------------------------------------------------------------

// Every kill the kernel log still holds, oldest first: read from its start until EAGAIN
// (bounded, should the log fill as fast as it is read).
std::vector<victim> logged_kills(int fd, const std::optional<memory_hierarchy>& h) {
    static constexpr std::size_t max_records = 1'000'000;
    std::vector<victim> out;
    detail::oom_report_assembler assembler;
    const detail::hierarchy_view view = h ? detail::hierarchy_view{h->mount_point.native(), h->root} : detail::hierarchy_view{};
    std::string buf(16384, '\0');  // one record per read; a smaller buffer gives EINVAL
    for (std::size_t n = 0; n < max_records; ++n) {
        const ssize_t got = ::read(fd, buf.data(), buf.size());
        if (got < 0) {
            if (errno == EINTR) continue;
            if (errno == EPIPE) {  // overwritten before it was read: the next is the oldest left
                assembler.note_lost();
                continue;
            }
            break;  // EAGAIN: the end; anything else: no more to learn
        }
        if (got == 0) break;
        auto rec = parse_kmsg_record(std::string_view(buf.data(), static_cast<std::size_t>(got)));
        if (!rec) continue;
        for (const auto& k : assembler.feed_record(*rec)) out.push_back(detail::to_victim(k, view));
    }
    return out;
}

bool same_or_below(const fs::path& dir, const fs::path& cgroup) {
    const std::string& d = dir.native();
    const std::string& c = cgroup.native();
    return !d.empty() && d.starts_with(c) && (d.size() == c.size() || d[c.size()] == '/' || c.ends_with('/'));
}

// ---- cgroups -------------------------------------------------------------------------------

struct target {
    std::string arg;  // as given; for a tree's descendants, empty
    fs::path dir;
    cgroup_version version = cgroup_version::v1;
    bool hierarchy_root = false;  // the v2 root: no memory.events
    unsigned depth = 0;
};

// The cgroup that an argument names, or the error (then printed on stderr).
std::optional<target> resolve(const std::string& arg, const std::optional<memory_hierarchy>& h, error_code& ec) {
    bool malformed = false;
    const auto pid = parse_pid_target(arg, malformed);
    const auto loc = pid ? memory_cgroup_of(*pid, ec) : resolve_cgroup(fs::path(arg), ec);
    if (ec == error::root_cgroup && h) {
        ec.clear();
        return target{arg, h->mount_point, h->version, true, 0};
    }
    if (ec) return std::nullopt;
    return target{arg, loc.directory, loc.version, false, 0};
}

// The cgroups below `root`, down to `max_depth` levels.
void add_descendants(const target& root, std::optional<unsigned> max_depth, std::vector<target>& out) {
    error_code ec;
    fs::recursive_directory_iterator it(root.dir, fs::directory_options::skip_permission_denied, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
        const auto depth = static_cast<unsigned>(it.depth()) + 1;
        if (!it->is_directory(ec)) continue;  // a cgroup's files; its subdirectories are cgroups
        if (max_depth && depth >= *max_depth) it.disable_recursion_pending();
        if (max_depth && depth > *max_depth) continue;
        out.push_back(target{{}, it->path(), root.version, false, depth});
    }
}

json::object read_events(const fs::path& file, report& r, std::vector<std::pair<std::string, std::string>>& rows) {
    json::object o;
    std::string text;
    if (auto ec = detail::read_file(file, text)) {
        r.find(severity::warning, "cgroup", file.string() + ": " + ec.message());
        return o;
    }
    for (std::string_view rest = text; !rest.empty();) {
        const auto nl = rest.find('\n');
        const auto line = rest.substr(0, nl);
        rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
        const auto sp = line.find(' ');
        if (sp == std::string_view::npos) continue;
        o[line.substr(0, sp)] = number_or_text(line.substr(sp + 1));
        rows.emplace_back(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
    }
    return o;
}

// A v1 limit this large means "no limit" (PAGE_COUNTER_MAX in bytes, rounded to pages).
constexpr std::uint64_t v1_unlimited = std::uint64_t(1) << 62;

json::object describe_cgroup(const target& t, report& r, const std::vector<victim>* kills) {
    json::object o;
    if (!t.arg.empty()) o["arg"] = t.arg;
    o["cgroup"] = json_path(t.dir);
    o["version"] = static_cast<int>(t.version);
    if (t.depth) o["depth"] = t.depth;
    r.section("cgroup " + t.dir.string() + " (v" + std::to_string(static_cast<int>(t.version)) + ")");
    const std::string name = t.dir.string();
    bool limited = false;
    json::object limits;
    const auto limit = [&](std::string_view file, bool optional_file) {
        const auto text = read_trimmed(t.dir / file);
        if (!text) {
            if (!optional_file) r.row(std::string(file), "unreadable");
            return;
        }
        auto v = number_or_text(*text);
        const bool none = v.is_string() ? v.as_string() == "max" : (v.is_uint64() && v.as_uint64() >= v1_unlimited);
        if (file != "memory.oom.group" && !none) limited = true;
        r.row(std::string(file), none ? *text + " (no limit)" : *text);
        limits[file] = std::move(v);
    };
    if (t.hierarchy_root) {
        o["counters"] = nullptr;
        r.row("counters", "none (the cgroup v2 root has no memory.events; see vmstat oom_kill)");
    } else if (t.version == cgroup_version::v2) {
        std::vector<std::pair<std::string, std::string>> rows, local_rows;
        o["events"] = read_events(t.dir / "memory.events", r, rows);
        o["events_local"] = read_events(t.dir / "memory.events.local", r, local_rows);
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const auto local = i < local_rows.size() && local_rows[i].first == rows[i].first ? local_rows[i].second : "?";
            r.row(rows[i].first, rows[i].second + " (local " + local + ")");
        }
        limit("memory.max", false);
        limit("memory.high", false);
        limit("memory.oom.group", true);
    } else {
        std::string text;
        if (auto ec = detail::read_file(t.dir / "memory.oom_control", text)) {
            r.find(severity::warning, "cgroup", name + "/memory.oom_control: " + ec.message());
        } else if (auto c = parse_oom_control(text); !c) {
            r.find(severity::warning, "cgroup", name + "/memory.oom_control: " + c.error().message());
        } else {
            o["counters"] = json::object{{"oom_kill", c->oom_kill ? json::value(*c->oom_kill) : json::value(nullptr)},
                                         {"under_oom", c->under_oom ? 1 : 0},
                                         {"oom_kill_disable", c->oom_kill_disable ? 1 : 0}};
            r.row("oom_kill", c->oom_kill ? std::to_string(*c->oom_kill) : "not counted (kernel before 4.13)");
            r.row("under_oom", c->under_oom ? "1" : "0");
            r.row("oom_kill_disable", c->oom_kill_disable ? "1" : "0");
            if (c->oom_kill_disable) {
                r.find(severity::warning, "cgroup",
                       name + ": oom_kill_disable is 1: the OOM killer does not run here, tasks wait instead (no "
                              "oom_kill events): echo 0 > " + name + "/memory.oom_control");
            } else if (c->under_oom) {
                r.find(severity::info, "cgroup", name + " is under OOM now");
            }
        }
        limit("memory.limit_in_bytes", false);
        if (fs::exists(t.dir / "memory.memsw.limit_in_bytes")) limit("memory.memsw.limit_in_bytes", true);
    }
    o["limits"] = std::move(limits);
    const auto usage = read_trimmed(t.dir / (t.version == cgroup_version::v2 ? "memory.current" : "memory.usage_in_bytes"));
    o["usage"] = usage ? number_or_text(*usage) : json::value(nullptr);
    if (usage) r.row("usage", *usage);
    if (!limited && !t.hierarchy_root && t.depth == 0) {
        r.find(severity::info, "cgroup",
               name + " has no memory limit of its own: OOM kills there come only from an ancestor's limit or the "
                      "whole machine");
    }
    if (kills) {
        const victim* last = nullptr;
        for (const auto& v : *kills)
            if (same_or_below(v.task_cgroup, t.dir) || (v.task_cgroup.empty() && same_or_below(v.group_cgroup, t.dir)))
                last = &v;
        o["last_victim"] = last ? json::value(victim_to_json(*last)) : json::value(nullptr);
        r.row("last victim", last ? "pid " + std::to_string(last->pid) + " (" + last->comm + ") in " +
                                        last->task_cgroup.string() + ", kernel time " +
                                        std::to_string(last->kernel_time.count() / 1000000) + " s"
                                  : "none in the kernel log");
    }
    return o;
}

// Whether `oomwatch watch` could watch the cgroup: a watcher made and closed at once.
void check_watchable(const target& t, report& r, json::object& o) {
    if (t.hierarchy_root) return;  // only as a tree (-r)
    boost::asio::io_context ioc(1);
    watch_options opts;
    opts.victims = false;  // the kernel log is probed on its own
    error_code ec;
    watcher w(ioc, t.dir, opts, ec);
    o["watchable"] = !ec;
    if (!ec) return;
    o["error"] = ec.message();
    std::string hint;
    if (ec == boost::system::errc::permission_denied)
        hint = t.version == cgroup_version::v1 ? ": run as root (cgroup.event_control needs write access)" : ": run as root";
    else if (ec == boost::system::errc::too_many_files_open || ec == boost::system::errc::no_space_on_device)
        hint = ": raise RLIMIT_NOFILE or fs.inotify.max_user_watches";
    r.find(severity::error, "cgroup", t.dir.string() + " cannot be watched: " + ec.message() + hint);
}

std::string render_table(const report& r) {
    std::string out = "oomwatch status\n";
    for (const auto& [label, value] : r.rows) {
        if (label.empty()) {
            out += "\n" + value + "\n";
            continue;
        }
        std::string line = "  " + label;
        line.resize(std::max<std::size_t>(line.size() + 1, 32), ' ');
        out += line + value + "\n";
    }
    if (!r.findings.empty()) out += "\n";
    for (const auto& f : r.findings) {
        const auto& o = f.as_object();
        out += std::string(o.at("severity").as_string()) + ": " + std::string(o.at("message").as_string()) + "\n";
    }
    if (r.findings.empty()) out += "\nno problems found\n";
    return out;
}

} // namespace

std::optional<std::string> status_usage_problem(const watch_request& req) {
    const watch_options defaults;
    if (req.system) return "--system is an option of watch";
    if (req.metrics.enabled() || req.metrics.retention != metrics_config{}.retention)
        return "--metrics, --textfile and --metrics-retention are options of watch";
    if (req.opts.kinds != defaults.kinds) return "--kinds is an option of watch";
    if (req.opts.counters != defaults.counters) return "--local is an option of watch (status shows both counters)";
    if (req.opts.victims != defaults.victims || req.opts.victim_hold != defaults.victim_hold)
        return "--no-victims and --victim-hold are options of watch";
    if (req.max_depth && !req.recursive) return "--max-depth needs --recursive (-r)";
    for (const auto& t : req.targets) {
        bool malformed = false;
        parse_pid_target(t, malformed);
        if (malformed) return t + ": not a process ID";
    }
    return std::nullopt;
}

int run_status(const watch_request& req, status_format format) {
    report r;
    const auto kernel = read_kernel_release();
    r.obj["kernel"] = kernel.text;
    r.row("kernel", kernel.text);
    const auto mounts = cgroup_mounts(r);
    probe_layout(r, mounts);
    const auto h = probe_memory(r, mounts);
    probe_group_kill_and_psi(r, h, kernel);
    auto kmsg = probe_kmsg(r);
    probe_vmstat(r);
    const auto lim = probe_limits(r);

    // The cgroups: each argument (a missing one is reported, status 3), with -r its subtree.
    bool missing = false;
    std::vector<target> targets;
    json::array cgroups;
    for (const auto& arg : req.targets) {
        error_code ec;
        auto t = resolve(arg, h, ec);
        if (!t) {
            std::cerr << "oomwatch: " << arg << ": " << ec.message() << '\n';
            cgroups.push_back(json::object{{"arg", arg}, {"error", ec.message()}});
            r.find(severity::error, "cgroup", arg + ": " + ec.message());
            missing = true;
            continue;
        }
        targets.push_back(*t);
        if (req.recursive) add_descendants(*t, req.max_depth, targets);
    }
    if (req.targets.empty() && req.recursive && h) {
        targets.push_back(target{h->mount_point.string(), h->mount_point, h->version, h->version == cgroup_version::v2, 0});
        add_descendants(targets.back(), req.max_depth, targets);
    }

    std::vector<victim> kills;
    if (kmsg.fd >= 0 && !targets.empty()) kills = logged_kills(kmsg.fd, h);
    if (kmsg.fd >= 0) ::close(kmsg.fd);
    if (h) check_capacity(r, lim, targets.size(), h->version, req.recursive);
    for (const auto& t : targets) {
        auto o = describe_cgroup(t, r, kmsg.fd >= 0 ? &kills : nullptr);
        if (t.depth == 0) check_watchable(t, r, o);
        cgroups.push_back(std::move(o));
    }
    if (!req.targets.empty() || req.recursive) r.obj["cgroups"] = std::move(cgroups);

    const bool prevents = r.any_finding && r.worst == severity::error;
    r.obj["ok"] = !prevents;
    r.obj["findings"] = r.findings;
    const bool table = format == status_format::table || (format == status_format::automatic && ::isatty(STDOUT_FILENO));
    if (auto ec = write_stdout(table ? render_table(r) : json::serialize(r.obj) + "\n")) {
        report_stdout_error(ec);
        return exit_failure;
    }
    if (missing) return exit_cannot_watch;
    return prevents ? exit_failure : exit_ok;
}

} // namespace oomwatch::cli
