#include "inotify_service.hpp"

#include "detail/context_executor.hpp"
#include "logger.hpp"
#include "fault_injection.hpp"
#include "sys.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>

#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

namespace asio = boost::asio;
using boost::system::error_code;
using boost::system::system_category;

namespace oomwatch::detail {

asio::execution_context::id inotify_service::id;

namespace {
constexpr std::uint32_t file_mask = IN_MODIFY;
// IN_MOVED_FROM too: a renamed cgroup is no longer at the path being watched.
// One mask for every directory watch: a watcher needs its name's removal, a tree also
// its subdirectories appearing. Always added with IN_MASK_ADD: re-adding a watch the
// instance holds already without it (which replaces the mask) was measured to drop
// events queued for that watch, with no overflow reported (about 1 in 3,000 renames
// under churn in the benchmark; none in 600,000 with IN_MASK_ADD).
constexpr std::uint32_t dir_mask = IN_DELETE | IN_MOVED_FROM | IN_CREATE | IN_MOVED_TO | IN_ONLYDIR;
} // namespace

inotify_service::inotify_service(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}

inotify_service::~inotify_service() = default;

void inotify_service::shutdown() {
    std::lock_guard lk(m_);
    shut_down_ = true;
    // Destroyed here, while the reactor still exists (services
    // are destroyed only after all are shut down, ours possibly after theirs); pending
    // handlers are dropped.
    timer_.reset();
    fd_.reset();
    exec_.reset();
    watches_.clear();
    clients_.clear();
}

error_code inotify_service::open_locked(const asio::any_io_executor& ex) {
    if (fd_) return {};
    unique_fd fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!fd) return {errno, system_category()};
    // The first I/O object of a fresh execution context makes Asio's reactor (its
    // epoll descriptor and interrupter), which throws when out of descriptors:
    // report it like any other failure, and keep nothing half made. After a failure
    // of the instance the timer is still there; only the fd is new.
    // No strand: one read is pending at a time, the timer's handler and the read's may
    // run at once on two threads, and each takes the lock; the clients lock their own.
    // A strand cost a trip through the scheduler on every event.
    const bool fresh = !exec_;
    try {
        if (fresh) exec_.emplace(context_executor(ex));
        fd_.emplace(*exec_, fd.get());
        fd.release();
        if (fresh) timer_.emplace(*exec_);
    } catch (const boost::system::system_error& e) {
        fd_.reset();  // closes the descriptor if it took it
        if (fresh) {
            timer_.reset();
            exec_.reset();
        }
        return e.code();
    } catch (const std::bad_alloc&) {
        fd_.reset();
        if (fresh) {
            timer_.reset();
            exec_.reset();
        }
        return make_error_code(boost::system::errc::not_enough_memory);
    }
    return {};
}

error_code inotify_service::add(const asio::any_io_executor& ex, const std::string& file, const std::string& dir,
                                std::weak_ptr<inotify_client> client, std::chrono::milliseconds liveness_interval,
                                registration& reg) {
    std::lock_guard lk(m_);
    if (shut_down_) return asio::error::shut_down;
    if (auto ec = open_locked(ex)) return ec;
    const int ifd = fd_->native_handle();
    reg.file_wd = ::inotify_add_watch(ifd, file.c_str(), file_mask | IN_MASK_ADD);
    if (reg.file_wd < 0) return {errno, system_category()};
    const bool file_known_before = watches_.contains(reg.file_wd);
    reg.dir_wd = -1;
    std::string_view name;
    if (!dir.empty()) {
        const auto slash = dir.find_last_of('/');
        const std::string parent = slash == 0 ? std::string("/") : dir.substr(0, slash == std::string::npos ? 0 : slash);
        name = std::string_view(dir).substr(slash == std::string::npos ? 0 : slash + 1);
        reg.dir_wd = ::inotify_add_watch(ifd, parent.empty() ? "." : parent.c_str(), dir_mask | IN_MASK_ADD);
        if (reg.dir_wd < 0) {
            error_code ec(errno, system_category());
            if (!file_known_before) ::inotify_rm_watch(ifd, reg.file_wd);
            return ec;
        }
    }
    reg.key = next_key_++;
    auto& fw = watches_[reg.file_wd];
    ++fw.refs;
    fw.file_clients.emplace_back(reg.key, client);
    if (reg.dir_wd >= 0) {
        auto& dw = watches_[reg.dir_wd];
        ++dw.refs;
        if (!dw.children) dw.children = std::make_unique<std::unordered_multimap<std::string, std::uint64_t>>();
        dw.children->emplace(std::string(name), reg.key);
    }
    clients_.emplace(reg.key, client_entry{std::move(client), liveness_interval});
    ++intervals_[liveness_interval];

    if (liveness_interval < interval_) {
        interval_ = liveness_interval;
        if (timing_) timer_->cancel();  // its handler re-arms with the shorter interval
    }
    start_reading();
    start_timer();
    return {};
}

