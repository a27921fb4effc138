// Real-kernel cases that only cgroup v2 has: memory.oom.group, a limit on a parent with
// the allocation in a child (memory.events vs memory.events.local), hundreds of cgroups
// on the one shared inotify instance, and removal seen through the parent directory.
//
// The hosts' memory controller is on cgroup v1, so there these cases are not applicable
// and are skipped even with OOMWATCH_REQUIRE_KERNEL=1; the ctest test vm_cgroup_v2 runs
// this program in a VM on a real cgroup v2 kernel, and fails if any case is skipped there.
#include "test_support.hpp"

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"
#include "kernel_log.hpp"
#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

// Runs these cases only where the memory controller is on cgroup v2. Missing kernel
// facilities follow the usual rule (skip, or fail when required); a v1 hierarchy is a
// plain "not applicable", never a failure: the VM test covers v2.
struct v2_precondition {
    boost::test_tools::assertion_result operator()(boost::unit_test::test_unit_id) const {
        auto why = kernel_unavailable_reason();
        if (!why.empty()) {
            if (kernel_required()) return true;  // the fixture fails with the reason
            boost::test_tools::assertion_result r(false);
            r.message() << "skipped: " << why << " (set OOMWATCH_REQUIRE_KERNEL=1 to fail instead)";
            return r;
        }
        auto h = detail::find_memory_hierarchy();
        if (h && h->version == cgroup_version::v2) return true;
        boost::test_tools::assertion_result r(false);
        r.message() << "not applicable: memory hierarchy is cgroup v1; these run in the VM test vm_cgroup_v2";
        return r;
    }
};

memory_counters read_events(const fs::path& file) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    auto r = parse_memory_events(text.str());
    BOOST_TEST_REQUIRE(r.has_value(), "cannot read " << file << ": " << r.error().message());
    return *r;
}

constexpr event_kind counted_kinds[] = {event_kind::oom,  event_kind::oom_kill, event_kind::oom_group_kill,
                                        event_kind::high, event_kind::max,      event_kind::low};

// True when the reported counts per kind equal the file's growth since `base`.
bool tally_matches(const tally& t, const memory_counters& base, const memory_counters& now, kind_set kinds) {
    for (auto k : counted_kinds)
        if (kinds.contains(k) && t[k] != now.get(k) - base.get(k)) return false;
    return true;
}

// The same as assertions, so a failure names the kind and both numbers.
void check_tally(const std::string& who, const tally& t, const memory_counters& base, const memory_counters& now,
                 kind_set kinds) {
    for (auto k : counted_kinds) {
        if (!kinds.contains(k)) continue;
        BOOST_TEST(t[k] == now.get(k) - base.get(k), who << ": reported " << k << " " << t[k] << ", file grew by "
                                                          << now.get(k) - base.get(k));
    }
}

// Lets late notifications arrive (the kernel delays repeats by up to 10 ms per file).
void run_quietly_for(asio::io_context& ctx, std::chrono::milliseconds d) {
    run_until(ctx, [] { return false; }, d);
}

struct v2_fixture {
    v2_fixture() { OOMWATCH_REQUIRE_KERNEL_READY(); }

    scratch::scratch_cgroup make(std::string_view prefix, std::uint64_t limit_bytes) {
        auto c = make_scratch_cgroup(prefix, limit_bytes);
        BOOST_TEST_REQUIRE(c.version() == cgroup_version::v2);
        return c;
    }

    // Runs a child in `cg` that allocates far over the limit; returns once it has died.
    static void oom_kill_one(const fs::path& cg) { ::oomwatch::test::oom_kill_one(cg, 20s); }

    asio::io_context ctx;
};

