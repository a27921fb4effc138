#include "victims.hpp"

#include <algorithm>

namespace oomwatch::detail {

namespace {

// "/a/b/" -> "/a/b"; "" -> "/".
std::string_view trim_slash(std::string_view s) noexcept {
    while (s.size() > 1 && s.back() == '/') s.remove_suffix(1);
    return s.empty() ? std::string_view("/") : s;
}

oom_constraint constraint_of(const kill_record& k) noexcept {
    switch (k.constraint) {
    case kmsg_constraint::memcg: return oom_constraint::memcg;
    case kmsg_constraint::none: return oom_constraint::global;
    case kmsg_constraint::cpuset: return oom_constraint::cpuset;
    case kmsg_constraint::memory_policy: return oom_constraint::mempolicy;
    case kmsg_constraint::other: break;
    }
    // A constraint this version does not know, or none printed: from the kill line.
    return k.reason.starts_with("Memory cgroup") ? oom_constraint::memcg : oom_constraint::global;
}

} // namespace

bool hierarchy_path_under(std::string_view sub, std::string_view root) noexcept {
    root = trim_slash(root);
    sub = trim_slash(sub);
    if (root == "/") return sub.starts_with('/');
    return sub.starts_with(root) && (sub.size() == root.size() || sub[root.size()] == '/');
}

std::string hierarchy_view::hierarchy_path(std::string_view dir) const {
    const std::string_view mp = trim_slash(mount_point);
    dir = trim_slash(dir);
    std::string_view rel;
    if (dir == mp) {
        rel = {};
    } else if (mp == "/" ? dir.starts_with('/') : (dir.starts_with(mp) && dir.size() > mp.size() && dir[mp.size()] == '/')) {
        rel = dir.substr(mp == "/" ? 1 : mp.size() + 1);
    } else {
        return {};
    }
    std::string out(trim_slash(root));
    if (rel.empty()) return out;
    if (out != "/") out += '/';
    out += rel;
    return out;
}

std::filesystem::path hierarchy_view::directory(std::string_view hpath) const {
    if (hpath.empty() || !hierarchy_path_under(hpath, root)) return {};
    const std::string_view r = trim_slash(root);
    hpath = trim_slash(hpath);
    std::string_view rel = r == "/" ? hpath.substr(1) : hpath.substr(r.size());
    while (rel.starts_with('/')) rel.remove_prefix(1);
    std::string out(trim_slash(mount_point));
    if (!rel.empty()) {
        if (out != "/") out += '/';
        out += rel;
    }
    return out;
}

victim to_victim(const kill_record& k, const hierarchy_view& h) {
    victim v;
    v.pid = k.pid;
    v.comm = k.comm;
    if (k.uid) v.uid = *k.uid;
    v.constraint = constraint_of(k);
    v.constraint_guessed = k.constraint_guessed || k.constraint == kmsg_constraint::other;
    v.task_cgroup = h.directory(k.task_memcg);
    if (v.constraint == oom_constraint::memcg) v.oom_cgroup = h.directory(k.oom_memcg);
    v.total_vm = k.total_vm;
    v.anon_rss = k.anon_rss;
    v.file_rss = k.file_rss;
    v.shmem_rss = k.shmem_rss.value_or(0);
    v.oom_score_adj = k.oom_score_adj.value_or(0);
    v.group_kill = k.group;
    if (k.group) v.group_cgroup = h.directory(k.group_memcg);
    v.kernel_seq = k.seq;
    v.kernel_time = std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(k.ts_usec));
    return v;
}

bool victim_matcher::add_target(key k, std::string_view dir, bool hierarchical) {
    auto hp = h_.hierarchy_path(dir);
    if (hp.empty()) return false;
    remove_target(k);
    auto& t = targets_[k];
    t.hpath = std::move(hp);
    t.hierarchical = hierarchical;
    if (hierarchical)
        hierarchical_.push_back(k);
    else
        exact_.try_emplace(t.hpath, k);
    return true;
}

void victim_matcher::remove_target(key k) {
    auto it = targets_.find(k);
    if (it == targets_.end()) return;
    if (it->second.hierarchical) {
        std::erase(hierarchical_, k);
    } else if (auto e = exact_.find(it->second.hpath); e != exact_.end() && e->second == k) {
        exact_.erase(e);
    }
    targets_.erase(it);
}

