// The tree floor: the least a program can do to watch a cgroup v2 subtree, found as it
// changes. One thread, one epoll, one inotify instance, raw system calls.
//
// - Every cgroup directory is watched for IN_CREATE | IN_DELETE | IN_MOVED_FROM |
//   IN_MOVED_TO (subdirectories coming and going), and listed (getdents64) after its
//   watch is added, so that a child made in between is in the listing, the events, or
//   both (both: it is known already).
// - Every cgroup's memory.events.local is watched for IN_MODIFY: the baseline is read
//   after the watch is added; each notification re-reads the file and reports per-kind
//   growth. A cgroup found at arming starts from what it has; one made later (IN_CREATE)
//   starts from zero, because what happened in it before it was found is news; one
//   renamed in (IN_MOVED_TO) is an old cgroup and starts from what it has, as oomwatch.
// - A subdirectory deleted or renamed away is a removal (of it and anything below it);
//   its watches are removed.
// - On a queue overflow, everything is checked again: gone directories removed, every
//   counters file re-read, every directory listed again.
//
// Nothing wakes it while nothing changes: no timer.
#include "bench_util.hpp"
#include "tree_contenders.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace bench {
namespace {

namespace fs = std::filesystem;

constexpr std::uint32_t dir_mask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR;
constexpr std::uint64_t tag_inotify = 1;
constexpr std::uint64_t tag_stop = 2;
constexpr std::string_view counters_name = "/memory.events.local";

// "a" + "/" + "b" into a buffer; false when it does not fit.
bool join(char (&out)[PATH_MAX], std::string_view a, std::string_view b, bool slash) noexcept {
    const std::size_t n = a.size() + (slash ? 1 : 0) + b.size();
    if (n + 1 > sizeof out) return false;
    std::memcpy(out, a.data(), a.size());
    std::size_t at = a.size();
    if (slash) out[at++] = '/';
    std::memcpy(out + at, b.data(), b.size());
    out[n] = '\0';
    return true;
}

struct linux_dirent64 {
    ino64_t d_ino;
    off64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[1];
};

class tree_floor final : public tree_contender {
public:
    explicit tree_floor(const tree_contender_options& o) : o_(o) {}
    ~tree_floor() override { stop(); }

    std::string name() const override { return "floor"; }

    arm_result arm(const fs::path& root, tree_sink& s) override {
        sink_ = &s;
        arm_result r;
        ep_ = ::epoll_create1(EPOLL_CLOEXEC);
        stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ino_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (ep_ < 0 || stop_fd_ < 0 || ino_ < 0) return fail(r, "epoll_create1/eventfd/inotify_init1", errno);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = tag_stop;
        ::epoll_ctl(ep_, EPOLL_CTL_ADD, stop_fd_, &ev);
        ev.data.u64 = tag_inotify;
        ::epoll_ctl(ep_, EPOLL_CTL_ADD, ino_, &ev);
        starting_ = true;
        last_errno_ = 0;
        node* n = add(root.string(), nullptr, /*from_zero=*/false);
        starting_ = false;
        if (!n) return fail(r, "watch " + root.string(), last_errno_);
        r.armed = count_.load();
        return r;
    }

    void start() override {
        th_ = std::thread([this] {
            ::pthread_setname_np(::pthread_self(), "bench-tree-floor");
            run();
        });
    }

    void stop() override {
        if (th_.joinable()) {
            std::uint64_t one = 1;
            [[maybe_unused]] auto n = ::write(stop_fd_, &one, sizeof one);
            th_.join();
        }
        for (int* fd : {&ino_, &ep_, &stop_fd_})
            if (*fd >= 0) ::close(*fd), *fd = -1;
        by_wd_.clear();
        by_path_.clear();
        retired_.clear();
    }

    std::size_t watched() const override { return count_.load(); }

    double thread_cpu_seconds() const override { return bench::thread_cpu_seconds(th_); }

private:
    struct node {
        std::string dir;
        node* parent = nullptr;
        node* first_child = nullptr;
        node* next = nullptr;
        node* prev = nullptr;
        int dir_wd = -1, file_wd = -1;
        std::uint64_t oom = 0, oom_kill = 0, oom_group_kill = 0;
        bool dirty = false, gone = false;
    };

