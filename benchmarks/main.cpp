// oomwatch_bench: oomwatch against the floor and against the seed's design, side by side.
//
//   oomwatch_bench                 quick size (a few minutes on 2 cores)
//   oomwatch_bench --full          the full sizes
//   oomwatch_bench --smoke         tiny sizes, checks exact counts only (CI)
//   oomwatch_bench --json FILE     also writes the results as JSON
//   oomwatch_bench --only latency,latency-v1,victims,throughput,scale,tree,parsers
//
// The process forks at start: the child runs the benchmarks, the parent waits and then
// cleans up whatever the child could not (it died, was killed, or was interrupted):
// the inotify instance limit is put back, the tmpfs folder and the scratch cgroups are
// removed (killing any OOM victim left in them).
#include "harness.hpp"

#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/cgroup.hpp>
#include <oomwatch/log.hpp>

#include <boost/json/serialize.hpp>
#include <boost/log/core.hpp>
#include <boost/log/expressions.hpp>
#include <boost/log/utility/setup/console.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

namespace fs = std::filesystem;
using namespace bench;

namespace {

const fs::path inotify_instances = "/proc/sys/fs/inotify/max_user_instances";

void setup_logging() {
    namespace logging = boost::log;
    namespace expr = logging::expressions;
    // The library's warnings and errors, on stderr (OOMWATCH_BENCH_LOG=trace|debug|info
    // for more, to diagnose); without a sink Boost.Log would print every record on stdout.
    // The library emits nothing unless asked.
    auto min = oomwatch::log_severity::warning;
    if (const char* e = std::getenv("OOMWATCH_BENCH_LOG")) {
        const std::string_view v = e;
        if (v == "trace") min = oomwatch::log_severity::trace;
        else if (v == "debug") min = oomwatch::log_severity::debug;
        else if (v == "info") min = oomwatch::log_severity::info;
    }
    oomwatch::enable_logging(min);
    logging::core::get()->set_filter(expr::attr<oomwatch::log_severity>("Severity") >= min);
    logging::add_console_log(std::clog, logging::keywords::format = expr::stream
                                                                    << "oomwatch[" << expr::attr<oomwatch::log_severity>("Severity")
                                                                    << "]: " << expr::smessage);
}

struct options {
    size_mode mode = size_mode::quick;
    std::string json_file;
    std::set<std::string> only;
};

const std::set<std::string> all_sections{"parsers", "latency", "latency-v1", "victims", "throughput", "scale", "tree"};

int usage(std::ostream& os, int code) {
    os << "usage: oomwatch_bench [--smoke|--quick|--full] [--json FILE] [--only SECTION,...]\n"
          "  sections: parsers, latency (v2), latency-v1, victims (v1), throughput, scale, tree\n"
          "  --smoke: tiny sizes; checks the exact counts only, never the times (CI)\n"
          "  v1 parts need root and a cgroup v1 memory hierarchy; without them they are\n"
          "  skipped, unless OOMWATCH_REQUIRE_KERNEL=1, which makes that a failure.\n";
    return code;
}

std::optional<options> parse_options(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--smoke") o.mode = size_mode::smoke;
        else if (a == "--quick") o.mode = size_mode::quick;
        else if (a == "--full") o.mode = size_mode::full;
        else if (a == "--json" && i + 1 < argc) o.json_file = argv[++i];
        else if (a == "--only" && i + 1 < argc) {
            std::stringstream ss(argv[++i]);
            std::string s;
            while (std::getline(ss, s, ',')) {
                if (!all_sections.contains(s)) return std::nullopt;
                o.only.insert(s);
            }
        } else return std::nullopt;
    }
    if (o.only.empty()) o.only = all_sections;
    return o;
}

// ---- JSON out -------------------------------------------------------------------------

