// The state file of `watch --state`.
#include "state.hpp"

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace oomwatch::cli {

namespace json = boost::json;

namespace {

// The counting kinds and their counters.
struct counter_of {
    event_kind kind;
    std::uint64_t memory_counters::*field;
};
constexpr counter_of counting[] = {
    {event_kind::oom, &memory_counters::oom},   {event_kind::oom_kill, &memory_counters::oom_kill},
    {event_kind::oom_group_kill, &memory_counters::oom_group_kill},
    {event_kind::high, &memory_counters::high}, {event_kind::max, &memory_counters::max},
    {event_kind::low, &memory_counters::low}};

// A JSON number that is a counter.
std::optional<std::uint64_t> as_counter(const json::value& v) {
    if (v.is_uint64()) return v.get_uint64();
    if (v.is_int64() && v.get_int64() >= 0) return static_cast<std::uint64_t>(v.get_int64());
    return std::nullopt;
}

// v1 has no kernel OOM counter: "oom" counts one run's notifications, not to be resumed.
memory_counters kernel_counters(const memory_counters& c, cgroup_version v) {
    if (v == cgroup_version::v2) return c;
    memory_counters k;
    k.oom_kill = c.oom_kill;
    return k;
}

} // namespace

std::string render_state(const saved_state& s) {
    json::object cgroups;
    for (const auto& [dir, c] : s.cgroups) {
        json::object o;
        for (const auto& k : counting) o[to_string(k.kind)] = c.*k.field;
        cgroups[dir] = std::move(o);
    }
    json::object root;
    root["version"] = 1;
    root["boot_id"] = s.boot_id;
    root["mode"] = s.mode;
    root["cgroups"] = std::move(cgroups);
    if (s.vmstat_oom_kill) root["vmstat_oom_kill"] = *s.vmstat_oom_kill;
    return json::serialize(root) + "\n";
}

std::optional<saved_state> parse_state(std::string_view text, std::string& error) {
    boost::system::error_code ec;
    const auto v = json::parse(text, ec);
    if (ec) {
        error = "not JSON (" + ec.message() + ")";
        return std::nullopt;
    }
    const auto* root = v.if_object();
    if (!root) {
        error = "not a JSON object";
        return std::nullopt;
    }
    const auto* version = root->if_contains("version");
    if (!version || as_counter(*version) != 1u) {
        error = "not version 1";
        return std::nullopt;
    }
    saved_state s;
    const auto* boot = root->if_contains("boot_id");
    const auto* mode = root->if_contains("mode");
    const auto* cgroups = root->if_contains("cgroups");
    if (!boot || !boot->is_string() || !mode || !mode->is_string() || !cgroups || !cgroups->is_object()) {
        error = "\"boot_id\", \"mode\" or \"cgroups\" missing or of the wrong type";
        return std::nullopt;
    }
    s.boot_id = boot->get_string();
    s.mode = mode->get_string();
    for (const auto& [dir, value] : cgroups->get_object()) {
        const auto* o = value.if_object();
        if (!o) {
            error = "cgroup " + std::string(dir) + ": not an object";
            return std::nullopt;
        }
        memory_counters c;
        for (const auto& k : counting) {
            const auto* n = o->if_contains(to_string(k.kind));
            if (!n) continue;  // absent: 0
            auto value_of = as_counter(*n);
            if (!value_of) {
                error = "cgroup " + std::string(dir) + ": \"" + std::string(to_string(k.kind)) + "\" is not a counter";
                return std::nullopt;
            }
            c.*k.field = *value_of;
        }
        s.cgroups.emplace(std::string(dir), std::move(c));
    }
    if (const auto* vm = root->if_contains("vmstat_oom_kill")) {
        s.vmstat_oom_kill = as_counter(*vm);
        if (!s.vmstat_oom_kill) {
            error = "\"vmstat_oom_kill\" is not a counter";
            return std::nullopt;
        }
    }
    return s;
}

std::string read_boot_id() {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(in, id);
    return id;
}

state_keeper::state_keeper(boost::asio::any_io_executor ex, std::filesystem::path path, std::string mode, bool verbose)
    : path_(std::move(path)),
      writer_(std::move(ex), path_, [this] { return render_state(now_); }, std::chrono::seconds(1), /*durable=*/true) {
    now_.boot_id = read_boot_id();
    now_.mode = std::move(mode);
    std::ifstream in(path_, std::ios::binary);
    if (!in) {
        if (errno != ENOENT) error_ = path_.string() + ": " + std::strerror(errno);
        return;  // missing: a first start
    }
    std::ostringstream text;
    text << in.rdbuf();
    std::string why;
    auto s = parse_state(text.str(), why);
    if (!s) {
        error_ = path_.string() + ": not an oomwatch state file: " + why;
        return;
    }
    if (s->boot_id != now_.boot_id) {
        // Every counter started again at boot: nothing saved compares with them.
        if (verbose)
            std::cerr << "oomwatch: " << path_.string() << ": saved before the last reboot; starting afresh\n";
        return;
    }
    if (s->mode != now_.mode) {
        std::cerr << "oomwatch: " << path_.string() << ": saved from " << s->mode << " counters, not "
                  << now_.mode << "; starting afresh\n";
        return;
    }
    if (verbose) std::cerr << "oomwatch: resuming from " << path_.string() << '\n';
    resumed_ = std::move(*s);
}

std::optional<memory_counters> state_keeper::saved(const std::string& cgroup) const {
    if (!resumed_) return std::nullopt;
    auto it = resumed_->cgroups.find(cgroup);
    if (it == resumed_->cgroups.end()) return std::nullopt;
    return it->second;
}

void state_keeper::start_cgroup(const std::string& cgroup, cgroup_version v, const memory_counters& base,
                                bool made_while_down) {
    auto& entry = now_.cgroups[cgroup];
    const auto saved_c = saved(cgroup);
    if (!saved_c) {
        entry = made_while_down ? memory_counters{} : kernel_counters(base, v);
        return;
    }
    const auto s = kernel_counters(*saved_c, v);
    // A namesake (lower counters): all of it is reported, so all of it is owed.
    bool namesake = false;
    for (const auto& k : counting) namesake = namesake || base.*k.field < s.*k.field;
    entry = namesake ? memory_counters{} : s;
}

void state_keeper::start_system(std::optional<std::uint64_t> from) {
    system_from_ = from;
    now_.vmstat_oom_kill = from;
}

std::optional<std::string> state_keeper::write_now() {
    if (auto ec = writer_.write_now()) return path_.string() + ": " + ec.message();
    return std::nullopt;
}

void state_keeper::record(const oom_event& ev, bool system) {
    if (stopped_) return;
    if (system) {
        if (ev.kind != event_kind::oom_kill || !system_from_) return;
        system_kills_ += ev.count;
        now_.vmstat_oom_kill = *system_from_ + system_kills_;
    } else if (ev.origin != event_origin::here) {
        return;  // counts of removed descendants: in no cgroup's own counters
    } else if (ev.kind == event_kind::removed) {
        now_.cgroups.erase(ev.cgroup.native());
    } else {
        const auto k = std::find_if(std::begin(counting), std::end(counting),
                                    [&](const counter_of& c) { return c.kind == ev.kind; });
        if (k == std::end(counting) || (ev.version == cgroup_version::v1 && ev.kind == event_kind::oom)) return;
        now_.cgroups[ev.cgroup.native()].*k->field = ev.counters.*k->field;
    }
    writer_.schedule(textfile_writer::clock::now());
}

void state_keeper::stop() {
    if (std::exchange(stopped_, true)) return;
    writer_.stop();
    if (auto e = write_now()) std::cerr << "oomwatch: " << *e << '\n';
}

} // namespace oomwatch::cli
