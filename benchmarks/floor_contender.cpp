// The floor: the least a program can do. One thread, one epoll instance, one inotify
// instance for every v2 cgroup (and one eventfd per v1 cgroup, which the kernel
// requires), raw system calls, no abstraction, no allocation on the event path.
//
// It does the same work as oomwatch: a baseline read at arming, every notification
// re-reads the counters and reports per-kind growth, the parent directory is watched
// for removal (v2), and on v1 the kill is looked for after the notification (it is
// counted a moment later): the floor polls memory.oom_control every 100 us until the
// kill shows, the fastest a program can learn of it.
#include "bench_util.hpp"
#include "contenders.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <thread>

#include <pthread.h>
#include <unordered_map>

namespace bench {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t tag_inotify = ~std::uint64_t{0} - 1;
constexpr std::uint64_t tag_stop = ~std::uint64_t{0};
constexpr std::int64_t settle_poll_ns = 100'000;          // 100 us
constexpr std::int64_t settle_limit_ns = 1'000'000'000;   // give up on a kill after 1 s

class floor_contender final : public contender {
public:
    explicit floor_contender(const contender_options& o) : o_(o) {}
    ~floor_contender() override { stop(); }

    std::string name() const override { return "floor"; }

    arm_result arm(const std::vector<fs::path>& dirs, sink& s) override {
        sink_ = &s;
        arm_result r;
        ep_ = ::epoll_create1(EPOLL_CLOEXEC);
        stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (ep_ < 0 || stop_fd_ < 0) return fail(r, "epoll_create1/eventfd");
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag_stop;
        ::epoll_ctl(ep_, EPOLL_CTL_ADD, stop_fd_, &ev);
        if (o_.version == cgroup_version::v2) {
            ino_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
            if (ino_ < 0) return fail(r, "inotify_init1");
            ev.data.u64 = tag_inotify;
            ::epoll_ctl(ep_, EPOLL_CTL_ADD, ino_, &ev);
        }
        e_.resize(dirs.size());
        for (std::size_t i = 0; i < dirs.size(); ++i) {
            auto& e = e_[i];
            if (o_.version == cgroup_version::v2) {
                e.file = (dirs[i] / "memory.events").string();
                int wd = ::inotify_add_watch(ino_, e.file.c_str(), IN_MODIFY);
                if (wd < 0) return fail(r, "inotify_add_watch " + e.file);
                int pwd = ::inotify_add_watch(ino_, dirs[i].parent_path().c_str(), IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR);
                if (pwd < 0) return fail(r, "inotify_add_watch " + dirs[i].parent_path().string());
                if (static_cast<std::size_t>(wd) >= wd_to_idx_.size()) wd_to_idx_.resize(static_cast<std::size_t>(wd) + 1, npos);
                wd_to_idx_[static_cast<std::size_t>(wd)] = static_cast<std::uint32_t>(i);
                children_[pwd].emplace(dirs[i].filename().string(), static_cast<std::uint32_t>(i));
                char buf[512];
                auto n = read_into(e.file.c_str(), buf, sizeof buf);
                if (n < 0) return fail(r, "read " + e.file, static_cast<int>(-n));
                auto p = parse_min_counters(buf, static_cast<std::size_t>(n));
                e.oom = p.oom, e.oom_kill = p.oom_kill, e.oom_group_kill = p.oom_group_kill;
            } else {
                e.file = (dirs[i] / "memory.oom_control").string();
                e.efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (e.efd < 0) return fail(r, "eventfd");
                int ctl = ::open(e.file.c_str(), O_RDONLY | O_CLOEXEC);
                if (ctl < 0) return fail(r, "open " + e.file);
                auto evc = (dirs[i] / "cgroup.event_control").string();
                int w = ::open(evc.c_str(), O_WRONLY | O_CLOEXEC);
                if (w < 0) {
                    int err = errno;
                    ::close(ctl);
                    return fail(r, "open " + evc, err);
                }
                char line[64];
                int len = std::snprintf(line, sizeof line, "%d %d", e.efd, ctl);
                auto wr = ::write(w, line, static_cast<std::size_t>(len));
                int err = errno;
                ::close(w);
                ::close(ctl);
                if (wr != len) return fail(r, "write " + evc, err);
                char buf[512];
                auto n = read_into(e.file.c_str(), buf, sizeof buf);
                if (n < 0) return fail(r, "read " + e.file, static_cast<int>(-n));
                e.oom_kill = parse_min_counters(buf, static_cast<std::size_t>(n)).oom_kill;
                ev.data.u64 = i;
                if (::epoll_ctl(ep_, EPOLL_CTL_ADD, e.efd, &ev) != 0) return fail(r, "epoll_ctl");
            }
            r.armed = i + 1;
        }
        return r;
    }

