// The tree watcher's logic on fake cgroup v2 folders (tmpfs): descendants found at
// start and as they appear, at any depth; each cgroup's own counters
// (memory.events.local) reported once, at that cgroup; removal of a descendant and of the
// root; depth limit, filter, the opt-in `created` kind. The same on real kernels: the
// kernel tests (v1 here, v2 in the VM).
#include "fault_support.hpp"
#include "test_support.hpp"

#include "inotify_service.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <map>
#include <string>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

tree_options fake_tree_options(kind_set kinds = kind_set::defaults()) {
    tree_options o;
    o.force_version = cgroup_version::v2;
    o.kinds = kinds;
    o.liveness_interval = std::chrono::hours(1);
    return o;
}

// A fake cgroup made the way the kernel makes one: it appears with its files (built
// aside, then renamed into place).
fs::path make_fake(const fs::path& parent, const std::string& name, const memory_counters& local = {}) {
    const fs::path aside = parent.parent_path() / (".aside-" + name + "-" + std::to_string(::getpid()));
    fs::create_directory(aside);
    fake_v2_tree::write_events(aside, local);
    fake_v2_tree::write_events(aside, local, "memory.events.local");
    const fs::path dir = parent / name;
    fs::rename(aside, dir);
    return dir;
}

// Counts per cgroup and kind, from async_next_event until the root's `removed`.
struct tree_log {
    explicit tree_log(tree_watcher& w) : w_(w) {}
    void arm() {
        w_.async_next_event([this](error_code ec, oom_event ev) {
            if (ec) {
                last_error = ec;
                return;
            }
            by_cgroup[ev.cgroup.string()].add(ev);
            order.push_back(ev);
            if (!(ev.kind == event_kind::removed && ev.cgroup == w_.root())) arm();
        });
    }
    std::uint64_t count(const fs::path& cg, event_kind k) const {
        auto it = by_cgroup.find(cg.string());
        return it == by_cgroup.end() ? 0 : it->second[k];
    }
    std::map<std::string, tally> by_cgroup;
    std::vector<oom_event> order;
    error_code last_error;

private:
    tree_watcher& w_;
};

struct fixture {
    asio::io_context ctx;
    fake_v2_tree tree;
};

void set_local(const fs::path& cg, const memory_counters& c) {
    fake_v2_tree::write_events(cg, c, "memory.events.local");
}

} // namespace

BOOST_AUTO_TEST_SUITE(tree_watcher_fake)

BOOST_FIXTURE_TEST_CASE(descendants_at_any_depth_are_found_and_each_kill_is_reported_once_where_it_happened, fixture) {
    auto root = tree.make_cgroup("root");
    auto a = make_fake(root, "a", with(1, 1));  // before the watcher: baseline
    auto ab = make_fake(a, "b");
    tree_watcher tw(ctx, root, fake_tree_options());
    BOOST_TEST(tw.is_open());
    BOOST_TEST(tw.root() == root);
    BOOST_TEST(tw.size() == 3u);
    tree_log log(tw);
    log.arm();

    // Later, deeper: c, c/d, c/d/e.
    auto c = make_fake(root, "c");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return tw.size() == 4u; }));
    auto cd = make_fake(c, "d");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return tw.size() == 5u; }));
    auto cde = make_fake(cd, "e");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return tw.size() == 6u; }));

    set_local(a, with(1, 2));    // one kill in a
    set_local(ab, with(0, 2));   // two in a/b
    set_local(cde, with(1, 3));  // three in c/d/e, one oom
    set_local(root, with(0, 1)); // one in the root itself
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        return log.count(a, event_kind::oom_kill) == 1 && log.count(ab, event_kind::oom_kill) == 2 &&
               log.count(cde, event_kind::oom_kill) == 3 && log.count(root, event_kind::oom_kill) == 1;
    }));
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(50));  // nothing more may come
    BOOST_TEST(log.count(a, event_kind::oom_kill) == 1u);
    BOOST_TEST(log.count(ab, event_kind::oom_kill) == 2u);
    BOOST_TEST(log.count(cde, event_kind::oom_kill) == 3u);
    BOOST_TEST(log.count(cde, event_kind::oom) == 1u);
    BOOST_TEST(log.count(root, event_kind::oom_kill) == 1u);
    BOOST_TEST(log.count(c, event_kind::oom_kill) == 0u);
    BOOST_TEST(log.count(cd, event_kind::oom_kill) == 0u);
    for (auto& ev : log.order) BOOST_TEST((ev.origin == event_origin::here));

    // A descendant removed: `removed` for it; the tree goes on.
    fake_v2_tree::remove_cgroup(cde);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(cde, event_kind::removed) == 1; }));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return tw.size() == 5u; }));
    BOOST_TEST(tw.is_open());

    // The root removed (children first, as rmdir demands): the last event.
    fake_v2_tree::remove_cgroup(cd);
    fake_v2_tree::remove_cgroup(c);
    fake_v2_tree::remove_cgroup(ab);
    fake_v2_tree::remove_cgroup(a);
    fake_v2_tree::remove_cgroup(root);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(root, event_kind::removed) == 1; }));
    BOOST_TEST(log.order.back().cgroup == root);
    BOOST_TEST(log.order.back().kind == event_kind::removed);
    for (auto* cg : {&a, &ab, &c, &cd}) BOOST_TEST(log.count(*cg, event_kind::removed) == 1u, *cg);
    bool done = false;
    error_code ec;
    tw.async_next_event([&](error_code e, oom_event) { ec = e, done = true; });
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return done; }));
    BOOST_TEST(ec == error::cgroup_removed);
    BOOST_TEST(!tw.is_open());
}

