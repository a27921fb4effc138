// The benchmark sections, their sizes, and the sinks (the "user code") they measure with.
#pragma once

#include "bench_util.hpp"
#include "contenders.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace oomwatch::scratch {
class scratch_cgroup;
}

namespace bench {

namespace json = boost::json;

enum class size_mode { smoke, quick, full };

struct sizes {
    size_mode mode = size_mode::quick;
    std::string name;
    // latency
    std::size_t lat_watched = 100;
    std::size_t lat_samples = 2000;  // per contender
    std::int64_t lat_gap_us = 200;   // pause between samples
    std::size_t v1_kills = 8;        // per contender
    std::size_t v1_victim_isolated = 12;  // per contender, in the victims section: kills 0.6 s apart
    std::size_t v1_victim_burst = 30;     // and back to back
    // scale
    std::vector<std::size_t> scale_v2{100, 1000, 10000};
    std::vector<std::size_t> scale_v1{100, 1000};
    double idle_seconds = 3;
    std::size_t scale_v1_kills = 4;
    // throughput
    double tp_seconds = 1;           // per run, in slices: the runs take turns
    std::size_t tp_slices = 5;
    std::vector<unsigned> tp_subscribers{1, 4, 16};
    std::vector<unsigned> tp_threads{1, 2};
    // parsers
    double parser_min_time = 0.2;
    // tree (tree_watcher and the tree floor; fake v2 cgroups, root + children x grandchildren)
    std::vector<std::size_t> tree_n{100, 1000, 10000};
    std::vector<std::size_t> tree_churn_n{100, 1000, 10000};  // the trees the churn runs in (under the root)
    double tree_churn_seconds = 3;     // per contender and tree
    std::size_t tree_churn_cycles = 0; // a fixed number of cycles instead (0: run for the time)
    unsigned tree_churn_lanes = 8;     // cycles in flight at once
};
sizes sizes_for(size_mode m);

/// What the sections need from the run.
struct run_context {
    sizes sz;
    std::filesystem::path tmp_root;              // a private directory on tmpfs
    oomwatch::scratch::scratch_cgroup* v1_root = nullptr;  // null: no v1 parts
    std::string v1_skip_reason;
    bool root = false;
    std::filesystem::path self_exe;
    /// Correctness failures (exact counts); any one fails the run.
    std::vector<std::string> failures;
    void fail(std::string what);
};

/// Counts what each subscriber got, per cgroup; remembers when the first `oom` and
/// `oom_kill` of a cgroup arrived (reset per sample), and whether that `oom_kill` named
/// all its victims (oomwatch).
class tally_sink final : public sink {
public:
    struct cell {
        std::atomic<std::uint64_t> oom{0}, oom_kill{0}, oom_group_kill{0}, events{0}, removed{0}, last_seen{0};
        std::atomic<std::uint64_t> victims_named{0};  // summed over the oom_kill events
        std::atomic<std::int64_t> first_oom_ns{0}, first_kill_ns{0};
        std::atomic<bool> first_kill_named{false};
        std::atomic<std::uint64_t> named_pending{0};  // from on_named, for the on_event that follows
    };
    tally_sink(unsigned subscribers, std::size_t cgroups);
    void on_event(unsigned sub, std::size_t cg, event_kind k, std::uint64_t count, std::uint64_t seen) noexcept override;
    void on_named(unsigned sub, std::size_t cg, std::size_t named) noexcept override;
    cell& at(unsigned sub, std::size_t cg) { return cells_[sub * n_ + cg]; }
    void reset_first(std::size_t cg);
    unsigned subscribers() const { return subs_; }
    std::size_t cgroups() const { return n_; }

private:
    unsigned subs_;
    std::size_t n_;
    std::unique_ptr<cell[]> cells_;
};

/// The v2 latency sink: waits for the oom_kill event of one cgroup with one value.
class latency_sink final : public sink {
public:
    void expect(std::size_t cg, std::uint64_t value);
    void on_event(unsigned sub, std::size_t cg, event_kind k, std::uint64_t count, std::uint64_t seen) noexcept override;
    /// The time user code got the expected event, or empty after `timeout_ns`.
    std::optional<std::int64_t> wait(std::int64_t timeout_ns);
    std::uint64_t unexpected() const { return unexpected_.load(); }
    std::uint64_t coalesced() const { return coalesced_.load(); }

private:
    std::mutex m_;
    std::condition_variable cv_;
    std::size_t cg_ = ~std::size_t{0};
    std::uint64_t value_ = 0;
    std::optional<std::int64_t> got_;
    std::atomic<std::uint64_t> unexpected_{0}, coalesced_{0};
};

// ---- sections (each returns its results as JSON) ----------------------------------

json::object run_latency_v2(run_context& rc);
json::object run_latency_v1(run_context& rc);
json::object run_latency_v1_victims(run_context& rc);
json::object run_throughput(run_context& rc);
json::object run_scale(run_context& rc);
json::object run_parsers(run_context& rc);
json::object run_tree(run_context& rc);

/// `oomwatch_bench --worker scale ...`: one scale measurement in a fresh process.
int scale_worker_main(int argc, char** argv);
/// `oomwatch_bench --worker tree ...`: one tree measurement (scale or churn) in a fresh process.
int tree_worker_main(int argc, char** argv);

// ---- worker processes (scale.cpp) ----

/// Runs `oomwatch_bench --worker KIND ARGS...` and parses the JSON object it prints.
struct worker_result {
    json::object o;
    std::string failure;  // the worker itself failed (crash, timeout, garbage)
};
worker_result run_worker(const run_context& rc, const std::string& kind, const std::vector<std::string>& args,
                         int timeout_s);
/// In a worker: prints `o` and exits at once (no destructors).
[[noreturn]] void worker_exit(const json::object& o);
/// In a worker: sleeps `seconds` and records what the other threads cost meanwhile (CPU,
/// voluntary wake-ups) in `out` ("threads", "idle_s", "idle_cpu_ms", "idle_wakeups",
/// "idle_wakeups_per_10s").
void measure_idle(double seconds, json::object& out);
/// Bytes malloc has handed out and not taken back (mallinfo2: all arenas, mmapped chunks).
std::size_t heap_bytes();

/// Prints the tables (ratios first) from the results.
void print_report(const json::object& results, std::ostream& out);
/// Evaluates the targets from the results.
json::array evaluate_targets(const json::object& results);

// JSON helpers
double num(const json::value* v, double dflt = 0);
const json::value* path_of(const json::object& o, std::initializer_list<std::string_view> keys);

} // namespace bench
