// Sizes, the printed tables (ratios first, absolute numbers beside), and the targets.
#include "harness.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value_to.hpp>

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <ostream>
#include <sstream>

namespace bench {

sizes sizes_for(size_mode m) {
    sizes s;
    s.mode = m;
    switch (m) {
    case size_mode::smoke:
        s.name = "smoke";
        s.lat_watched = 10;
        s.lat_samples = 50;
        s.v1_kills = 1;
        s.v1_victim_isolated = 1;
        s.v1_victim_burst = 1;
        s.scale_v2 = {10};
        s.scale_v1 = {5};
        s.idle_seconds = 0.5;
        s.scale_v1_kills = 2;
        s.tp_seconds = 0.1;
        s.tp_slices = 1;
        s.tp_subscribers = {1, 4};
        s.tp_threads = {1, 2};
        s.parser_min_time = 0.01;
        s.tree_n = {10};
        s.tree_churn_n = {10};
        s.tree_churn_seconds = 10;  // a bound only: the cycles decide
        s.tree_churn_cycles = 50;
        s.tree_churn_lanes = 1;  // one at a time: no overlap, so the smoke cannot trip the kernel race (README)
        break;
    case size_mode::quick:
        s.name = "quick";
        break;
    case size_mode::full:
        s.name = "full";
        s.lat_samples = 10000;
        s.v1_kills = 40;
        s.v1_victim_isolated = 40;
        s.v1_victim_burst = 100;
        s.idle_seconds = 10;
        s.scale_v1_kills = 10;
        s.tp_seconds = 3;
        s.tp_slices = 10;
        s.parser_min_time = 1;
        s.tree_churn_seconds = 15;
        break;
    }
    if (m == size_mode::quick) {
        s.idle_seconds = 5;
        s.v1_kills = 12;
    }
    return s;
}

void run_context::fail(std::string what) {
    std::cerr << "CHECK FAILED: " << what << std::endl;
    failures.push_back(std::move(what));
}

double num(const json::value* v, double dflt) {
    if (!v) return dflt;
    if (v->is_double()) return v->as_double();
    if (v->is_int64()) return static_cast<double>(v->as_int64());
    if (v->is_uint64()) return static_cast<double>(v->as_uint64());
    return dflt;
}

const json::value* path_of(const json::object& o, std::initializer_list<std::string_view> keys) {
    const json::object* cur = &o;
    const json::value* v = nullptr;
    for (auto k : keys) {
        if (!cur) return nullptr;
        v = cur->if_contains(k);
        if (!v) return nullptr;
        cur = v->if_object();
    }
    return v;
}

namespace {

std::string str(const json::value* v) {
    if (!v) return "";
    if (v->is_string()) return std::string(v->as_string());
    return json::serialize(*v);
}

std::string fixed(double v, int prec) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(prec) << v;
    return os.str();
}

// Three significant-ish digits.
std::string fmt(double v) {
    double a = std::fabs(v);
    if (a >= 1000) return fixed(v, 0);
    if (a >= 100) return fixed(v, 1);
    if (a >= 10) return fixed(v, 1);
    return fixed(v, 2);
}

std::string ratio(const json::value* a, const json::value* b) {
    if (!a || !b) return "-";
    double x = num(a, NAN), y = num(b, NAN);
    if (std::isnan(x) || std::isnan(y) || y <= 0 || x < 0) return "-";
    double r = x / y;
    if (r >= 100) return fixed(r, 0) + "x";
    if (r >= 10) return fixed(r, 1) + "x";
    return fixed(r, 2) + "x";
}

// A cell that spans the rest of its row (a message instead of numbers).
std::string span(std::string s) { return "\x02" + s; }

std::string pad(std::string s, std::size_t w, bool right = true) {
    if (s.size() >= w) return s;
    return right ? std::string(w - s.size(), ' ') + s : s + std::string(w - s.size(), ' ');
}

// A simple table: header cells, rows of cells; column 0 left-aligned.
class table {
public:
    explicit table(std::vector<std::string> head) : head_(std::move(head)) {}
    void row(std::vector<std::string> r) { rows_.push_back(std::move(r)); }
    void note(std::string n) { rows_.push_back({"\x01" + n}); }
    void print(std::ostream& os) const {
        std::vector<std::size_t> w(head_.size(), 0);
        auto fit = [&](const std::vector<std::string>& r) {
            if (!r.empty() && !r[0].empty() && r[0][0] == '\x01') return;
            for (std::size_t i = 0; i < r.size() && i < w.size(); ++i)
                if (r[i].empty() || r[i][0] != '\x02') w[i] = std::max(w[i], r[i].size());
        };
        fit(head_);
        for (auto& r : rows_) fit(r);
        auto line = [&](const std::vector<std::string>& r) {
            if (!r.empty() && !r[0].empty() && r[0][0] == '\x01') {
                os << "    " << r[0].substr(1) << '\n';
                return;
            }
            os << "  ";
            for (std::size_t i = 0; i < r.size(); ++i) {
                if (r[i] == "|") {
                    os << " |";
                    continue;
                }
                if (!r[i].empty() && r[i][0] == '\x02') {
                    os << "  " << r[i].substr(1);
                    continue;
                }
                os << (i ? "  " : "") << pad(r[i], w[i], i != 0);
            }
            os << '\n';
        };
        line(head_);
        for (auto& r : rows_) line(r);
    }

private:
    std::vector<std::string> head_;
    std::vector<std::vector<std::string>> rows_;
};

const json::object* find_named(const json::value* arr, std::string_view name) {
    if (!arr || !arr->is_array()) return nullptr;
    for (auto& v : arr->as_array())
        if (auto* o = v.if_object(); o && o->contains("name") && o->at("name").as_string() == name) return o;
    return nullptr;
}

const json::value* field(const json::object* o, std::string_view k) { return o ? o->if_contains(k) : nullptr; }

void print_latency_v2(const json::object& r, std::ostream& os) {
    auto* lat = path_of(r, {"latency_v2"});
    if (!lat) return;
    auto& L = lat->as_object();
    os << "\n== Notification latency, cgroup v2: write of memory.events (tmpfs) -> user code holds the event ==\n";
    if (auto* e = L.if_contains("error")) {
        os << "  error: " << str(e) << '\n';
        return;
    }
    os << "   " << str(L.if_contains("watched")) << " cgroups watched, " << str(L.if_contains("samples_per_contender"))
       << " samples per contender (contenders take turns sample by sample)\n";
    auto* rows = L.if_contains("contenders");
    auto* fl = find_named(rows, "floor");
    auto* sd = find_named(rows, "seed design");
    table t({"contender", "p50/floor", "p99/floor", "p50/seed", "p99/seed", "|", "p50 us", "p99 us", "max us", "samples", "lost"});
    for (auto& v : rows->as_array()) {
        auto& o = v.as_object();
        if (o.contains("error") && !o.contains("p50_us")) {
            t.row({str(&o.at("name")), "-", "-", "-", "-", "|", span("error: " + str(&o.at("error")))});
            continue;
        }
        t.row({str(&o.at("name")), ratio(field(&o, "p50_us"), field(fl, "p50_us")), ratio(field(&o, "p99_us"), field(fl, "p99_us")),
               ratio(field(&o, "p50_us"), field(sd, "p50_us")), ratio(field(&o, "p99_us"), field(sd, "p99_us")), "|",
               fmt(num(field(&o, "p50_us"))), fmt(num(field(&o, "p99_us"))), fmt(num(field(&o, "max_us"))),
               str(field(&o, "n")), str(field(&o, "lost"))});
    }
    t.print(os);
}

// The head of a v1 latency table: its title, and the kills per contender and the kmsg
// clock's calibration. Null when the section did not run or was skipped.
const json::object* print_v1_head(const json::object& r, std::string_view key, std::string_view title, std::ostream& os) {
    auto* lat = path_of(r, {key});
    if (!lat) return nullptr;
    auto& L = lat->as_object();
    os << "\n== " << title << " ==\n";
    if (auto* s = L.if_contains("skipped")) {
        os << "  skipped: " << str(s) << '\n';
        return nullptr;
    }
    os << "   real OOM kills, " << str(L.if_contains("kills_per_contender"))
       << " per contender; kmsg clock offset to CLOCK_MONOTONIC " << fmt(num(L.if_contains("kmsg_clock_offset_us_start")))
       << " us (start) / " << fmt(num(L.if_contains("kmsg_clock_offset_us_end"))) << " us (end), +-"
       << fmt(num(L.if_contains("kmsg_clock_offset_uncertainty_us"))) << " us\n";
    return &L;
}

void print_latency_v1(const json::object& r, std::ostream& os) {
    auto* head = print_v1_head(r, "latency_v1", "Notification latency, cgroup v1: kernel's kill record (/dev/kmsg) -> user code holds the event", os);
    if (!head) return;
    auto& L = *head;
    os << "   negative: the event came before the kill record (the OOM notification precedes the kill); ratios only\n"
       << "   where both are positive, so p50-floor gives the difference\n";
    auto* rows = L.if_contains("contenders");
    auto* fl = find_named(rows, "floor");
    auto* sd = find_named(rows, "seed design");
    auto p50_of = [](const json::object* o, const char* ev) -> const json::value* {
        auto* s = o ? o->if_contains(ev) : nullptr;
        return s && s->is_object() ? s->as_object().if_contains("p50_us") : nullptr;
    };
    auto diff = [](const json::value* a, const json::value* b) -> std::string {
        if (!a || !b) return "-";
        double d = num(a) - num(b);
        return (d >= 0 ? "+" : "") + fmt(d);
    };
    table t({"contender", "event", "p50/floor", "p50-floor us", "p50/seed", "|", "p50 us", "p99 us", "max us", "min us", "kills",
             "exact"});
    for (auto& v : rows->as_array()) {
        auto& o = v.as_object();
        for (const char* ev : {"oom", "oom_kill"}) {
            auto* s = o.if_contains(ev);
            if (!s) {
                if (std::string_view(ev) == "oom_kill")
                    t.row({str(&o.at("name")), ev, "-", "-", "-", "|", span("not reported (the seed design has no kill count on v1)")});
                continue;
            }
            auto& so = s->as_object();
            t.row({str(&o.at("name")), ev, ratio(so.if_contains("p50_us"), p50_of(fl, ev)), diff(so.if_contains("p50_us"), p50_of(fl, ev)),
                   ratio(so.if_contains("p50_us"), p50_of(sd, ev)), "|", fmt(num(so.if_contains("p50_us"))),
                   fmt(num(so.if_contains("p99_us"))), fmt(num(so.if_contains("max_us"))), fmt(num(so.if_contains("min_us"))),
                   str(o.if_contains("kills")), o.contains("exact") ? (o.at("exact").as_bool() ? "yes" : "NO") : "n/a"});
        }
        if (auto* e = o.if_contains("error")) t.note(str(&o.at("name")) + ": " + str(e));
    }
    t.print(os);
}

void print_latency_v1_victims(const json::object& r, std::ostream& os) {
    auto* head = print_v1_head(r, "latency_v1_victims",
                               "Victims, cgroup v1: kernel's kill record (/dev/kmsg) -> user code holds the oom_kill event, victims off and on", os);
    if (!head) return;
    auto& L = *head;
    os << "   contenders take turns kill by kill, in a random order; isolated: 0.6 s between kills, burst: back to back.\n"
       << "   named: the kill's oom_kill event named its victim (victims.size() == count). reports: kills whose OOM report the\n"
       << "   kernel printed (it names the victim's cgroup; rate limited machine-wide to 10 per 5 s, and without it the\n"
       << "   library finds the victim's cgroup in /proc, if the victim is still there). /off: against victims off, same phase\n";
    auto* rows = L.if_contains("contenders");
    auto* off = find_named(rows, "victims off");
    auto p_of = [](const json::object* o, std::string_view phase, const char* ev, const char* p) -> const json::value* {
        auto* ph = o ? o->if_contains(phase) : nullptr;
        auto* s = ph && ph->is_object() ? ph->as_object().if_contains(ev) : nullptr;
        return s && s->is_object() ? s->as_object().if_contains(p) : nullptr;
    };
    auto share = [](const json::value* part, const json::value* whole) {
        if (num(whole) <= 0) return std::string("-");
        return str(part) + "/" + str(whole) + " (" + fixed(100.0 * num(part) / num(whole), 0) + "%)";
    };
    table t({"phase", "contender", "p50/off", "p99/off", "|", "oom_kill p50 us", "p99 us", "max us", "oom p50 us", "named", "reports",
             "exact"});
    auto* phases = L.if_contains("phases");
    for (auto& phv : phases->as_array()) {
        const std::string phase = str(phv.as_object().if_contains("name"));
        for (auto& v : rows->as_array()) {
            auto& o = v.as_object();
            auto* ph = o.if_contains(phase);
            if (!ph || !ph->is_object()) continue;
            auto& P = ph->as_object();
            const bool victims = o.contains("victims") && o.at("victims").as_bool();
            t.row({phase, str(&o.at("name")), ratio(p_of(&o, phase, "oom_kill", "p50_us"), p_of(off, phase, "oom_kill", "p50_us")),
                   ratio(p_of(&o, phase, "oom_kill", "p99_us"), p_of(off, phase, "oom_kill", "p99_us")), "|",
                   fmt(num(p_of(&o, phase, "oom_kill", "p50_us"))), fmt(num(p_of(&o, phase, "oom_kill", "p99_us"))),
                   fmt(num(p_of(&o, phase, "oom_kill", "max_us"))), fmt(num(p_of(&o, phase, "oom", "p50_us"))),
                   victims ? share(P.if_contains("named"), P.if_contains("samples")) : "off",
                   share(P.if_contains("reported"), P.if_contains("samples")),
                   o.contains("exact") ? (o.at("exact").as_bool() ? "yes" : "NO") : "-"});
        }
    }
    for (auto& v : rows->as_array())
        if (auto* e = v.as_object().if_contains("error")) t.note(str(&v.as_object().at("name")) + ": " + str(e));
    t.print(os);
}

void print_throughput(const json::object& r, std::ostream& os) {
    auto* tp = path_of(r, {"throughput"});
    if (!tp) return;
    auto& T = tp->as_object();
    os << "\n== Throughput: one writer rewriting memory.events as fast as it can, " << fmt(num(T.if_contains("seconds")))
       << " s per run ==\n"
       << "   events/s: events delivered, summed over the subscribers, until the last one caught up; kills/event: how many\n"
       << "   counter increments one event carried on average (events coalesce; the counts must still add up exactly)\n";
    if (auto* e = T.if_contains("error")) {
        os << "  error: " << str(e) << '\n';
        return;
    }
    auto& runs = T.at("runs").as_array();
    auto find = [&](std::string_view name, const json::value* subs) -> const json::object* {
        for (auto& v : runs) {
            auto& o = v.as_object();
            if (o.at("name").as_string() == name && o.at("subscribers") == *subs) return &o;
        }
        return nullptr;
    };
    table t({"contender", "subs", "threads", "events/s / floor", "events/s / seed", "|", "events/s", "kills/event", "writes/s",
             "catch-up ms", "exact"});
    for (auto& v : runs) {
        auto& o = v.as_object();
        auto* fl = find("floor", &o.at("subscribers"));
        auto* sd = find("seed design", &o.at("subscribers"));
        if (o.contains("error")) {
            t.row({str(&o.at("name")), str(&o.at("subscribers")), str(&o.at("threads")), "-", "-", "|", span("error: " + str(&o.at("error")))});
            continue;
        }
        auto* ex = o.if_contains("exact");
        t.row({str(&o.at("name")), str(&o.at("subscribers")), str(&o.at("threads")),
               ratio(o.if_contains("events_per_s"), field(fl, "events_per_s")),
               ratio(o.if_contains("events_per_s"), field(sd, "events_per_s")), "|", fixed(num(o.if_contains("events_per_s")), 0),
               fmt(num(o.if_contains("kills_per_event"))), fixed(num(o.if_contains("writes_per_s")), 0), fmt(num(o.if_contains("catch_up_ms"))),
               ex && ex->is_bool() ? (ex->as_bool() ? "yes" : "NO") : "n/a (counts none)"});
    }
    t.print(os);
}

void print_scale_version(const json::object& S, const char* key, std::ostream& os) {
    auto* v = S.if_contains(key);
    if (!v) return;
    os << "\n== Scale, cgroup " << key << (std::string_view(key) == "v2" ? " (fake cgroups on tmpfs)" : " (real cgroups, real OOM kills)")
       << ": each contender alone in a fresh process, idle " << fmt(num(S.if_contains("idle_seconds"))) << " s ==\n";
    if (v->is_object()) {
        os << "  skipped: " << str(v->as_object().if_contains("skipped")) << '\n';
        return;
    }
    os << "   mem: resident memory per watched cgroup (RSS growth / N, with threads and consumers);"
          " arm: until all are watched;\n   cpu: CPU time while idle; wake/10s: sleeps of the contender's threads per 10 idle seconds\n";
    table t({"N", "contender", "fds/floor", "mem/floor", "arm/floor", "cpu/floor", "fds/seed", "mem/seed", "arm/seed", "cpu/seed", "|",
             "fds", "B/cgroup", "arm ms", "idle cpu ms", "wake/10s", "threads", "exact"});
    for (auto& per_n : v->as_array()) {
        auto& P = per_n.as_object();
        auto& rows = P.at("contenders").as_array();
        const json::object* fl = nullptr;
        const json::object* sd = nullptr;
        for (auto& rv : rows) {
            auto& o = rv.as_object();
            if (o.at("contender").as_string() == "floor" && !o.contains("error")) fl = &o;
            if (o.at("contender").as_string() == "seed" && !o.contains("error") && !o.contains("cannot_run")) sd = &o;
        }
        for (auto& rv : rows) {
            auto& o = rv.as_object();
            std::string n = str(&P.at("n"));
            std::string name = str(&o.at("contender"));
            if (name == "seed") name = "seed design";
            if (auto* d = o.if_contains("at_default_limit")) {
                auto& D = d->as_object();
                t.row({n, name, "|", span("default inotify limit (max_user_instances=" + str(D.if_contains("max_user_instances")) +
                                         "): fails at cgroup #" + std::to_string(static_cast<long>(num(D.if_contains("armed"))) + 1) +
                                         ": " + str(D.if_contains("error")))});
                if (o.contains("raised_max_user_instances_to"))
                    t.note("seed design: max_user_instances RAISED to " + str(o.if_contains("raised_max_user_instances_to")) +
                           " for the next row, restored afterwards");
            }
            if (auto* c = o.if_contains("cannot_run")) {
                t.row({n, name, "|", span(str(c))});
                continue;
            }
            if (auto* e = o.if_contains("error")) {
                t.row({n, name, "|", span("error after " + str(o.if_contains("armed")) + " armed: " + str(e))});
                continue;
            }
            std::string exact = "n/a";
            if (auto* ex = o.if_contains("exact"); ex && ex->is_bool())
                exact = ex->as_bool() ? "yes" : "NO (" + str(o.if_contains("mismatched_cgroups")) + " cgroups off)";
            else
                exact = "n/a: " + str(o.if_contains("delivered_events")) + " events for " + str(o.if_contains("kills")) + " kills";
            t.row({n, name, ratio(o.if_contains("fds"), field(fl, "fds")), ratio(o.if_contains("bytes_per_cgroup"), field(fl, "bytes_per_cgroup")),
                   ratio(o.if_contains("arm_ms"), field(fl, "arm_ms")), ratio(o.if_contains("idle_cpu_ms"), field(fl, "idle_cpu_ms")),
                   ratio(o.if_contains("fds"), field(sd, "fds")), ratio(o.if_contains("bytes_per_cgroup"), field(sd, "bytes_per_cgroup")),
                   ratio(o.if_contains("arm_ms"), field(sd, "arm_ms")), ratio(o.if_contains("idle_cpu_ms"), field(sd, "idle_cpu_ms")), "|",
                   str(o.if_contains("fds")), fixed(num(o.if_contains("bytes_per_cgroup")), 0), fmt(num(o.if_contains("arm_ms"))),
                   fmt(num(o.if_contains("idle_cpu_ms"))), fixed(num(o.if_contains("idle_wakeups_per_10s")), 1),
                   str(o.if_contains("threads")), exact});
            if (auto* ke = o.if_contains("kill_error")) t.note(name + ": " + str(ke));
        }
    }
    t.print(os);
    os << "   memory per cgroup of the watchers alone (armed, before threads and consumers start), RSS / malloc'd heap:\n";
    for (const char* who : {"floor", "seed", "oomwatch"}) {
        std::string line;
        for (auto& per_n : v->as_array())
            for (auto& rv : per_n.as_object().at("contenders").as_array())
                if (auto& o = rv.as_object(); o.at("contender").as_string() == who && o.contains("bytes_per_cgroup_armed"))
                    line += "  N=" + str(&per_n.as_object().at("n")) + ": " + fixed(num(o.if_contains("bytes_per_cgroup_armed")), 0) +
                            " / " + fixed(num(o.if_contains("heap_bytes_per_cgroup_armed")), 0) + " B";
        if (!line.empty()) os << "     " << pad(std::string(who) == "seed" ? "seed design" : who, 11, false) << line << '\n';
    }
}

void print_scale(const json::object& r, std::ostream& os) {
    auto* s = path_of(r, {"scale"});
    if (!s) return;
    auto& S = s->as_object();
    if (auto* e = S.if_contains("error")) {
        os << "\n== Scale ==\n  error: " << str(e) << '\n';
        return;
    }
    print_scale_version(S, "v2", os);
    print_scale_version(S, "v1", os);
}

const json::object* tree_row(const json::object& per, std::string_view who) {
    for (auto& rv : per.at("contenders").as_array())
        if (auto& o = rv.as_object(); o.at("contender").as_string() == who && !o.contains("error")) return &o;
    return nullptr;
}

std::string exact_cell(const json::object& o) {
    auto* ex = o.if_contains("exact");
    if (!ex || !ex->is_bool()) return "n/a";
    if (ex->as_bool()) return "yes";
    std::string why = "NO";
    if (auto* m = o.if_contains("mismatched_cgroups"); m && num(m) > 0) why += " (" + str(m) + " cgroups off)";
    if (auto* m = o.if_contains("mismatched_cycles"); m && num(m) > 0) why += " (" + str(m) + " cycles off)";
    if (auto* m = o.if_contains("churn_error")) why += " (" + str(m) + ")";
    if (auto* m = o.if_contains("stray_events"); m && num(m) > 0) why += " (" + str(m) + " stray events)";
    return why;
}

void print_tree(const json::object& r, std::ostream& os) {
    auto* t = path_of(r, {"tree"});
    if (!t) return;
    auto& T = t->as_object();
    if (auto* e = T.if_contains("error")) {
        os << "\n== Tree ==\n  error: " << str(e) << '\n';
        return;
    }
    os << "\n== Tree: tree_watcher against the tree floor, fake cgroup v2 trees on tmpfs: each contender alone in a fresh"
          " process, idle "
       << fmt(num(T.if_contains("idle_seconds"))) << " s ==\n"
       << "   N cgroups below the root (root + children x (1 + grandchildren each)); per cgroup = per watched cgroup (N + 1)\n"
       << "   floor: raw inotify + epoll, the same discovery (each directory watched, then listed; each memory.events.local\n"
       << "   watched for IN_MODIFY). mem: RSS growth / cgroup with the thread and consumer running; heap: malloc's count\n"
       << "   (mallinfo2) / cgroup; watches: the kernel's inotify watches; arm: until the whole tree is watched\n";
    table tb({"N", "shape", "contender", "fds/floor", "mem/floor", "heap/floor", "arm/floor", "cpu/floor", "|", "fds", "watches",
              "B/cgroup", "heap B/cgroup", "arm ms", "idle cpu ms", "wake/10s", "load", "exact"});
    if (auto* sc = T.if_contains("scale"); sc && sc->is_array()) {
        for (auto& pv : sc->as_array()) {
            auto& P = pv.as_object();
            auto* fl = tree_row(P, "floor");
            for (auto& rv : P.at("contenders").as_array()) {
                auto& o = rv.as_object();
                std::string n = str(&P.at("n")), shape = str(P.if_contains("shape")), name = str(&o.at("contender"));
                if (auto* e = o.if_contains("error")) {
                    tb.row({n, shape, name, "|", span("error: " + str(e))});
                    continue;
                }
                tb.row({n, shape, name, ratio(o.if_contains("fds"), field(fl, "fds")),
                        ratio(o.if_contains("bytes_per_cgroup"), field(fl, "bytes_per_cgroup")),
                        ratio(o.if_contains("heap_bytes_per_cgroup"), field(fl, "heap_bytes_per_cgroup")),
                        ratio(o.if_contains("arm_ms"), field(fl, "arm_ms")), ratio(o.if_contains("idle_cpu_ms"), field(fl, "idle_cpu_ms")),
                        "|", str(o.if_contains("fds")), str(o.if_contains("inotify_watches")),
                        fixed(num(o.if_contains("bytes_per_cgroup")), 0), fixed(num(o.if_contains("heap_bytes_per_cgroup")), 0),
                        fmt(num(o.if_contains("arm_ms"))), fmt(num(o.if_contains("idle_cpu_ms"))),
                        fixed(num(o.if_contains("idle_wakeups_per_10s")), 1), str(o.if_contains("loadavg")), exact_cell(o)});
            }
        }
    }
    tb.print(os);
    os << "   the watchers alone (armed, before the thread and consumer start), RSS / heap per cgroup:\n";
    for (const char* who : {"floor", "oomwatch"}) {
        std::string line;
        if (auto* sc = T.if_contains("scale"); sc && sc->is_array())
            for (auto& pv : sc->as_array())
                if (auto* o = tree_row(pv.as_object(), who))
                    line += "  N=" + str(&pv.as_object().at("n")) + ": " + fixed(num(o->if_contains("bytes_per_cgroup_armed")), 0) +
                            " / " + fixed(num(o->if_contains("heap_bytes_per_cgroup_armed")), 0) + " B";
        if (!line.empty()) os << "     " << pad(who, 9, false) << line << '\n';
    }

    auto* ch = T.if_contains("churn");
    if (!ch || !ch->is_array() || ch->as_array().empty()) return;
    os << "\n== Tree churn: create / kill / remove cycles under the tree's root, " << str(T.if_contains("churn_lanes"))
       << " in flight, " << (num(T.if_contains("churn_cycles")) > 0 ? str(T.if_contains("churn_cycles")) + " cycles"
                                                                     : fmt(num(T.if_contains("churn_seconds"))) + " s")
       << " per contender and tree ==\n"
       << "   a cycle: a cgroup renamed in (made in a staging directory) -> its `created` event -> a kill (memory.events.local,\n"
       << "   then memory.events of it and the root) -> the oom_kill event -> renamed out -> the removed event. Each ack:\n"
       << "   from the driver's action to the sink's timestamp. cpu: the contender's own thread per cycle (the driver, in\n"
       << "   the same process, bounds the rate: about 12 file system calls per cycle). late rm: removals reported more\n"
       << "   than 1 s late (their notification missed, found by the liveness sweep). lost: cycles whose created or\n"
       << "   oom_kill event never came (2 s), or removed (7 s). exact: every cycle created, killed (oom and oom_kill) and\n"
       << "   removed exactly once at its cgroup, nothing anywhere else\n";
    table tc({"N", "contender", "rate/floor", "cpu/floor", "|", "cycles", "cycles/min", "cpu us/cycle", "created p50/p99 us",
              "oom_kill p50/p99 us", "removed p50/p99 us", "late rm", "lost", "fds", "watches", "heap B/1k cycles", "load",
              "exact"});
    auto ack = [](const json::object& o, const char* k) {
        auto* a = o.if_contains(k);
        if (!a || !a->is_object()) return std::string("-");
        return fmt(num(a->as_object().if_contains("p50_us"))) + " / " + fmt(num(a->as_object().if_contains("p99_us")));
    };
    for (auto& pv : ch->as_array()) {
        auto& C = pv.as_object();
        auto* fl = tree_row(C, "floor");
        const std::string n = str(C.if_contains("n"));
        for (auto& rv : C.at("contenders").as_array()) {
            auto& o = rv.as_object();
            std::string name = str(&o.at("contender"));
            if (auto* e = o.if_contains("error")) {
                tc.row({n, name, "|", span("error: " + str(e))});
                continue;
            }
            tc.row({n, name, ratio(o.if_contains("cycles_per_min"), field(fl, "cycles_per_min")),
                    ratio(o.if_contains("cpu_us_per_cycle"), field(fl, "cpu_us_per_cycle")), "|", str(o.if_contains("completed")),
                    fixed(num(o.if_contains("cycles_per_min")), 0), fmt(num(o.if_contains("cpu_us_per_cycle"))),
                    ack(o, "created_ack"), ack(o, "kill_ack"), ack(o, "removed_ack"), str(o.if_contains("late_removals")),
                    str(o.if_contains("lost_cycles")),
                    str(o.if_contains("fds_before")) + "->" + str(o.if_contains("fds_after")),
                    str(o.if_contains("watches_before")) + "->" + str(o.if_contains("watches_after")),
                    fixed(num(o.if_contains("heap_growth_bytes_per_1000_cycles")), 0), str(o.if_contains("loadavg")), exact_cell(o)});
            if (auto* ld = o.if_contains("lost_detail")) tc.note("N=" + n + " " + name + ": lost " + str(ld));
        }
    }
    tc.print(os);
}

void print_parsers(const json::object& r, std::ostream& os) {
    auto* p = path_of(r, {"parsers"});
    if (!p) return;
    auto& P = p->as_object();
    os << "\n== Parsers: ns per parse (Google Benchmark) ==\n";
    if (auto* s = P.if_contains("skipped")) {
        os << "  skipped: " << str(s) << '\n';
        return;
    }
    auto* res = P.if_contains("results");
    auto get = [&](const std::string& n) { return field(find_named(res, n), "ns"); };
    table t({"file", "parser", "/floor", "/seed", "|", "ns"});
    for (const char* f : {"memory.events", "memory.oom_control", "kmsg record"})
        for (const char* who : {"floor", "seed", "oomwatch", "bench-only"}) {
            auto name = std::string(f) + "/" + who;
            auto* v = get(name);
            if (!v) continue;
            t.row({f, who, ratio(v, get(std::string(f) + "/floor")), ratio(v, get(std::string(f) + "/seed")), "|", fmt(num(v))});
        }
    t.print(os);
    os << "   " << str(P.if_contains("note")) << '\n';
}

} // namespace