// A descendant whose counters file goes while it stays (its memory controller disabled
// from above): `skipped` for it, with the reason, and the tree goes on. Before, one such
// cgroup failed the whole tree.
BOOST_FIXTURE_TEST_CASE(a_descendant_whose_counters_vanish_is_skipped_and_the_tree_goes_on, fixture) {
    auto root = tree.make_cgroup("root");
    auto a = make_fake(root, "a");
    auto b = make_fake(root, "b");
    tree_watcher tw(ctx, root, fake_tree_options());
    tree_log log(tw);
    log.arm();
    fs::remove(a / "memory.events.local");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(a, event_kind::skipped) == 1; }),
                       "no skipped event for the cgroup that lost its counters");
    auto skipped = std::find_if(log.order.begin(), log.order.end(),
                                [](const oom_event& ev) { return ev.kind == event_kind::skipped; });
    BOOST_TEST((skipped->error == error::counters_vanished));
    BOOST_TEST(tw.is_open());
    BOOST_TEST(!tw.failure().has_value());
    set_local(b, with(1, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(b, event_kind::oom_kill) == 1; }),
                       "the tree stopped reporting after one descendant was skipped");
    BOOST_TEST(!log.last_error);
    for (auto& ev : log.order) BOOST_TEST((ev.kind != event_kind::failed));
}

BOOST_FIXTURE_TEST_CASE(created_depth_and_filter, fixture) {
    auto root = tree.make_cgroup("root");
    auto keep = make_fake(root, "keep");
    auto skip = make_fake(root, "skip-me");
    auto deep = make_fake(keep, "deep");  // depth 2: beyond max_depth 1
    auto o = fake_tree_options(kind_set::defaults().insert(event_kind::created));
    o.max_depth = 1;
    o.filter = [](const fs::path& p) { return p.filename().string().rfind("skip", 0) != 0; };
    tree_watcher tw(ctx, root, o);
    BOOST_TEST(tw.size() == 2u);  // root and keep
    tree_log log(tw);
    log.arm();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(keep, event_kind::created) == 1; }));
    auto late = make_fake(root, "late");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(late, event_kind::created) == 1; }));
    set_local(late, with(0, 1));
    set_local(skip, with(0, 1));
    set_local(deep, with(0, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(late, event_kind::oom_kill) == 1; }));
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(50));
    BOOST_TEST(log.count(skip, event_kind::oom_kill) == 0u);
    BOOST_TEST(log.count(deep, event_kind::oom_kill) == 0u);
    BOOST_TEST(log.count(skip, event_kind::created) == 0u);
    // `created` comes before the cgroup's other events, even when they are delivered
    // together (a kill already in a cgroup made while nobody ran the tree).
    for (auto& ev : log.order)
        if (ev.cgroup == late) {
            BOOST_TEST(ev.kind == event_kind::created);
            break;
        }
}

