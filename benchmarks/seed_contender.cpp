// The seed's design: the cgroup OOM watchers of a cloud guest agent (Go) that oomwatch
// grew from, reproduced in C++ from how they behave:
//
// - v2: per cgroup its own inotify instance (IN_MODIFY on memory.events) and its own
//   epoll instance, and its own thread looping: stat the file (gone: removed), then
//   epoll_wait with a 500 ms timeout; on a notification read the inotify events and,
//   for each IN_MODIFY, re-read `oom_kill` with a line scanner; a changed value is an
//   event. The previous count starts at 0 (no baseline).
// - v1: per cgroup an eventfd registered on memory.oom_control, and its own thread
//   blocked in read(2); after a wake-up it checks that cgroup.event_control still
//   exists and reports one event (the 8-byte counter is thrown away).
// - An event is {cgroup, time}; it is handed to the subscribers on the watcher's own
//   thread (the seed's event bus is unbuffered: a slow subscriber blocks the watcher).
//
// Bench-only concession: a stop flag (checked after each 500 ms timeout, and on v1 after
// a wake-up the harness provokes by writing to the eventfd) so that the threads can be
// joined. The seed's v1 read cannot be cancelled at all.
#include "bench_util.hpp"
#include "contenders.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include <pthread.h>

namespace bench {
namespace {

namespace fs = std::filesystem;

// readOOMKillCount: open the file and scan it (see bench_util.hpp).
std::optional<long> read_oom_kill_count(const std::string& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    return seed_scan_oom_kill(in);
}

bool is_regular_file(const std::string& p) {
    struct stat st{};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

class seed_contender final : public contender {
public:
    explicit seed_contender(const contender_options& o) : o_(o) {}
    ~seed_contender() override { stop(); }

    std::string name() const override { return "seed"; }

    arm_result arm(const std::vector<fs::path>& dirs, sink& s) override {
        sink_ = &s;
        arm_result r;
        w_.resize(dirs.size());
        for (std::size_t i = 0; i < dirs.size(); ++i) {
            auto& w = w_[i];
            if (o_.version == cgroup_version::v2) {
                w.file = (dirs[i] / "memory.events").string();
                w.ino = ::inotify_init1(0);  // Go's unix.InotifyInit(): no flags
                if (w.ino < 0) return fail(r, "unable to initialize inotify instance");
                if (::inotify_add_watch(w.ino, w.file.c_str(), IN_MODIFY) < 0)
                    return fail(r, "unable to add inotify file modify watcher for " + w.file);
                w.ep = ::epoll_create1(0);
                if (w.ep < 0) return fail(r, "unable to create epoll instance");
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.fd = w.ino;
                if (::epoll_ctl(w.ep, EPOLL_CTL_ADD, w.ino, &ev) != 0) return fail(r, "unable to add inotify fd to epoll");
            } else {
                w.file = (dirs[i] / "cgroup.event_control").string();
                w.efd = ::eventfd(0, EFD_CLOEXEC);
                if (w.efd < 0) return fail(r, "failed to create eventfd");
                auto oc = dirs[i] / "memory.oom_control";
                int ctl = ::open(oc.c_str(), O_RDONLY | O_CLOEXEC);
                if (ctl < 0) return fail(r, "failed to open " + oc.string());
                // os.WriteFile: O_WRONLY|O_CREATE|O_TRUNC
                int evc = ::open(w.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
                if (evc < 0) {
                    int e = errno;
                    ::close(ctl);
                    return fail(r, "failed to write " + w.file, e);
                }
                auto line = std::to_string(w.efd) + " " + std::to_string(ctl);
                auto n = ::write(evc, line.data(), line.size());
                int e = errno;
                ::close(evc);
                ::close(ctl);
                if (n != static_cast<ssize_t>(line.size())) return fail(r, "failed to write " + w.file, e);
            }
            r.armed = i + 1;
        }
        return r;
    }

    void start() override {
        threads_.reserve(w_.size());
        for (std::size_t i = 0; i < w_.size(); ++i) {
            threads_.emplace_back([this, i] {
                ::pthread_setname_np(::pthread_self(), "bench-seed");
                if (o_.version == cgroup_version::v2)
                    run_v2(i);
                else
                    run_v1(i);
            });
        }
    }

    void stop() override {
        stop_.store(true);
        if (o_.version == cgroup_version::v1)
            for (auto& w : w_)
                if (w.efd >= 0) {
                    std::uint64_t one = 1;
                    [[maybe_unused]] auto n = ::write(w.efd, &one, sizeof one);
                }
        for (auto& t : threads_) t.join();
        threads_.clear();
        for (auto& w : w_) close_all(w);
        w_.clear();
    }

private:
    struct watch {
        std::string file;
        int ino = -1, ep = -1, efd = -1;
    };

    arm_result& fail(arm_result& r, const std::string& what, int err = errno) {
        r.error = what + ": " + errno_text(err);
        r.error_errno = err;
        return r;
    }

    static void close_all(watch& w) {
        for (int* fd : {&w.ino, &w.ep, &w.efd})
            if (*fd >= 0) ::close(*fd), *fd = -1;
    }

    void emit(std::size_t i, event_kind k, std::uint64_t seen) {
        for (unsigned s = 0; s < o_.subscribers; ++s) sink_->on_event(s, i, k, 1, seen);
    }

    void run_v2(std::size_t i) {
        auto& w = w_[i];
        long prev = 0;  // no baseline
        while (!stop_.load(std::memory_order_relaxed)) {
            if (!is_regular_file(w.file)) {  // removed
                emit(i, event_kind::removed, 0);
                return;
            }
            std::vector<epoll_event> events(1);
            int n = ::epoll_wait(w.ep, events.data(), 1, 500);
            if (n < 0) return;  // EINTR too: the watcher ends
            if (n == 0) continue;
            if (events[0].data.fd != w.ino) continue;
            // readInotifyEvent
            std::vector<char> buf(sizeof(inotify_event) + PATH_MAX + 1);
            ssize_t got = ::read(w.ino, buf.data(), buf.size());
            if (got < 0) continue;
            if (got < static_cast<ssize_t>(sizeof(inotify_event))) continue;
            bool is_oom = false;
            for (std::size_t off = 0; off + sizeof(inotify_event) <= static_cast<std::size_t>(got);) {
                inotify_event ev;
                std::memcpy(&ev, buf.data() + off, sizeof ev);
                off += sizeof(inotify_event) + ev.len;
                if (!(ev.mask & IN_MODIFY)) continue;
                auto count = read_oom_kill_count(w.file);
                if (!count) break;
                if (*count != prev) {
                    prev = *count;
                    is_oom = true;
                    break;
                }
            }
            if (is_oom) emit(i, event_kind::oom_kill, static_cast<std::uint64_t>(prev));
        }
    }

    void run_v1(std::size_t i) {
        auto& w = w_[i];
        for (;;) {
            std::uint64_t value = 0;
            if (::read(w.efd, &value, sizeof value) < 0) return;  // EINTR too
            if (stop_.load()) return;
            if (!is_regular_file(w.file)) {
                emit(i, event_kind::removed, 0);
                return;
            }
            emit(i, event_kind::oom, 0);  // one event, whatever `value` says
        }
    }

    contender_options o_;
    sink* sink_ = nullptr;
    std::vector<watch> w_;
    std::vector<std::thread> threads_;
    std::atomic<bool> stop_{false};
};

} // namespace

std::unique_ptr<contender> make_seed(const contender_options& o) { return std::make_unique<seed_contender>(o); }

} // namespace bench