void inotify_service::remove(const registration& reg) {
    std::lock_guard lk(m_);
    if (shut_down_) return;
    auto ci = clients_.find(reg.key);
    if (ci == clients_.end()) return;
    if (auto i = intervals_.find(ci->second.interval); i != intervals_.end() && --i->second == 0) {
        intervals_.erase(i);
        // The timer follows the watchers still open: a long-gone short interval must not
        // keep waking everyone. An armed timer fires once more and re-arms with this.
        interval_ = intervals_.empty() ? std::chrono::milliseconds::max() : intervals_.begin()->first;
    }
    clients_.erase(ci);
    if (auto it = watches_.find(reg.file_wd); it != watches_.end()) {
        std::erase_if(it->second.file_clients, [&](const auto& p) { return p.first == reg.key; });
        drop_watch_ref(reg.file_wd);
    }
    if (auto it = watches_.find(reg.dir_wd); reg.dir_wd >= 0 && it != watches_.end()) {
        if (auto& ch = it->second.children)
            for (auto c = ch->begin(); c != ch->end(); ++c)
                if (c->second == reg.key) {
                    ch->erase(c);
                    break;
                }
        drop_watch_ref(reg.dir_wd);
    }
    if (clients_.empty() && dir_clients_.empty() && fd_) {
        // Nothing to watch: let the execution context run out of work.
        error_code ignored;
        fd_->cancel(ignored);
        timer_->cancel();
    }
}

error_code inotify_service::add_dir(const asio::any_io_executor& ex, const std::string& dir,
                                    std::weak_ptr<inotify_dir_client> client, registration& reg) {
    std::lock_guard lk(m_);
    if (shut_down_) return asio::error::shut_down;
    if (auto ec = open_locked(ex)) return ec;
    reg.file_wd = -1;
    reg.dir_wd = ::inotify_add_watch(fd_->native_handle(), dir.c_str(), dir_mask | IN_MASK_ADD);
    if (reg.dir_wd < 0) return {errno, system_category()};
    reg.key = next_key_++;
    auto& dw = watches_[reg.dir_wd];
    ++dw.refs;
    dw.dir_clients.emplace_back(reg.key, client);
    dir_clients_.emplace(reg.key, std::move(client));
    start_reading();
    return {};
}

void inotify_service::remove_dir(const registration& reg) {
    std::lock_guard lk(m_);
    if (shut_down_ || !dir_clients_.erase(reg.key)) return;
    if (auto it = watches_.find(reg.dir_wd); it != watches_.end()) {
        std::erase_if(it->second.dir_clients, [&](const auto& p) { return p.first == reg.key; });
        drop_watch_ref(reg.dir_wd);
    }
    if (clients_.empty() && dir_clients_.empty() && fd_) {
        error_code ignored;
        fd_->cancel(ignored);
        timer_->cancel();
    }
}

void inotify_service::drop_watch_ref(int wd) {
    auto it = watches_.find(wd);
    if (it == watches_.end() || --it->second.refs > 0) return;
    ::inotify_rm_watch(fd_->native_handle(), wd);  // EINVAL if the kernel dropped it already: fine
    watches_.erase(it);
}

std::size_t inotify_service::client_count() const {
    std::lock_guard lk(m_);
    return clients_.size();
}

std::size_t inotify_service::watch_count() const {
    std::lock_guard lk(m_);
    return watches_.size();
}

std::chrono::milliseconds inotify_service::liveness_interval() const {
    std::lock_guard lk(m_);
    return interval_;
}