// Processes that join a cgroup and sleep until they are killed: the rest of a group that
// memory.oom.group takes down with the victim. Whatever is left is killed and reaped on
// scope exit, so no test leaves a process behind.
class sleepers {
public:
    // Failures are kept in error() rather than thrown, so that the destructor still
    // reaps the children already forked.
    sleepers(const fs::path& cg, int n) {
        const std::string procs = (cg / "cgroup.procs").string();  // no allocation after fork
        const pid_t parent = ::getpid();
        for (int i = 0; i < n; ++i) {
            int fds[2];
            if (::pipe2(fds, O_CLOEXEC) != 0) {
                error_ = "pipe2: errno " + std::to_string(errno);
                return;
            }
            pid_t pid = ::fork();
            if (pid == 0) {
                ::close(fds[0]);
                child(fds[1], procs.c_str(), parent);
            }
            ::close(fds[1]);
            if (pid < 0) {
                ::close(fds[0]);
                error_ = "fork: errno " + std::to_string(errno);
                return;
            }
            pids_.push_back(pid);
            int err = ECHILD;  // EOF: the child died before it could report
            while (::read(fds[0], &err, sizeof err) < 0 && errno == EINTR) {}
            ::close(fds[0]);
            if (err != 0) {
                error_ = "sleeper " + std::to_string(pid) + " could not join " + cg.string() + ": errno " +
                         std::to_string(err);
                return;
            }
        }
    }
    sleepers(const sleepers&) = delete;
    sleepers& operator=(const sleepers&) = delete;
    ~sleepers() {
        for (pid_t pid : pids_) {
            ::kill(pid, SIGKILL);  // unreaped, so the pid is still our child's
            int st;
            while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
        }
    }

    const std::string& error() const { return error_; }
    /// The sleepers not reaped yet.
    const std::vector<pid_t>& pids() const { return pids_; }
    std::size_t size() const { return pids_.size(); }

    /// Reaps every sleeper that exits within `timeout`; returns their wait statuses.
    std::vector<int> reap_all(std::chrono::milliseconds timeout) {
        std::vector<int> statuses;
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!pids_.empty() && std::chrono::steady_clock::now() < deadline) {
            for (auto it = pids_.begin(); it != pids_.end();) {
                int st = 0;
                if (::waitpid(*it, &st, WNOHANG) == *it) {
                    statuses.push_back(st);
                    it = pids_.erase(it);
                } else {
                    ++it;
                }
            }
            if (!pids_.empty()) std::this_thread::sleep_for(10ms);
        }
        return statuses;
    }

private:
    // Forked from a multithreaded parent: async-signal-safe calls only, never returns.
    [[noreturn]] static void child(int report_fd, const char* procs_file, pid_t parent) noexcept {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test run leaves no sleeper behind
        if (::getppid() != parent) ::_exit(1);
        int err = 0;
        int fd = ::open(procs_file, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            err = errno;
        } else {
            if (::write(fd, "0", 1) != 1) err = errno != 0 ? errno : EIO;  // "0": the writer itself
            ::close(fd);
        }
        while (::write(report_fd, &err, sizeof err) < 0 && errno == EINTR) {}
        ::close(report_fd);
        if (err != 0) ::_exit(127);
        for (;;) ::pause();
    }

    std::vector<pid_t> pids_;
    std::string error_;
};

} // namespace

BOOST_AUTO_TEST_SUITE(v2_only, *boost::unit_test::precondition(v2_precondition{}))

