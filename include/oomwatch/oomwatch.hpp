// oomwatch/oomwatch.hpp: the whole public API.
#pragma once

#include <oomwatch/cgroup.hpp>
#include <oomwatch/error.hpp>
#include <oomwatch/event.hpp>
#include <oomwatch/kernel_log.hpp>
#include <oomwatch/log.hpp>
#include <oomwatch/pressure_watcher.hpp>
#include <oomwatch/system_watcher.hpp>
#include <oomwatch/tree_watcher.hpp>
#include <oomwatch/watcher.hpp>
