// oomwatch/oomwatch.hpp: everything.
#pragma once

#include <oomwatch/cgroup.hpp>
#include <oomwatch/error.hpp>
#include <oomwatch/event.hpp>
#include <oomwatch/log.hpp>
#include <oomwatch/parse.hpp>
#include <oomwatch/watcher.hpp>