// memory.oom.group=1: one OOM takes the whole cgroup; the kernel counts one group kill
// and one oom_kill per process it killed.
BOOST_FIXTURE_TEST_CASE(a_group_kill_reports_oom_group_kill_and_the_counts_of_memory_events, v2_fixture) {
    auto cg = make("oomwatch-v2-group", oom_limit);
    BOOST_TEST_REQUIRE(!cg.set_oom_group(true));
    sleepers others(cg.path(), 3);
    BOOST_TEST_REQUIRE(others.error().empty(), others.error());
    watcher w(ctx, cg.path());
    const auto base = read_events(cg.path() / "memory.events");
    event_log log(w);
    log.arm();

    oom_kill_one(cg.path());
    auto statuses = others.reap_all(20s);
    BOOST_TEST_REQUIRE(others.size() == 0u, others.size() << " sleepers outlived the group kill");
    BOOST_TEST(statuses.size() == 3u);
    for (int st : statuses) BOOST_TEST(scratch::victim::killed_by_sigkill(st), "sleeper status " << st);

    const auto kinds = kind_set::defaults();
    // Not fatal: on a mismatch, check_tally below names the kind and the numbers.
    BOOST_TEST(run_until(ctx, [&] {
        return tally_matches(log.t, base, read_events(cg.path() / "memory.events"), kinds);
    }), "the reported counts did not reach memory.events' growth within 10 s");
    run_quietly_for(ctx, 500ms);  // nothing more may come
    const auto now = read_events(cg.path() / "memory.events");
    BOOST_TEST_MESSAGE("group kill: memory.events grew by oom " << now.oom - base.oom << ", oom_kill "
                       << now.oom_kill - base.oom_kill << ", oom_group_kill "
                       << now.oom_group_kill - base.oom_group_kill);
    check_tally("group", log.t, base, now, kinds);
    BOOST_TEST(log.t[event_kind::oom_group_kill] == 1u);
    BOOST_TEST(log.t[event_kind::oom_kill] >= 4u);  // the victim and the three sleepers
    BOOST_TEST(log.t[event_kind::oom] >= 1u);
    for (auto& ev : log.events) BOOST_TEST(ev.cgroup == cg.path());
}

// The same group kill names every victim (issue 10): the kernel logs one `Killed process`
// line per kill it counts, the first victim twice (as the victim, then as a member), so
// the oom_kill events list exactly as many victims as oom_kill grew by, every sleeper
// among them marked as a group kill of this cgroup.
BOOST_FIXTURE_TEST_CASE(a_group_kill_lists_every_victim, v2_fixture) {
    auto cg = make("oomwatch-v2-group-victims", oom_limit);
    BOOST_TEST_REQUIRE(!cg.set_oom_group(true));
    sleepers others(cg.path(), 3);
    BOOST_TEST_REQUIRE(others.error().empty(), others.error());
    const std::vector<pid_t> sleeper_pids = others.pids();
    // Naming is what is tested, not the hold: in the VM (TCG, one CPU) a record can be
    // read more than the default 50 ms after its count (seen once in 5 victims). A held
    // count goes as soon as its records are there, so a long hold costs nothing here.
    watch_options wo;
    wo.victim_hold = 5s;
    watcher w(ctx, cg.path(), wo);
    BOOST_TEST_REQUIRE(w.victims_available(), w.victims_error().message());
    const auto base = read_events(cg.path() / "memory.events");
    event_log log(w);
    log.arm();
    oom_kill_one(cg.path());
    others.reap_all(20s);
    BOOST_TEST_REQUIRE(others.size() == 0u);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        return tally_matches(log.t, base, read_events(cg.path() / "memory.events"), kind_set::defaults());
    }));
    std::vector<victim> vs;
    std::uint64_t unattributed = 0;
    for (auto& ev : log.events) {
        if (ev.kind == event_kind::oom_kill) {
            BOOST_TEST(ev.victims.size() + ev.unattributed == ev.count);
            vs.insert(vs.end(), ev.victims.begin(), ev.victims.end());
            unattributed += ev.unattributed;
        } else {
            BOOST_TEST(ev.victims.empty());
        }
    }
    BOOST_TEST(unattributed == 0u);
    BOOST_TEST(vs.size() == log.t[event_kind::oom_kill]);
    for (pid_t p : sleeper_pids) {
        auto it = std::find_if(vs.begin(), vs.end(), [&](const victim& v) { return v.pid == p; });
        BOOST_TEST_REQUIRE((it != vs.end()), "sleeper " << p << " not named");
        BOOST_TEST(it->group_kill);
        BOOST_TEST(it->group_cgroup == cg.path());
        BOOST_TEST((it->constraint == oom_constraint::memcg));
    }
    for (std::size_t i = 1; i < vs.size(); ++i) BOOST_TEST(vs[i - 1].kernel_seq < vs[i].kernel_seq);  // the log's order
}

