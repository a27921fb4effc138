// The three contenders: floor, seed design, oomwatch. Each watches a list of cgroup
// directories (all v1 or all v2) and hands every event to a `sink`, which stands for
// the user's code: it takes its timestamp first thing.
#pragma once

#include <oomwatch/event.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bench {

using oomwatch::cgroup_version;
using oomwatch::event_kind;

/// User code. Called on the contenders' threads, possibly concurrently.
class sink {
public:
    virtual ~sink() = default;
    /// `sub`: which subscriber (0 when there is one); `cg`: index of the cgroup in the
    /// armed list; `count`: occurrences (the seed design knows no counts: 1); `seen`:
    /// the counter value the contender read with it (0 when it does not say).
    virtual void on_event(unsigned sub, std::size_t cg, event_kind k, std::uint64_t count,
                          std::uint64_t seen) noexcept = 0;
    /// oomwatch only: how many victims the `oom_kill` event handed to `on_event` right
    /// after this call names. Before it, so that a waiter that sees the event sees this.
    virtual void on_named(unsigned /*sub*/, std::size_t /*cg*/, std::size_t /*named*/) noexcept {}
};

struct contender_options {
    cgroup_version version = cgroup_version::v2;
    /// Subscribers per cgroup: every event is handed to each.
    unsigned subscribers = 1;
    /// oomwatch: threads running the io_context (the others have their own model).
    unsigned threads = 1;
    /// oomwatch: deliver through `co_await w.next_event()` (one consumer per watcher) or
    /// through subscriptions, each on its own strand.
    enum class delivery { next_event, strand } mode = delivery::next_event;
    /// oomwatch: `watch_options::victims` and `victim_hold` (empty: the library's
    /// default). Real cgroups only: the fake v2 folders have no kernel log.
    bool victims = true;
    std::optional<std::chrono::milliseconds> victim_hold;
};

struct arm_result {
    std::size_t armed = 0;
    std::string error;  // empty when all were armed
    int error_errno = 0;
    bool ok() const { return error.empty(); }
};

class contender {
public:
    virtual ~contender() = default;
    virtual std::string name() const = 0;
    /// Sets up the watches (descriptors, registrations, baselines). Watching starts
    /// with `start()`; events that happen in between are not lost.
    virtual arm_result arm(const std::vector<std::filesystem::path>& dirs, sink& s) = 0;
    /// Starts the threads / consumers.
    virtual void start() = 0;
    /// Stops and releases everything (joins threads).
    virtual void stop() = 0;
};

std::unique_ptr<contender> make_floor(const contender_options& o);
std::unique_ptr<contender> make_seed(const contender_options& o);
std::unique_ptr<contender> make_oomwatch(const contender_options& o);

/// "floor", "seed", "oomwatch" (+ variant in the oomwatch name).
std::unique_ptr<contender> make_contender(const std::string& which, const contender_options& o);

} // namespace bench
