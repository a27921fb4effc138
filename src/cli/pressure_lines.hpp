// `watch --pressure-interval`: which pressure events of one trigger are printed at once
// and which are merged into a line printed later. On cgroup v1 a level fires on every
// 512 pages scanned, thousands of times a second under reclaim: one line each would
// bury the OOM lines. Time is the caller's (a steady clock), so the rules are testable
// without a kernel or a timer.
#pragma once

#include <oomwatch/pressure_event.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

namespace oomwatch::cli {

/// The lines of one trigger of one watch: at most one per `interval`.
class pressure_lines {
public:
    using clock = std::chrono::steady_clock;

    explicit pressure_lines(clock::duration interval) : interval_(interval) {}

    /// `ev` when its line is due now (the trigger printed nothing in the last interval,
    /// or the interval is 0); else nothing: it is merged into the pending line, due at
    /// `due()`.
    std::optional<pressure_event> offer(pressure_event ev, clock::time_point now) {
        if (pending_) {
            // As the library coalesces: counts add up, the earliest time, the newest averages.
            pending_->count += ev.count;
            pending_->time = std::min(pending_->time, ev.time);
            if (ev.averages) pending_->averages = std::move(ev.averages);
            return std::nullopt;
        }
        if (interval_ > clock::duration::zero() && last_ && now - *last_ < interval_) {
            pending_ = std::move(ev);
            return std::nullopt;
        }
        last_ = now;
        return ev;
    }

    /// When the pending line is due (an interval after the last line); nothing when none is pending.
    std::optional<clock::time_point> due() const {
        if (!pending_) return std::nullopt;
        return *last_ + interval_;
    }

    /// The pending line if it is due at `now` (then printed now), else nothing.
    std::optional<pressure_event> take_due(clock::time_point now) {
        if (!pending_ || now < *due()) return std::nullopt;
        last_ = now;
        return take();
    }

    /// The pending line, due or not (shutdown, removal: printed now or never).
    std::optional<pressure_event> take() { return std::exchange(pending_, std::nullopt); }

private:
    clock::duration interval_;
    std::optional<clock::time_point> last_;  // the last line printed
    std::optional<pressure_event> pending_;  // merged events not printed yet
};

} // namespace oomwatch::cli
