// cgroup v1: OOM notifications through an eventfd registered on memory.oom_control.
#pragma once

#include "watcher_state.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace oomwatch::detail {

/// Registers an eventfd for the OOM notifications of the cgroup `role.src` names (by
/// default the state's root), reads the baseline into `sink`, and starts reading
/// asynchronously. On failure sets `ec` and returns null; nothing is left open.
std::shared_ptr<source> start_v1_watch(const boost::asio::any_io_executor& ex,
                                       const std::shared_ptr<watcher_state>& sink, boost::system::error_code& ec,
                                       node_role role = {});

/// Registers the eventfd `efd` for `event_file` in the v1 cgroup `dir` through
/// cgroup.event_control, with `args` (none when empty). Errors are errno values.
boost::system::error_code register_event(const std::string& dir, int efd, const std::string& event_file,
                                         std::string_view args);

} // namespace oomwatch::detail