void inotify_service::fail_locked(const error_code& ec, std::vector<std::weak_ptr<inotify_client>>& told,
                                  std::vector<std::weak_ptr<inotify_dir_client>>& dirs_told) {
    OOMWATCH_LOG(error) << "inotify: the instance failed: " << ec.message() << "; " << clients_.size()
                        << " watched cgroup(s) stop";
    for (auto& [k_, c] : clients_) told.push_back(c.client);
    for (auto& [k_, c] : dir_clients_) dirs_told.push_back(c);
    clients_.clear();
    dir_clients_.clear();
    watches_.clear();
    intervals_.clear();
    fd_.reset();  // closes the instance and every watch on it
    timer_->cancel();
    interval_ = std::chrono::milliseconds::max();
}

void inotify_service::start_reading() {
    if (reading_ || !fd_ || (clients_.empty() && dir_clients_.empty())) return;
    reading_ = true;
    // A read, not a wait: Asio tries it at once (the queue may hold events already) and
    // waits only when there is nothing, which spares a wait's epoll_ctl re-arm and our
    // own read to EAGAIN on every event.
    if (!buf_) buf_ = std::make_unique<read_buffer>();
    fd_->async_read_some(asio::buffer(buf_->bytes), [this](error_code ec, std::size_t n) { on_read(ec, n); });
}

void inotify_service::start_timer() {
    if (timing_ || !timer_ || clients_.empty() || interval_ == std::chrono::milliseconds::max()) return;
    timing_ = true;
    timer_->expires_after(interval_);
    timer_->async_wait([this](error_code ec) { on_timer(ec); });
}

namespace {

// What to tell which client, in the order the kernel reported it.
struct action {
    enum what { changed, removed, lost };
};

// A tree directory's news.
struct dir_action {
    enum what_t { created, moved_in, gone, rescan };
    std::weak_ptr<inotify_dir_client> client;
    std::string name;
    what_t what;
};

class action_list {
public:
    void add(const std::weak_ptr<inotify_client>& c, action::what news) {
        // Skip repeats of the same news to the same client (a kill modifies the file
        // three times); the client re-reads anyway. Most reads carry a few events: a
        // look back over them, and a map only for many (an overflow's rescan).
        auto* key = c.lock().get();
        if (!key) return;
        if (!last_.empty() || actions_.size() >= linear_limit) {
            if (last_.empty())
                for (std::size_t i = 0; i < actions_.size(); ++i) last_[actions_[i].key] = i;
            auto [it, fresh] = last_.try_emplace(key, actions_.size());
            if (!fresh) {
                if (actions_[it->second].news == news) return;
                it->second = actions_.size();
            }
        } else {
            for (auto i = actions_.size(); i-- > 0;)
                if (actions_[i].key == key) {
                    if (actions_[i].news == news) return;
                    break;
                }
        }
        actions_.push_back({c, key, news});
    }
    void run() {
        for (auto& a : actions_) {
            auto c = a.client.lock();
            if (!c) continue;
            switch (a.news) {
            case action::changed: c->on_counters_changed(); break;
            case action::removed: c->on_maybe_removed(); break;
            case action::lost: c->on_watch_lost(); break;
            }
        }
    }

private:
    static constexpr std::size_t linear_limit = 16;
    struct entry {
        std::weak_ptr<inotify_client> client;
        const inotify_client* key;
        action::what news;
    };
    std::vector<entry> actions_;
    std::unordered_map<const inotify_client*, std::size_t> last_;
};

} // namespace

