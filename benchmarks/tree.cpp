// Tree: oomwatch::tree_watcher against a floor that finds the tree the same way, on
// fake cgroup v2 trees on tmpfs (a root with K children of M grandchildren each, every
// directory with memory.events and memory.events.local).
//
// scale (each contender alone in a fresh process, like the scale section): descriptors,
//   kernel watches, resident memory and heap per cgroup, time to arm the whole tree, CPU
//   and wake-ups while idle, and exact counts for kills on a random tenth of the tree.
// churn (fresh process per contender, in the tree of `tree_churn_n`): cycles of
//   create / kill / remove of a cgroup under the root, `tree_churn_lanes` in flight.
//   A fake cgroup cannot appear with its files by mkdir, so it is made in a staging
//   directory and renamed in (IN_MOVED_TO, as a real cgroup's mkdir gives IN_CREATE);
//   it leaves by a rename to a trash directory (IN_MOVED_FROM), as atomically as a
//   real rmdir. A renamed-in cgroup starts from the counters it has (zeros), so the
//   driver writes the kill only once the contender reported the cgroup (`created`):
//   before that, the kill would be part of its baseline. It removes the cgroup once the
//   kill was reported, and starts a new cycle in the lane once the removal was. Every
//   kill must be reported exactly once at its cgroup; every cgroup created and removed
//   exactly once; nothing else.
//
// A fake kill is written as the kernel counts one (mm/memcontrol.c, memcg_memory_event):
// max, oom and oom_kill go up in the cgroup's memory.events.local first, then in
// memory.events of the cgroup and of each ancestor up to the tree's root. The floor
// reads only memory.events.local; oomwatch also reads memory.events, to report kills of
// descendants removed before they could be read, so its hierarchical files must add up.
#include "harness.hpp"
#include "tree_contenders.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value_to.hpp>

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <system_error>
#include <unordered_map>

namespace bench {

namespace fs = std::filesystem;

namespace {

// ---- the tree's shape -----------------------------------------------------------------

struct tree_shape {
    std::size_t children = 0, grandchildren = 0;  // N = children * (1 + grandchildren)
};

// The divisor of n nearest its square root: 100 = 10 x (1 + 9), 1,000 = 25 x (1 + 39),
// 10,000 = 100 x (1 + 99).
tree_shape shape_for(std::size_t n) {
    if (n == 0) return {};
    const double r = std::sqrt(static_cast<double>(n));
    std::size_t best = 1;
    for (std::size_t d = 1; d <= n; ++d)
        if (n % d == 0 && std::fabs(static_cast<double>(d) - r) < std::fabs(static_cast<double>(best) - r)) best = d;
    return {best, n / best - 1};
}

std::string shape_text(const tree_shape& s) {
    return "root + " + std::to_string(s.children) + " x (1 + " + std::to_string(s.grandchildren) + ")";
}

// Every cgroup of the tree: the root first, then each child followed by its children.
std::vector<std::string> tree_paths(const std::string& root, const tree_shape& s) {
    std::vector<std::string> v;
    v.reserve(1 + s.children * (1 + s.grandchildren));
    v.push_back(root);
    char name[64];
    for (std::size_t i = 0; i < s.children; ++i) {
        std::snprintf(name, sizeof name, "/s%03zu", i);
        std::string child = root + name;
        v.push_back(child);
        for (std::size_t j = 0; j < s.grandchildren; ++j) {
            std::snprintf(name, sizeof name, "/u%03zu", j);
            v.push_back(child + name);
        }
    }
    return v;
}

/// `<base>/root` (the tree), `<base>/stage` and `<base>/trash` (for the churn), on
/// tmpfs; removed by the destructor (by base_, made first: also when the constructor
/// throws).
class fake_cgroup_tree {
public:
    fake_cgroup_tree(fs::path base, std::size_t n) : base_(std::move(base)), shape_(shape_for(n)) {
        fs::create_directories(stage());
        fs::create_directories(trash());
        fs::create_directories(base_.path() / "root");
        // As the contenders see it: oomwatch resolves the root's path.
        root_ = fs::canonical(base_.path() / "root").string();
        paths_ = tree_paths(root_, shape_);
        for (std::size_t i = 1; i < paths_.size(); ++i) fs::create_directory(paths_[i]);
        reset_counters();
    }
    fake_cgroup_tree(const fake_cgroup_tree&) = delete;
    fake_cgroup_tree& operator=(const fake_cgroup_tree&) = delete;