    void start() override {
        th_ = std::thread([this] {
            ::pthread_setname_np(::pthread_self(), "bench-floor");
            run();
        });
    }

    void stop() override {
        if (th_.joinable()) {
            std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
            th_.join();
        }
        for (auto& e : e_)
            if (e.efd >= 0) ::close(e.efd), e.efd = -1;
        for (int* fd : {&ino_, &ep_, &stop_fd_})
            if (*fd >= 0) ::close(*fd), *fd = -1;
        e_.clear();
    }

private:
    static constexpr std::uint32_t npos = ~std::uint32_t{0};

    struct entry {
        std::string file;
        std::uint64_t oom = 0, oom_kill = 0, oom_group_kill = 0;
        int efd = -1;
        // v1: notifications whose kill may not be counted yet
        std::uint64_t pending = 0, kills_before = 0;
        std::int64_t settle_until = 0;
        bool settling = false, removed = false;
        bool reread = false;  // v2: re-read already in this batch
    };

    arm_result& fail(arm_result& r, const std::string& what, int err = errno) {
        r.error = what + ": " + errno_text(err);
        r.error_errno = err;
        return r;
    }

    void emit(std::size_t i, event_kind k, std::uint64_t n, std::uint64_t seen) {
        for (unsigned s = 0; s < o_.subscribers; ++s) sink_->on_event(s, i, k, n, seen);
    }

    void removed(std::size_t i) {
        auto& e = e_[i];
        if (e.removed) return;
        e.removed = true;
        emit(i, event_kind::removed, 1, 0);
    }

    // v2: re-read memory.events, report growth.
    void reread_v2(std::size_t i) {
        auto& e = e_[i];
        if (e.removed) return;
        char buf[512];
        auto n = read_into(e.file.c_str(), buf, sizeof buf);
        if (n < 0) {
            struct stat st{};
            if (::stat(fs::path(e.file).parent_path().c_str(), &st) != 0) removed(i);
            return;
        }
        auto p = parse_min_counters(buf, static_cast<std::size_t>(n));
        if (!p.any) return;  // caught mid-rewrite: the write's own notification follows
        if (p.oom > e.oom) emit(i, event_kind::oom, p.oom - e.oom, p.oom);
        if (p.oom_kill > e.oom_kill) emit(i, event_kind::oom_kill, p.oom_kill - e.oom_kill, p.oom_kill);
        if (p.oom_group_kill > e.oom_group_kill)
            emit(i, event_kind::oom_group_kill, p.oom_group_kill - e.oom_group_kill, p.oom_group_kill);
        e.oom = p.oom, e.oom_kill = p.oom_kill, e.oom_group_kill = p.oom_group_kill;
    }

    // v1: re-read memory.oom_control, report kills; false once the cgroup is gone.
    bool reread_v1(std::size_t i, bool& under_oom) {
        auto& e = e_[i];
        char buf[512];
        auto n = read_into(e.file.c_str(), buf, sizeof buf);
        if (n < 0) {
            if (n == -ENOENT || n == -ENODEV) removed(i);
            return false;
        }
        auto p = parse_min_counters(buf, static_cast<std::size_t>(n));
        under_oom = p.under_oom != 0;
        if (p.oom_kill > e.oom_kill) emit(i, event_kind::oom_kill, p.oom_kill - e.oom_kill, p.oom_kill);
        e.oom_kill = p.oom_kill;
        return true;
    }