victim_matcher::key victim_matcher::find(const kill_record& r) const {
    if (!r.task_memcg.empty()) {
        if (auto e = exact_.find(std::string(trim_slash(r.task_memcg))); e != exact_.end()) return e->second;
    }
    // A hierarchical target counts the kills of its descendants. A member of a group kill
    // whose own cgroup is unknown is somewhere under the group's cgroup: a target at or
    // above that counted it.
    std::string_view where = r.task_memcg;
    if (where.empty() && r.group) where = r.group_memcg;
    if (where.empty()) return nullptr;
    for (auto k : hierarchical_)
        if (hierarchy_path_under(where, targets_.at(k).hpath)) return k;
    return nullptr;
}

void victim_matcher::expire(target& t, time_point now) {
    auto fresh = std::find_if(t.kept.begin(), t.kept.end(), [&](const kept_victim& k) { return now - k.at <= keep; });
    t.kept.erase(t.kept.begin(), fresh);
    if (t.owed && now > t.owed_until) t.owed = 0;
}

victim_matcher::key victim_matcher::on_record(const kill_record& r, time_point now) {
    std::erase_if(unplaced_, [&](const unplaced_record& u) { return now - u.at > keep; });
    const key k = find(r);
    if (!k) {
        if (r.task_memcg.empty() && !r.group) {
            if (unplaced_.size() >= max_unplaced) unplaced_.erase(unplaced_.begin());
            unplaced_.push_back({r, now});
        }
        return nullptr;
    }
    if (r.group && !r.group_memcg.empty()) {
        // The OOM's victim, logged without a cgroup right before the group line (its
        // record, then `Tasks in X ...`, then the first member's: seq N, N+1, N+2), or
        // before as the same task: the group's. Placed with the first member, so that
        // it goes with the members' count rather than after it.
        auto u = std::find_if(unplaced_.begin(), unplaced_.end(), [&](const unplaced_record& x) {
            return (x.r.pid == r.pid && x.r.seq < r.seq) || x.r.seq + 2 == r.seq;
        });
        if (u != unplaced_.end()) {
            kill_record first = std::move(u->r);
            unplaced_.erase(u);
            first.group = true;
            first.group_memcg = r.group_memcg;
            if (find(first) == k) keep_for(k, first, now);
        }
    }
    keep_for(k, r, now);
    return k;
}

void victim_matcher::keep_for(key k, const kill_record& r, time_point now) {
    target* t = &targets_.at(k);
    expire(*t, now);
    if (t->owed && r.ts_usec <= t->owed_logged_by) {
        --t->owed;  // the late record of a kill delivered without it
        return;
    }
    if (t->kept.size() >= max_kept) t->kept.erase(t->kept.begin());
    auto v = to_victim(r, h_);
    // In the log's order (a record placed late goes before those after it).
    auto at = std::find_if(t->kept.begin(), t->kept.end(),
                           [&](const kept_victim& x) { return x.v.kernel_seq > v.kernel_seq; });
    t->kept.insert(at, kept_victim{std::move(v), now});
}

std::uint64_t victim_matcher::take_into(key k, std::uint64_t n, time_point now, std::vector<victim>& out) {
    auto it = targets_.find(k);
    if (it == targets_.end() || n == 0) return 0;
    auto& t = it->second;
    expire(t, now);
    const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(n, t.kept.size()));
    for (std::size_t i = 0; i < m; ++i) out.push_back(std::move(t.kept[i].v));
    t.kept.erase(t.kept.begin(), t.kept.begin() + static_cast<std::ptrdiff_t>(m));
    if (t.kept.empty()) t.kept.shrink_to_fit();  // a tree's cgroups keep nothing between kills
    return m;
}

std::vector<victim> victim_matcher::take(key k, std::uint64_t n, time_point now) {
    std::vector<victim> out;
    take_into(k, n, now, out);
    return out;
}

void victim_matcher::give_up(key k, std::uint64_t n, time_point now, std::uint64_t logged_by_usec) {
    auto it = targets_.find(k);
    if (it == targets_.end() || n == 0) return;
    it->second.owed += n;
    it->second.owed_until = now + keep;
    it->second.owed_logged_by = logged_by_usec;
}

std::size_t victim_matcher::kept(key k) const {
    auto it = targets_.find(k);
    return it == targets_.end() ? 0 : it->second.kept.size();
}

} // namespace oomwatch::detail
