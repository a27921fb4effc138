#include "bench_util.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <istream>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace bench {

namespace fs = std::filesystem;

std::int64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleep_ns(std::int64_t ns) noexcept {
    if (ns <= 0) return;
    timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
    while (::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}

// ---- process metrics ----------------------------------------------------------------

std::size_t open_fds() {
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return 0;
    std::size_t n = 0;
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') ++n;
    ::closedir(d);
    return n - 1;  // the directory stream's own descriptor
}

namespace {

// The value of "Key:" in a /proc status-like text, or empty.
std::optional<std::uint64_t> status_field(std::string_view text, std::string_view key) {
    std::size_t pos = 0;
    while (pos < text.size()) {
        auto nl = text.find('\n', pos);
        auto line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ':') {
            auto v = line.substr(key.size() + 1);
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
            std::uint64_t out = 0;
            auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
            if (ec == std::errc{}) return out;
            return std::nullopt;
        }
    }
    return std::nullopt;
}

// A small read of a /proc file into a stack buffer: no allocation, so measuring memory
// does not disturb it.
std::size_t read_small(const char* path, char* buf, std::size_t size) noexcept {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    std::size_t got = 0;
    while (got + 1 < size) {
        ssize_t n = ::read(fd, buf + got, size - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    buf[got] = '\0';
    return got;
}

} // namespace

long rss_kib() {
    char buf[4096];
    auto n = read_small("/proc/self/status", buf, sizeof buf);
    auto v = status_field(std::string_view(buf, n), "VmRSS");
    return v ? static_cast<long>(*v) : -1;
}

double cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
    return tv(ru.ru_utime) + tv(ru.ru_stime);
}

switch_count other_threads_switches() {
    switch_count c;
    const auto self = static_cast<long>(::syscall(SYS_gettid));
    DIR* d = ::opendir("/proc/self/task");
    if (!d) return c;
    char path[320];
    char buf[4096];
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        if (std::strtol(e->d_name, nullptr, 10) == self) continue;
        std::snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        auto n = read_small(path, buf, sizeof buf);
        if (n == 0) continue;  // the thread just ended
        std::string_view text(buf, n);
        c.voluntary += status_field(text, "voluntary_ctxt_switches").value_or(0);
        c.involuntary += status_field(text, "nonvoluntary_ctxt_switches").value_or(0);
        ++c.threads;
    }
    ::closedir(d);
    return c;
}

std::size_t inotify_watches() {
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return 0;
    std::size_t n = 0;
    char path[320], link[64];
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        auto len = ::readlink(path, link, sizeof link - 1);
        if (len <= 0) continue;
        if (std::string_view(link, static_cast<std::size_t>(len)) != "anon_inode:inotify") continue;
        std::snprintf(path, sizeof path, "/proc/self/fdinfo/%s", e->d_name);
        auto text = read_text(path);
        if (!text) continue;
        for (std::size_t pos = 0; (pos = text->find("inotify wd:", pos)) != std::string::npos; pos += 11) ++n;
    }
    ::closedir(d);
    return n;
}

