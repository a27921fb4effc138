// Scale: N cgroups watched by one contender in a fresh process (so that descriptors,
// resident memory, threads and wake-ups are its own): fds, memory per cgroup, time to
// arm, CPU time and wake-ups while idle, and exact counts when kills land on a random
// subset.
#include "harness.hpp"

#include "detail/parse.hpp"
#include "scratch/scratch_cgroup.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_to.hpp>

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>

namespace bench {

namespace fs = std::filesystem;

namespace {

const fs::path inotify_instances = "/proc/sys/fs/inotify/max_user_instances";

// ---- the worker ---------------------------------------------------------------------

struct worker_args {
    std::string contender;
    cgroup_version version = cgroup_version::v2;
    fs::path dir;
    std::size_t n = 0;
    double idle = 1;
    std::size_t kills = 0;
    std::uint64_t seed = 1;
    bool probe = false;
};

// v2: "kills" are rewrites of memory.events that add max, oom and oom_kill, like the
// kernel does for each OOM kill.
void v2_kills(const std::vector<fs::path>& dirs, const std::vector<std::size_t>& hit,
              const std::vector<std::uint32_t>& kills_of) {
    std::vector<oomwatch::memory_counters> cur(hit.size());
    for (std::size_t j = 0; j < hit.size(); ++j) {
        auto text = read_text(dirs[hit[j]] / "memory.events");
        auto c = text ? oomwatch::parse_memory_events(*text) : oomwatch::result<oomwatch::memory_counters>(
                                                                   boost::system::error_code(EIO, boost::system::system_category()));
        cur[j] = c ? *c : oomwatch::memory_counters{};
    }
    for (std::uint32_t round = 0; round < 3; ++round)
        for (std::size_t j = 0; j < hit.size(); ++j) {
            if (round >= kills_of[hit[j]]) continue;
            ++cur[j].max, ++cur[j].oom, ++cur[j].oom_kill;
            auto f = (dirs[hit[j]] / "memory.events").string();
            write_text(f.c_str(), events_text(cur[j]));
        }
}

} // namespace

// Bytes malloc has handed out and not taken back (all arenas, mmapped chunks included).
std::size_t heap_bytes() {
    auto m = ::mallinfo2();
    return m.uordblks + m.hblkhd;
}

void measure_idle(double seconds, json::object& out) {
    const auto sw0 = other_threads_switches();
    const auto cpu0 = cpu_seconds();
    const auto ti0 = now_ns();
    sleep_ns(static_cast<std::int64_t>(seconds * 1e9));
    const auto ti1 = now_ns();
    const auto cpu1 = cpu_seconds();
    const auto sw1 = other_threads_switches();
    const double idle_s = static_cast<double>(ti1 - ti0) / 1e9;
    out["threads"] = sw1.threads;
    out["idle_s"] = idle_s;
    out["idle_cpu_ms"] = (cpu1 - cpu0) * 1e3;
    out["idle_wakeups"] = sw1.voluntary - sw0.voluntary;
    out["idle_wakeups_per_10s"] = static_cast<double>(sw1.voluntary - sw0.voluntary) * 10.0 / idle_s;
}

void worker_exit(const json::object& o) {
    auto s = json::serialize(o);
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    std::fflush(stderr);
    // No destructors: the seed design's threads may be blocked for good; the process
    // exit releases everything.
    std::_Exit(0);
}

int scale_worker_main(int argc, char** argv) {
    worker_args a;
    for (int i = 2; i < argc; ++i) {
        std::string_view k = argv[i];
        auto val = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (k == "--contender") a.contender = val();
        else if (k == "--version") a.version = val() == "v1" ? cgroup_version::v1 : cgroup_version::v2;
        else if (k == "--dir") a.dir = val();
        else if (k == "--n") a.n = std::stoul(val());
        else if (k == "--idle") a.idle = std::stod(val());
        else if (k == "--kills") a.kills = std::stoul(val());
        else if (k == "--seed") a.seed = std::stoull(val());
        else if (k == "--probe") a.probe = true;
    }
    const bool v1 = a.version == cgroup_version::v1;
    json::object out{{"contender", a.contender}, {"version", v1 ? "v1" : "v2"}, {"n", a.n}};

    // Everything the harness itself needs is allocated before the baseline.
    std::vector<fs::path> dirs;
    dirs.reserve(a.n);
    for (std::size_t i = 0; i < a.n; ++i) dirs.push_back(a.dir / cgroup_name(i));
    tally_sink sink(1, a.n);
    contender_options o;
    o.version = a.version;
    auto ct = make_contender(a.contender, o);
    if (!ct) {
        out["error"] = "unknown contender";
        worker_exit(out);
    }
    std::vector<std::uint32_t> kills_of(a.n, 0);
    std::vector<std::size_t> order(a.n);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(a.seed);
    std::shuffle(order.begin(), order.end(), rng);
    (void)rss_kib(), (void)open_fds(), (void)other_threads_switches(), (void)cpu_seconds();

    const auto fds0 = open_fds();
    const auto rss0 = rss_kib();
    const auto heap0 = heap_bytes();
    const auto t0 = now_ns();
    auto ar = ct->arm(dirs, sink);
    const auto t1 = now_ns();
    const auto rss_armed = rss_kib();
    const auto heap_armed = heap_bytes();
    out["armed"] = ar.armed;
    if (!ar.ok()) {
        out["error"] = ar.error;
        out["error_errno"] = ar.error_errno;
        worker_exit(out);
    }
    if (a.probe) worker_exit(out);
    ct->start();
    const auto t2 = now_ns();
    sleep_ms(300);  // threads started, consumers waiting
    const auto rss1 = rss_kib();
    const auto heap1 = heap_bytes();
    const auto fds1 = open_fds();
    out["arm_ms"] = static_cast<double>(t2 - t0) / 1e6;
    out["arm_only_ms"] = static_cast<double>(t1 - t0) / 1e6;
    out["fds"] = static_cast<std::int64_t>(fds1) - static_cast<std::int64_t>(fds0);
    out["rss_kib_before"] = rss0;
    out["bytes_per_cgroup_armed"] = static_cast<double>(rss_armed - rss0) * 1024.0 / static_cast<double>(a.n);
    out["bytes_per_cgroup"] = static_cast<double>(rss1 - rss0) * 1024.0 / static_cast<double>(a.n);
    // malloc's own count of bytes in use: no page rounding, no allocator slack.
    out["heap_bytes_per_cgroup_armed"] = (static_cast<double>(heap_armed) - static_cast<double>(heap0)) / static_cast<double>(a.n);
    out["heap_bytes_per_cgroup"] = (static_cast<double>(heap1) - static_cast<double>(heap0)) / static_cast<double>(a.n);

    // Idle: nothing changes; what does watching cost?
    measure_idle(a.idle, out);

    // Kills on a random subset.
    std::vector<std::size_t> hit;
    std::uint64_t total_kills = 0;
    std::string kill_error;
    if (!v1) {
        std::size_t k = std::min(a.n, std::clamp<std::size_t>(a.n / 10, 3, 1000));
        hit.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
        for (auto i : hit) total_kills += kills_of[i] = 1 + static_cast<std::uint32_t>(rng() % 3);
        v2_kills(dirs, hit, kills_of);
    } else {
        std::size_t spread = std::max<std::size_t>(1, std::min(a.n, a.kills > 1 ? a.kills - 1 : 1));
        for (std::size_t j = 0; j < a.kills; ++j) {
            auto i = order[j % spread];
            if (kills_of[i] == 0) {
                hit.push_back(i);
                if (int e = write_long(dirs[i] / "memory.limit_in_bytes", 32l << 20)) {
                    kill_error = "cannot set a limit: " + errno_text(e);
                    break;
                }
            }
            auto v = oomwatch::scratch::victim::spawn(dirs[i], 256u << 20);
            if (!v) {
                kill_error = "cannot start a victim: " + v.error().message();
                break;
            }
            auto st = v->wait(std::chrono::seconds(10));
            if (!st || !oomwatch::scratch::victim::killed_by_sigkill(*st)) {
                kill_error = "a victim was not OOM-killed";
                break;
            }
            ++kills_of[i];
            ++total_kills;
        }
    }
    const bool counts = a.contender != "seed";
    auto delivered_all = [&] {
        for (auto i : hit) {
            auto& c = sink.at(0, i);
            if (counts ? c.oom_kill.load() < kills_of[i] : c.events.load() == 0) return false;
        }
        return true;
    };
    const auto tw = now_ns();
    while (!delivered_all() && now_ns() - tw < 10'000'000'000) sleep_ms(1);
    out["delivery_ms"] = static_cast<double>(now_ns() - tw) / 1e6;
    sleep_ms(v1 ? 1500 : 300);  // anything more would be an over-count
    std::uint64_t d_kill = 0, d_events = 0, d_oom = 0;
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < a.n; ++i) {
        auto& c = sink.at(0, i);
        d_kill += c.oom_kill.load();
        d_oom += c.oom.load();
        d_events += c.events.load();
        bool ok = c.oom_kill.load() == kills_of[i] && (v1 ? c.oom.load() >= kills_of[i] : c.oom.load() == kills_of[i]);
        if (!ok) ++mismatches;
    }
    out["hit_cgroups"] = hit.size();
    out["kills"] = total_kills;
    out["delivered_oom_kill"] = d_kill;
    out["delivered_oom"] = d_oom;
    out["delivered_events"] = d_events;
    if (!kill_error.empty()) out["kill_error"] = kill_error;
    if (counts) {
        out["exact"] = mismatches == 0 && kill_error.empty();
        out["mismatched_cgroups"] = mismatches;
    } else {
        out["exact"] = nullptr;
    }
    worker_exit(out);
}

// ---- the orchestrator ---------------------------------------------------------------

worker_result run_worker(const run_context& rc, const std::string& kind, const std::vector<std::string>& args,
                         int timeout_s) {
    worker_result r;
    std::vector<std::string> full{rc.self_exe.string(), "--worker", kind};
    full.insert(full.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : full) argv.push_back(s.data());
    argv.push_back(nullptr);
    int pfd[2];
    if (::pipe2(pfd, O_CLOEXEC) != 0) {
        r.failure = "pipe: " + errno_text(errno);
        return r;
    }
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        r.failure = "fork: " + errno_text(errno);
        ::close(pfd[0]), ::close(pfd[1]);
        return r;
    }
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the harness
        if (::getppid() != parent) ::_exit(127);
        ::dup2(pfd[1], STDOUT_FILENO);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(pfd[1]);
    std::string text;
    const auto deadline = now_ns() + std::int64_t{timeout_s} * 1'000'000'000;
    bool timed_out = false;
    for (;;) {
        auto left = (deadline - now_ns()) / 1'000'000;
        if (left <= 0) {
            timed_out = true;
            break;
        }
        pollfd p{pfd[0], POLLIN, 0};
        int n = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, 1000)));
        if (n <= 0) continue;
        char buf[4096];
        ssize_t got = ::read(pfd[0], buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        text.append(buf, static_cast<std::size_t>(got));
    }
    ::close(pfd[0]);
    if (timed_out) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) {
        r.failure = "timed out after " + std::to_string(timeout_s) + " s";
        return r;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        r.failure = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                        : "exit status " + std::to_string(WEXITSTATUS(status));
        return r;
    }
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object()) {
        r.failure = "unreadable output: " + text.substr(0, 200);
        return r;
    }
    r.o = std::move(v.as_object());
    return r;
}