    /// Every cgroup's counters as they were before any run (a run's kills change them).
    void reset_counters() const {
        for (std::size_t i = 0; i < paths_.size(); ++i) write_fake_counters(paths_[i], initial_counters(i));
    }

    const std::string& root() const { return root_; }
    fs::path stage() const { return base_.path() / "stage"; }
    fs::path trash() const { return base_.path() / "trash"; }
    const tree_shape& shape() const { return shape_; }

    /// Removes what a churn run left (after a failure): cycles' cgroups under the root,
    /// in the staging and trash directories.
    void clean_churn() const {
        std::error_code ec;
        for (const fs::path& d : {fs::path(root_), stage(), trash()})
            for (auto& e : fs::directory_iterator(d, ec))
                if (e.path().filename().string().starts_with("k")) fs::remove_all(e.path(), ec);
    }

private:
    scratch_dir base_;
    tree_shape shape_;
    std::string root_;
    std::vector<std::string> paths_;
};

// ---- the user code --------------------------------------------------------------------

constexpr std::size_t stamp_ring = 4096;  // more than the lanes: ids in flight never share a slot

/// Counts what the contender reported, per cgroup: the tree's own cgroups by path, the
/// churn's cgroups ("<root>/k<7 digits>") by number. Wakes the churn driver.
class tree_tally final : public tree_sink {
public:
    struct cell {
        std::atomic<std::uint32_t> created{0}, oom{0}, oom_kill{0}, removed{0}, other{0};
    };
    struct stamps {
        std::atomic<std::int64_t> created{0}, kill{0}, removed{0};
    };

    tree_tally(const std::vector<std::string>& paths, const std::string& root, std::size_t churn_cap)
        : cells_(paths.size()), churn_prefix_(root + "/k"), churn_(churn_cap), stamps_(churn_cap ? stamp_ring : 0) {
        index_.reserve(paths.size());
        for (std::size_t i = 0; i < paths.size(); ++i) index_.emplace(std::string_view(paths[i]), static_cast<std::uint32_t>(i));
        wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    }
    ~tree_tally() override {
        if (wake_fd_ >= 0) ::close(wake_fd_);
    }
    tree_tally(const tree_tally&) = delete;
    tree_tally& operator=(const tree_tally&) = delete;

    void on_event(std::string_view cg, event_kind k, std::uint64_t count) noexcept override {
        const auto now = now_ns();
        events_.fetch_add(1, std::memory_order_relaxed);
        if (k == event_kind::failed) failed_.fetch_add(1);
        cell* c = nullptr;
        stamps* st = nullptr;
        if (auto it = index_.find(cg); it != index_.end()) {
            c = &cells_[it->second];
        } else if (auto id = churn_id(cg); id && *id < churn_.size()) {
            c = &churn_[*id];
            st = &stamps_[*id % stamp_ring];
        }
        if (!c) {
            stray_.fetch_add(1);
        } else {
            const auto n = static_cast<std::uint32_t>(count);
            switch (k) {
            case event_kind::created:
                if (st) st->created.store(now);
                c->created.fetch_add(n);
                break;
            case event_kind::oom: c->oom.fetch_add(n); break;
            case event_kind::oom_kill:
                if (st) st->kill.store(now);
                c->oom_kill.fetch_add(n);
                break;
            case event_kind::removed:
                if (st) st->removed.store(now);
                c->removed.fetch_add(n);
                break;
            default: c->other.fetch_add(n); break;
            }
        }
        progress_.fetch_add(1);
        if (waiting_.load() && waiting_.exchange(false)) {
            std::uint64_t one = 1;
            [[maybe_unused]] auto w = ::write(wake_fd_, &one, sizeof one);
        }
    }