double thread_cpu_seconds(const std::thread& t) {
    if (!t.joinable()) return 0;
    clockid_t cid{};
    if (::pthread_getcpuclockid(const_cast<std::thread&>(t).native_handle(), &cid) != 0) return 0;
    timespec ts{};
    ::clock_gettime(cid, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::size_t fd_limit() {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur == RLIM_INFINITY ? static_cast<std::size_t>(1) << 30 : static_cast<std::size_t>(rl.rlim_cur);
}

// ---- statistics ---------------------------------------------------------------------

summary summarize(std::vector<double>& v) {
    summary s;
    s.n = v.size();
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    auto rank = [&](double q) {
        auto r = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
        return v[std::clamp<std::size_t>(r, 1, v.size()) - 1];
    };
    s.min = v.front();
    s.max = v.back();
    s.p50 = rank(0.50);
    s.p99 = rank(0.99);
    s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    return s;
}

// ---- files --------------------------------------------------------------------------

std::optional<std::string> read_text(const fs::path& p) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            ::close(fd);
            return std::nullopt;
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

ssize_t read_into(const char* path, char* buf, std::size_t size) noexcept {
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    std::size_t got = 0;
    for (;;) {
        ssize_t n = ::read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            ::close(fd);
            return -e;
        }
        got += static_cast<std::size_t>(n);
        if (n == 0 || got == size) break;
    }
    ::close(fd);
    return static_cast<ssize_t>(got);
}

int write_text(const char* path, std::string_view text) noexcept {
    int fd = ::open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    int err = 0;
    for (;;) {
        ssize_t n = ::write(fd, text.data(), text.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) err = errno;
        else if (static_cast<std::size_t>(n) != text.size()) err = EIO;
        break;
    }
    ::close(fd);
    return err;
}

std::optional<long> read_long(const fs::path& p) {
    auto t = read_text(p);
    if (!t) return std::nullopt;
    long v = 0;
    auto b = t->data();
    auto e = t->data() + t->size();
    while (b != e && (*b == ' ' || *b == '\n')) ++b;
    auto [ptr, ec] = std::from_chars(b, e, v);
    if (ec != std::errc{}) return std::nullopt;
    return v;
}

int write_long(const fs::path& p, long v) noexcept {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    if (ec != std::errc{}) return EINVAL;
    int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = 0;
    auto len = static_cast<std::size_t>(end - buf);
    ssize_t n;
    do n = ::write(fd, buf, len);
    while (n < 0 && errno == EINTR);
    if (n < 0) err = errno;
    ::close(fd);
    return err;
}

// ---- the contenders' parsers -------------------------------------------------------

min_counters parse_min_counters(const char* p, std::size_t n) noexcept {
    min_counters r;
    const char* end = p + n;
    while (p < end) {
        const char* k = p;
        while (p < end && *p != ' ') ++p;
        std::string_view key(k, static_cast<std::size_t>(p - k));
        if (p < end) ++p;
        std::uint64_t v = 0;
        bool digits = false;
        while (p < end && *p >= '0' && *p <= '9') {
            v = v * 10 + static_cast<std::uint64_t>(*p++ - '0');
            digits = true;
        }
        while (p < end && *p != '\n') ++p;
        if (p < end) ++p;
        if (!digits) continue;
        if (key == "oom") r.oom = v, r.any = true;
        else if (key == "oom_kill") r.oom_kill = v, r.any = true;
        else if (key == "oom_group_kill") r.oom_group_kill = v;
        else if (key == "under_oom") r.under_oom = v;
    }
    return r;
}

std::optional<long> seed_scan_oom_kill(std::istream& in) {
    std::string line;
    long count = 0;
    while (std::getline(in, line)) {
        auto b = line.find_first_not_of(" \t\r");
        auto e = line.find_last_not_of(" \t\r");
        if (b == std::string::npos) continue;
        line = line.substr(b, e - b + 1);
        if (line.rfind("oom_kill", 0) == 0) {
            if (std::sscanf(line.c_str(), "oom_kill %ld", &count) != 1) return std::nullopt;
            break;
        }
    }
    if (in.bad()) return std::nullopt;
    return count;
}

// ---- fake cgroups -------------------------------------------------------------------

std::size_t events_text(const oomwatch::memory_counters& c, char* buf, std::size_t size) noexcept {
    char* p = buf;
    char* end = buf + size;
    auto put = [&](std::string_view key, std::uint64_t v) {
        if (static_cast<std::size_t>(end - p) < key.size() + 23) return;
        std::memcpy(p, key.data(), key.size());
        p += key.size();
        *p++ = ' ';
        p = std::to_chars(p, end, v).ptr;
        *p++ = '\n';
    };
    put("low", c.low);
    put("high", c.high);
    put("max", c.max);
    put("oom", c.oom);
    put("oom_kill", c.oom_kill);
    put("oom_group_kill", c.oom_group_kill);
    return static_cast<std::size_t>(p - buf);
}

std::string events_text(const oomwatch::memory_counters& c) {
    char buf[256];
    return std::string(buf, events_text(c, buf, sizeof buf));
}

int write_counters(const char* path, const oomwatch::memory_counters& c) noexcept {
    char buf[256];
    return write_text(path, std::string_view(buf, events_text(c, buf, sizeof buf)));
}

void write_fake_counters(const std::string& dir, const oomwatch::memory_counters& c) {
    for (const char* f : {"/memory.events", "/memory.events.local"}) {
        auto p = dir + f;
        if (int e = write_counters(p.c_str(), c)) throw std::system_error(e, std::generic_category(), p);
    }
}

oomwatch::memory_counters initial_counters(std::size_t i) {
    oomwatch::memory_counters c;
    c.max = (i % 7) * 3;
    c.oom = i % 3;
    c.oom_kill = i % 3;  // a third of them had kills before anyone watched
    return c;
}

std::string cgroup_name(std::size_t i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "c%05zu", i);
    return buf;
}

fs::path tmpfs_base() {
    if (fs::is_directory("/dev/shm")) return "/dev/shm";
    return fs::temp_directory_path();
}

scratch_dir::~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
}

// Should it throw, base_ (made first) removes what it made.
fake_tree::fake_tree(fs::path base, std::size_t n) : base_(std::move(base)), parent_(base_.path() / "parent"), n_(n) {
    fs::create_directories(parent_);
    for (std::size_t i = 0; i < n; ++i) {
        auto d = dir(i);
        fs::create_directory(d);
        write_fake_counters(d.string(), initial_counters(i));
    }
}

std::vector<fs::path> fake_tree::dirs() const {
    std::vector<fs::path> v;
    v.reserve(n_);
    for (std::size_t i = 0; i < n_; ++i) v.push_back(dir(i));
    return v;
}

// ---- /dev/kmsg ----------------------------------------------------------------------

