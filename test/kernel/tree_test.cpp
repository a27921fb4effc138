// The tree watcher on a real kernel (cgroup v1 on the hosts, v2 in the VM): a root with
// nested children created over time, real OOM kills in several of them (one two levels
// down), a child removed while others are killed; every kill reported once, at the
// cgroup it happened in.
#include "test_support.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <map>
#include <string>

namespace asio = boost::asio;
namespace fs = std::filesystem;
using boost::system::error_code;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

struct tree_fixture : scratch_oom {
    tree_fixture() : scratch_oom("oomwatch-tree", 0) {}  // no limit on the root: the leaves OOM
    asio::io_context ctx;
};

// Per cgroup and kind, what the subscription saw.
struct per_cgroup {
    std::map<std::string, tally> t;
    std::uint64_t operator()(const fs::path& cg, event_kind k) const {
        auto it = t.find(cg.string());
        return it == t.end() ? 0 : it->second[k];
    }
};

} // namespace

BOOST_AUTO_TEST_SUITE(tree_real_kernel, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_FIXTURE_TEST_CASE(kills_in_a_changing_tree_are_reported_once_at_their_cgroup, tree_fixture) {
    const fs::path root = cg->path();
    tree_options o;
    o.kinds = kind_set::defaults().insert(event_kind::created);
    tree_watcher tw(ctx, root, o);
    BOOST_TEST_REQUIRE(tw.is_open());
    BOOST_TEST(tw.size() == 1u);
    per_cgroup seen;
    auto sub = tw.subscribe([&](const oom_event& ev) { seen.t[ev.cgroup.string()].add(ev); });

    // Children made after the start, one of them two levels down.
    auto a = child("a", 0);
    auto made = a.create_child("x", oom_limit);
    BOOST_TEST_REQUIRE(made.has_value(), made.error().message());
    auto x = std::move(*made);
    auto b = child("b", oom_limit);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return tw.size() == 4u; }), "found " << tw.size() << " of 4 cgroups");
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return seen(x.path(), event_kind::created) == 1; }));

    oom_kill_one(x.path());
    oom_kill_one(x.path());
    oom_kill_one(b.path());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        return seen(x.path(), event_kind::oom_kill) == 2 && seen(b.path(), event_kind::oom_kill) == 1;
    }));
    // b goes while x is killed again; c comes and is killed once.
    const fs::path bpath = b.path();
    BOOST_TEST_REQUIRE(!b.remove());
    oom_kill_one(x.path());
    auto c = child("c", oom_limit);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return seen(c.path(), event_kind::created) == 1; }));
    oom_kill_one(c.path());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        return seen(x.path(), event_kind::oom_kill) == 3 && seen(c.path(), event_kind::oom_kill) == 1 &&
               seen(bpath, event_kind::removed) == 1;
    }));
    run_until(ctx, [] { return false; }, 300ms);  // nothing more may come

    BOOST_TEST(seen(x.path(), event_kind::oom_kill) == 3u);
    BOOST_TEST(seen(bpath, event_kind::oom_kill) == 1u);
    BOOST_TEST(seen(c.path(), event_kind::oom_kill) == 1u);
    // Where no victim died: no kill. Each leaf hit its own limit: its OOMs are its own.
    BOOST_TEST(seen(a.path(), event_kind::oom_kill) == 0u);
    BOOST_TEST(seen(root, event_kind::oom_kill) == 0u);
    BOOST_TEST(seen(a.path(), event_kind::oom) == 0u);
    BOOST_TEST(seen(root, event_kind::oom) == 0u);
    BOOST_TEST(seen(x.path(), event_kind::oom) >= 3u);
    BOOST_TEST(seen(bpath, event_kind::removed) == 1u);
    BOOST_TEST(tw.size() == 4u);  // root, a, x, c

    // The root goes last (children first): its removal ends the tree.
    BOOST_TEST_REQUIRE(!x.remove());
    BOOST_TEST_REQUIRE(!a.remove());
    BOOST_TEST_REQUIRE(!c.remove());
    BOOST_TEST_REQUIRE(!cg->remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return seen(root, event_kind::removed) == 1; }));
    BOOST_TEST(!sub.active());
    BOOST_TEST(!tw.is_open());
}