    /// The driver: blocks until an event came after `seen` (or `timeout_ms`).
    void wait_progress(std::uint64_t seen, int timeout_ms) {
        waiting_.store(true);
        if (progress_.load() != seen) {
            waiting_.store(false);
            return;
        }
        pollfd p{wake_fd_, POLLIN, 0};
        ::poll(&p, 1, timeout_ms);
        std::uint64_t v = 0;
        [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
        waiting_.store(false);
    }
    std::uint64_t progress() const { return progress_.load(); }

    cell& at(std::size_t i) { return cells_[i]; }
    cell& churn(std::size_t id) { return churn_[id]; }
    stamps& stamp(std::size_t id) { return stamps_[id % stamp_ring]; }
    std::size_t churn_cap() const { return churn_.size(); }
    std::uint64_t stray() const { return stray_.load(); }
    std::uint64_t failed() const { return failed_.load(); }
    std::uint64_t events() const { return events_.load(); }
    std::uint64_t static_created() {
        std::uint64_t n = 0;
        for (auto& c : cells_) n += c.created.load();
        return n;
    }

private:
    std::optional<std::size_t> churn_id(std::string_view cg) const {
        if (!cg.starts_with(churn_prefix_)) return std::nullopt;
        auto rest = cg.substr(churn_prefix_.size());
        std::size_t id = 0;
        auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), id);
        if (ec != std::errc{} || p != rest.data() + rest.size()) return std::nullopt;
        return id;
    }

