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
    case event_kind::oom_kill: {
        const auto named = c.named_pending.exchange(0, std::memory_order_relaxed);
        c.victims_named.fetch_add(named, std::memory_order_relaxed);
        // Stored before first_kill_ns: the waiter reads it once it sees first_kill_ns.
        if (c.first_kill_ns.load() == 0) c.first_kill_named.store(named == count);
        c.first_kill_ns.compare_exchange_strong(none, t);
        c.oom_kill.fetch_add(count, std::memory_order_relaxed);
        c.last_seen.store(seen, std::memory_order_relaxed);
        break;
    }
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

void tally_sink::on_named(unsigned sub, std::size_t cg, std::size_t named) noexcept {
    at(sub, cg).named_pending.store(named, std::memory_order_relaxed);
}

void tally_sink::reset_first(std::size_t cg) {
    for (unsigned s = 0; s < subs_; ++s) {
        at(s, cg).first_oom_ns.store(0);
        at(s, cg).first_kill_ns.store(0);
        at(s, cg).first_kill_named.store(false);
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

namespace {

// One contender of a v1 run, on a real cgroup of its own.
struct v1_lane {
    v1_lane(std::string l, std::string w, std::string c, contender_options o)
        : label(std::move(l)), which(std::move(w)), cgroup(std::move(c)), opts(o) {}
    std::string label;
    std::string which;   // for make_contender
    std::string cgroup;  // its name under the scratch cgroup
    contender_options opts;
    std::optional<oomwatch::scratch::scratch_cgroup> cg;
    std::unique_ptr<tally_sink> sink;
    std::unique_ptr<contender> ct;  // after the cgroup and the sink: stopped before they go
    struct sample {
        std::int64_t kill_ns = 0;                 // the kill record, on CLOCK_MONOTONIC once the run is done
        std::int64_t oom_ns = 0, oomkill_ns = 0;  // when the sink got them; 0: never
        bool named = false;                       // the first oom_kill event named its victim
        bool reported = false;                    // the kernel printed its OOM report (not rate limited)
        std::size_t phase = 0;
    };
    std::vector<sample> samples;
    std::size_t kills = 0;
    std::string error;

    bool counts_kills() const { return which != "seed"; }  // the seed design has no kill count on v1
    // Latencies from the kill record, in us, of the samples of `phase` that got the event.
    std::vector<double> from_kill(std::int64_t sample::*at, std::size_t phase = 0) const {
        std::vector<double> out;
        for (auto& s : samples)
            if (s.phase == phase && s.*at) out.push_back(static_cast<double>(s.*at - s.kill_ns) / 1000.0);
        return out;
    }
};

// One OOM kill in `p`'s cgroup: waits for the kill record and the events, and keeps the sample.
void kill_once(kmsg_reader& kmsg, v1_lane& p, std::size_t phase) {
    p.sink->reset_first(0);
    auto v = oomwatch::scratch::victim::spawn(p.cg->path(), 256u << 20);
    if (!v) {
        p.error = "cannot start a victim: " + v.error().message();
        return;
    }
    auto st = v->wait(std::chrono::seconds(10));
    if (!st || !oomwatch::scratch::victim::killed_by_sigkill(*st)) {
        p.error = "the victim was not OOM-killed";
        return;
    }
    ++p.kills;
    v1_lane::sample s;
    s.phase = phase;
    auto usec = kmsg.find_kill(v->pid(), 2000, &s.reported);
    // Wait for the events (the seed design reports only the notification).
    auto& cell = p.sink->at(0, 0);
    auto deadline = now_ns() + 3'000'000'000;
    while (now_ns() < deadline && (cell.first_oom_ns.load() == 0 || (p.counts_kills() && cell.first_kill_ns.load() == 0)))
        sleep_ms(1);
    if (!usec) {
        p.error = "no kill record in /dev/kmsg for pid " + std::to_string(v->pid());
        return;
    }
    s.kill_ns = *usec * 1000;
    s.oom_ns = cell.first_oom_ns.load();
    s.oomkill_ns = cell.first_kill_ns.load();
    s.named = cell.first_kill_named.load();
    p.samples.push_back(s);
}

// Kills in every lane, the lanes taking turns kill by kill.
struct v1_phase {
    std::string name;
    std::size_t kills = 0;  // per lane
    std::int64_t gap_ms = 0;  // before each kill
    std::int64_t pause_before_ms = 0;
    bool shuffle = false;  // a random order of the lanes per round
};

// Arms every lane, runs the phases, and stops the lanes. Returns the kmsg clock
// calibration for the results, or {"skipped": why} when the kernel log cannot be read.
json::object run_v1_kills(run_context& rc, const std::string& what, std::vector<v1_lane>& lanes,
                          const std::vector<v1_phase>& phases) {
    kmsg_reader kmsg;
    if (!kmsg.ok()) {
        rc.fail(what + ": cannot read the kernel log: " + kmsg.error());
        return {{"skipped", kmsg.error()}};
    }
    std::int64_t unc0 = 0, unc1 = 0;
    auto off0 = kmsg.calibrate(unc0);
    std::size_t kills = 0;
    for (auto& ph : phases) kills += ph.kills;
    std::cerr << what << ": " << kills << " real OOM kills per contender";
    if (off0) std::cerr << " (kmsg clock is " << static_cast<double>(*off0) / 1000.0 << " us ahead of CLOCK_MONOTONIC)";
    std::cerr << std::endl;

    for (auto& p : lanes) {
        auto cg = rc.v1_root->create_child(p.cgroup, 32u << 20);
        if (!cg) {
            p.error = "cannot create a cgroup: " + cg.error().message();
            rc.fail(what + ": " + p.label + ": " + p.error);
            continue;
        }
        p.cg.emplace(std::move(*cg));
        p.sink = std::make_unique<tally_sink>(1, 1);
        p.ct = make_contender(p.which, p.opts);
        auto ar = p.ct->arm({p.cg->path()}, *p.sink);
        if (!ar.ok()) {
            p.error = ar.error;
            rc.fail(what + ": " + p.label + ": cannot arm: " + ar.error);
            p.ct.reset();
            continue;
        }
        p.ct->start();
    }
    sleep_ms(50);

    std::mt19937_64 rng(7);
    std::vector<std::size_t> order(lanes.size());
    std::iota(order.begin(), order.end(), 0);
    for (std::size_t ph = 0; ph < phases.size(); ++ph) {
        sleep_ms(phases[ph].pause_before_ms);
        for (std::size_t k = 0; k < phases[ph].kills; ++k) {
            if (phases[ph].shuffle) std::shuffle(order.begin(), order.end(), rng);
            for (auto c : order) {
                if (!lanes[c].ct) continue;
                sleep_ms(phases[ph].gap_ms);
                kill_once(kmsg, lanes[c], ph);
            }
        }
    }
    auto off1 = kmsg.calibrate(unc1);
    // The settling re-reads end within about 1.5 s of the last kill: then count.
    sleep_ms(1500);
    for (auto& p : lanes)
        if (p.ct) p.ct->stop();
    std::int64_t offset = 0;
    if (off0 && off1) offset = (*off0 + *off1) / 2;
    else if (off0) offset = *off0;
    for (auto& p : lanes)
        for (auto& s : p.samples) s.kill_ns -= offset;  // the kill record on CLOCK_MONOTONIC

    json::object out{{"kills_per_contender", kills}};
    if (off0) out["kmsg_clock_offset_us_start"] = static_cast<double>(*off0) / 1000.0;
    if (off1) out["kmsg_clock_offset_us_end"] = static_cast<double>(*off1) / 1000.0;
    out["kmsg_clock_offset_uncertainty_us"] = static_cast<double>(std::max(unc0, unc1)) / 1000.0;
    if (!off0) out["note"] = "/dev/kmsg not writable: the kmsg clock was not calibrated against CLOCK_MONOTONIC";
    return out;
}

// The exact-count check of a lane that counts kills: every kill delivered as oom_kill,
// every sample with both events. Fails the run otherwise.
bool check_exact(run_context& rc, const std::string& what, const v1_lane& p, json::object& row) {
    auto& cell = p.sink->at(0, 0);
    std::size_t missing = 0;
    for (auto& s : p.samples) missing += (s.oom_ns == 0) + (s.oomkill_ns == 0);
    row["delivered_oom"] = cell.oom.load();
    row["delivered_events"] = cell.events.load();
    row["delivered_oom_kill"] = cell.oom_kill.load();
    bool exact = cell.oom_kill.load() == p.kills && missing == 0;
    row["exact"] = exact;
    if (!exact)
        rc.fail(what + ": " + p.label + ": " + std::to_string(p.kills) + " kills, " + std::to_string(cell.oom_kill.load()) +
                " oom_kill delivered, " + std::to_string(missing) + " events missing");
    return exact;
}

} // namespace

json::object run_latency_v1(run_context& rc) {
    if (!rc.v1_root) return {{"skipped", rc.v1_skip_reason}};
    std::vector<v1_lane> lanes;
    for (auto& spec : latency_contenders(cgroup_version::v1))
        lanes.emplace_back(spec.label, spec.which, "lat-" + spec.which, spec.opts);
    auto out = run_v1_kills(rc, "latency v1", lanes, {v1_phase{.name = "", .kills = rc.sz.v1_kills}});
    if (out.contains("skipped")) return out;

    json::array rows;
    for (auto& p : lanes) {
        json::object row{{"name", p.label}, {"kills", p.kills}};
        auto oom = p.from_kill(&v1_lane::sample::oom_ns);
        row["oom"] = summary_json(summarize(oom));
        if (p.counts_kills()) {
            auto kill = p.from_kill(&v1_lane::sample::oomkill_ns);
            row["oom_kill"] = summary_json(summarize(kill));
        }
        if (!p.error.empty()) row["error"] = p.error;
        if (p.sink && p.counts_kills()) check_exact(rc, "latency v1", p, row);
        else if (p.sink) {
            row["delivered_oom"] = p.sink->at(0, 0).oom.load();
            row["delivered_events"] = p.sink->at(0, 0).events.load();
        }
        if (!p.error.empty() && p.counts_kills()) rc.fail("latency v1: " + p.label + ": " + p.error);
        rows.push_back(std::move(row));
    }
    out["contenders"] = std::move(rows);
    return out;
}

// ---- v1: what naming the victims costs and buys ------------------------------------

json::object run_latency_v1_victims(run_context& rc) {
    if (!rc.v1_root) return {{"skipped", rc.v1_skip_reason}};
    // (a) the old path: counts only, memory.oom_control polled with back-off after the
    // notification; (b) the kill record triggers the re-read, counts never wait; (c) the
    // same, and a count may wait up to the default hold for its victim's record.
    std::vector<v1_lane> lanes;
    auto lane = [&](std::string label, std::string cgroup, bool victims, std::optional<std::chrono::milliseconds> hold) {
        contender_options o;
        o.version = cgroup_version::v1;
        o.victims = victims;
        o.victim_hold = hold;
        lanes.emplace_back(std::move(label), "oomwatch", std::move(cgroup), o);
    };
    lane("victims off", "vic-off", false, std::nullopt);
    lane("victims, hold 0", "vic-hold0", true, std::chrono::milliseconds(0));
    lane("victims, hold 50 ms", "vic-hold50", true, std::nullopt);
    const std::string what = "latency v1 victims";
    // Isolated: the kills far enough apart that the kernel prints every OOM report (it
    // allows 10 per 5 s machine-wide), after a pause that lets an earlier section's
    // burst age out of that window. Burst: back to back, most reports suppressed.
    const bool smoke = rc.sz.mode == size_mode::smoke;
    const std::vector<v1_phase> phases{
        {.name = "isolated", .kills = rc.sz.v1_victim_isolated, .gap_ms = 600, .pause_before_ms = smoke ? 0 : 5000, .shuffle = true},
        {.name = "burst", .kills = rc.sz.v1_victim_burst, .shuffle = true}};
    auto out = run_v1_kills(rc, what, lanes, phases);
    if (out.contains("skipped")) return out;

    // OOMWATCH_BENCH_SAMPLES=DIR: the raw samples, one file per contender, in order.
    if (const char* dump = std::getenv("OOMWATCH_BENCH_SAMPLES"); dump && *dump)
        for (auto& p : lanes) {
            std::ofstream f(fs::path(dump) / ("latency-v1-" + p.cgroup + ".txt"));
            f << "# " << p.label << "\n# phase oom_kill_us oom_us named reported\n";
            for (auto& s : p.samples)
                f << phases[s.phase].name << ' ' << static_cast<double>(s.oomkill_ns - s.kill_ns) / 1000.0 << ' '
                  << static_cast<double>(s.oom_ns - s.kill_ns) / 1000.0 << ' ' << s.named << ' ' << s.reported << '\n';
        }

    json::array rows;
    for (auto& p : lanes) {
        json::object row{{"name", p.label}, {"victims", p.opts.victims}, {"kills", p.kills}};
        for (std::size_t ph = 0; ph < phases.size(); ++ph) {
            auto kill = p.from_kill(&v1_lane::sample::oomkill_ns, ph);
            auto oom = p.from_kill(&v1_lane::sample::oom_ns, ph);
            std::size_t samples = 0, named = 0, reported = 0;
            for (auto& s : p.samples) {
                if (s.phase != ph) continue;
                ++samples;
                named += s.named;
                reported += s.reported;
            }
            row[phases[ph].name] = json::object{{"oom_kill", summary_json(summarize(kill))},
                                                {"oom", summary_json(summarize(oom))},
                                                {"samples", samples},
                                                {"named", named},         // the kill's oom_kill event: victims.size() == count
                                                {"reported", reported}};  // the kernel printed its OOM report
        }
        if (p.sink) {
            row["victims_named"] = p.sink->at(0, 0).victims_named.load();
            check_exact(rc, what, p, row);
            // Off means off: a victim named there is a bug.
            if (!p.opts.victims && p.sink->at(0, 0).victims_named.load() > 0)
                rc.fail(what + ": " + p.label + ": victims named with victims turned off");
        }
        if (!p.error.empty()) {
            row["error"] = p.error;
            rc.fail(what + ": " + p.label + ": " + p.error);
        }
        rows.push_back(std::move(row));
    }
    json::array phase_list;
    for (auto& ph : phases) phase_list.push_back(json::object{{"name", ph.name}, {"kills", ph.kills}, {"gap_ms", ph.gap_ms}});
    out["phases"] = std::move(phase_list);
    out["contenders"] = std::move(rows);
    return out;
}

} // namespace bench