// `created` comes first even when a consumer takes it and the cgroup's first kill from
// the backlog together.
BOOST_FIXTURE_TEST_CASE(created_comes_first_from_the_backlog, fixture) {
    auto root = tree.make_cgroup("root");
    tree_watcher tw(ctx, root, fake_tree_options(kind_set::defaults().insert(event_kind::created)));
    auto quick = make_fake(root, "quick");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return tw.size() == 2u; }));  // nobody waits: it stays in the backlog
    set_local(quick, with(0, 1));
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(100));
    tree_log log(tw);
    log.arm();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(quick, event_kind::oom_kill) == 1; }));
    BOOST_TEST_REQUIRE(!log.order.empty());
    BOOST_TEST(log.order.front().kind == event_kind::created);
    BOOST_TEST(log.order.front().cgroup == quick);
}

BOOST_FIXTURE_TEST_CASE(one_inotify_instance_for_the_tree_and_the_watchers, fixture) {
    auto root = tree.make_cgroup("root");
    for (int i = 0; i < 20; ++i) make_fake(root, "c" + std::to_string(i));
    watcher w(ctx, tree.make_cgroup("plain"), fake_v2_options());
    const auto with_one_watcher = open_fd_count();
    tree_watcher tw(ctx, root, fake_tree_options());
    BOOST_TEST(tw.size() == 21u);
    BOOST_TEST(open_fd_count() == with_one_watcher);  // no descriptor per cgroup, no new instance
    tw.close();
    BOOST_TEST(!tw.is_open());
    BOOST_TEST(tw.size() == 0u);
    auto& svc = asio::use_service<detail::inotify_service>(ctx);
    BOOST_TEST(svc.client_count() == 1u);  // only the plain watcher's registration is left
}

// Kills in descendants removed before the tree could read them are in the ancestors'
// hierarchical counters: reported on the nearest ancestor still there, marked as such,
// so that the counts add up to the root's memory.events growth. A descendant read
// before it went gives no such event.
BOOST_FIXTURE_TEST_CASE(kills_of_descendants_removed_unread_are_reported_on_the_nearest_ancestor, fixture) {
    auto root = tree.make_cgroup("root");
    auto mid = make_fake(root, "mid");
    auto read_first = make_fake(mid, "read-first");
    tree_watcher tw(ctx, root, fake_tree_options());
    tree_log log(tw);
    log.arm();
    std::uint64_t root_h = 0, mid_h = 0;
    auto kill_in = [&](const fs::path& cg, std::uint64_t local_now, bool under_mid) {
        set_local(cg, with(0, local_now));
        fake_v2_tree::write_events(root, with(0, ++root_h));  // the kernel counts it upwards
        if (under_mid) fake_v2_tree::write_events(mid, with(0, ++mid_h));
    };

    // Read before it goes: reported at its cgroup, nothing more.
    kill_in(read_first, 1, true);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(read_first, event_kind::oom_kill) == 1; }));
    fake_v2_tree::remove_cgroup(read_first);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(read_first, event_kind::removed) == 1; }));
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(200));

    // Made, killed twice, removed while the tree was not running: only mid's counters
    // (and root's) keep them.
    auto brief = make_fake(mid, "brief");
    kill_in(brief, 1, true);
    kill_in(brief, 2, true);
    fake_v2_tree::remove_cgroup(brief);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        for (auto& ev : log.order)
            if (ev.origin == event_origin::removed_descendant) return true;
        return false;
    }, std::chrono::seconds(5)), "the kills of the removed cgroup were never reported");
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(200));

    std::uint64_t attributed = 0, total = 0;
    for (auto& ev : log.order) {
        if (ev.kind != event_kind::oom_kill) continue;
        total += ev.count;
        if (ev.origin == event_origin::removed_descendant) {
            attributed += ev.count;
            BOOST_TEST(ev.cgroup == mid, "attributed to " << ev.cgroup << ", not the nearest ancestor");
        }
    }
    BOOST_TEST(attributed == 2u);
    BOOST_TEST(total == root_h);  // the invariant: every kill under the root, once
    BOOST_TEST(log.count(read_first, event_kind::oom_kill) == 1u);
}

