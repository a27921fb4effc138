// Throughput: one writer rewrites one cgroup's memory.events as fast as it can (each
// write adds one oom_kill); events delivered per second to 1, 4 and 16 subscribers,
// and the delivered counts must add up exactly to the final counter.
#include "harness.hpp"

#include <algorithm>
#include <iostream>
#include <numeric>
#include <optional>
#include <random>

namespace bench {

namespace {

struct tp_config {
    std::string label;
    std::string which;
    contender_options opts;
};

} // namespace

json::object run_throughput(run_context& rc) {
    const auto& sz = rc.sz;
    std::vector<tp_config> configs;
    for (unsigned s : sz.tp_subscribers) {
        contender_options o;
        o.subscribers = s;
        configs.push_back({"floor", "floor", o});
        configs.push_back({"seed design", "seed", o});
        for (unsigned t : sz.tp_threads) {
            auto so = o;
            so.threads = t;
            so.mode = contender_options::delivery::strand;
            configs.push_back({"oomwatch strand", "oomwatch", so});
            if (s == 1) {
                auto co = so;
                co.mode = contender_options::delivery::next_event;
                configs.push_back({"oomwatch co_await", "oomwatch", co});
            }
        }
    }
    std::cerr << "throughput: " << configs.size() << " runs of " << sz.tp_seconds << " s, in " << sz.tp_slices
              << " slices each; the runs take turns slice by slice" << std::endl;

    // Every run watches its own file; all are armed at once and the writer moves from
    // one to the next, slice by slice, so that the machine's noise falls on all alike.
    struct lane {
        const tp_config* cfg = nullptr;
        std::optional<fake_tree> tree;
        std::string file;
        oomwatch::memory_counters cur;
        std::unique_ptr<tally_sink> sink;
        std::unique_ptr<contender> ct;  // after the sink: stopped before it goes
        std::uint64_t writes = 0, events = 0;
        std::int64_t write_ns = 0, busy_ns = 0, catch_up_ns = 0;
        bool caught_up = true;
        std::string error;
    };
    std::vector<std::unique_ptr<lane>> lanes;
    for (std::size_t k = 0; k < configs.size(); ++k) {
        auto l = std::make_unique<lane>();
        l->cfg = &configs[k];
        l->tree.emplace(rc.tmp_root / ("throughput-" + std::to_string(k)), 1);
        l->file = (l->tree->dir(0) / "memory.events").string();
        l->cur = initial_counters(0);
        l->sink = std::make_unique<tally_sink>(configs[k].opts.subscribers, 1);
        l->ct = make_contender(configs[k].which, configs[k].opts);
        auto ar = l->ct->arm(l->tree->dirs(), *l->sink);
        if (!ar.ok()) {
            l->error = ar.error;
            l->ct.reset();
        } else {
            l->ct->start();
        }
        lanes.push_back(std::move(l));
    }
    sleep_ms(100);

    const auto slice = static_cast<std::int64_t>(sz.tp_seconds * 1e9 / static_cast<double>(sz.tp_slices));
    std::mt19937_64 rng(7);
    std::vector<std::size_t> order(lanes.size());
    std::iota(order.begin(), order.end(), 0);
    auto events_of = [](lane& l) {
        std::uint64_t n = 0;
        for (unsigned s = 0; s < l.cfg->opts.subscribers; ++s) n += l.sink->at(s, 0).events.load();
        return n;
    };
    for (std::size_t rep = 0; rep < sz.tp_slices; ++rep) {
        std::shuffle(order.begin(), order.end(), rng);
        for (auto k : order) {
            auto& l = *lanes[k];
            if (!l.ct) continue;
            const bool counts = l.cfg->which != "seed";  // the seed design reports changes, not counts
            const auto events_before = events_of(l);
            const auto t0 = now_ns();
            while (now_ns() - t0 < slice) {
                ++l.cur.oom_kill;
                char text[256];
                auto len = events_text(l.cur, text, sizeof text);
                if (int e = write_text(l.file.c_str(), std::string_view(text, len))) {
                    l.error = "write: " + errno_text(e);
                    break;
                }
                ++l.writes;
            }
            const auto t_stop = now_ns();
            auto caught_up = [&] {
                for (unsigned s = 0; s < l.cfg->opts.subscribers; ++s) {
                    auto& c = l.sink->at(s, 0);
                    if (counts ? c.oom_kill.load() < l.writes : c.last_seen.load() != l.cur.oom_kill) return false;
                }
                return true;
            };
            while (!caught_up() && now_ns() - t_stop < 5'000'000'000) sleep_ns(50'000);
            const auto t_done = now_ns();
            if (!caught_up()) l.caught_up = false;
            l.write_ns += t_stop - t0;
            l.busy_ns += t_done - t0;
            l.catch_up_ns = std::max(l.catch_up_ns, t_done - t_stop);
            l.events += events_of(l) - events_before;
        }
    }
    sleep_ms(50);  // anything more would be an over-count
    for (auto& l : lanes)
        if (l->ct) l->ct->stop();

    json::array runs;
    for (auto& lp : lanes) {
        auto& l = *lp;
        const auto& cfg = *l.cfg;
        json::object row{{"name", cfg.label}, {"subscribers", cfg.opts.subscribers}, {"threads", cfg.opts.threads}};
        const bool counts = cfg.which != "seed";
        if (!l.error.empty() && l.writes == 0) {
            row["error"] = l.error;
            if (counts) rc.fail("throughput: " + cfg.label + ": " + l.error);
            runs.push_back(std::move(row));
            continue;
        }
        bool exact = l.caught_up && l.error.empty();
        std::string detail = l.caught_up ? l.error : "the subscribers never caught up";
        std::uint64_t events = 0;
        for (unsigned s = 0; s < cfg.opts.subscribers; ++s) {
            auto& c = l.sink->at(s, 0);
            events += c.events.load();
            if (counts && (c.oom_kill.load() != l.writes || c.oom.load() != 0)) {
                exact = false;
                detail = "subscriber " + std::to_string(s) + " got oom_kill " + std::to_string(c.oom_kill.load()) + " for " +
                         std::to_string(l.writes) + " writes";
            }
        }
        row["writes"] = l.writes;
        row["writes_per_s"] = static_cast<double>(l.writes) / (static_cast<double>(l.write_ns) / 1e9);
        row["events"] = events;
        row["events_per_s"] = static_cast<double>(l.events) / (static_cast<double>(l.busy_ns) / 1e9);
        row["catch_up_ms"] = static_cast<double>(l.catch_up_ns) / 1e6;  // the longest, after a slice
        // Occurrences per event: how much the deliveries were coalesced (counts add up).
        if (events > 0)
            row["kills_per_event"] = static_cast<double>(l.writes) * cfg.opts.subscribers / static_cast<double>(events);
        if (counts) {
            row["exact"] = exact;
            if (!exact)
                rc.fail("throughput: " + cfg.label + " x" + std::to_string(cfg.opts.subscribers) + " on " +
                        std::to_string(cfg.opts.threads) + " thread(s): " + detail);
        } else {
            row["exact"] = nullptr;
            row["note"] = "reports changes, not counts: " + std::to_string(events) + " events for " +
                          std::to_string(l.writes) + " kills";
        }
        std::cerr << "  " << cfg.label << " x" << cfg.opts.subscribers << " on " << cfg.opts.threads << " thread(s): "
                  << static_cast<std::uint64_t>(num(&row["events_per_s"])) << " events/s, "
                  << static_cast<std::uint64_t>(num(&row["writes_per_s"])) << " writes/s" << std::endl;
        runs.push_back(std::move(row));
    }
    return {{"seconds", sz.tp_seconds}, {"slices", sz.tp_slices}, {"runs", std::move(runs)}};
}

} // namespace bench