    arm_result& fail(arm_result& r, const std::string& what, int err) {
        r.error = what + ": " + errno_text(err);
        r.error_errno = err;
        return r;
    }

    void emit(const node* n, event_kind k, std::uint64_t count) { sink_->on_event(n->dir, k, count); }

    // Reports growth since the last read; a counter that went down is a new baseline.
    void apply(node* n, const min_counters& c) {
        if (c.oom > n->oom) emit(n, event_kind::oom, c.oom - n->oom);
        if (c.oom_kill > n->oom_kill) emit(n, event_kind::oom_kill, c.oom_kill - n->oom_kill);
        if (c.oom_group_kill > n->oom_group_kill) emit(n, event_kind::oom_group_kill, c.oom_group_kill - n->oom_group_kill);
        n->oom = c.oom, n->oom_kill = c.oom_kill, n->oom_group_kill = c.oom_group_kill;
    }

    // Watches a cgroup: its counters (then the baseline), then its directory (then the
    // listing, which watches the children not known yet). Null when it cannot be
    // watched (gone already, or not a cgroup); last_errno_ says why.
    node* add(std::string dir, node* parent, bool from_zero) {
        char file[PATH_MAX];
        if (!join(file, dir, counters_name, false)) {
            last_errno_ = ENAMETOOLONG;
            return nullptr;
        }
        const int fwd = ::inotify_add_watch(ino_, file, IN_MODIFY);
        if (fwd < 0) {
            last_errno_ = errno;
            return nullptr;
        }
        char buf[512];
        const auto len = read_into(file, buf, sizeof buf);
        if (len < 0) {
            last_errno_ = static_cast<int>(-len);
            ::inotify_rm_watch(ino_, fwd);
            return nullptr;
        }
        const auto c = parse_min_counters(buf, static_cast<std::size_t>(len));

        auto owned = std::make_unique<node>();
        node* n = owned.get();
        n->dir = std::move(dir);
        n->file_wd = fwd;
        n->parent = parent;
        if (parent) {
            n->next = parent->first_child;
            if (n->next) n->next->prev = n;
            parent->first_child = n;
        }
        by_wd_[fwd] = n;
        by_path_.emplace(std::string_view(n->dir), std::move(owned));
        count_.fetch_add(1, std::memory_order_relaxed);
        if (parent && o_.report_created) emit(n, event_kind::created, 1);
        if (from_zero) apply(n, c);
        else n->oom = c.oom, n->oom_kill = c.oom_kill, n->oom_group_kill = c.oom_group_kill;

        const int dwd = ::inotify_add_watch(ino_, n->dir.c_str(), dir_mask);
        if (dwd >= 0) {
            n->dir_wd = dwd;
            by_wd_[dwd] = n;
            scan(n);
        }
        return n;
    }