std::optional<kmsg_record> parse_kmsg_record(std::string_view rec) noexcept {
    auto semi = rec.find(';');
    if (semi == std::string_view::npos) return std::nullopt;
    auto prefix = rec.substr(0, semi);
    std::string_view fields[4];
    std::size_t nf = 0;
    while (nf < 4) {
        auto comma = prefix.find(',');
        fields[nf++] = prefix.substr(0, comma);
        if (comma == std::string_view::npos) break;
        prefix.remove_prefix(comma + 1);
    }
    if (nf < 4) return std::nullopt;
    kmsg_record r;
    auto num = [](std::string_view s, auto& out) {
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
        return ec == std::errc{} && p == s.data() + s.size();
    };
    if (!num(fields[1], r.seq) || !num(fields[2], r.usec)) return std::nullopt;
    auto msg = rec.substr(semi + 1);
    if (auto nl = msg.find('\n'); nl != std::string_view::npos) msg = msg.substr(0, nl);  // continuation lines follow
    r.message = msg;
    return r;
}

std::optional<pid_t> parse_memcg_kill(std::string_view message) noexcept {
    constexpr std::string_view head = "Memory cgroup out of memory: Killed process ";
    if (message.substr(0, head.size()) != head) return std::nullopt;
    message.remove_prefix(head.size());
    pid_t pid = 0;
    auto [p, ec] = std::from_chars(message.data(), message.data() + message.size(), pid);
    if (ec != std::errc{} || p == message.data()) return std::nullopt;
    return pid;
}

kmsg_reader::kmsg_reader() {
    fd_ = ::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) {
        error_ = "/dev/kmsg: " + errno_text(errno);
        return;
    }
    ::lseek(fd_, 0, SEEK_END);  // skip the records written before us
}

kmsg_reader::~kmsg_reader() {
    if (fd_ >= 0) ::close(fd_);
}

bool kmsg_reader::read_record(std::string& out, int timeout_ms) {
    const auto deadline = now_ns() + std::int64_t{timeout_ms} * 1'000'000;
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n > 0) {
            out.assign(buf, static_cast<std::size_t>(n));
            return true;
        }
        if (n < 0 && errno == EPIPE) continue;  // records were overwritten before we read them
        if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
        auto left = (deadline - now_ns()) / 1'000'000;
        if (left <= 0) return false;
        pollfd p{fd_, POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, 1000)));
    }
}

std::optional<std::int64_t> kmsg_reader::find_kill(pid_t pid, int timeout_ms, bool* reported) {
    if (fd_ < 0) return std::nullopt;
    const auto deadline = now_ns() + std::int64_t{timeout_ms} * 1'000'000;
    const std::string report_pid = ",pid=" + std::to_string(pid) + ",";
    if (reported) *reported = false;
    std::string rec;
    for (;;) {
        auto left = (deadline - now_ns()) / 1'000'000;
        if (left <= 0 || !read_record(rec, static_cast<int>(left))) return std::nullopt;
        auto r = parse_kmsg_record(rec);
        if (!r) continue;
        if (auto p = parse_memcg_kill(r->message); p && *p == pid) return r->usec;
        if (reported && r->message.starts_with("oom-kill:") && r->message.find(report_pid) != std::string_view::npos)
            *reported = true;
    }
}

std::optional<std::int64_t> kmsg_reader::calibrate(std::int64_t& uncertainty_ns) {
    if (fd_ < 0) return std::nullopt;
    int w = ::open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (w < 0) return std::nullopt;
    std::optional<std::int64_t> best;
    std::int64_t best_width = 0;
    for (int i = 0; i < 5; ++i) {
        char marker[96];
        int len = std::snprintf(marker, sizeof marker, "oomwatch-bench[%d]: clock calibration %d\n",
                                static_cast<int>(::getpid()), i);
        auto a = now_ns();
        auto n = ::write(w, marker, static_cast<std::size_t>(len));
        auto b = now_ns();
        if (n != len) break;
        // Find our record (other records may come first).
        std::string rec;
        std::string_view want(marker, static_cast<std::size_t>(len - 1));
        while (read_record(rec, 1000)) {
            auto r = parse_kmsg_record(rec);
            if (!r || r->message != want) continue;
            // The kernel stamped the record between a and b: kmsg = mono + offset.
            auto lo = r->usec * 1000 - b;
            auto hi = r->usec * 1000 + 999 - a;
            if (!best || hi - lo < best_width) {
                best = (lo + hi) / 2;
                best_width = hi - lo;
            }
            break;
        }
    }
    ::close(w);
    uncertainty_ns = best_width / 2;
    return best;
}

// ---- misc ---------------------------------------------------------------------------

std::string errno_text(int e) {
    return std::string(std::strerror(e)) + " (" + std::to_string(e) + ")";
}

std::string kernel_release() {
    utsname u{};
    if (::uname(&u) != 0) return "?";
    return std::string(u.sysname) + " " + u.release + " " + u.machine;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            auto c = line.find(':');
            if (c != std::string::npos) return line.substr(line.find_first_not_of(" \t", c + 1));
        }
    }
    return "?";
}

unsigned cpu_count() {
    return std::max(1u, std::thread::hardware_concurrency());
}

} // namespace bench
