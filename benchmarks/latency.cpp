// Notification latency: from the write that changes a cgroup's counters (v2, fake files
// on tmpfs) or from the kernel's kill record (v1, real OOM kills) to user code holding
// the event.
#include "harness.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>

namespace bench {

namespace fs = std::filesystem;

// ---- sinks --------------------------------------------------------------------------

tally_sink::tally_sink(unsigned subscribers, std::size_t cgroups)
    : subs_(subscribers), n_(cgroups), cells_(new cell[static_cast<std::size_t>(subscribers) * cgroups]) {}

void tally_sink::on_event(unsigned sub, std::size_t cg, event_kind k, std::uint64_t count, std::uint64_t seen) noexcept {
    const auto t = now_ns();
    auto& c = at(sub, cg);
    c.events.fetch_add(1, std::memory_order_relaxed);
    std::int64_t none = 0;
    switch (k) {
    case event_kind::oom:
        c.first_oom_ns.compare_exchange_strong(none, t);
        c.oom.fetch_add(count, std::memory_order_relaxed);
        break;
    case event_kind::oom_kill:
        c.first_kill_ns.compare_exchange_strong(none, t);
        c.oom_kill.fetch_add(count, std::memory_order_relaxed);
        c.last_seen.store(seen, std::memory_order_relaxed);
        break;
    case event_kind::oom_group_kill:
        c.oom_group_kill.fetch_add(count, std::memory_order_relaxed);
        break;
    case event_kind::removed:
        c.removed.fetch_add(1, std::memory_order_relaxed);
        break;
    default:
        break;
    }
}

void tally_sink::reset_first(std::size_t cg) {
    for (unsigned s = 0; s < subs_; ++s) {
        at(s, cg).first_oom_ns.store(0);
        at(s, cg).first_kill_ns.store(0);
    }
}

void latency_sink::expect(std::size_t cg, std::uint64_t value) {
    std::lock_guard lk(m_);
    cg_ = cg;
    value_ = value;
    got_.reset();
}

void latency_sink::on_event(unsigned, std::size_t cg, event_kind k, std::uint64_t count, std::uint64_t seen) noexcept {
    const auto t = now_ns();
    if (k != event_kind::oom_kill) {
        unexpected_.fetch_add(1);
        return;
    }
    std::lock_guard lk(m_);
    if (cg != cg_ || seen != value_ || got_) {
        unexpected_.fetch_add(1);
        return;
    }
    if (count != 1) coalesced_.fetch_add(1);
    got_ = t;
    cv_.notify_one();
}

std::optional<std::int64_t> latency_sink::wait(std::int64_t timeout_ns) {
    std::unique_lock lk(m_);
    cv_.wait_for(lk, std::chrono::nanoseconds(timeout_ns), [&] { return got_.has_value(); });
    return got_;
}

namespace {

json::object summary_json(const summary& s) {
    return {{"n", s.n}, {"min_us", s.min}, {"p50_us", s.p50}, {"p99_us", s.p99}, {"max_us", s.max}, {"mean_us", s.mean}};
}

struct v2_contender_spec {
    std::string label;
    std::string which;
    contender_options opts;
};

std::vector<v2_contender_spec> latency_contenders(cgroup_version v) {
    contender_options o;
    o.version = v;
    std::vector<v2_contender_spec> out{{"floor", "floor", o}, {"seed design", "seed", o}, {"oomwatch co_await", "oomwatch", o}};
    if (v == cgroup_version::v2) {
        auto s = o;
        s.mode = contender_options::delivery::strand;
        out.push_back({"oomwatch strand subscriber", "oomwatch", s});
    }
    return out;
}

} // namespace

// ---- v2 -----------------------------------------------------------------------------

json::object run_latency_v2(run_context& rc) {
    const auto& sz = rc.sz;
    auto specs = latency_contenders(cgroup_version::v2);
    std::cerr << "latency v2: " << sz.lat_samples << " samples per contender, " << sz.lat_watched
              << " fake cgroups watched by each; the contenders take turns sample by sample" << std::endl;
    // Each contender watches its own tree; all are armed at once and take turns, one
    // sample each in a random order, so that the noise of this shared machine falls
    // on all of them alike.
    struct lane {
        std::optional<fake_tree> tree;
        std::vector<fs::path> dirs;
        std::vector<std::string> files;
        std::vector<oomwatch::memory_counters> cur;
        latency_sink sink;
        std::unique_ptr<contender> ct;  // after the sink: stopped before it goes
        std::vector<double> lat;
        std::uint64_t lost = 0;
        std::string error;
    };
    std::vector<std::unique_ptr<lane>> lanes;
    for (std::size_t c = 0; c < specs.size(); ++c) {
        auto l = std::make_unique<lane>();
        l->tree.emplace(rc.tmp_root / ("latency-v2-" + std::to_string(c)), sz.lat_watched);
        l->dirs = l->tree->dirs();
        for (std::size_t i = 0; i < l->dirs.size(); ++i) {
            l->cur.push_back(initial_counters(i));
            l->files.push_back((l->dirs[i] / "memory.events").string());
        }
        l->ct = make_contender(specs[c].which, specs[c].opts);
        auto ar = l->ct->arm(l->dirs, l->sink);
        if (!ar.ok()) {
            l->error = ar.error;
            l->ct.reset();
            std::cerr << "  " << specs[c].label << ": cannot arm: " << ar.error << std::endl;
        } else {
            l->ct->start();
        }
        lanes.push_back(std::move(l));
    }
    sleep_ms(100);
    std::mt19937_64 rng(42);
    std::vector<std::size_t> order(lanes.size());
    std::iota(order.begin(), order.end(), 0);
    for (std::size_t k = 0; k < sz.lat_samples; ++k) {
        std::shuffle(order.begin(), order.end(), rng);
        for (auto c : order) {
            auto& l = *lanes[c];
            if (!l.ct || !l.error.empty()) continue;
            auto i = static_cast<std::size_t>(rng() % l.dirs.size());
            ++l.cur[i].oom_kill;
            char text[256];
            auto len = events_text(l.cur[i], text, sizeof text);
            l.sink.expect(i, l.cur[i].oom_kill);
            const auto t0 = now_ns();
            if (int e = write_text(l.files[i].c_str(), std::string_view(text, len))) {
                l.error = "write: " + errno_text(e);
                continue;
            }
            auto t1 = l.sink.wait(2'000'000'000);
            if (t1)
                l.lat.push_back(static_cast<double>(*t1 - t0) / 1000.0);
            else
                ++l.lost;
            sleep_ns(sz.lat_gap_us * 1000);
        }
    }
    for (auto& l : lanes)
        if (l->ct) l->ct->stop();

    // OOMWATCH_BENCH_SAMPLES=DIR: the raw samples, one file per contender (microseconds, in order).
    if (const char* dump = std::getenv("OOMWATCH_BENCH_SAMPLES"); dump && *dump)
        for (std::size_t c = 0; c < specs.size(); ++c) {
            std::ofstream out(fs::path(dump) / ("latency-v2-" + std::to_string(c) + ".txt"));
            out << "# " << specs[c].label << '\n';
            for (double v : lanes[c]->lat) out << v << '\n';
        }

    json::array rows;
    for (std::size_t c = 0; c < specs.size(); ++c) {
        auto& l = *lanes[c];
        json::object row{{"name", specs[c].label}};
        if (!l.error.empty() && l.lat.empty()) {
            row["error"] = l.error;
        } else {
            auto s = summarize(l.lat);
            row = summary_json(s);
            row["name"] = specs[c].label;
            row["lost"] = l.lost;
            row["unexpected_events"] = l.sink.unexpected();
            if (!l.error.empty()) row["error"] = l.error;
        }
        // Every write must be seen, by the floor and by oomwatch: a lost sample is a lost event.
        if (specs[c].which != "seed" && (l.lost > 0 || !l.error.empty()))
            rc.fail("latency v2: " + specs[c].label + ": " + std::to_string(l.lost) + " writes never reported" +
                    (l.error.empty() ? "" : " (" + l.error + ")"));
        if (specs[c].which != "seed" && l.sink.coalesced() > 0)
            rc.fail("latency v2: " + specs[c].label + ": an event for one write had count != 1");
        rows.push_back(std::move(row));
    }
    return {{"watched", sz.lat_watched},
            {"samples_per_contender", sz.lat_samples},
            {"gap_us", sz.lat_gap_us},
            {"contenders", std::move(rows)}};
}

// ---- v1 -----------------------------------------------------------------------------

json::object run_latency_v1(run_context& rc) {
    if (!rc.v1_root) return {{"skipped", rc.v1_skip_reason}};
    const auto& sz = rc.sz;
    kmsg_reader kmsg;
    if (!kmsg.ok()) {
        rc.fail("latency v1: cannot read the kernel log: " + kmsg.error());
        return {{"skipped", kmsg.error()}};
    }
    std::int64_t unc0 = 0, unc1 = 0;
    auto off0 = kmsg.calibrate(unc0);
    std::cerr << "latency v1: " << sz.v1_kills << " real OOM kills per contender";
    if (off0) std::cerr << " (kmsg clock is " << static_cast<double>(*off0) / 1000.0 << " us ahead of CLOCK_MONOTONIC)";
    std::cerr << std::endl;

    auto specs = latency_contenders(cgroup_version::v1);
    struct per {
        std::optional<oomwatch::scratch::scratch_cgroup> cg;
        std::unique_ptr<tally_sink> sink;
        std::unique_ptr<contender> ct;  // last: destroyed (stopped) first
        std::vector<std::int64_t> kill_ns, oom_ns, oomkill_ns;  // raw, corrected later
        std::size_t kills = 0;
        std::string error;
    };
    std::vector<per> ps(specs.size());
    for (std::size_t c = 0; c < specs.size(); ++c) {
        auto& p = ps[c];
        auto cg = rc.v1_root->create_child("lat-" + specs[c].which, 32u << 20);
        if (!cg) {
            p.error = "cannot create a cgroup: " + cg.error().message();
            rc.fail("latency v1: " + specs[c].label + ": " + p.error);
            continue;
        }
        p.cg.emplace(std::move(*cg));
        p.sink = std::make_unique<tally_sink>(1, 1);
        p.ct = make_contender(specs[c].which, specs[c].opts);
        auto ar = p.ct->arm({p.cg->path()}, *p.sink);
        if (!ar.ok()) {
            p.error = ar.error;
            rc.fail("latency v1: " + specs[c].label + ": cannot arm: " + ar.error);
            p.ct.reset();
            continue;
        }
        p.ct->start();
    }
    sleep_ms(50);

    for (std::size_t k = 0; k < sz.v1_kills; ++k) {
        for (std::size_t c = 0; c < specs.size(); ++c) {
            auto& p = ps[c];
            if (!p.ct) continue;
            p.sink->reset_first(0);
            auto v = oomwatch::scratch::victim::spawn(p.cg->path(), 256u << 20);
            if (!v) {
                p.error = "cannot start a victim: " + v.error().message();
                continue;
            }
            auto st = v->wait(std::chrono::seconds(10));
            if (!st || !oomwatch::scratch::victim::killed_by_sigkill(*st)) {
                p.error = "the victim was not OOM-killed";
                continue;
            }
            ++p.kills;
            auto usec = kmsg.find_kill(v->pid(), 2000);
            // Wait for the events (the seed design reports only the notification).
            const bool want_kill = specs[c].which != "seed";
            auto& cell = p.sink->at(0, 0);
            auto deadline = now_ns() + 3'000'000'000;
            while (now_ns() < deadline &&
                   (cell.first_oom_ns.load() == 0 || (want_kill && cell.first_kill_ns.load() == 0)))
                sleep_ms(1);
            if (!usec) {
                p.error = "no kill record in /dev/kmsg for pid " + std::to_string(v->pid());
                continue;
            }
            p.kill_ns.push_back(*usec * 1000);
            p.oom_ns.push_back(cell.first_oom_ns.load());
            p.oomkill_ns.push_back(cell.first_kill_ns.load());
        }
    }
    auto off1 = kmsg.calibrate(unc1);
    // The settling re-reads end within about 1.5 s of the last kill: then count.
    sleep_ms(1500);
    std::int64_t offset = 0;
    if (off0 && off1) offset = (*off0 + *off1) / 2;
    else if (off0) offset = *off0;

    json::array rows;
    for (std::size_t c = 0; c < specs.size(); ++c) {
        auto& p = ps[c];
        json::object row{{"name", specs[c].label}, {"kills", p.kills}};
        if (p.ct) p.ct->stop();
        std::vector<double> oom, kill;
        std::size_t missing_oom = 0, missing_kill = 0;
        for (std::size_t i = 0; i < p.kill_ns.size(); ++i) {
            auto t_kill = p.kill_ns[i] - offset;  // the kill record on CLOCK_MONOTONIC
            if (p.oom_ns[i]) oom.push_back(static_cast<double>(p.oom_ns[i] - t_kill) / 1000.0);
            else ++missing_oom;
            if (p.oomkill_ns[i]) kill.push_back(static_cast<double>(p.oomkill_ns[i] - t_kill) / 1000.0);
            else ++missing_kill;
        }
        row["oom"] = summary_json(summarize(oom));
        if (specs[c].which != "seed") row["oom_kill"] = summary_json(summarize(kill));
        if (!p.error.empty()) row["error"] = p.error;
        if (p.sink) {
            auto& cell = p.sink->at(0, 0);
            row["delivered_oom"] = cell.oom.load();
            row["delivered_events"] = cell.events.load();
            if (specs[c].which != "seed") {
                row["delivered_oom_kill"] = cell.oom_kill.load();
                bool exact = cell.oom_kill.load() == p.kills && missing_kill == 0 && missing_oom == 0;
                row["exact"] = exact;
                if (!exact)
                    rc.fail("latency v1: " + specs[c].label + ": " + std::to_string(p.kills) + " kills, " +
                            std::to_string(cell.oom_kill.load()) + " oom_kill delivered, " +
                            std::to_string(missing_oom + missing_kill) + " events missing");
            }
        }
        if (!p.error.empty() && specs[c].which != "seed") rc.fail("latency v1: " + specs[c].label + ": " + p.error);
        rows.push_back(std::move(row));
    }
    json::object out{{"kills_per_contender", sz.v1_kills}, {"contenders", std::move(rows)}};
    if (off0) out["kmsg_clock_offset_us_start"] = static_cast<double>(*off0) / 1000.0;
    if (off1) out["kmsg_clock_offset_us_end"] = static_cast<double>(*off1) / 1000.0;
    out["kmsg_clock_offset_uncertainty_us"] = static_cast<double>(std::max(unc0, unc1)) / 1000.0;
    if (!off0) out["note"] = "/dev/kmsg not writable: the kmsg clock was not calibrated against CLOCK_MONOTONIC";
    return out;
}

} // namespace bench
