// The tree contenders: each watches a cgroup and every cgroup below it, finding the
// descendants that exist at arming and every one that appears later, and hands every
// event to a `tree_sink` (the user's code) with the directory of the cgroup it happened
// in.
//
// - floor (`tree_floor.cpp`): raw inotify + epoll on one thread. Every directory is
//   watched for IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO and listed after its
//   watch is added; every cgroup's memory.events.local is watched for IN_MODIFY,
//   re-read on change and diffed against the last read. The least any correct
//   implementation does.
// - oomwatch (`tree_oomwatch.cpp`): one `oomwatch::tree_watcher` on an io_context run
//   by one thread, one coroutine looping on `co_await tw.next_event()`.
#pragma once

#include "contenders.hpp"

#include <oomwatch/event.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace bench {

/// User code of a tree contender. Called on the contender's thread.
class tree_sink {
public:
    virtual ~tree_sink() = default;
    /// `cgroup`: the directory of the cgroup the event happened in (the root's directory
    /// as given to `arm`, plus "/name" per level); `count`: occurrences (1 for `created`
    /// and `removed`).
    virtual void on_event(std::string_view cgroup, event_kind k, std::uint64_t count) noexcept = 0;
};

struct tree_contender_options {
    /// Also report `created` for every descendant: found at arming, or appearing later.
    bool report_created = false;
};

class tree_contender {
public:
    virtual ~tree_contender() = default;
    virtual std::string name() const = 0;
    /// Watches `root` and everything below it that exists now, before returning.
    /// Watching starts with `start()`; what happens in between is not lost.
    virtual arm_result arm(const std::filesystem::path& root, tree_sink& s) = 0;
    /// Starts the thread and the consumer.
    virtual void start() = 0;
    /// Stops and releases everything (joins the thread).
    virtual void stop() = 0;
    /// Cgroups watched now, the root included. Thread-safe.
    virtual std::size_t watched() const = 0;
    /// CPU time of the contender's own thread so far (0 before `start`).
    virtual double thread_cpu_seconds() const = 0;
};

std::unique_ptr<tree_contender> make_tree_floor(const tree_contender_options& o);
std::unique_ptr<tree_contender> make_tree_oomwatch(const tree_contender_options& o);
/// "floor" or "oomwatch"; null otherwise.
std::unique_ptr<tree_contender> make_tree_contender(const std::string& which, const tree_contender_options& o);

} // namespace bench
