#include <oomwatch/error.hpp>

#include "detail/error.hpp"

#include <stdexcept>
#include <utility>

namespace oomwatch {

namespace {

class category_impl final : public boost::system::error_category {
public:
    // A fixed id makes copies of the category in different shared objects compare equal.
    constexpr category_impl() noexcept : error_category(0x9e3c5b2f71d04a86ULL) {}

    const char* name() const noexcept override { return "oomwatch"; }

    std::string message(int ev) const override {
        switch (static_cast<error>(ev)) {
        case error::not_a_cgroup: return "Not a cgroup directory";
        case error::no_memory_controller: return "The cgroup has no memory controller";
        case error::no_memory_hierarchy: return "No cgroup hierarchy with the memory controller is mounted";
        case error::cgroup_removed: return "The cgroup was removed";
        case error::malformed_counters: return "Malformed cgroup counters file";
        case error::malformed_proc_file: return "Malformed /proc file";
        case error::watcher_closed: return "The watcher is closed";
        case error::operation_in_progress: return "Another wait for an event is already in progress";
        case error::root_cgroup:
            return "The root cgroup keeps no memory.events on cgroup v2; watch a cgroup below it";
        case error::counters_vanished:
            return "The cgroup's counters file disappeared while the cgroup remains (memory controller disabled for it?)";
        case error::malformed_log_record: return "Malformed kernel log record";
        case error::invalid_pressure_trigger:
            return "Invalid pressure trigger: the window must be 500 ms to 10 s, the threshold more than 0 and at most "
                   "the window";
        case error::pressure_trigger_refused:
            return "The kernel refused the pressure trigger: without CAP_SYS_RESOURCE, Linux 6.4+ allows only windows "
                   "that are a multiple of 2 s";
        case error::psi_disabled:
            return "PSI is disabled or not built in (psi=0 on the kernel command line, CONFIG_PSI_DEFAULT_DISABLED without psi=1, or no CONFIG_PSI): no memory pressure to watch";
        case error::pressure_trigger_mismatch:
            return "PSI triggers need cgroup v2 or the system-wide file; cgroup v1 has pressure levels "
                   "(pressure_level_trigger)";
        }
        return "Unknown oomwatch error " + std::to_string(ev);
    }
};

} // namespace

const boost::system::error_category& error_category() noexcept {
    static const category_impl instance;
    return instance;
}

cgroup_error::cgroup_error(boost::system::error_code ec, std::filesystem::path path)
    : boost::system::system_error(ec, "oomwatch: " + path.string()), path_(std::move(path)) {
    // Boost 1.81 builds what() as "<prefix>: " + ec.what(), and ec.what() appends
    // " [system:2]" to the message; replace it with the documented
    // "oomwatch: <path>: <message>". The code stays in the system_error base.
    std::string what = "oomwatch: ";
    if (!path_.empty()) what += path_.string() + ": ";
    what += ec.message();
    std::runtime_error::operator=(std::runtime_error(what));
}

void throw_if(const boost::system::error_code& ec, const std::filesystem::path& path) {
    if (ec) throw cgroup_error(ec, path);
}

} // namespace oomwatch