namespace {

/// Raises fs.inotify.max_user_instances and puts the old value back, on every path
/// out (the supervisor process restores it too if this process dies).
class inotify_limit_raise {
public:
    explicit inotify_limit_raise(long to) {
        auto old = read_long(inotify_instances);
        if (!old) return;
        old_ = *old;
        if (to <= old_) return;
        if (int e = write_long(inotify_instances, to)) {
            error_ = errno_text(e);
            return;
        }
        raised_ = true;
    }
    ~inotify_limit_raise() {
        if (raised_) write_long(inotify_instances, old_);
    }
    inotify_limit_raise(const inotify_limit_raise&) = delete;
    inotify_limit_raise& operator=(const inotify_limit_raise&) = delete;
    bool raised() const { return raised_; }
    long old_value() const { return old_; }
    const std::string& error() const { return error_; }

private:
    long old_ = 0;
    bool raised_ = false;
    std::string error_;
};

void say(const std::string& s) { std::cerr << "  " << s << std::endl; }

json::object one_run(run_context& rc, const std::string& which, cgroup_version v, const fs::path& dir, std::size_t n,
                     bool probe = false) {
    std::vector<std::string> args{"--contender", which, "--version", v == cgroup_version::v1 ? "v1" : "v2",
                                  "--dir", dir.string(), "--n", std::to_string(n),
                                  "--idle", std::to_string(rc.sz.idle_seconds),
                                  "--kills", std::to_string(rc.sz.scale_v1_kills), "--seed", std::to_string(n * 7 + 1)};
    if (probe) args.push_back("--probe");
    auto r = run_worker(rc, "scale", args, 300);
    if (!r.failure.empty()) {
        rc.fail("scale " + std::string(v == cgroup_version::v1 ? "v1" : "v2") + " N=" + std::to_string(n) + " " + which +
                ": worker " + r.failure);
        return {{"contender", which}, {"n", n}, {"error", "worker " + r.failure}};
    }
    return std::move(r.o);
}

void check_row(run_context& rc, const json::object& row, const std::string& what) {
    if (row.contains("error")) {
        if (row.at("contender").as_string() != "seed") rc.fail(what + ": " + json::value_to<std::string>(row.at("error")));
        return;
    }
    if (auto* e = row.if_contains("exact"); e && e->is_bool() && !e->as_bool())
        rc.fail(what + ": counts not exact (" + json::serialize(row) + ")");
}

json::object measure(run_context& rc, const std::string& which, cgroup_version v, const fs::path& dir, std::size_t n) {
    const std::string what = std::string("scale ") + (v == cgroup_version::v1 ? "v1" : "v2") + " N=" + std::to_string(n) +
                             " " + which;
    if (which == "seed") {
        // Two descriptors (inotify + epoll) per v2 cgroup, one eventfd per v1 cgroup,
        // plus the process's own few; the limit here cannot be raised.
        const std::size_t per = v == cgroup_version::v2 ? 2 : 1;
        const std::size_t limit = fd_limit();
        if (per * n + 16 > limit) {
            std::string why = "cannot run: needs " + std::to_string(per * n) + " fds (" + std::to_string(per) +
                              " per cgroup), the process limit is " + std::to_string(limit);
            say(what + ": " + why);
            return {{"contender", which}, {"n", n}, {"cannot_run", why}};
        }
    }
    say(what + " ...");
    auto row = one_run(rc, which, v, dir, n);
    if (which == "seed" && v == cgroup_version::v2 && row.contains("error") && row.contains("error_errno") &&
        row.at("error_errno").to_number<int>() == EMFILE) {
        // The per-user limit of inotify instances (128 by default) stops it.
        json::object at_default{{"armed", row.at("armed")}, {"error", row.at("error")}};
        auto old = read_long(inotify_instances).value_or(0);
        at_default["max_user_instances"] = old;
        say(what + ": with the default inotify limit (max_user_instances=" + std::to_string(old) + ") it fails at cgroup #" +
            std::to_string(json::value_to<std::size_t>(row.at("armed")) + 1) + ": " +
            json::value_to<std::string>(row.at("error")));
        if (!rc.root) {
            row["cannot_run"] = "the inotify instance limit stops it and only root can raise it";
            row["at_default_limit"] = std::move(at_default);
            return row;
        }
        const long to = old + static_cast<long>(n) + 64;
        inotify_limit_raise raise(to);
        if (!raise.raised()) {
            row["cannot_run"] = "cannot raise max_user_instances: " + raise.error();
            row["at_default_limit"] = std::move(at_default);
            return row;
        }
        say(what + ": RAISED fs.inotify.max_user_instances from " + std::to_string(old) + " to " + std::to_string(to) +
            " for the seed design (restored right after)");
        row = one_run(rc, which, v, dir, n);
        row["at_default_limit"] = std::move(at_default);
        row["raised_max_user_instances_to"] = to;
        // `raise` restores the old value here.
    }
    check_row(rc, row, what);
    return row;
}

} // namespace