// A limit on the parent, the allocation in a child without one. The limit that fired is
// the parent's: `max` and `oom` rise in the parent (and are not propagated down), while
// `oom_kill` is counted where the victim was and propagated up. Each watcher reports
// exactly what its own file says, memory.events or memory.events.local. A kill in the
// child before the watchers exist is history: no watcher may report it.
BOOST_FIXTURE_TEST_CASE(a_parent_limit_and_a_child_allocation_are_reported_per_file, v2_fixture) {
    auto parent = make("oomwatch-v2-nest", oom_limit);
    auto made = parent.create_child("leaf", 0);
    BOOST_TEST_REQUIRE(made.has_value(), "cannot create the child: " << made.error().message());
    auto child = std::move(*made);
    oom_kill_one(child.path());  // before any watcher: part of the baselines

    struct watched {
        std::string name;
        fs::path file;
        std::unique_ptr<watcher> w;
        std::unique_ptr<event_log> log;
        memory_counters base;
    };
    std::vector<watched> all;
    const auto kinds = kind_set::all();
    for (auto* cg : {&parent, &child}) {
        for (auto scope : {watch_options::scope::hierarchical, watch_options::scope::local}) {
            watch_options o;
            o.kinds = kinds;
            o.counters = scope;
            const bool local = scope == watch_options::scope::local;
            watched x;
            x.name = std::string(cg == &parent ? "parent" : "child") + (local ? " memory.events.local" : " memory.events");
            x.file = cg->path() / (local ? "memory.events.local" : "memory.events");
            x.w = std::make_unique<watcher>(ctx, cg->path(), o);
            x.base = read_events(x.file);
            BOOST_TEST((x.w->counters() == x.base), x.name << ": the watcher's baseline is not the file's contents");
            x.log = std::make_unique<event_log>(*x.w);
            x.log->arm();
            all.push_back(std::move(x));
        }
    }

    oom_kill_one(child.path());
    BOOST_TEST(run_until(ctx, [&] {
        return std::all_of(all.begin(), all.end(),
                           [&](const watched& x) { return tally_matches(x.log->t, x.base, read_events(x.file), kinds); });
    }), "the reported counts did not reach the files' growth within 10 s");
    run_quietly_for(ctx, 500ms);

    std::map<std::string, memory_counters> delta;
    for (auto& x : all) {
        const auto now = read_events(x.file);
        check_tally(x.name, x.log->t, x.base, now, kinds);
        for (auto& ev : x.log->events) BOOST_TEST(ev.cgroup == x.w->cgroup());
        auto& d = delta[x.name];
        d.max = now.max - x.base.max;
        d.oom = now.oom - x.base.oom;
        d.oom_kill = now.oom_kill - x.base.oom_kill;
        BOOST_TEST_MESSAGE(x.name << " grew by max " << d.max << ", oom " << d.oom << ", oom_kill " << d.oom_kill);
    }
    // The parent's limit fired: its own (local) oom rose, the child's local oom did not.
    BOOST_TEST(delta["parent memory.events.local"].oom >= 1u);
    BOOST_TEST(delta["child memory.events.local"].oom == 0u);
    BOOST_TEST(delta["child memory.events"].oom == 0u);
    // One process was killed, in the child, and the parent's hierarchical file counts it.
    BOOST_TEST(delta["child memory.events"].oom_kill == 1u);
    BOOST_TEST(delta["parent memory.events"].oom_kill == 1u);
}