// A tree taken down at once (children, then the root, as fast as rmdir goes): every
// child's `removed` comes, and the root's comes last. (v1 reports a removal 10 to 40 ms
// after rmdir, so the root's own could come first.)
BOOST_FIXTURE_TEST_CASE(a_tree_removed_at_once_reports_every_removal_root_last, tree_fixture) {
    const fs::path root = cg->path();
    std::vector<scratch::scratch_cgroup> kids;
    for (int i = 0; i < 12; ++i) kids.push_back(child("k" + std::to_string(i), 0));
    tree_watcher tw(ctx, root);
    BOOST_TEST_REQUIRE(tw.size() == 13u);
    std::vector<oom_event> seen;
    auto sub = tw.subscribe([&](const oom_event& ev) { seen.push_back(ev); });
    for (auto& k : kids) BOOST_TEST_REQUIRE(!k.remove());
    BOOST_TEST_REQUIRE(!cg->remove());
    BOOST_TEST_REQUIRE(run_until(ctx, [&] {
        return !seen.empty() && seen.back().kind == event_kind::removed && seen.back().cgroup == root;
    }, 20s));
    run_ready(ctx);
    std::size_t removed = 0;
    for (std::size_t i = 0; i + 1 < seen.size(); ++i) {
        BOOST_TEST(seen[i].cgroup != root, "an event of the root before its last");
        removed += seen[i].kind == event_kind::removed;
    }
    BOOST_TEST(removed == 12u);
    BOOST_TEST(seen.back().kind == event_kind::removed);
    BOOST_TEST(!tw.is_open());
}

// Cgroups that live for milliseconds: made, OOM-killed and removed in a tight loop. On v2
// every kill is still reported exactly once: read at its cgroup, or found in the root's
// hierarchical counters and reported there as from a removed descendant; the sum equals
// the growth of the root's memory.events. On v1 nothing counts hierarchically: a kill in
// a cgroup removed before the tree read it is not reported (never more than happened).
BOOST_FIXTURE_TEST_CASE(short_lived_cgroups_lose_no_kill_on_v2, tree_fixture) {
    const fs::path root = cg->path();
    const bool v2 = cg->version() == cgroup_version::v2;
    auto root_kills = [&] {
        std::ifstream in(root / "memory.events");
        std::string key;
        std::uint64_t value = 0;
        while (in >> key >> value)
            if (key == "oom_kill") return value;
        return std::uint64_t{0};
    };
    const auto before = v2 ? root_kills() : 0;
    tree_watcher tw(ctx, root);
    std::uint64_t reported = 0, from_removed = 0;
    auto sub = tw.subscribe([&](const oom_event& ev) {
        if (ev.kind != event_kind::oom_kill) return;
        reported += ev.count;
        if (ev.origin == event_origin::removed_descendant) {
            from_removed += ev.count;
            BOOST_TEST(ev.cgroup == root);
        }
    });
    const int n = 12;
    for (int i = 0; i < n; ++i) {
        auto c = child("brief" + std::to_string(i), oom_limit);
        oom_kill_one(c.path());
        BOOST_TEST_REQUIRE(!c.remove());  // at once: the tree may not have read it yet
        ctx.poll();  // the tree runs only now and then, as a busy service's would
    }
    if (v2) {
        const auto truth = root_kills() - before;
        BOOST_TEST_REQUIRE(truth == std::uint64_t(n));
        BOOST_TEST_REQUIRE(run_until(ctx, [&] { return reported >= truth; }, 10s), "reported " << reported << " of " << truth);
        run_until(ctx, [] { return false; }, 300ms);
        BOOST_TEST(reported == truth);
        BOOST_TEST_MESSAGE(from_removed << " of " << truth << " kills were found only in the root's counters");
    } else {
        run_until(ctx, [] { return false; }, 2s);
        BOOST_TEST(reported <= std::uint64_t(n));
        BOOST_TEST(from_removed == 0u);
        BOOST_TEST_MESSAGE("v1: " << reported << " of " << n << " kills in short-lived cgroups were read before they went");
    }
}

BOOST_AUTO_TEST_SUITE_END()
