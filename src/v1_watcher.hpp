// cgroup v1: OOM notifications through an eventfd registered on memory.oom_control.
#pragma once

#include "watcher_state.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <filesystem>
#include <memory>

namespace oomwatch::detail {

/// Registers an eventfd for the OOM notifications of the cgroup `role.src` names (by
/// default the state's root), reads the baseline into `sink`, and starts reading
/// asynchronously. On failure sets `ec` and returns null; nothing is left open.
std::shared_ptr<source> start_v1_watch(const boost::asio::any_io_executor& ex,
                                       const std::shared_ptr<watcher_state>& sink, boost::system::error_code& ec,
                                       node_role role = {});

} // namespace oomwatch::detail