json::object run_scale(run_context& rc) {
    const auto& sz = rc.sz;
    static const char* const contenders[] = {"floor", "seed", "oomwatch"};
    std::cerr << "scale: v2 N in {";
    for (auto n : sz.scale_v2) std::cerr << ' ' << n;
    std::cerr << " }, idle " << sz.idle_seconds << " s each" << std::endl;
    json::array v2;
    for (auto n : sz.scale_v2) {
        fake_tree tree(rc.tmp_root / ("scale-v2-" + std::to_string(n)), n);
        json::array rows;
        for (auto* c : contenders) rows.push_back(measure(rc, c, cgroup_version::v2, tree.parent(), n));
        v2.push_back(json::object{{"n", n}, {"contenders", std::move(rows)}});
    }
    json::object out{{"idle_seconds", sz.idle_seconds}, {"v2", std::move(v2)}};
    out["inotify_max_user_instances"] = read_long(inotify_instances).value_or(-1);
    out["fd_limit"] = fd_limit();

    if (!rc.v1_root) {
        out["v1"] = json::object{{"skipped", rc.v1_skip_reason}};
        return out;
    }
    std::size_t max_n = 0;
    for (auto n : sz.scale_v1) max_n = std::max(max_n, n);
    std::cerr << "scale: v1, creating " << max_n << " real cgroups under " << rc.v1_root->path() << std::endl;
    std::vector<oomwatch::scratch::scratch_cgroup> cgs;
    cgs.reserve(max_n);
    json::array v1;
    for (std::size_t i = 0; i < max_n; ++i) {
        auto c = rc.v1_root->create_child(cgroup_name(i), 0);
        if (!c) {
            rc.fail("scale v1: cannot create cgroup " + std::to_string(i) + ": " + c.error().message());
            out["v1"] = json::object{{"skipped", "cannot create cgroups: " + c.error().message()}};
            return out;
        }
        cgs.push_back(std::move(*c));
    }
    for (auto n : sz.scale_v1) {
        json::array rows;
        for (auto* c : contenders) rows.push_back(measure(rc, c, cgroup_version::v1, rc.v1_root->path(), n));
        v1.push_back(json::object{{"n", n}, {"contenders", std::move(rows)}});
    }
    out["v1"] = std::move(v1);
    out["v1_kills"] = sz.scale_v1_kills;
    // Children first: cgs are removed here (any victim left is killed).
    cgs.clear();
    return out;
}

} // namespace bench