    // Lists a directory; watches the subdirectories not known yet.
    void scan(node* n) {
        const int fd = ::open(n->dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return;
        alignas(linux_dirent64) char buf[8192];
        for (;;) {
            const long got = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
            if (got <= 0) break;
            for (long off = 0; off < got;) {
                auto* d = reinterpret_cast<linux_dirent64*>(buf + off);
                off += d->d_reclen;
                if (d->d_type != DT_DIR || d->d_name[0] == '.') continue;
                char path[PATH_MAX];
                if (!join(path, n->dir, d->d_name, true)) continue;
                if (by_path_.contains(std::string_view(path))) continue;
                add(std::string(path), n, /*from_zero=*/!starting_);
            }
        }
        ::close(fd);
    }

    void reread(node* n) {
        n->dirty = false;
        char file[PATH_MAX];
        if (!join(file, n->dir, counters_name, false)) return;
        char buf[512];
        const auto len = read_into(file, buf, sizeof buf);
        if (len < 0) return;  // gone: its directory's removal is reported by the parent's watch
        const auto c = parse_min_counters(buf, static_cast<std::size_t>(len));
        if (!c.any) return;  // caught mid-rewrite (a fake file): the write's own notification follows
        apply(n, c);
    }

    void unwatch(int& wd) {
        if (wd < 0) return;
        ::inotify_rm_watch(ino_, wd);
        by_wd_.erase(wd);
        wd = -1;
    }

    // Removes a cgroup and everything below it (children first), reporting each.
    void remove(node* n) {
        while (n->first_child) remove(n->first_child);
        if (n->dirty) reread(n);  // a change queued before the removal, if still readable
        unwatch(n->file_wd);
        unwatch(n->dir_wd);
        if (n->parent) {
            if (n->prev) n->prev->next = n->next;
            else n->parent->first_child = n->next;
            if (n->next) n->next->prev = n->prev;
        }
        n->gone = true;
        count_.fetch_sub(1, std::memory_order_relaxed);
        emit(n, event_kind::removed, 1);
        auto it = by_path_.find(std::string_view(n->dir));
        retired_.push_back(std::move(it->second));  // freed after the batch: dirty_ may point to it
        by_path_.erase(it);
    }

    // After a queue overflow: anything may have happened.
    void resync() {
        std::vector<node*> all;
        all.reserve(by_path_.size());
        for (auto& [k, n] : by_path_) all.push_back(n.get());
        for (auto* n : all) {
            struct stat st{};
            if (!n->gone && ::stat(n->dir.c_str(), &st) != 0) remove(n);
        }
        for (auto* n : all) {
            if (n->gone) continue;
            if (!n->dirty) n->dirty = true, dirty_.push_back(n);
            scan(n);
        }
    }

    void drain() {
        for (;;) {
            const ssize_t len = ::read(ino_, buf_, sizeof buf_);
            if (len <= 0) break;
            for (ssize_t off = 0; off < len;) {
                auto* ie = reinterpret_cast<inotify_event*>(buf_ + off);
                off += static_cast<ssize_t>(sizeof(inotify_event) + ie->len);
                if (ie->mask & IN_Q_OVERFLOW) {
                    resync();
                    continue;
                }
                auto it = by_wd_.find(ie->wd);
                if (it == by_wd_.end()) continue;
                node* n = it->second;
                if (ie->mask & IN_IGNORED) {  // the kernel dropped the watch (its inode went)
                    if (n->file_wd == ie->wd) n->file_wd = -1;
                    if (n->dir_wd == ie->wd) n->dir_wd = -1;
                    by_wd_.erase(it);
                    continue;
                }
                if (ie->wd == n->file_wd) {
                    if ((ie->mask & IN_MODIFY) && !n->dirty) n->dirty = true, dirty_.push_back(n);
                    continue;
                }
                if (!(ie->mask & IN_ISDIR) || ie->len == 0 || ie->name[0] == '.') continue;
                char path[PATH_MAX];
                if (!join(path, n->dir, ie->name, true)) continue;
                if (ie->mask & (IN_CREATE | IN_MOVED_TO)) {
                    if (!by_path_.contains(std::string_view(path)))
                        add(std::string(path), n, /*from_zero=*/(ie->mask & IN_CREATE) != 0);
                } else if (ie->mask & (IN_DELETE | IN_MOVED_FROM)) {
                    if (auto c = by_path_.find(std::string_view(path)); c != by_path_.end()) remove(c->second.get());
                }
            }
        }
        // One re-read per cgroup per batch, however many notifications it had.
        for (node* n : dirty_)
            if (!n->gone && n->dirty) reread(n);
        dirty_.clear();
        retired_.clear();
    }

    void run() {
        epoll_event evs[4];
        for (;;) {
            const int n = ::epoll_wait(ep_, evs, 4, -1);
            if (n < 0 && errno != EINTR) return;
            for (int k = 0; k < n; ++k) {
                if (evs[k].data.u64 == tag_stop) return;
                drain();
            }
        }
    }

    struct sv_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };

    tree_contender_options o_;
    tree_sink* sink_ = nullptr;
    int ep_ = -1, ino_ = -1, stop_fd_ = -1;
    bool starting_ = false;
    int last_errno_ = 0;
    std::atomic<std::size_t> count_{0};
    // The key views the node's own `dir`.
    std::unordered_map<std::string_view, std::unique_ptr<node>, sv_hash, std::equal_to<>> by_path_;
    std::unordered_map<int, node*> by_wd_;  // counters file and directory watches alike
    std::vector<node*> dirty_;
    std::vector<std::unique_ptr<node>> retired_;
    alignas(inotify_event) char buf_[65536];
    std::thread th_;
};

} // namespace

std::unique_ptr<tree_contender> make_tree_floor(const tree_contender_options& o) { return std::make_unique<tree_floor>(o); }

} // namespace bench