// ---- targets ------------------------------------------------------------------------------

json::array evaluate_targets(const json::object& r) {
    json::array out;
    auto add = [&](std::string target, std::string status, std::string measured) {
        out.push_back(json::object{{"target", target}, {"status", status}, {"measured", measured}});
    };
    // Latency.
    if (auto* rows = path_of(r, {"latency_v2", "contenders"})) {
        auto* fl = find_named(rows, "floor");
        for (const char* name : {"oomwatch co_await", "oomwatch strand subscriber"}) {
            auto* ow = find_named(rows, name);
            double p50 = num(field(ow, "p50_us"), NAN) / num(field(fl, "p50_us"), NAN);
            double p99 = num(field(ow, "p99_us"), NAN) / num(field(fl, "p99_us"), NAN);
            add(std::string("v2 latency p50 within 1.3x of the floor (") + name + ")",
                std::isnan(p50) ? "not measured" : p50 <= 1.3 ? "met" : "missed", fixed(p50, 2) + "x");
            add(std::string("v2 latency p99 within 2x of the floor (") + name + ")",
                std::isnan(p99) ? "not measured" : p99 <= 2.0 ? "met" : "missed", fixed(p99, 2) + "x");
        }
    } else {
        add("latency p50 within 1.3x / p99 within 2x of the floor", "not measured", "");
    }
    // Scale, v2.
    const json::object* big = nullptr;
    const json::object* small = nullptr;
    std::string fds_list;
    bool fds_constant = true;
    double fds_first = NAN;
    if (auto* v2 = path_of(r, {"scale", "v2"}); v2 && v2->is_array()) {
        for (auto& per_n : v2->as_array()) {
            for (auto& rv : per_n.as_object().at("contenders").as_array()) {
                auto& o = rv.as_object();
                if (o.at("contender").as_string() != "oomwatch" || o.contains("error")) continue;
                if (!small) small = &o;
                big = &o;
                double f = num(o.if_contains("fds"));
                if (std::isnan(fds_first)) fds_first = f;
                if (f != fds_first) fds_constant = false;
                fds_list += (fds_list.empty() ? "" : ", ") + str(o.if_contains("fds")) + " at N=" + str(o.if_contains("n"));
            }
        }
    }
    if (big) {
        const std::string at = " at N=" + str(big->if_contains("n"));
        add("v2: a constant number of fds, not growing with N", fds_constant ? "met" : "missed", fds_list);
        double mem = num(big->if_contains("bytes_per_cgroup_armed"));
        double heap = num(big->if_contains("heap_bytes_per_cgroup_armed"));
        double mem_all = num(big->if_contains("bytes_per_cgroup"));
        add("v2: under 2 KiB of memory per watched cgroup (the watchers)", mem < 2048 ? "met" : "missed",
            fixed(mem, 0) + " B RSS" + at + " (" + fixed(heap, 0) + " B of heap; " + fixed(mem_all, 0) +
                " B RSS with a co_await consumer per watcher)");
        double arm = num(big->if_contains("arm_ms"));
        add("v2: armed in under 0.5 s", arm < 500 ? "met" : "missed", fmt(arm) + " ms" + at);
        double w_big = num(big->if_contains("idle_wakeups_per_10s"));
        double w_small = num(small->if_contains("idle_wakeups_per_10s"));
        double n_big = num(big->if_contains("n"));
        bool periodic_per_cgroup = w_big > w_small + 4 || w_big >= n_big / 100;
        add("v2: no periodic wake-up per cgroup while idle", periodic_per_cgroup ? "missed" : "met",
            fixed(w_big, 1) + " wake-ups per 10 s" + at + " (" + fixed(w_small, 1) + " at N=" + str(small->if_contains("n")) +
                "); idle CPU " + fmt(num(big->if_contains("idle_cpu_ms"))) + " ms in " + fmt(num(big->if_contains("idle_s"))) + " s");
    } else {
        add("v2 scale targets (fds, memory, arming, idle wake-ups)", "not measured", "");
    }
    // Tree (tree_watcher).
    if (auto* sc = path_of(r, {"tree", "scale"}); sc && sc->is_array() && !sc->as_array().empty()) {
        const json::object* tbig = nullptr;
        const json::object* tbig_fl = nullptr;
        const json::object* tsmall = nullptr;
        std::string tfds_list;
        bool tfds_constant = true;
        double tfds_first = NAN;
        for (auto& pv : sc->as_array()) {
            auto* o = tree_row(pv.as_object(), "oomwatch");
            if (!o) continue;
            if (!tsmall) tsmall = o;
            tbig = o;
            tbig_fl = tree_row(pv.as_object(), "floor");
            double f = num(o->if_contains("fds"));
            if (std::isnan(tfds_first)) tfds_first = f;
            if (f != tfds_first) tfds_constant = false;
            tfds_list += (tfds_list.empty() ? "" : ", ") + str(o->if_contains("fds")) + " at N=" + str(o->if_contains("n"));
        }
        if (tbig) {
            const std::string at = " at N=" + str(tbig->if_contains("n")) + " (" + str(tbig->if_contains("children")) + " x (1 + " +
                                   str(tbig->if_contains("grandchildren")) + "))";
            double arm = num(tbig->if_contains("arm_ms"));
            add("tree: armed in under 0.3 s", arm < 300 ? "met" : "missed",
                fmt(arm) + " ms" + at + ", " + ratio(tbig->if_contains("arm_ms"), field(tbig_fl, "arm_ms")) + " the floor's " +
                    fmt(num(field(tbig_fl, "arm_ms"))) + " ms");
            double mem = num(tbig->if_contains("bytes_per_cgroup"));
            double heap = num(tbig->if_contains("heap_bytes_per_cgroup"));
            add("tree: under 2 KiB of memory per watched cgroup", mem < 2048 && heap < 2048 ? "met" : "missed",
                fixed(mem, 0) + " B RSS, " + fixed(heap, 0) + " B heap" + at + " (floor " +
                    fixed(num(field(tbig_fl, "bytes_per_cgroup")), 0) + " / " + fixed(num(field(tbig_fl, "heap_bytes_per_cgroup")), 0) + " B)");
            add("tree: a constant number of fds, not growing with N", tfds_constant ? "met" : "missed", tfds_list);
            double w_big = num(tbig->if_contains("idle_wakeups_per_10s"));
            double w_small = num(tsmall->if_contains("idle_wakeups_per_10s"));
            double n_big = num(tbig->if_contains("n"));
            bool per_cgroup = w_big > w_small + 4 || w_big >= n_big / 100;
            add("tree: no periodic wake-up per cgroup while idle", per_cgroup ? "missed" : "met",
                fixed(w_big, 1) + " wake-ups per 10 s" + at + " (" + fixed(w_small, 1) + " at N=" + str(tsmall->if_contains("n")) +
                    "); idle CPU " + fmt(num(tbig->if_contains("idle_cpu_ms"))) + " ms in " + fmt(num(tbig->if_contains("idle_s"))) + " s");
        }
    }
    if (auto* ch = path_of(r, {"tree", "churn"}); ch && ch->is_array() && !ch->as_array().empty()) {
        auto& C = ch->as_array().back().as_object();
        auto* o = tree_row(C, "oomwatch");
        auto* fl = tree_row(C, "floor");
        if (o) {
            double rate = num(o->if_contains("cycles_per_min"));
            bool exact = true;
            std::string lost;
            for (auto& pv : ch->as_array())
                if (auto* oo = tree_row(pv.as_object(), "oomwatch")) {
                    auto* ex = oo->if_contains("exact");
                    if (!ex || !ex->is_bool() || !ex->as_bool()) {
                        exact = false;
                        lost += " N=" + str(pv.as_object().if_contains("n")) + ": " + str(oo->if_contains("lost_cycles")) + " lost of " +
                                str(oo->if_contains("cycles")) + ";";
                    }
                }
            add("tree churn: at least 1,000 create/kill/remove cycles per minute, every kill reported once at its cgroup",
                rate >= 1000 && exact ? "met" : "missed",
                fixed(rate, 0) + " cycles/min sustained over " + fmt(num(o->if_contains("seconds"))) + " s in N=" + str(C.if_contains("n")) +
                    ", counts " + (exact ? "exact at every N" : "NOT exact (" + lost + ")") + "; " +
                    ratio(o->if_contains("cycles_per_min"), field(fl, "cycles_per_min")) + " the floor's " +
                    fixed(num(field(fl, "cycles_per_min")), 0));
        }
    }
    auto* fails = r.if_contains("failures");
    std::size_t nf = fails && fails->is_array() ? fails->as_array().size() : 0;
    add("delivered counts exact in every run (floor and oomwatch)", nf == 0 ? "met" : "missed",
        nf == 0 ? "every count check passed" : std::to_string(nf) + " check(s) failed");
    return out;
}

