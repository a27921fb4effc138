// Scratch cgroups and OOM victims (see scratch_cgroup.hpp).
#include "scratch/scratch_cgroup.hpp"

#include <oomwatch/cgroup.hpp>
#include <oomwatch/error.hpp>

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"

#include <boost/system/errc.hpp>

#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace oomwatch::scratch {

namespace fs = std::filesystem;
using boost::system::error_code;
namespace errc = boost::system::errc;

namespace {

error_code errno_code(int e = errno) noexcept {
    return {e, boost::system::system_category()};
}

// Closes an fd on scope exit, so no path leaks one.
class fd_guard {
public:
    explicit fd_guard(int fd = -1) noexcept : fd_(fd) {}
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    ~fd_guard() { reset(); }
    int get() const noexcept { return fd_; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_;
};

error_code write_whole(const fs::path& file, std::string_view value) {
    fd_guard fd(::open(file.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.get() < 0) return errno_code();
    // cgroup control files take one write(2) per value; a short write would split it.
    for (;;) {
        ssize_t n = ::write(fd.get(), value.data(), value.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_code();
        if (static_cast<std::size_t>(n) != value.size()) return make_error_code(errc::io_error);
        return {};
    }
}

result<std::string> read_whole(const fs::path& file) {
    fd_guard fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return errno_code();
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_code();
        if (n == 0) return text;
        text.append(buf, static_cast<std::size_t>(n));
    }
}

bool path_exists(const fs::path& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0;
}

result<cgroup_version> version_of(const fs::path& dir) {
    struct statfs sfs {};
    if (::statfs(dir.c_str(), &sfs) != 0) return errno_code();
    if (sfs.f_type == CGROUP_SUPER_MAGIC) return cgroup_version::v1;
    if (sfs.f_type == CGROUP2_SUPER_MAGIC) return cgroup_version::v2;
    return make_error_code(error::not_a_cgroup);
}

// v2: children of `dir` only get a memory controller when `dir` delegates it.
error_code enable_memory_controller(const fs::path& dir) {
    auto text = read_whole(dir / "cgroup.subtree_control");
    if (!text) return text.error();
    std::string_view rest = *text;
    while (!rest.empty()) {
        auto sp = rest.find_first_of(" \n");
        if (rest.substr(0, sp) == "memory") return {};
        if (sp == std::string_view::npos) break;
        rest.remove_prefix(sp + 1);
    }
    return write_whole(dir / "cgroup.subtree_control", "+memory");
}

error_code set_limit_at(const fs::path& dir, cgroup_version v, std::uint64_t limit_bytes) {
    if (v == cgroup_version::v2) {
        auto value = limit_bytes == 0 ? std::string("max") : std::to_string(limit_bytes);
        if (auto ec = write_whole(dir / "memory.max", value)) return ec;
        // No swap accounting (or no swap controller): nothing to limit.
        auto ec = write_whole(dir / "memory.swap.max", "0");
        return ec == errc::no_such_file_or_directory ? error_code{} : ec;
    }
    auto value = limit_bytes == 0 ? std::string("-1") : std::to_string(limit_bytes);
    const auto mem = dir / "memory.limit_in_bytes";
    const auto memsw = dir / "memory.memsw.limit_in_bytes";
    const bool has_memsw = path_exists(memsw);
    // The kernel keeps limit <= memsw limit at every step: when raising, memsw goes
    // first, and the first write of mem fails with EINVAL.
    auto ec = write_whole(mem, value);
    if (ec == errc::invalid_argument && has_memsw) {
        if (auto ec2 = write_whole(memsw, value)) return ec2;
        return write_whole(mem, value);
    }
    if (ec) return ec;
    return has_memsw ? write_whole(memsw, value) : error_code{};
}

result<std::vector<pid_t>> read_procs(const fs::path& dir) {
    auto text = read_whole(dir / "cgroup.procs");
    if (!text) return text.error();
    std::vector<pid_t> pids;
    long long cur = -1;
    for (char c : *text) {
        if (c >= '0' && c <= '9') {
            cur = (cur < 0 ? 0 : cur * 10) + (c - '0');
            if (cur > INT_MAX) return make_error_code(error::malformed_proc_file);
        } else if (cur >= 0) {
            pids.push_back(static_cast<pid_t>(cur));
            cur = -1;
        }
    }
    if (cur >= 0) pids.push_back(static_cast<pid_t>(cur));
    return pids;
}

using clock = std::chrono::steady_clock;

// Kills the processes of one cgroup (not its children) and waits until it is empty.
error_code empty_cgroup(const fs::path& dir, cgroup_version v, clock::time_point deadline) {
    // v2 (5.14+): one write kills everything, including processes forking meanwhile.
    bool killed_all = false;
    if (v == cgroup_version::v2) {
        auto ec = write_whole(dir / "cgroup.kill", "1");
        if (ec == errc::no_such_file_or_directory) ec = {};  // older kernel: kill one by one
        else if (ec) return ec;
        else killed_all = true;
    }
    const pid_t self = ::getpid();
    for (;;) {
        auto pids = read_procs(dir);
        if (!pids) return pids.error();
        if (pids->empty()) return {};
        for (pid_t pid : *pids) {
            if (pid == self) return make_error_code(errc::device_or_resource_busy);  // never kill ourselves
            if (!killed_all) ::kill(pid, SIGKILL);
        }
        // v1 offers no event for "cgroup became empty": poll.
        if (clock::now() >= deadline) return make_error_code(errc::timed_out);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

// Children first: a cgroup with child cgroups cannot be removed.
error_code remove_tree(const fs::path& dir, cgroup_version v, clock::time_point deadline) {
    std::error_code iec;
    std::vector<fs::path> children;
    for (fs::directory_iterator it(dir, iec), end; !iec && it != end; it.increment(iec)) {
        if (it->is_directory(iec) && !it->is_symlink(iec)) children.push_back(it->path());
    }
    if (iec) {
        if (iec == std::errc::no_such_file_or_directory) return {};  // already gone
        return {iec.value(), boost::system::system_category()};
    }
    for (const auto& child : children) {
        if (auto ec = remove_tree(child, v, deadline)) return ec;
    }
    if (auto ec = empty_cgroup(dir, v, deadline)) {
        return ec == errc::no_such_file_or_directory ? error_code{} : ec;
    }
    for (;;) {
        if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
        // EBUSY can linger a moment after the last process left.
        if (errno != EBUSY || clock::now() >= deadline) return errno_code();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

result<fs::path> default_parent(cgroup_version& version) {
    if (const char* env = std::getenv("OOMWATCH_SCRATCH_PARENT"); env && *env) {
        fs::path p(env);
        if (!p.is_absolute()) return make_error_code(errc::invalid_argument);
        auto v = version_of(p);
        if (!v) return v.error();
        version = *v;
        return p;
    }
    auto h = detail::find_memory_hierarchy();
    if (!h) return h.error();
    version = h->version;
    if (h->version == cgroup_version::v1) {
        auto own = detail::memory_cgroup_of(::getpid());
        if (!own) return own.error();
        return own->directory;
    }
    // v2 "no internal processes": our own cgroup holds processes, so use a sibling,
    // unless we are in the root, which is exempt. (memory_cgroup_of refuses the root
    // with error::root_cgroup: it has no memory.events. So read /proc/self/cgroup here.)
    auto text = read_whole("/proc/self/cgroup");
    if (!text) return text.error();
    auto entries = parse_proc_cgroup(*text);
    if (!entries) return entries.error();
    auto rel = memory_cgroup_path(*entries, true);
    if (!rel) return make_error_code(error::no_memory_hierarchy);
    if (*rel == "/") return h->mount_point;
    auto own = detail::memory_cgroup_of(::getpid());
    if (!own) return own.error();
    auto dir = own->directory.lexically_normal();
    if (!dir.has_filename()) dir = dir.parent_path();
    return dir.parent_path();
}

// mkdir plus limit; removes the directory again when the limit cannot be set.
error_code make_cgroup(const fs::path& dir, cgroup_version v, std::uint64_t limit_bytes) {
    if (::mkdir(dir.c_str(), 0755) != 0) return errno_code();
    if (limit_bytes != 0) {
        if (auto ec = set_limit_at(dir, v, limit_bytes)) {
            ::rmdir(dir.c_str());
            return ec;
        }
    }
    return {};
}

std::atomic<unsigned> suffix_counter{0};

} // namespace

std::string unique_suffix() {
    return std::to_string(::getpid()) + "-" + std::to_string(suffix_counter.fetch_add(1));
}

namespace {

// The pid in "oomwatch-...-<pid>-<counter>", or nothing when the name is not of that form.
std::optional<pid_t> creator_of(const std::string& name) {
    if (!name.starts_with("oomwatch-")) return std::nullopt;
    const auto last = name.rfind('-');
    if (last == std::string::npos || last == 0) return std::nullopt;
    const auto before = name.rfind('-', last - 1);
    if (before == std::string::npos) return std::nullopt;
    auto number = [](std::string_view text) -> std::optional<long> {
        long v = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
        return v;
    };
    const auto pid = number(std::string_view(name).substr(before + 1, last - before - 1));
    if (!pid || !number(std::string_view(name).substr(last + 1)) || *pid <= 0) return std::nullopt;
    return static_cast<pid_t>(*pid);
}

} // namespace

std::size_t remove_leftovers() {
    cgroup_version v = cgroup_version::v1;
    auto parent = default_parent(v);
    if (!parent) return 0;
    std::size_t removed = 0;
    std::error_code iec;
    std::vector<fs::path> stale;
    for (fs::directory_iterator it(*parent, iec), end; !iec && it != end; it.increment(iec)) {
        const auto pid = creator_of(it->path().filename().string());
        // ESRCH: no such process. EPERM means one lives (another user's): keep it.
        if (pid && *pid != ::getpid() && ::kill(*pid, 0) != 0 && errno == ESRCH) stale.push_back(it->path());
    }
    for (const auto& dir : stale)
        if (!remove_tree(dir, v, clock::now() + std::chrono::seconds(2))) ++removed;
    return removed;
}

// ---- scratch_cgroup ----------------------------------------------------------------

result<scratch_cgroup> scratch_cgroup::create(std::string_view prefix, std::uint64_t limit_bytes) {
    cgroup_version v = cgroup_version::v1;
    auto parent = default_parent(v);
    if (!parent) return parent.error();
    if (v == cgroup_version::v2) {
        if (auto ec = enable_memory_controller(*parent)) return ec;
    }
    // A leftover of an earlier process with the same pid may hold a name: take the next.
    for (int attempt = 0;; ++attempt) {
        fs::path dir = *parent / (std::string(prefix) + "-" + unique_suffix());
        auto ec = make_cgroup(dir, v, limit_bytes);
        if (!ec) return scratch_cgroup(std::move(dir), v);
        if (ec != errc::file_exists || attempt >= 100) return ec;
    }
}

scratch_cgroup::scratch_cgroup(scratch_cgroup&& other) noexcept
    : path_(std::exchange(other.path_, {})), version_(other.version_) {}

scratch_cgroup& scratch_cgroup::operator=(scratch_cgroup&& other) noexcept {
    if (this != &other) {
        remove();
        path_ = std::exchange(other.path_, {});
        version_ = other.version_;
    }
    return *this;
}

scratch_cgroup::~scratch_cgroup() { remove(); }

result<scratch_cgroup> scratch_cgroup::create_child(std::string_view name, std::uint64_t limit_bytes) const {
    if (path_.empty() || name.empty() || name.find('/') != std::string_view::npos) {
        return make_error_code(errc::invalid_argument);
    }
    if (version_ == cgroup_version::v2) {
        if (auto ec = enable_memory_controller(path_)) return ec;
    }
    fs::path dir = path_ / std::string(name);
    if (auto ec = make_cgroup(dir, version_, limit_bytes)) return ec;
    return scratch_cgroup(std::move(dir), version_);
}

error_code scratch_cgroup::set_limit(std::uint64_t limit_bytes) const {
    if (path_.empty()) return make_error_code(errc::invalid_argument);
    return set_limit_at(path_, version_, limit_bytes);
}

error_code scratch_cgroup::set_oom_group(bool on) const {
    if (version_ != cgroup_version::v2) return make_error_code(errc::operation_not_supported);
    return write_file("memory.oom.group", on ? "1" : "0");
}

error_code scratch_cgroup::write_file(std::string_view name, std::string_view value) const {
    if (path_.empty()) return make_error_code(errc::invalid_argument);
    return write_whole(path_ / std::string(name), value);
}

// path_ is kept after a successful removal so callers can still name the cgroup;
// removing a cgroup that is gone already succeeds, which makes this idempotent.
error_code scratch_cgroup::remove() {
    if (path_.empty()) return {};
    try {
        return remove_tree(path_, version_, clock::now() + std::chrono::seconds(5));
    } catch (const std::bad_alloc&) {
        return make_error_code(errc::not_enough_memory);
    }
}

std::filesystem::path scratch_cgroup::release() noexcept { return std::exchange(path_, {}); }

// ---- victim ----------------------------------------------------------------------

namespace {

// Runs in the forked child of a possibly multithreaded parent: async-signal-safe
// calls only, no allocation, no return.
[[noreturn]] void victim_child(int report_fd, const char* procs_file, std::size_t bytes) noexcept {
    // Handlers inherited from the parent (asio's signal_set) would write into the
    // parent's own self-pipe: restore the defaults, and unblock everything.
    for (int sig = 1; sig < NSIG; ++sig) {
        struct sigaction old {};
        if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
            struct sigaction dfl {};
            dfl.sa_handler = SIG_DFL;
            ::sigaction(sig, &dfl, nullptr);
        }
    }
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

    int err = 0;
    int fd = ::open(procs_file, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
    } else {
        // "0" means the writer itself (checked on v1 and v2 cgroup.procs).
        if (::write(fd, "0", 1) != 1) err = errno != 0 ? errno : EIO;
        ::close(fd);
    }
    const char* p = reinterpret_cast<const char*>(&err);
    std::size_t left = sizeof err;
    while (left > 0) {
        ssize_t n = ::write(report_fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    ::close(report_fd);
    if (err != 0) ::_exit(127);
    if (bytes > 0) {
        void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) ::_exit(1);
        volatile char* page = static_cast<volatile char*>(mem);
        for (std::size_t off = 0; off < bytes; off += 4096) page[off] = 1;
    }
    ::_exit(0);
}

void reap(pid_t pid, int* status) noexcept {
    while (::waitpid(pid, status, 0) < 0 && errno == EINTR) {
    }
}

} // namespace

result<victim> victim::spawn(const std::filesystem::path& cgroup, std::size_t bytes) {
    const std::string procs = (cgroup / "cgroup.procs").string();  // built before fork: no allocation in the child
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return errno_code();
    fd_guard rd(fds[0]);
    fd_guard wr(fds[1]);

    const pid_t pid = ::fork();
    if (pid < 0) return errno_code();
    if (pid == 0) {
        ::close(fds[0]);
        victim_child(fds[1], procs.c_str(), bytes);
    }
    wr.reset();  // else the read below never sees EOF if the child dies early

    // Opened while the child is unreaped, so the pid cannot have been reused.
    const long pidfd = ::syscall(SYS_pidfd_open, pid, 0);
    const int pidfd_errno = errno;

    int err = 0;
    std::size_t got = 0;
    while (got < sizeof err) {
        ssize_t n = ::read(rd.get(), reinterpret_cast<char*>(&err) + got, sizeof err - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            err = errno;
            break;
        }
        if (n == 0) {  // the child died before it could report
            err = ECHILD;
            break;
        }
        got += static_cast<std::size_t>(n);
    }
    if (err == 0 && pidfd < 0) err = pidfd_errno;
    if (err != 0) {
        ::kill(pid, SIGKILL);
        int status = 0;
        reap(pid, &status);
        if (pidfd >= 0) ::close(static_cast<int>(pidfd));
        return errno_code(err);
    }
    return victim(pid, static_cast<int>(pidfd));
}

victim::victim(victim&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      reaped_(std::exchange(other.reaped_, true)) {}

victim& victim::operator=(victim&& other) noexcept {
    if (this != &other) {
        kill_and_reap();
        pid_ = std::exchange(other.pid_, -1);
        pidfd_ = std::exchange(other.pidfd_, -1);
        reaped_ = std::exchange(other.reaped_, true);
    }
    return *this;
}

victim::~victim() { kill_and_reap(); }

void victim::kill_and_reap() noexcept {
    if (pid_ > 0 && !reaped_) {
        // Unreaped, so pid_ still names our child (a zombie at worst).
        ::kill(pid_, SIGKILL);
        int status = 0;
        reap(pid_, &status);
    }
    reaped_ = true;
    if (pidfd_ >= 0) ::close(pidfd_);
    pidfd_ = -1;
    pid_ = -1;
}

result<int> victim::wait(std::chrono::milliseconds timeout) {
    if (pid_ <= 0 || reaped_) return make_error_code(errc::no_child_process);
    const auto deadline = clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
        if (left < 0) left = 0;
        pollfd pfd{pidfd_, POLLIN, 0};
        int n = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, INT_MAX)));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_code();
        if (n == 0) return make_error_code(errc::timed_out);
        break;
    }
    int status = 0;
    pid_t r;
    while ((r = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
    if (r < 0) return errno_code();
    reaped_ = true;
    return status;
}

bool victim::killed_by_sigkill(int status) noexcept {
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

} // namespace oomwatch::scratch