    void on_eventfd(std::size_t i) {
        auto& e = e_[i];
        std::uint64_t v = 0;
        if (::read(e.efd, &v, sizeof v) != static_cast<ssize_t>(sizeof v) || e.removed) return;
        e.oom += v;
        bool under = false;
        std::uint64_t before = e.oom_kill;
        // Removal signals too: the cgroup is gone then.
        struct stat st{};
        if (::stat(fs::path(e.file).parent_path().c_str(), &st) != 0) {
            if (v > 1) emit(i, event_kind::oom, v - 1, e.oom);
            removed(i);
            return;
        }
        emit(i, event_kind::oom, v, e.oom);
        if (!e.settling) {
            e.kills_before = before;
            e.pending = 0;
        }
        e.pending += v;
        if (!reread_v1(i, under)) return;
        if (e.oom_kill - e.kills_before >= e.pending && !under) {
            e.settling = false;
            return;
        }
        e.settling = true;
        e.settle_until = now_ns() + settle_limit_ns;
        any_settling_ = true;
    }

    void poll_settling() {
        auto now = now_ns();
        for (std::size_t i = 0; i < e_.size(); ++i) {
            auto& e = e_[i];
            if (!e.settling) continue;
            bool under = false;
            if (!reread_v1(i, under) || (e.oom_kill - e.kills_before >= e.pending && !under) || now >= e.settle_until) {
                e.settling = false;
                continue;
            }
            any_settling_ = true;
        }
    }

    void run() {
        epoll_event evs[64];
        alignas(inotify_event) char buf[16384];
        std::vector<std::uint32_t> dirty;
        for (;;) {
            timespec poll_ts{0, settle_poll_ns};
            int n = ::epoll_pwait2(ep_, evs, 64, any_settling_ ? &poll_ts : nullptr, nullptr);
            if (n < 0 && errno != EINTR) return;
            for (int k = 0; k < n; ++k) {
                auto tag = evs[k].data.u64;
                if (tag == tag_stop) return;
                if (tag == tag_inotify) {
                    for (;;) {
                        ssize_t len = ::read(ino_, buf, sizeof buf);
                        if (len <= 0) break;
                        for (ssize_t off = 0; off < len;) {
                            auto* ie = reinterpret_cast<inotify_event*>(buf + off);
                            off += static_cast<ssize_t>(sizeof(inotify_event) + ie->len);
                            if (ie->mask & IN_Q_OVERFLOW) {
                                for (std::uint32_t i = 0; i < e_.size(); ++i) dirty.push_back(i);
                                continue;
                            }
                            if (ie->mask & IN_MODIFY) {
                                auto wd = static_cast<std::size_t>(ie->wd);
                                if (wd < wd_to_idx_.size() && wd_to_idx_[wd] != npos) dirty.push_back(wd_to_idx_[wd]);
                            } else if ((ie->mask & (IN_DELETE | IN_MOVED_FROM)) && ie->len > 0) {
                                auto c = children_.find(ie->wd);
                                if (c == children_.end()) continue;
                                auto it = c->second.find(std::string_view(ie->name));
                                if (it != c->second.end()) removed(it->second);
                            }
                        }
                    }
                    // One re-read per cgroup, however many notifications it had.
                    for (auto i : dirty) {
                        if (e_[i].reread) continue;
                        e_[i].reread = true;
                        reread_v2(i);
                    }
                    for (auto i : dirty) e_[i].reread = false;
                    dirty.clear();
                } else {
                    on_eventfd(static_cast<std::size_t>(tag));
                }
            }
            if (any_settling_) {
                any_settling_ = false;
                poll_settling();
            }
        }
    }

    struct string_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };

    contender_options o_;
    sink* sink_ = nullptr;
    int ep_ = -1, ino_ = -1, stop_fd_ = -1;
    std::vector<entry> e_;
    std::vector<std::uint32_t> wd_to_idx_;
    std::unordered_map<int, std::unordered_map<std::string, std::uint32_t, string_hash, std::equal_to<>>> children_;
    bool any_settling_ = false;
    std::thread th_;
};

} // namespace

std::unique_ptr<contender> make_floor(const contender_options& o) { return std::make_unique<floor_contender>(o); }

} // namespace bench