// Many cgroups on one io_context share one inotify instance (no descriptor per cgroup);
// kills in a random subset are reported by exactly those cgroups, with exact counts,
// and kills from before the watchers started are not reported at all.
BOOST_FIXTURE_TEST_CASE(five_hundred_cgroups_on_one_inotify_instance_report_exactly_their_kills, v2_fixture) {
    constexpr std::size_t n = 500;
    constexpr std::size_t killed = 8;
    auto parent = make("oomwatch-v2-many", 0);
    std::vector<scratch::scratch_cgroup> cgs;
    cgs.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        auto c = parent.create_child("c" + std::to_string(i), oom_limit);
        BOOST_TEST_REQUIRE(c.has_value(), "cgroup " << i << ": " << c.error().message());
        cgs.push_back(std::move(*c));
    }

    // Seeded, so a failing subset can be replayed with OOMWATCH_TEST_SEED.
    std::uint64_t seed = std::random_device{}();
    if (const char* s = std::getenv("OOMWATCH_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
    BOOST_TEST_MESSAGE("seed " << seed << " (OOMWATCH_TEST_SEED=" << seed << " replays it)");
    std::mt19937_64 rng(seed);
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<std::uint64_t> expected(n, 0);
    for (std::size_t j = 0; j < killed; ++j) expected[order[j]] = 1 + rng() % 2;  // one or two kills each
    std::ostringstream chosen;
    for (std::size_t j = 0; j < killed; ++j) chosen << " c" << order[j] << "x" << expected[order[j]];
    BOOST_TEST_MESSAGE("kills in:" << chosen.str() << "; c" << order[0] << " and c" << order[1]
                                   << " had one before the watchers too");
    // History: counted in the baselines, never reported.
    oom_kill_one(cgs[order[0]].path());
    oom_kill_one(cgs[order[1]].path());

    watch_options o;
    o.liveness_interval = std::chrono::hours(1);  // removal must come from the parent watch
    // The shared inotify instance and the kernel-log reader (victims) exist now; the
    // reader closes with its last client, so this one stays until the count is taken.
    watcher warm(ctx, cgs[0].path(), o);
    run_ready(ctx);
    const auto fds_before = open_fd_count();
    const bool kmsg_open = asio::use_service<detail::kernel_log_service>(ctx).is_open();

    std::vector<std::unique_ptr<watcher>> ws;
    std::vector<tally> tallies(n);
    std::vector<subscription> subs;
    std::vector<memory_counters> base;
    for (std::size_t i = 0; i < n; ++i) {
        ws.push_back(std::make_unique<watcher>(ctx, cgs[i].path(), o));
        base.push_back(ws.back()->counters());
        subs.push_back(ws.back()->subscribe([&tallies, i](const oom_event& ev) { tallies[i].add(ev); }));
    }
    BOOST_TEST(open_fd_count() == fds_before, "descriptors grew with " << n << " watched cgroups");
    warm.close();

    for (std::size_t i = 0; i < n; ++i)
        for (std::uint64_t k = 0; k < expected[i]; ++k) oom_kill_one(cgs[i].path());

    BOOST_TEST(run_until(ctx, [&] {
        for (std::size_t i = 0; i < n; ++i)
            if (tallies[i][event_kind::oom_kill] < expected[i]) return false;
        return true;
    }, 30s), "not every kill was reported within 30 s");  // the loop below says which
    run_quietly_for(ctx, 500ms);
    for (std::size_t i = 0; i < n; ++i) {
        const auto now = read_events(cgs[i].path() / "memory.events");
        BOOST_TEST(tallies[i][event_kind::oom_kill] == expected[i], "c" << i << ": reported oom_kill");
        BOOST_TEST(now.oom_kill - base[i].oom_kill == expected[i], "c" << i << ": memory.events oom_kill growth");
        check_tally("c" + std::to_string(i), tallies[i], base[i], now, kind_set::defaults());
        if (expected[i] == 0) BOOST_TEST(tallies[i].events == 0u, "c" << i << " reported something");
    }

    // Removing them all: each watcher hears it through the one watch on their parent.
    BOOST_TEST_REQUIRE(!parent.remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        return std::all_of(tallies.begin(), tallies.end(), [](const tally& t) { return t[event_kind::removed] == 1; });
    }, 30s));
    subs.clear();
    ws.clear();
    run_ready(ctx);
    // The kernel-log reader closed with the end of its last client's watch.
    BOOST_TEST(open_fd_count() == fds_before - (kmsg_open ? 1 : 0));
}

