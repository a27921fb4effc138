// The system watcher's parts (issue 10): every OOM kill on the machine, named from the
// kernel log, counted from /proc/vmstat. Internal: not installed.
#pragma once

#include <cstdint>
#include <optional>

namespace oomwatch::detail {

/// Squares the kernel log's kill records with the machine's kill counter (`oom_kill` of
/// /proc/vmstat). Pure: the caller reads the counter and says when. Not thread-safe.
///
/// The counter is the truth for how many kills there were since the start; a record is
/// reported only while the counter has a kill it does not yet account for (the kernel
/// raises it before it logs the kill, so a record read always finds its kill counted),
/// and a kill the counter shows that no record came for over a whole check interval is
/// reported without one. So the kills reported are exactly the counter's growth.
class kill_ledger {
public:
    /// `base`: the counter at the start; none: the kernel has no such counter, and every
    /// record is reported.
    explicit kill_ledger(std::optional<std::uint64_t> base) : base_(base), last_(base.value_or(0)) {}
    /// Resuming (`system_options::resume_from`): kills are counted from `from`, the
    /// counter being `count` now; a `from` above it (a reboot since) counts from 0.
    kill_ledger(std::uint64_t from, std::uint64_t count) : base_(from <= count ? from : 0), last_(count) {}

    /// The counter value kills are counted from.
    std::optional<std::uint64_t> base() const noexcept { return base_; }
    /// Every kill counted and not reported, reported now without records (the kills of
    /// a resumed watch's downtime, whose records are not read).
    std::uint64_t take_all_missing() noexcept {
        if (!exact()) return 0;
        const std::uint64_t n = room();
        reported_ += n;
        unattributed_ += n;
        return n;
    }

    bool exact() const noexcept { return base_.has_value(); }
    /// Whether a record now needs a fresh reading of the counter (`update`): the last one
    /// has no kill left that is not reported.
    bool needs_count() const noexcept { return exact() && room() == 0; }
    /// The counter as just read. It never goes down; a lower value is ignored.
    void update(std::uint64_t count) noexcept {
        if (count > last_) last_ = count;
    }
    std::uint64_t count() const noexcept { return last_; }

    /// A kill record was read: true when it is to be reported (its kill is counted and
    /// not yet reported); false for a record of a kill from before the start, or of one
    /// already reported as unattributed (its record came more than an interval late).
    bool on_record() noexcept {
        if (exact() && room() == 0) {
            ++dropped_;
            return false;
        }
        ++reported_;
        return true;
    }

    /// A periodic check with the counter just read (`update` first): how many kills to
    /// report now without their records, those that were missing at the previous check
    /// already and still are.
    std::uint64_t on_check() noexcept {
        if (!exact()) return 0;
        const std::uint64_t missing = room();
        const std::uint64_t overdue = missing < waiting_ ? missing : waiting_;
        reported_ += overdue;
        unattributed_ += overdue;
        waiting_ = missing - overdue;
        return overdue;
    }

    /// Kills reported (named and not), of those without a record, and records dropped.
    std::uint64_t reported() const noexcept { return reported_; }
    std::uint64_t unattributed() const noexcept { return unattributed_; }
    std::uint64_t dropped() const noexcept { return dropped_; }

private:
    // Kills counted and not reported.
    std::uint64_t room() const noexcept { return last_ - *base_ - reported_; }

    std::optional<std::uint64_t> base_;
    std::uint64_t last_ = 0;
    std::uint64_t reported_ = 0;
    std::uint64_t unattributed_ = 0;
    std::uint64_t dropped_ = 0;
    std::uint64_t waiting_ = 0;  // missing at the last check
};

} // namespace oomwatch::detail
