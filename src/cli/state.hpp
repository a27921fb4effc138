// `watch --state FILE`: what the tool reported, kept across restarts, so that a restart
// reports what happened while it was down, once, and nothing twice.
//
// The file (JSON, replaced atomically and flushed to disk):
//   {"version":1,"boot_id":"...","mode":"hierarchical",
//    "cgroups":{"/sys/fs/cgroup/app":{"oom":1,"oom_kill":3,...}},"vmstat_oom_kill":N}
// Per cgroup and counting kind, the counter as of the last event of that kind printed
// (per kind: an `oom` line may be printed while the kills read with it wait for their
// victims); "vmstat_oom_kill" with --system. A reboot resets every counter: a file of
// another boot is not resumed.
#pragma once

#include "textfile.hpp"

#include <oomwatch/event.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace oomwatch::cli {

/// The state file's content.
struct saved_state {
    std::string boot_id;
    /// Which counters the cgroups' values are: "hierarchical" (memory.events), "local"
    /// (memory.events.local: --local, and every cgroup of -r), "system" (--system).
    std::string mode;
    std::map<std::string, memory_counters> cgroups;
    std::optional<std::uint64_t> vmstat_oom_kill;
};

std::string render_state(const saved_state& s);
/// The state in `text`; an error message when it is not one.
std::optional<saved_state> parse_state(std::string_view text, std::string& error);

/// /proc/sys/kernel/random/boot_id, without its newline; empty when unreadable.
std::string read_boot_id();

class state_keeper {
public:
    /// Reads `path`: a missing file starts afresh, as does one of another boot (said on
    /// stderr with `verbose`) or another mode (a warning). Throws nothing; a file that
    /// cannot be read or parsed is `error()`.
    state_keeper(boost::asio::any_io_executor ex, std::filesystem::path path, std::string mode, bool verbose);

    /// Why the file cannot be used ("FILE: REASON"); empty when it can.
    const std::string& error() const { return error_; }
    /// Whether an earlier run's state is resumed.
    bool resuming() const { return resumed_.has_value(); }
    /// What the earlier run reported for `cgroup`, if it was in the state.
    std::optional<memory_counters> saved(const std::string& cgroup) const;
    std::optional<std::uint64_t> saved_vmstat() const { return resumed_ ? resumed_->vmstat_oom_kill : std::nullopt; }

    /// A cgroup watched from now on, its baseline `base` read at start: resumed, it
    /// starts from what was saved (the growth is owed until printed), or from zero when
    /// it is a namesake of the saved one, or new (`made_while_down`); else from `base`.
    void start_cgroup(const std::string& cgroup, cgroup_version v, const memory_counters& base, bool made_while_down);
    /// --system: kills are counted from `from` (`system_watcher::counted_from()`).
    void start_system(std::optional<std::uint64_t> from);

    /// Writes the file (at start, so that a crash after it resumes); the error message.
    std::optional<std::string> write_now();
    /// An event was printed: remembered, and the file rewritten soon (at most once a second).
    void record(const oom_event& ev, bool system);
    /// The last write (at exit).
    void stop();

private:
    std::filesystem::path path_;
    std::optional<saved_state> resumed_;
    saved_state now_;
    std::optional<std::uint64_t> system_from_;
    std::uint64_t system_kills_ = 0;
    std::string error_;
    textfile_writer writer_;
    bool stopped_ = false;
};

} // namespace oomwatch::cli