void print_report(const json::object& r, std::ostream& os) {
    os << "oomwatch benchmarks (" << str(r.if_contains("size")) << " size), " << str(r.if_contains("started")) << '\n';
    if (auto* m = r.if_contains("machine")) {
        auto& M = m->as_object();
        os << "machine: " << str(M.if_contains("nproc")) << " CPUs, " << str(M.if_contains("cpu")) << ", "
           << str(M.if_contains("kernel")) << ", fd limit " << str(M.if_contains("fd_limit"))
           << ", inotify max_user_instances " << str(M.if_contains("inotify_max_user_instances")) << '\n';
    }
    os << "load average (1, 5, 15 min): " << str(r.if_contains("loadavg_start")) << " at the start, "
       << str(r.if_contains("loadavg_end")) << " at the end\n";
    os << "ratios: contender / floor and contender / seed design (for latency, memory, fds, time: lower is better;"
          " for events/s: higher is better)\n";
    if (auto* s = r.if_contains("v1_skipped")) os << "cgroup v1 parts skipped: " << str(s) << '\n';
    print_latency_v2(r, os);
    print_latency_v1(r, os);
    print_latency_v1_victims(r, os);
    print_throughput(r, os);
    print_scale(r, os);
    print_tree(r, os);
    print_parsers(r, os);
    if (auto* t = r.if_contains("targets")) {
        os << "\n== oomwatch against the issue's targets ==\n";
        for (auto& v : t->as_array()) {
            auto& o = v.as_object();
            os << "  [" << pad(str(o.if_contains("status")), 12, false) << "] " << str(o.if_contains("target")) << ": "
               << str(o.if_contains("measured")) << '\n';
        }
    }
    auto* fails = r.if_contains("failures");
    if (fails && fails->is_array() && !fails->as_array().empty()) {
        os << "\nFAILED checks:\n";
        for (auto& f : fails->as_array()) os << "  - " << str(&f) << '\n';
    } else {
        os << "\nall correctness checks passed (exact counts, no lost events)\n";
    }
    os << "total " << fmt(num(r.if_contains("seconds"))) << " s\n";
}

} // namespace bench