void pretty(std::ostream& os, const json::value& v, int indent = 0) {
    auto pad = [&](int n) { os << std::string(static_cast<std::size_t>(n), ' '); };
    if (v.is_object()) {
        const auto& o = v.as_object();
        if (o.empty()) {
            os << "{}";
            return;
        }
        os << "{\n";
        std::size_t i = 0;
        for (const auto& kv : o) {
            pad(indent + 2);
            os << json::serialize(json::value(kv.key())) << ": ";
            pretty(os, kv.value(), indent + 2);
            os << (++i < o.size() ? ",\n" : "\n");
        }
        pad(indent);
        os << "}";
    } else if (v.is_array()) {
        const auto& a = v.as_array();
        if (a.empty()) {
            os << "[]";
            return;
        }
        os << "[\n";
        for (std::size_t i = 0; i < a.size(); ++i) {
            pad(indent + 2);
            pretty(os, a[i], indent + 2);
            os << (i + 1 < a.size() ? ",\n" : "\n");
        }
        pad(indent);
        os << "]";
    } else {
        os << json::serialize(v);
    }
}

std::string utc_now() {
    auto t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

// The first three fields of /proc/loadavg: how busy the shared machine was.
std::string loadavg() {
    auto t = read_text("/proc/loadavg").value_or("");
    std::istringstream in(t);
    std::string a, b, c;
    in >> a >> b >> c;
    return a + " " + b + " " + c;
}

// ---- the benchmarks (in the child) ------------------------------------------------------

int orchestrate(const options& opt, run_context& rc) {
    json::object results;
    results["machine"] = json::object{{"nproc", cpu_count()},
                                      {"kernel", kernel_release()},
                                      {"cpu", cpu_model()},
                                      {"fd_limit", fd_limit()},
                                      {"inotify_max_user_instances", read_long(inotify_instances).value_or(-1)}};
    results["size"] = rc.sz.name;
    results["started"] = utc_now();
    results["loadavg_start"] = loadavg();
    if (!rc.v1_skip_reason.empty()) results["v1_skipped"] = rc.v1_skip_reason;
    const auto t0 = now_ns();

    auto section = [&](const char* key, const char* name, json::object (*fn)(run_context&)) {
        if (!opt.only.contains(name)) return;
        try {
            results[key] = fn(rc);
        } catch (const std::exception& e) {
            rc.fail(std::string(name) + ": " + e.what());
            results[key] = json::object{{"error", e.what()}};
        }
    };
    section("parsers", "parsers", run_parsers);
    section("latency_v2", "latency", run_latency_v2);
    section("latency_v1", "latency-v1", run_latency_v1);
    section("latency_v1_victims", "victims", run_latency_v1_victims);
    section("throughput", "throughput", run_throughput);
    section("scale", "scale", run_scale);
    section("tree", "tree", run_tree);

    results["seconds"] = static_cast<double>(now_ns() - t0) / 1e9;
    results["loadavg_end"] = loadavg();
    json::array fails;
    for (auto& f : rc.failures) fails.push_back(json::string(f));
    results["failures"] = std::move(fails);
    results["targets"] = evaluate_targets(results);

    print_report(results, std::cout);
    std::cout.flush();
    if (!opt.json_file.empty()) {
        std::ofstream out(opt.json_file);
        pretty(out, results);
        out << '\n';
        if (!out) {
            std::cerr << "cannot write " << opt.json_file << std::endl;
            return 1;
        }
        std::cerr << "results written to " << opt.json_file << std::endl;
    }
    return rc.failures.empty() ? 0 : 1;
}

// ---- the supervisor (the parent) ----------------------------------------------------------

volatile sig_atomic_t g_child = 0;

extern "C" void forward_signal(int sig) {
    if (g_child > 0) ::kill(static_cast<pid_t>(g_child), sig);
}

bool kernel_required() {
    const char* e = std::getenv("OOMWATCH_REQUIRE_KERNEL");
    return e && std::string_view(e) == "1";
}

} // namespace