// rmdir is seen at once through the parent directory's watch (the cgroup's own files
// get no inotify event on removal), not by the liveness timer, here set to an hour.
BOOST_FIXTURE_TEST_CASE(rmdir_gives_removed_promptly_through_the_parent_watch, v2_fixture) {
    auto cg = make("oomwatch-v2-rm", 0);
    watch_options o;
    o.liveness_interval = std::chrono::hours(1);
    watcher w(ctx, cg.path(), o);
    event_log log(w);
    log.arm();
    run_ready(ctx);
    const auto start = std::chrono::steady_clock::now();
    BOOST_TEST_REQUIRE(!cg.remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1; }, 3s));
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    BOOST_TEST_MESSAGE("removed reported " << took.count() << " ms after rmdir started");
    BOOST_TEST(log.events.size() == 1u);
}

// The memory controller disabled in the parent's cgroup.subtree_control under a live
// watcher: the child stays, its memory.events goes. The kernel says nothing (no inotify
// event: measured here), so the liveness safety net notices; the watch fails (no silent
// death) within about one interval.
BOOST_FIXTURE_TEST_CASE(disabling_the_controller_fails_the_watch, v2_fixture) {
    auto parent = make("oomwatch-v2-ctl", 0);
    auto made = parent.create_child("leaf", 0);
    BOOST_TEST_REQUIRE(made.has_value(), "cannot create the child: " << made.error().message());
    auto child = std::move(*made);
    watch_options o;
    o.liveness_interval = std::chrono::milliseconds(200);
    watcher w(ctx, child.path(), o);
    std::vector<oom_event> seen;
    auto sub = w.subscribe([&](const oom_event& ev) { seen.push_back(ev); });
    event_log log(w);
    log.arm();
    run_ready(ctx);
    BOOST_TEST_REQUIRE(!parent.write_file("cgroup.subtree_control", "-memory"));
    BOOST_TEST_REQUIRE(fs::exists(child.path()));
    BOOST_TEST_REQUIRE(!fs::exists(child.path() / "memory.events"));
    const auto start = std::chrono::steady_clock::now();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.last_error && !seen.empty(); }, 5s), "the watch did not fail");
    BOOST_TEST_MESSAGE("the watch failed " << std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::steady_clock::now() - start).count()
                                           << " ms after the controller was disabled");
    BOOST_TEST(log.last_error == error::counters_vanished);
    BOOST_TEST(seen.back().kind == event_kind::failed);
    BOOST_TEST(seen.back().error == error::counters_vanished);
    auto f = w.failure();
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST(f->path() == child.path() / "memory.events");
    BOOST_TEST(!w.is_open());
}

