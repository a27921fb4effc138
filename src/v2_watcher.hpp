// cgroup v2: memory.events watched through the execution context's shared inotify
// instance, the parent directory watched for removal.
#pragma once

#include "watcher_state.hpp"

#include <oomwatch/watcher.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/error_code.hpp>

#include <filesystem>
#include <memory>

namespace oomwatch::detail {

/// Arms the watches for the cgroup `role.src` names (by default the state's root), then
/// reads the baseline into `sink`. On failure sets `ec` and returns null; nothing is left
/// registered.
std::shared_ptr<source> start_v2_watch(const boost::asio::any_io_executor& ex, const watch_options& opts,
                                       const std::shared_ptr<watcher_state>& sink, boost::system::error_code& ec,
                                       node_role role = {});

} // namespace oomwatch::detail