int main(int argc, char** argv) {
    setup_logging();
    if (argc >= 3 && std::string_view(argv[1]) == "--worker" && std::string_view(argv[2]) == "scale")
        return scale_worker_main(argc, argv);
    if (argc >= 3 && std::string_view(argv[1]) == "--worker" && std::string_view(argv[2]) == "tree")
        return tree_worker_main(argc, argv);
    auto opt = parse_options(argc, argv);
    if (!opt) return usage(std::cerr, 2);

    run_context rc;
    rc.sz = sizes_for(opt->mode);
    rc.root = ::geteuid() == 0;
    rc.self_exe = fs::read_symlink("/proc/self/exe");
    const bool wants_v1 = opt->only.contains("latency-v1") || opt->only.contains("victims") || opt->only.contains("scale");

    // What the v1 parts need: root, and the memory controller on cgroup v1.
    boost::system::error_code hierarchy_ec;
    if (!rc.root) {
        rc.v1_skip_reason = "not running as root";
    } else if (auto h = oomwatch::find_memory_hierarchy(hierarchy_ec); hierarchy_ec) {
        rc.v1_skip_reason = "no memory cgroup hierarchy: " + hierarchy_ec.message();
    } else if (h.version != oomwatch::cgroup_version::v1) {
        rc.v1_skip_reason = "the memory controller is on cgroup v2 here, not v1";
    }
    std::optional<oomwatch::scratch::scratch_cgroup> scratch;
    if (rc.v1_skip_reason.empty() && wants_v1) {
        auto s = oomwatch::scratch::scratch_cgroup::create("oomwatch-bench", 0);
        if (s) scratch.emplace(std::move(*s));
        else rc.v1_skip_reason = "cannot create a scratch cgroup: " + s.error().message();
    }
    if (!rc.v1_skip_reason.empty() && wants_v1) {
        if (kernel_required())
            rc.fail("cgroup v1 parts cannot run (OOMWATCH_REQUIRE_KERNEL=1): " + rc.v1_skip_reason);
        else
            std::cerr << "skipping the cgroup v1 parts: " << rc.v1_skip_reason
                      << " (set OOMWATCH_REQUIRE_KERNEL=1 to fail instead)" << std::endl;
    }
    if (scratch) rc.v1_root = &*scratch;

    rc.tmp_root = tmpfs_base() / ("oomwatch-bench-" + std::to_string(::getpid()));
    std::error_code fec;
    fs::create_directories(rc.tmp_root, fec);
    if (fec) {
        std::cerr << "cannot create " << rc.tmp_root << ": " << fec.message() << std::endl;
        return 1;
    }
    const auto inotify_before = read_long(inotify_instances);

    std::cout.flush();
    std::cerr.flush();
    const pid_t child = ::fork();
    if (child < 0) {
        std::cerr << "fork: " << errno_text(errno) << std::endl;
        fs::remove_all(rc.tmp_root, fec);
        return 1;
    }
    if (child == 0) {
        int code = 1;
        try {
            code = orchestrate(*opt, rc);
        } catch (const std::exception& e) {
            std::cerr << "oomwatch_bench: " << e.what() << std::endl;
        }
        std::cout.flush();
        std::cerr.flush();
        std::_Exit(code);  // the parent's scratch cgroup and folder are the parent's to remove
    }

    g_child = child;
    struct sigaction sa{};
    sa.sa_handler = forward_signal;
    ::sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(sig, &sa, nullptr);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    g_child = 0;

    // Clean up after the child, whatever became of it.
    const bool normal = WIFEXITED(status);
    if (inotify_before) {
        auto now = read_long(inotify_instances);
        if (now && *now != *inotify_before) {
            write_long(inotify_instances, *inotify_before);
            std::cerr << "supervisor: restored fs.inotify.max_user_instances to " << *inotify_before << std::endl;
        }
    }
    fs::remove_all(rc.tmp_root, fec);
    if (scratch) {
        if (auto ec = scratch->remove())
            std::cerr << "supervisor: could not remove " << scratch->path() << ": " << ec.message() << std::endl;
    }
    if (!normal) {
        int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        std::cerr << "oomwatch_bench: the benchmark process died (signal " << sig << "); cleaned up" << std::endl;
        return 128 + sig;
    }
    return WEXITSTATUS(status);
}