void inotify_service::on_read(error_code ec, std::size_t n) {
    action_list actions;
    std::vector<dir_action> dir_actions;
    std::vector<std::weak_ptr<inotify_client>> failed;
    std::vector<std::weak_ptr<inotify_dir_client>> failed_dirs;
    error_code failure;
    {
        std::lock_guard lk(m_);
        // `reading_` stays set while this batch's clients are told (below), so that no
        // other read starts meanwhile: without a strand, a second batch on another
        // thread could otherwise overtake this one (a removal before the change that
        // preceded it).
        if (shut_down_ || !fd_) {
            reading_ = false;
            return;
        }
        if (ec == asio::error::operation_aborted) {
            reading_ = false;
            start_reading();  // resumes if clients came back after a cancel
            return;
        }
        if (!ec) ec = fault::take(fault::inotify_wait_errno);
        if (!ec) ec = fault::take(fault::inotify_read_errno);
        if (ec) {
            failure = ec;
            fail_locked(ec, failed, failed_dirs);
        }
        bool overflow = false;
        const char* const buf = buf_->bytes;
        for (std::size_t off = 0; !failure && off + sizeof(inotify_event) <= n;) {
            inotify_event ev;
            std::memcpy(&ev, buf + off, sizeof ev);
            const char* name = buf + off + sizeof(inotify_event);
            off += sizeof(inotify_event) + ev.len;
            if (ev.mask & IN_Q_OVERFLOW) {
                overflow = true;
                continue;
            }
            auto it = watches_.find(ev.wd);
            if (it == watches_.end()) continue;
            auto& w = it->second;
            if (ev.mask & IN_MODIFY)
                for (auto& [k_, c] : w.file_clients) actions.add(c, action::changed);
            if ((ev.mask & IN_ISDIR) && ev.len > 0 && !w.dir_clients.empty()) {
                const bool appeared = ev.mask & (IN_CREATE | IN_MOVED_TO);
                if (appeared || (ev.mask & (IN_DELETE | IN_MOVED_FROM))) {
                    std::string child(name, ::strnlen(name, ev.len));
                    for (auto& [k_, c] : w.dir_clients)
                        dir_actions.push_back({c, child, appeared ? (ev.mask & IN_MOVED_TO ? dir_action::moved_in
                                                                                          : dir_action::created)
                                                                  : dir_action::gone});
                }
            }
            if ((ev.mask & (IN_DELETE | IN_MOVED_FROM)) && ev.len > 0 && w.children) {
                auto [b, e] = w.children->equal_range(std::string(name, ::strnlen(name, ev.len)));
                for (; b != e; ++b)
                    if (auto c = clients_.find(b->second); c != clients_.end()) actions.add(c->second.client, action::removed);
            }
            if (ev.mask & IN_IGNORED) {
                // The kernel dropped the watch (its file or directory went away):
                // everyone who relied on it must check.
                for (auto& [k_, c] : w.file_clients) actions.add(c, action::lost);
                if (w.children)
                    for (auto& [n_, k_] : *w.children)
                        if (auto c = clients_.find(k_); c != clients_.end())
                            actions.add(c->second.client, action::removed);
                watches_.erase(it);
            }
        }
        if (overflow) {
            OOMWATCH_LOG(warning) << "inotify: event queue overflowed; re-reading all " << clients_.size()
                                  << " watched cgroups";
            for (auto& [k_, c] : clients_) {
                actions.add(c.client, action::changed);
                actions.add(c.client, action::removed);
            }
            for (auto& [k_, c] : dir_clients_) dir_actions.push_back({c, {}, dir_action::rescan});
        }
        if (failure) reading_ = false;
    }
    // Reads again once the clients are told, even if one of them throws.
    struct rearm {
        inotify_service* self;
        bool active;
        ~rearm() {
            if (!active) return;
            std::lock_guard lk(self->m_);
            self->reading_ = false;
            if (!self->shut_down_) self->start_reading();
        }
    } again{this, !failure};
    actions.run();
    // After the counters: a removal is reported by the cgroup's own watch first.
    for (auto& a : dir_actions) {
        auto c = a.client.lock();
        if (!c) continue;
        switch (a.what) {
        case dir_action::created: c->on_child_appeared(a.name, false); break;
        case dir_action::moved_in: c->on_child_appeared(a.name, true); break;
        case dir_action::gone: c->on_child_gone(a.name); break;
        case dir_action::rescan: c->on_rescan(); break;
        }
    }
    for (auto& w : failed)
        if (auto c = w.lock()) c->on_service_failed(failure);
    for (auto& w : failed_dirs)
        if (auto c = w.lock()) c->on_dir_service_failed(failure);
}

void inotify_service::on_timer(error_code ec) {
    action_list actions;
    {
        std::lock_guard lk(m_);
        timing_ = false;
        if (shut_down_) return;
        if (!ec)
            for (auto& [k_, c] : clients_) actions.add(c.client, action::removed);
        start_timer();
    }
    actions.run();
}

} // namespace oomwatch::detail
