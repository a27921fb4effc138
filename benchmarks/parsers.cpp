// Parsers: nanoseconds per parse with Google Benchmark, of the library's parsers against
// the floor's (no validation, no allocation) and the seed design's line scanner. The
// kmsg record parser measured here is the bench's own (it finds the kill records for the
// v1 latency); the library's kmsg parsers are not measured yet.
#include "detail/parse.hpp"
#include "harness.hpp"

#include <iostream>
#include <map>
#include <sstream>

#if OOMWATCH_BENCH_HAVE_GBENCH
#include <benchmark/benchmark.h>
#endif

namespace bench {

#if OOMWATCH_BENCH_HAVE_GBENCH
namespace {

constexpr std::string_view events_sample = "low 0\nhigh 0\nmax 1532\noom 12\noom_kill 12\noom_group_kill 0\n";
constexpr std::string_view oom_control_sample = "oom_kill_disable 0\nunder_oom 0\noom_kill 12\n";
constexpr std::string_view kmsg_sample =
    "3,10283,1572774186,-;Memory cgroup out of memory: Killed process 11612 (victim) total-vm:270372kB, "
    "anon-rss:33152kB, file-rss:1016kB, shmem-rss:0kB, UID:0 pgtables:116kB oom_score_adj:0\n";

// Captures the runs instead of printing them.
class capture final : public benchmark::BenchmarkReporter {
public:
    bool ReportContext(const Context&) override { return true; }
    void ReportRuns(const std::vector<Run>& runs) override {
        for (const auto& r : runs) {
            if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
            auto name = r.benchmark_name();
            if (auto cut = name.find("/min_time:"); cut != std::string::npos) name.resize(cut);
            results[name] = {r.GetAdjustedRealTime(), r.iterations};
        }
    }
    std::map<std::string, std::pair<double, std::int64_t>> results;
};

} // namespace
#endif

json::object run_parsers(run_context& rc) {
#if OOMWATCH_BENCH_HAVE_GBENCH
    const double min_time = rc.sz.parser_min_time;
    std::cerr << "parsers: Google Benchmark, min time " << min_time << " s each" << std::endl;
    auto reg = [&](const char* name, auto fn) {
        benchmark::RegisterBenchmark(name, fn)->MinTime(min_time)->Unit(benchmark::kNanosecond);
    };
    reg("memory.events/floor", [](benchmark::State& st) {
        for (auto _ : st) {
            auto r = parse_min_counters(events_sample.data(), events_sample.size());
            benchmark::DoNotOptimize(r);
        }
    });
    reg("memory.events/seed", [](benchmark::State& st) {
        for (auto _ : st) {
            std::istringstream in{std::string(events_sample)};
            auto r = seed_scan_oom_kill(in);
            benchmark::DoNotOptimize(r);
        }
    });
    reg("memory.events/oomwatch", [](benchmark::State& st) {
        for (auto _ : st) {
            auto r = oomwatch::parse_memory_events(events_sample);
            benchmark::DoNotOptimize(r);
        }
    });
    reg("memory.oom_control/floor", [](benchmark::State& st) {
        for (auto _ : st) {
            auto r = parse_min_counters(oom_control_sample.data(), oom_control_sample.size());
            benchmark::DoNotOptimize(r);
        }
    });
    reg("memory.oom_control/oomwatch", [](benchmark::State& st) {
        for (auto _ : st) {
            auto r = oomwatch::parse_oom_control(oom_control_sample);
            benchmark::DoNotOptimize(r);
        }
    });
    reg("kmsg record/bench-only", [](benchmark::State& st) {
        for (auto _ : st) {
            auto r = parse_kmsg_record(kmsg_sample);
            auto pid = r ? parse_memcg_kill(r->message) : std::nullopt;
            benchmark::DoNotOptimize(pid);
        }
    });
    // Sanity: every parser reads the sample right, or its timing means nothing.
    {
        auto e = oomwatch::parse_memory_events(events_sample);
        auto c = oomwatch::parse_oom_control(oom_control_sample);
        auto f = parse_min_counters(events_sample.data(), events_sample.size());
        std::istringstream in{std::string(events_sample)};
        auto s = seed_scan_oom_kill(in);
        auto k = parse_kmsg_record(kmsg_sample);
        if (!e || e->oom_kill != 12 || !c || c->oom_kill != 12u || f.oom_kill != 12 || !s || *s != 12 || !k ||
            parse_memcg_kill(k->message) != 11612)
            rc.fail("parsers: a parser misread its sample");
    }
    int argc = 1;
    char name[] = "oomwatch_bench";
    char* argv[] = {name, nullptr};
    benchmark::Initialize(&argc, argv);
    capture cap;
    benchmark::RunSpecifiedBenchmarks(&cap);
    benchmark::ClearRegisteredBenchmarks();
    json::array rows;
    for (auto& [n, r] : cap.results)
        rows.push_back(json::object{{"name", n}, {"ns", r.first}, {"iterations", r.second}});
    return {{"min_time_s", min_time},
            {"results", std::move(rows)},
            {"note", "the kmsg row is the bench's own record parser (the library's is not measured here)"}};
#else
    (void)rc;
    return {{"skipped", "Google Benchmark (libbenchmark-dev) was not found when this was built"}};
#endif
}

} // namespace bench