// The same under a tree: the descendant that lost its controller is `skipped` (with the
// reason) and the tree goes on reporting the others' kills.
BOOST_FIXTURE_TEST_CASE(a_tree_skips_a_descendant_whose_controller_is_disabled_and_goes_on, v2_fixture) {
    auto root = make("oomwatch-v2-treectl", 0);
    auto a = root.create_child("a", 0);
    BOOST_TEST_REQUIRE(a.has_value(), "cannot create a: " << a.error().message());
    auto x = a->create_child("x", 0);
    BOOST_TEST_REQUIRE(x.has_value(), "cannot create a/x: " << x.error().message());
    auto b = root.create_child("b", oom_limit);
    BOOST_TEST_REQUIRE(b.has_value(), "cannot create b: " << b.error().message());
    tree_options o;
    o.liveness_interval = std::chrono::milliseconds(200);
    tree_watcher tw(ctx, root.path(), o);
    BOOST_TEST_REQUIRE(tw.size() == 4u);
    std::vector<oom_event> seen;
    auto sub = tw.subscribe([&](const oom_event& ev) { seen.push_back(ev); });
    run_ready(ctx);
    BOOST_TEST_REQUIRE(!a->write_file("cgroup.subtree_control", "-memory"));
    BOOST_TEST_REQUIRE(!fs::exists(x->path() / "memory.events.local"));
    auto skipped_x = [&] {
        return std::any_of(seen.begin(), seen.end(), [&](const oom_event& ev) {
            return ev.kind == event_kind::skipped && ev.cgroup == x->path();
        });
    };
    BOOST_TEST_REQUIRE(run_until(ctx, skipped_x, 5s), "no skipped event for a/x");
    for (auto& ev : seen)
        if (ev.kind == event_kind::skipped) BOOST_TEST((ev.error == error::counters_vanished));
    BOOST_TEST(tw.is_open());
    BOOST_TEST(!tw.failure().has_value());
    oom_kill_one(b->path());
    std::uint64_t kills_b = 0;
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        kills_b = 0;
        for (auto& ev : seen)
            if (ev.kind == event_kind::oom_kill && ev.cgroup == b->path()) kills_b += ev.count;
        return kills_b >= 1;
    }, 20s), "the tree stopped reporting after a/x was skipped");
    BOOST_TEST(kills_b == 1u);
    for (auto& ev : seen) BOOST_TEST((ev.kind != event_kind::failed));
}

// A tree of 1,000 cgroups on the one inotify instance: all found, kills in a few of them
// (chosen at random; seed printed) reported exactly, once, at their cgroup.
BOOST_FIXTURE_TEST_CASE(a_tree_of_a_thousand_cgroups_reports_exactly_its_kills, v2_fixture) {
    auto root = make("oomwatch-v2-tree", 0);
    tree_watcher tw(ctx, root.path());
    std::map<std::string, std::uint64_t> kills;
    auto sub = tw.subscribe([&](const oom_event& ev) {
        if (ev.kind == event_kind::oom_kill) kills[ev.cgroup.string()] += ev.count;
    });
    std::vector<scratch::scratch_cgroup> children;
    for (int i = 0; i < 1000; ++i) {
        auto c = root.create_child("c" + std::to_string(i), oom_limit);
        BOOST_TEST_REQUIRE(c.has_value(), "cgroup " << i << ": " << c.error().message());
        children.push_back(std::move(*c));
        if (i % 100 == 0) ctx.poll();
    }
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return tw.size() == 1001u; }, 60s), "found " << tw.size() << " of 1001");
    std::uint64_t seed = std::random_device{}();
    if (const char* s = std::getenv("OOMWATCH_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
    BOOST_TEST_MESSAGE("seed " << seed << " (OOMWATCH_TEST_SEED=" << seed << " replays it)");
    std::mt19937_64 rng(seed);
    std::map<std::string, std::uint64_t> want;
    for (int k = 0; k < 5; ++k) {
        auto& c = children[rng() % children.size()];
        oom_kill_one(c.path());
        ++want[c.path().string()];
    }
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return kills == want; }, 20s));
    run_quietly_for(ctx, 300ms);
    BOOST_TEST((kills == want));
}

// The root of the v2 hierarchy keeps no memory.events: a clear error, not "no memory
// controller".
BOOST_FIXTURE_TEST_CASE(the_root_cgroup_is_refused_as_the_root, v2_fixture) {
    auto h = detail::find_memory_hierarchy();
    BOOST_TEST_REQUIRE(h.has_value());
    error_code ec;
    watcher w(ctx, h->mount_point, {}, ec);
    BOOST_TEST(ec == error::root_cgroup, ec.message());
    BOOST_TEST(!w.is_open());
}

BOOST_AUTO_TEST_SUITE_END()
