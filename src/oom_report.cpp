#include "detail/oom_report.hpp"

#include <algorithm>
#include <variant>

namespace oomwatch::detail {

namespace {

// The constraint a reason implies, when no summary line says it (mm/oom_kill.c passes
// "Memory cgroup out of memory" for a memcg OOM, "Out of memory" for every other, and
// "Out of memory (oom_kill_allocating_task)" with that sysctl).
void constraint_from_reason(kill_record& k) {
    if (k.reason.starts_with("Memory cgroup out of memory")) {
        k.constraint = kmsg_constraint::memcg;
    } else if (k.reason.starts_with("Out of memory")) {
        // A cpuset or mempolicy OOM says the same: only the summary tells them apart.
        k.constraint = kmsg_constraint::none;
        k.constraint_guessed = true;
    }
}

void apply_summary(kill_record& k, const oom_summary_line& s) {
    k.constraint = s.constraint;
    k.constraint_guessed = false;
    k.oom_memcg = s.oom_memcg.value_or(std::string());
    if (!k.uid) k.uid = s.uid;
}

} // namespace

void oom_report_assembler::clear_report() {
    summaries_.clear();
    task_in_.reset();
    choice_reason_.clear();
    current_.reset();
    group_.reset();
}

void oom_report_assembler::note_lost() {
    // Summaries stay: they are matched by pid, which a gap cannot confuse. The rest is
    // matched by position, which a gap can.
    task_in_.reset();
    choice_reason_.clear();
    current_.reset();
    group_.reset();
    fragment_.reset();
}

std::vector<kill_record> oom_report_assembler::feed_record(const kmsg_record& r) {
    if (r.facility != 0) {
        ++foreign_;
        return {};
    }
    std::vector<kill_record> out;
    auto append = [&out](std::vector<kill_record>&& v) {
        for (auto& k : v) out.push_back(std::move(k));
    };
    if (r.flag == 'c') {
        // The start of a line printed with pr_cont() that another printk cut short (or,
        // before 4.9, every first fragment): the rest comes in later records.
        if (fragment_) append(feed_message(fragment_->seq, fragment_->ts_usec, fragment_->text));
        fragment_ = fragment{r.seq, r.ts_usec, r.caller, r.message};
        return out;
    }
    if (r.flag == '+' && fragment_) {  // before 4.9: a later fragment of the same line
        fragment_->text += r.message;
        return out;
    }
    if (fragment_ && !fragment_->caller.empty() && !r.caller.empty() && fragment_->caller != r.caller) {
        // Another task's or CPU's line (CONFIG_PRINTK_CALLER): the one that cut the
        // fragment short. The rest of the fragment comes later, from its own caller.
        append(feed_message(r.seq, r.ts_usec, r.message));
        return out;
    }
    if (fragment_) {
        // Since 4.9 the rest of a cut line comes flagged '-'. It belongs to the fragment
        // when it is from the same caller; without caller fields, when only the joined
        // text is an OOM line.
        auto f = std::move(*fragment_);
        fragment_.reset();
        bool join;
        if (!f.caller.empty() && !r.caller.empty())
            join = true;
        else
            join = !parse_oom_line(f.text) && parse_oom_line(f.text + r.message);
        if (join) return feed_message(f.seq, f.ts_usec, f.text + r.message);
        append(feed_message(f.seq, f.ts_usec, f.text));
    }
    append(feed_message(r.seq, r.ts_usec, r.message));
    return out;
}

std::vector<kill_record> oom_report_assembler::feed_message(std::uint64_t seq, std::uint64_t ts_usec,
                                                            const std::string& message) {
    std::vector<kill_record> out;
    if (auto line = parse_oom_line(message))
        if (auto k = feed(seq, ts_usec, *line)) out.push_back(std::move(*k));
    return out;
}

std::optional<kill_record> oom_report_assembler::feed(std::uint64_t seq, std::uint64_t ts_usec,
                                                      const oom_log_line& line) {
    if (const auto* inv = std::get_if<oom_invoked_line>(&line)) {
        (void)inv;
        // A new report: OOMs are serialized by oom_lock, so whatever the previous one
        // left unmatched (a summary whose victim was exiting) is over.
        clear_report();
        return std::nullopt;
    }
    if (const auto* s = std::get_if<oom_summary_line>(&line)) {
        group_.reset();
        if (summaries_.size() >= max_pending_summaries) summaries_.pop_front();
        summaries_.push_back(*s);
        current_ = *s;
        return std::nullopt;
    }
    if (const auto* t = std::get_if<memcg_oom_info_line>(&line)) {
        group_.reset();
        task_in_ = *t;
        return std::nullopt;
    }
    if (const auto* c = std::get_if<kill_choice_line>(&line)) {
        group_.reset();
        choice_reason_ = c->reason;
        return std::nullopt;
    }
    if (const auto* g = std::get_if<oom_group_line>(&line)) {
        group_ = g->cgroup;
        group_last_ts_ = ts_usec;
        return std::nullopt;
    }
    if (const auto* v = std::get_if<victim_exiting_line>(&line)) {
        // Nothing was killed (no counter rose): its summary matches no kill.
        std::erase_if(summaries_, [&](const oom_summary_line& s) { return s.pid == v->pid; });
        if (group_) group_last_ts_ = ts_usec;
        return std::nullopt;
    }
    const auto* kp = std::get_if<killed_process_line>(&line);
    if (!kp) return std::nullopt;  // the reaper's line: after the fact, from another thread

    kill_record k;
    k.seq = seq;
    k.ts_usec = ts_usec;
    k.pid = kp->pid;
    k.comm = kp->comm;
    k.uid = kp->uid;
    k.reason = kp->reason.empty() ? choice_reason_ : kp->reason;
    k.total_vm = kp->total_vm;
    k.anon_rss = kp->anon_rss;
    k.file_rss = kp->file_rss;
    k.shmem_rss = kp->shmem_rss;
    k.oom_score_adj = kp->oom_score_adj;
    constraint_from_reason(k);

    if (group_ && ts_usec >= group_last_ts_ && ts_usec - group_last_ts_ <= group_window_usec) {
        // A member of the group: the OOM is the one whose summary came before the group
        // line; the member's own cgroup is not printed.
        k.group = true;
        k.group_memcg = *group_;
        group_last_ts_ = ts_usec;
        if (current_) {
            apply_summary(k, *current_);
            k.report_matched = true;
        }
        return k;
    }
    group_.reset();

    auto it = std::find_if(summaries_.rbegin(), summaries_.rend(),
                           [&](const oom_summary_line& s) { return s.pid == kp->pid; });
    if (it != summaries_.rend()) {
        apply_summary(k, *it);
        k.task_memcg = it->task_memcg.value_or(std::string());
        k.report_matched = true;
        current_ = *it;
        summaries_.erase(std::next(it).base());
    } else if (task_in_) {
        // Before 5.0: the report's `Task in` line names the chosen task's cgroup (its
        // pid is not printed; a child it sacrificed is normally in the same cgroup).
        k.task_memcg = task_in_->task_memcg.value_or(std::string());
        k.oom_memcg = task_in_->oom_memcg;
        k.constraint = kmsg_constraint::memcg;
        k.constraint_guessed = false;
        k.report_matched = true;
        task_in_.reset();
        current_.reset();
    } else {
        current_.reset();  // a rate-limited report: no summary to lend to group members
    }
    return k;
}

} // namespace oomwatch::detail