    std::vector<cell> cells_;
    std::unordered_map<std::string_view, std::uint32_t> index_;  // views into the caller's paths
    std::string churn_prefix_;
    std::vector<cell> churn_;
    std::vector<stamps> stamps_;
    std::atomic<std::uint64_t> events_{0}, stray_{0}, failed_{0}, progress_{0};
    std::atomic<bool> waiting_{false};
    int wake_fd_ = -1;
};

// ---- the worker -----------------------------------------------------------------------

struct tree_args {
    std::string contender;
    bool churn = false;
    std::string root;
    fs::path stage, trash;
    std::size_t n = 0;
    double idle = 1;
    std::uint64_t seed = 1;
    double churn_seconds = 1;
    std::size_t churn_cycles = 0;
    unsigned lanes = 1;
    bool probe = false;  // arm and exit (to profile or trace the arming alone)
};

double ms_between(std::int64_t a, std::int64_t b) { return static_cast<double>(b - a) / 1e6; }

json::object latency_summary(std::vector<double>& v) {
    auto s = summarize(v);
    return {{"n", s.n}, {"p50_us", s.p50}, {"p99_us", s.p99}, {"max_us", s.max}};
}

void add_kill(oomwatch::memory_counters& c) { ++c.max, ++c.oom, ++c.oom_kill; }

// Kills on a random tenth of the tree (1 to 3 each), written as the kernel counts them:
// max, oom and oom_kill go up together, first in the cgroup's memory.events.local, then
// in memory.events of the cgroup and of every ancestor up to the tree's root.
void static_kills(const std::vector<std::string>& paths, const std::vector<std::size_t>& parent_of,
                  const std::vector<std::size_t>& hit, const std::vector<std::uint32_t>& kills_of) {
    std::vector<oomwatch::memory_counters> local(paths.size()), hier(paths.size());
    for (std::size_t i = 0; i < paths.size(); ++i) local[i] = hier[i] = initial_counters(i);
    for (std::uint32_t round = 0; round < 3; ++round)
        for (auto i : hit) {
            if (round >= kills_of[i]) continue;
            add_kill(local[i]);
            write_counters((paths[i] + "/memory.events.local").c_str(), local[i]);
            for (std::size_t j = i;; j = parent_of[j]) {
                add_kill(hier[j]);
                write_counters((paths[j] + "/memory.events").c_str(), hier[j]);
                if (j == 0) break;
            }
        }
}

// The churn: `lanes` cycles in flight; each makes "<root>/k<id>" (staged, renamed in),
// waits for `created`, kills once, waits for the kill, renames it out, waits for
// `removed`, and deletes it from the trash. A cycle whose event does not come is
// recorded as lost (after 2 s for `created` and `oom_kill`; for `removed`, after 7 s,
// beyond the 5 s liveness sweep that finds a removal whose notification was missed),
// cleaned up, and its lane goes on. The rate counts the cycles completed within the
// time asked for; the cycles in flight then are completed (or lost) after it.
struct churn_result {
    std::size_t cycles = 0;     // started
    std::size_t completed = 0;  // all three events seen
    std::size_t completed_in_window = 0;
    double seconds = 0;         // the window (or, for a fixed number of cycles, the whole run)
    std::string error;          // the driver itself failed (a file system call)
    struct lost_cycle {
        std::size_t id;
        const char* waiting_for;
    };
    std::vector<lost_cycle> lost;
    std::vector<double> created_us, kill_us, removed_us;
};

// `r`'s sample vectors are reserved by the caller, before its heap baseline.
void run_churn(const tree_args& a, tree_tally& sink, churn_result& r) {
    enum class phase { idle, created, kill, removed };
    struct lane {
        phase ph = phase::idle;
        std::size_t id = 0;
        std::int64_t t = 0;
    };
    constexpr std::int64_t lost_after_ns = 2'000'000'000, removal_lost_after_ns = 7'000'000'000;
    std::vector<lane> lanes(a.lanes);
    const std::size_t cap = a.churn_cycles ? std::min(a.churn_cycles, sink.churn_cap()) : sink.churn_cap();
    oomwatch::memory_counters zero, killed;
    killed.max = 1, killed.oom = 1, killed.oom_kill = 1;
    char zero_text[256], kill_text[256];
    const std::string_view zero_sv(zero_text, events_text(zero, zero_text, sizeof zero_text));
    const std::string_view kill_sv(kill_text, events_text(killed, kill_text, sizeof kill_text));
    const std::string stage = a.stage.string(), trash = a.trash.string();
    const std::string root_events = a.root + "/memory.events";
    auto root_h = initial_counters(0);  // the root's memory.events (the tree is reset before each run)
    char p1[PATH_MAX], p2[PATH_MAX];
    auto name = [](char (&out)[PATH_MAX], const std::string& dir, std::size_t id, const char* file = "") {
        std::snprintf(out, sizeof out, "%s/k%07zu%s", dir.c_str(), id, file);
    };
    auto check = [&](int e, const char* what, const char* path) {
        if (e && r.error.empty()) r.error = std::string(what) + " " + path + ": " + errno_text(e);
    };
    auto write = [&](const char* path, std::string_view text) { check(write_text(path, text), "write", path); };
    auto discard = [&](const std::string& dir, std::size_t id) {  // from the trash
        for (const char* f : {"/memory.events", "/memory.events.local"}) {
            name(p1, dir, id, f);
            ::unlink(p1);
        }
        name(p1, dir, id);
        ::rmdir(p1);
    };

    const auto t0 = now_ns();
    const auto stop_at = t0 + static_cast<std::int64_t>(a.churn_seconds * 1e9);
    bool starting = true;
    std::int64_t last_progress_t = t0;
    while (r.error.empty()) {
        const auto seen = sink.progress();
        bool acted = false, busy = false;
        for (auto& l : lanes) {
            const auto now = now_ns();
            if (starting && (r.cycles >= cap || (!a.churn_cycles && now >= stop_at))) starting = false;
            auto& cell = sink.churn(l.id);
            switch (l.ph) {
            case phase::idle:
                if (!starting) break;
                l.id = r.cycles++;
                name(p1, stage, l.id);
                check(::mkdir(p1, 0755) ? errno : 0, "mkdir", p1);
                for (const char* f : {"/memory.events", "/memory.events.local"}) {
                    name(p2, stage, l.id, f);
                    write(p2, zero_sv);
                }
                name(p2, a.root, l.id);
                l.t = now_ns();
                check(::rename(p1, p2) ? errno : 0, "rename", p1);
                l.ph = phase::created;
                acted = true;
                break;
            case phase::created:
            case phase::kill: {
                const bool created = l.ph == phase::created;
                if ((created ? cell.created.load() : cell.oom_kill.load()) == 0) {
                    if (now - l.t < lost_after_ns) break;
                    r.lost.push_back({l.id, created ? "created" : "oom_kill"});
                    name(p1, a.root, l.id);
                    name(p2, trash, l.id);
                    check(::rename(p1, p2) ? errno : 0, "rename", p1);
                    discard(trash, l.id);
                    l.ph = phase::idle;
                    acted = true;
                    break;
                }
                if (created) {
                    r.created_us.push_back(static_cast<double>(sink.stamp(l.id).created.load() - l.t) / 1e3);
                    // As the kernel: the local count first, then the hierarchical ones.
                    l.t = now_ns();
                    name(p1, a.root, l.id, "/memory.events.local");
                    write(p1, kill_sv);
                    name(p1, a.root, l.id, "/memory.events");
                    write(p1, kill_sv);
                    add_kill(root_h);
                    check(write_counters(root_events.c_str(), root_h), "write", root_events.c_str());
                    l.ph = phase::kill;
                } else {
                    r.kill_us.push_back(static_cast<double>(sink.stamp(l.id).kill.load() - l.t) / 1e3);
                    name(p1, a.root, l.id);
                    name(p2, trash, l.id);
                    l.t = now_ns();
                    check(::rename(p1, p2) ? errno : 0, "rename", p1);
                    l.ph = phase::removed;
                }
                acted = true;
                break;
            }
            case phase::removed:
                if (cell.removed.load() == 0) {
                    if (now - l.t < removal_lost_after_ns) break;
                    r.lost.push_back({l.id, "removed"});
                } else {
                    const auto done = sink.stamp(l.id).removed.load();
                    r.removed_us.push_back(static_cast<double>(done - l.t) / 1e3);
                    ++r.completed;
                    if (done <= stop_at) ++r.completed_in_window;
                }
                discard(trash, l.id);
                l.ph = phase::idle;
                acted = true;
                break;
            }
            if (l.ph != phase::idle) busy = true;
        }
        const auto t = now_ns();
        if (acted) {
            last_progress_t = t;
            continue;
        }
        if (!busy && !starting) break;
        if (t - last_progress_t > 3 * removal_lost_after_ns) {
            r.error = "the driver made no progress for " + std::to_string(3 * removal_lost_after_ns / 1'000'000'000) + " s";
            break;
        }
        sink.wait_progress(seen, 50);
    }
    r.seconds = static_cast<double>((a.churn_cycles ? now_ns() : stop_at) - t0) / 1e9;
    if (a.churn_cycles) r.completed_in_window = r.completed;
}

} // namespace

int tree_worker_main(int argc, char** argv) {
    tree_args a;
    for (int i = 2; i < argc; ++i) {
        std::string_view k = argv[i];
        auto val = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (k == "--contender") a.contender = val();
        else if (k == "--mode") a.churn = val() == "churn";
        else if (k == "--root") a.root = val();
        else if (k == "--stage") a.stage = val();
        else if (k == "--trash") a.trash = val();
        else if (k == "--n") a.n = std::stoul(val());
        else if (k == "--idle") a.idle = std::stod(val());
        else if (k == "--seed") a.seed = std::stoull(val());
        else if (k == "--churn-seconds") a.churn_seconds = std::stod(val());
        else if (k == "--churn-cycles") a.churn_cycles = std::stoul(val());
        else if (k == "--lanes") a.lanes = static_cast<unsigned>(std::max(1ul, std::stoul(val())));
        else if (k == "--probe") a.probe = true;
    }
    json::object out{{"contender", a.contender}, {"mode", a.churn ? "churn" : "scale"}, {"n", a.n}};

    // Everything the harness itself needs is allocated before the baseline.
    const auto shape = shape_for(a.n);
    const auto paths = tree_paths(a.root, shape);
    out["children"] = shape.children;
    out["grandchildren"] = shape.grandchildren;
    constexpr std::size_t churn_cap = std::size_t{1} << 21;
    tree_tally sink(paths, a.root, a.churn ? churn_cap : 0);
    tree_contender_options o;
    o.report_created = a.churn;
    auto ct = make_tree_contender(a.contender, o);
    if (!ct) {
        out["error"] = "unknown contender";
        worker_exit(out);
    }
    std::vector<std::uint32_t> kills_of(paths.size(), 0);
    std::vector<std::size_t> parent_of(paths.size(), 0);
    {
        std::unordered_map<std::string_view, std::size_t> idx;
        for (std::size_t i = 0; i < paths.size(); ++i) idx.emplace(paths[i], i);
        for (std::size_t i = 1; i < paths.size(); ++i)
            parent_of[i] = idx.at(std::string_view(paths[i]).substr(0, paths[i].rfind('/')));
    }
    std::vector<std::size_t> order(paths.size());
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(a.seed);
    std::shuffle(order.begin(), order.end(), rng);
    (void)rss_kib(), (void)open_fds(), (void)other_threads_switches(), (void)cpu_seconds(), (void)inotify_watches();

    const auto fds0 = open_fds();
    const auto rss0 = rss_kib();
    const auto heap0 = heap_bytes();
    const auto t0 = now_ns();
    auto ar = ct->arm(a.root, sink);
    const auto t1 = now_ns();
    const auto rss_armed = rss_kib();
    const auto heap_armed = heap_bytes();
    out["watched"] = ct->watched();
    if (!ar.ok()) {
        out["error"] = ar.error;
        worker_exit(out);
    }
    if (ct->watched() != paths.size()) {
        out["error"] = "watched " + std::to_string(ct->watched()) + " of " + std::to_string(paths.size()) + " cgroups";
        worker_exit(out);
    }
    if (a.probe) {
        out["arm_only_ms"] = ms_between(t0, t1);
        worker_exit(out);
    }
    ct->start();
    const auto t2 = now_ns();
    const double n = static_cast<double>(paths.size());

    std::uint64_t mismatches = 0;
    auto check_static = [&](bool created_expected) {
        for (std::size_t i = 0; i < paths.size(); ++i) {
            auto& c = sink.at(i);
            const std::uint32_t want_created = created_expected && i != 0 ? 1 : 0;
            if (c.oom.load() != kills_of[i] || c.oom_kill.load() != kills_of[i] || c.created.load() != want_created ||
                c.removed.load() != 0 || c.other.load() != 0)
                ++mismatches;
        }
    };

    if (!a.churn) {
        sleep_ms(300);  // the thread started, the consumer waiting
        const auto rss1 = rss_kib();
        const auto heap1 = heap_bytes();
        const auto fds1 = open_fds();
        out["arm_ms"] = ms_between(t0, t2);
        out["arm_only_ms"] = ms_between(t0, t1);
        out["fds"] = static_cast<std::int64_t>(fds1) - static_cast<std::int64_t>(fds0);
        out["inotify_watches"] = inotify_watches();
        out["bytes_per_cgroup_armed"] = static_cast<double>(rss_armed - rss0) * 1024.0 / n;
        out["bytes_per_cgroup"] = static_cast<double>(rss1 - rss0) * 1024.0 / n;
        out["heap_bytes_per_cgroup_armed"] = (static_cast<double>(heap_armed) - static_cast<double>(heap0)) / n;
        out["heap_bytes_per_cgroup"] = (static_cast<double>(heap1) - static_cast<double>(heap0)) / n;

        measure_idle(a.idle, out);

        const std::size_t k = std::min(paths.size(), std::clamp<std::size_t>(paths.size() / 10, 3, 1000));
        std::vector<std::size_t> hit(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
        std::uint64_t total = 0;
        for (auto i : hit) total += kills_of[i] = 1 + static_cast<std::uint32_t>(rng() % 3);
        static_kills(paths, parent_of, hit, kills_of);
        const auto tw = now_ns();
        auto delivered = [&] {
            for (auto i : hit)
                if (sink.at(i).oom_kill.load() < kills_of[i]) return false;
            return true;
        };
        while (!delivered() && now_ns() - tw < 10'000'000'000) sleep_ms(1);
        out["delivery_ms"] = ms_between(tw, now_ns());
        sleep_ms(300);  // anything more would be an over-count
        check_static(false);
        std::uint64_t d_kill = 0;
        for (std::size_t i = 0; i < paths.size(); ++i) d_kill += sink.at(i).oom_kill.load();
        out["hit_cgroups"] = hit.size();
        out["kills"] = total;
        out["delivered_oom_kill"] = d_kill;
        out["stray_events"] = sink.stray();
        out["mismatched_cgroups"] = mismatches;
        out["exact"] = mismatches == 0 && sink.stray() == 0 && sink.failed() == 0;
        worker_exit(out);
    }

    // Churn. First every cgroup found at arming is reported `created`.
    const auto tc = now_ns();
    while (sink.static_created() < paths.size() - 1 && now_ns() - tc < 30'000'000'000) sleep_ms(5);
    sleep_ms(200);
    out["arm_ms"] = ms_between(t0, t2);
    churn_result r;
    r.created_us.reserve(churn_cap), r.kill_us.reserve(churn_cap), r.removed_us.reserve(churn_cap);
    const auto fds_b = open_fds();
    const auto watches_b = inotify_watches();
    const auto heap_b = heap_bytes();
    const auto rss_b = rss_kib();
    const auto cpu_b = ct->thread_cpu_seconds();
    run_churn(a, sink, r);
    const auto cpu_a = ct->thread_cpu_seconds();
    sleep_ms(300);  // late or extra events, watches still being removed
    const auto fds_a = open_fds();
    const auto watches_a = inotify_watches();
    const auto heap_a = heap_bytes();
    const auto rss_a = rss_kib();
    const auto watched_a = ct->watched();

    check_static(true);
    std::size_t churn_off = 0;
    for (std::size_t id = 0; id < r.cycles && id < sink.churn_cap(); ++id) {
        auto& c = sink.churn(id);
        if (c.created.load() != 1 || c.oom.load() != 1 || c.oom_kill.load() != 1 || c.removed.load() != 1 ||
            c.other.load() != 0)
            ++churn_off;
    }
    const double cycles = static_cast<double>(r.completed);
    std::size_t late_removals = 0;  // a missed notification, found by the liveness sweep
    for (double us : r.removed_us) late_removals += us > 1e6;
    out["lanes"] = a.lanes;
    out["cycles"] = r.cycles;
    out["completed"] = r.completed;
    out["seconds"] = r.seconds;
    out["cycles_per_min"] = r.seconds > 0 ? static_cast<double>(r.completed_in_window) * 60.0 / r.seconds : 0.0;
    out["cpu_us_per_cycle"] = cycles > 0 ? (cpu_a - cpu_b) * 1e6 / cycles : 0.0;
    out["created_ack"] = latency_summary(r.created_us);
    out["kill_ack"] = latency_summary(r.kill_us);
    out["removed_ack"] = latency_summary(r.removed_us);
    out["late_removals"] = late_removals;
    out["lost_cycles"] = r.lost.size();
    if (!r.lost.empty()) {
        std::string first;
        std::map<std::string, std::size_t> by;
        for (auto& l : r.lost) ++by[l.waiting_for];
        for (auto& [k, v] : by) first += (first.empty() ? "" : ", ") + std::to_string(v) + " without " + k;
        first += "; the first: k" + std::to_string(r.lost.front().id) + " (no " + r.lost.front().waiting_for + " event)";
        out["lost_detail"] = first;
    }
    out["fds_before"] = fds_b;
    out["fds_after"] = fds_a;
    out["watches_before"] = watches_b;
    out["watches_after"] = watches_a;
    out["watched_after"] = watched_a;
    out["heap_growth_bytes_per_1000_cycles"] =
        cycles > 0 ? (static_cast<double>(heap_a) - static_cast<double>(heap_b)) * 1000.0 / cycles : 0.0;
    out["rss_growth_kib"] = rss_a - rss_b;
    out["stray_events"] = sink.stray();
    out["mismatched_cgroups"] = mismatches;
    out["mismatched_cycles"] = churn_off;
    if (!r.error.empty()) out["churn_error"] = r.error;
    out["exact"] = r.error.empty() && mismatches == 0 && churn_off == 0 && sink.stray() == 0 && sink.failed() == 0;
    out["leak_free"] = fds_a == fds_b && watches_a == watches_b && watched_a == paths.size();
    worker_exit(out);
}

// ---- the orchestrator -------------------------------------------------------------------

namespace {

json::object tree_run(run_context& rc, const fake_cgroup_tree& t, const std::string& which, bool churn, std::size_t n) {
    const std::string what = std::string("tree ") + (churn ? "churn" : "scale") + " N=" + std::to_string(n) + " " + which;
    std::cerr << "  " << what << " ..." << std::endl;
    std::vector<std::string> args{"--contender", which, "--mode", churn ? "churn" : "scale",
                                  "--root", t.root(), "--stage", t.stage().string(), "--trash", t.trash().string(),
                                  "--n", std::to_string(n), "--idle", std::to_string(rc.sz.idle_seconds),
                                  "--seed", std::to_string(n * 11 + 3),
                                  "--churn-seconds", std::to_string(rc.sz.tree_churn_seconds),
                                  "--churn-cycles", std::to_string(rc.sz.tree_churn_cycles),
                                  "--lanes", std::to_string(rc.sz.tree_churn_lanes)};
    t.reset_counters();
    auto r = run_worker(rc, "tree", args, 300);
    if (churn) t.clean_churn();
    if (!r.failure.empty()) {
        rc.fail(what + ": worker " + r.failure);
        return {{"contender", which}, {"n", n}, {"error", "worker " + r.failure}};
    }
    auto& o = r.o;
    o["loadavg"] = read_text("/proc/loadavg").value_or("").substr(0, 14);
    if (auto* e = o.if_contains("error")) {
        rc.fail(what + ": " + json::value_to<std::string>(*e));
    } else if (auto* ex = o.if_contains("exact"); !ex || !ex->is_bool() || !ex->as_bool()) {
        rc.fail(what + ": counts not exact (" + json::serialize(o) + ")");
    } else if (auto* lf = o.if_contains("leak_free"); lf && lf->is_bool() && !lf->as_bool()) {
        rc.fail(what + ": descriptors, watches or watched cgroups not back to where they were (" + json::serialize(o) + ")");
    }
    return std::move(o);
}

} // namespace

json::object run_tree(run_context& rc) {
    const auto& sz = rc.sz;
    static const char* const contenders[] = {"floor", "oomwatch"};
    std::cerr << "tree: N in {";
    for (auto n : sz.tree_n) std::cerr << ' ' << n;
    std::cerr << " }, idle " << sz.idle_seconds << " s each; churn in N in {";
    for (auto n : sz.tree_churn_n) std::cerr << ' ' << n;
    std::cerr << " }" << std::endl;
    json::array scale, churn;
    auto do_churn = [&](const fake_cgroup_tree& t, std::size_t n) {
        json::array rows;
        for (auto* c : contenders) rows.push_back(tree_run(rc, t, c, true, n));
        churn.push_back(json::object{{"n", n}, {"shape", shape_text(t.shape())}, {"contenders", std::move(rows)}});
    };
    std::vector<std::size_t> all = sz.tree_n;
    for (auto n : sz.tree_churn_n)
        if (std::find(all.begin(), all.end(), n) == all.end()) all.push_back(n);
    std::sort(all.begin(), all.end());
    for (auto n : all) {
        const bool measure_scale = std::find(sz.tree_n.begin(), sz.tree_n.end(), n) != sz.tree_n.end();
        const bool measure_churn = std::find(sz.tree_churn_n.begin(), sz.tree_churn_n.end(), n) != sz.tree_churn_n.end();
        const auto tb = now_ns();
        fake_cgroup_tree t(rc.tmp_root / ("tree-" + std::to_string(n)), n);
        const auto build_ms = static_cast<double>(now_ns() - tb) / 1e6;
        if (measure_scale) {
            json::array rows;
            for (auto* c : contenders) rows.push_back(tree_run(rc, t, c, false, n));
            scale.push_back(json::object{
                {"n", n}, {"shape", shape_text(t.shape())}, {"build_ms", build_ms}, {"contenders", std::move(rows)}});
        }
        if (measure_churn) do_churn(t, n);
    }
    return {{"idle_seconds", sz.idle_seconds},
            {"churn_seconds", sz.tree_churn_seconds},
            {"churn_cycles", sz.tree_churn_cycles},
            {"churn_lanes", sz.tree_churn_lanes},
            {"scale", std::move(scale)},
            {"churn", std::move(churn)}};
}

} // namespace bench