// An inotify queue overflow loses the news of which children appeared and which
// counters changed: the tree lists every directory again and re-reads every counter,
// so nothing is lost or doubled.
BOOST_AUTO_TEST_CASE(a_queue_overflow_rescans_the_tree,
                     *boost::unit_test::precondition(root_precondition{"shrinking max_queued_events"})) {
    OOMWATCH_REQUIRE_ROOT("shrinking max_queued_events");
    // A queue of 16 events, taken by the instance when it is made: with the first watch.
    sysctl_guard queue("/proc/sys/fs/inotify/max_queued_events", 16);

    fake_v2_tree tree;
    asio::io_context ctx;
    auto root = tree.make_cgroup("root");
    std::vector<fs::path> early;
    for (int i = 0; i < 10; ++i) early.push_back(make_fake(root, "e" + std::to_string(i)));
    tree_watcher tw(ctx, root, fake_tree_options());
    queue.restore();
    BOOST_TEST_REQUIRE(tw.size() == 11u);
    tree_log log(tw);
    log.arm();
    run_ready(ctx);
    // With the tree not running: 20 new children and a kill in each early one overflow
    // a queue of 16.
    std::vector<fs::path> late;
    for (int i = 0; i < 20; ++i) late.push_back(make_fake(root, "l" + std::to_string(i)));
    for (auto& e : early) set_local(e, with(0, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return tw.size() == 31u; }), "found " << tw.size() << " of 31");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        for (auto& e : early)
            if (log.count(e, event_kind::oom_kill) < 1) return false;
        return true;
    }));
    for (auto& l : late) set_local(l, with(0, 2));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        for (auto& l : late)
            if (log.count(l, event_kind::oom_kill) < 2) return false;
        return true;
    }));
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(100));
    for (auto& e : early) BOOST_TEST(log.count(e, event_kind::oom_kill) == 1u, e);
    for (auto& l : late) BOOST_TEST(log.count(l, event_kind::oom_kill) == 2u, l);
}

BOOST_FIXTURE_TEST_CASE(bad_roots_and_options_are_refused, fixture) {
    error_code ec;
    tree_watcher missing(ctx, tree.parent() / "nope", fake_tree_options(), ec);
    BOOST_TEST(ec == boost::system::errc::no_such_file_or_directory);
    BOOST_TEST(!missing.is_open());
    auto o = fake_tree_options();
    o.liveness_interval = std::chrono::milliseconds(0);
    tree_watcher bad(ctx, tree.make_cgroup("r"), o, ec);
    BOOST_TEST(ec == boost::system::errc::invalid_argument);
    BOOST_CHECK_THROW(tree_watcher(ctx, tree.parent() / "nope", fake_tree_options()), cgroup_error);
}

BOOST_AUTO_TEST_SUITE_END()

// tree_options::resume_from: per cgroup found at start; a cgroup not saved (made while
// nobody watched) counted from zero when the callback says so.
BOOST_AUTO_TEST_SUITE(tree_resume_fake)

BOOST_FIXTURE_TEST_CASE(each_cgroup_found_at_start_resumes_from_what_was_saved_for_it, fixture) {
    auto root = tree.make_cgroup("root");
    set_local(root, with(0, 1));
    auto a = make_fake(root, "a", with(2, 4));  // saved at 1: 3 more
    auto b = make_fake(root, "b", with(1, 1));  // made while down: all of it
    auto c = make_fake(root, "c", with(5, 5));  // not saved, and left to its baseline
    auto o = fake_tree_options();
    std::vector<fs::path> asked;
    o.resume_from = [&](const fs::path& dir) -> std::optional<memory_counters> {
        asked.push_back(dir);
        if (dir == root) return with(0, 1);
        if (dir == a) return with(1, 1);
        if (dir == b) return memory_counters{};
        return std::nullopt;
    };
    tree_watcher tw(ctx, root, o);
    BOOST_TEST(asked.size() == 4u);
    tree_log log(tw);
    log.arm();
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        return log.count(a, event_kind::oom_kill) == 3 && log.count(b, event_kind::oom_kill) == 1;
    }));
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(100));  // reconciliation rounds included
    BOOST_TEST(log.count(a, event_kind::oom) == 1u);
    BOOST_TEST(log.count(b, event_kind::oom) == 1u);
    BOOST_TEST(log.count(root, event_kind::oom_kill) == 0u);
    BOOST_TEST(log.count(c, event_kind::oom_kill) == 0u);
    for (auto& ev : log.order) BOOST_TEST((ev.origin == event_origin::here));
    // Live: once each, and the resumed counts do not upset the tree's reconciliation.
    set_local(c, with(5, 6));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.count(c, event_kind::oom_kill) == 1; }));
    run_until(ctx, [] { return false; }, std::chrono::milliseconds(100));
    BOOST_TEST(log.count(a, event_kind::oom_kill) == 3u);
    // The counters as read, for the next resume.
    const auto counters = tw.counters();
    BOOST_TEST(counters.size() == 4u);
    for (const auto& [dir, cnt] : counters)
        if (dir == c) BOOST_TEST(cnt.oom_kill == 6u);
}

BOOST_AUTO_TEST_SUITE_END()
