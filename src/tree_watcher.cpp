// The tree watcher: one v1 or v2 watch per cgroup of a subtree, each publishing into one
// shared state under its own name, and directory watches (on the execution context's
// shared inotify instance) that find descendants as they appear.
#include <oomwatch/tree_watcher.hpp>

#include "detail/cgroup.hpp"
#include "detail/parse.hpp"
#include "inotify_service.hpp"
#include "logger.hpp"
#include "sys.hpp"
#include "v1_watcher.hpp"
#include "v2_watcher.hpp"
#include "watcher_state.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace asio = boost::asio;
using boost::system::error_code;

namespace oomwatch {
namespace detail {

class tree;

// The kinds the kernel counts hierarchically (memory.events) and locally.
constexpr event_kind counted_kinds[] = {event_kind::oom,  event_kind::oom_kill, event_kind::oom_group_kill,
                                        event_kind::high, event_kind::max,      event_kind::low};
constexpr std::size_t counted_count = std::size(counted_kinds);
using counted_array = std::array<std::uint64_t, counted_count>;

// A cgroup's hierarchical counters (v2 memory.events).
error_code read_hierarchical(const std::string& dir, memory_counters& c) {
    thread_local std::string path, text;
    path.assign(dir).append("/memory.events");
    if (auto ec = read_small_file(path, text)) return ec;
    auto r = parse_memory_events(text);
    if (!r) return r.error();
    c = std::move(*r);
    return {};
}

// One cgroup of the tree: its counters watch, and (above the depth limit) the watch on
// its directory that finds its children. Its watch tells it what it published and when
// the cgroup ended; both may come after the tree let go of it (they are weak).
class tree_node final : public inotify_dir_client, public node_observer, public std::enable_shared_from_this<tree_node> {
public:
    tree_node(std::weak_ptr<tree> t, source_ref s, unsigned level, ino_t inode)
        : tree_(std::move(t)), src(std::move(s)), depth(level), ino(inode) {}

    void on_child_appeared(const std::string& name, bool moved_in) override;
    void on_child_gone(const std::string& name) override;
    void on_rescan() override;
    void on_dir_service_failed(const error_code& ec) override;
    void on_published(const counter_delta& d) noexcept override {
        for (std::size_t i = 0; i < counted_count; ++i)
            if (auto n = d.get(counted_kinds[i])) reported[i].fetch_add(n, std::memory_order_relaxed);
    }
    void on_end() noexcept override;

    // Its directory, and its name in events: one string for both.
    const std::string& dir() const noexcept { return src->cgroup; }

    std::weak_ptr<tree> tree_;
    const source_ref src;
    const unsigned depth;
    const ino_t ino;
    std::shared_ptr<source> watch;  // null for a v2 hierarchy root (it has no counters)
    inotify_service::registration dir_reg;
    bool dir_watched = false;

    // v2: what keeps the tree's counts whole when descendants go before they are read.
    // `reported`: what this cgroup's watch published, plus what its removed descendants'
    // subtrees accounted for, plus what was attributed to it, per counted kind.
    std::array<std::atomic<std::uint64_t>, counted_count> reported{};
    std::atomic<bool> ended{false};  // its watch saw it removed (the tree may not know yet)
    // With the tree's lock held:
    counted_array base_h{};  // memory.events when the watch began (zero: made after the start)
    bool has_h = false;
    bool had_children = false;  // its listing at the start found subdirectories
    bool reconcile_pending = false;
    source_ref gone_src;  // this cgroup, as the events of its removed descendants name it
};

class tree final : public source, public std::enable_shared_from_this<tree> {
public:
    tree(asio::any_io_executor ex, std::shared_ptr<watcher_state> state, tree_options opts, cgroup_version v)
        : ex_(std::move(ex)),
          svc_(asio::use_service<inotify_service>(asio::query(ex_, asio::execution::context))),
          state_(std::move(state)),
          opts_(std::move(opts)),
          version_(v) {}

    // Watches the root and everything below it that exists now.
    error_code start(const std::string& root, bool root_has_counters) {
        std::lock_guard lk(m_);
        root_dir_ = root;
        starting_ = true;
        auto ec = add_node_locked(root, 0, /*from_zero=*/false, /*is_root=*/true, root_has_counters);
        starting_ = false;
        if (!ec && version_ == cgroup_version::v2) {
            // Every cgroup's own baseline was read first, then these: a kill in between
            // shows as reported beyond the hierarchical growth, never as a loss. The
            // root's and those of cgroups with children now; the leaves' (most of a tree)
            // right after, on the executor, less what they reported meanwhile: until a
            // leaf's is read, the kills of children made and removed unseen go to its
            // parent.
            for (auto& [d_, n] : nodes_)
                if (n->watch && !n->has_h) {
                    if (n->had_children || n->dir() == root_dir_)
                        read_base_locked(*n);
                    else
                        unread_.push_back(n);
                }
            if (!unread_.empty())
                asio::post(ex_, [w = weak_from_this()] {
                    if (auto t = w.lock()) t->read_bases();
                });
        }
        return ec;
    }

    void stop() noexcept override {
        decltype(nodes_) nodes;
        std::vector<std::shared_ptr<tree_node>> retired;
        {
            std::lock_guard lk(m_);
            closed_ = true;
            nodes.swap(nodes_);
            retired.swap(retired_);
            pending_.clear();
            unread_.clear();
        }
        auto stop_node = [this](const std::shared_ptr<tree_node>& n) {
            if (n->dir_watched) svc_.remove_dir(n->dir_reg);
            if (n->watch) n->watch->stop();
        };
        for (auto& [d_, n] : nodes) stop_node(n);
        for (auto& n : retired) stop_node(n);
        std::lock_guard lk(m_);
        if (pass_timer_) pass_timer_->cancel();
        if (end_timer_) end_timer_->cancel();
    }

    std::size_t size() const {
        std::lock_guard lk(m_);
        return nodes_.size();
    }

    std::vector<std::pair<std::filesystem::path, memory_counters>> counters() const {
        std::lock_guard lk(m_);
        std::vector<std::pair<std::filesystem::path, memory_counters>> out;
        out.reserve(nodes_.size());
        for (const auto& [d_, n] : nodes_)
            if (n->watch) out.emplace_back(n->dir(), n->watch->last_counters());
        return out;
    }

    void child_appeared(const tree_node& parent, const std::string& name, bool moved_in) {
        std::lock_guard lk(m_);
        auto p = nodes_.find(parent.dir());
        if (closed_ || p == nodes_.end() || p->second.get() != &parent) return;
        // A leaf whose baseline is not read yet gets it before its first child.
        if (version_ == cgroup_version::v2 && !p->second->has_h) read_base_locked(*p->second);
        // Made after the start: everything in it is news. Renamed into the tree: an old
        // cgroup, whose counters so far are not.
        add_child_locked(parent, name, /*from_zero=*/!moved_in);
    }

    // A subdirectory went: its own watch is told to look (its removal is seen here, not
    // by a watch of its own on this directory). Known or not (made and removed between
    // two looks), its kills are in this cgroup's hierarchical counters.
    void child_gone(const tree_node& parent, const std::string& name) {
        std::lock_guard lk(m_);
        if (closed_) return;
        auto p = nodes_.find(parent.dir());
        if (p == nodes_.end() || p->second.get() != &parent) return;
        thread_local std::string dir;
        dir.assign(parent.dir()).append("/").append(name);
        if (auto c = nodes_.find(dir); c != nodes_.end() && c->second->watch) c->second->watch->maybe_removed();
        request_reconcile_locked(p->second);
    }

    void rescan(const std::shared_ptr<tree_node>& n) {
        std::lock_guard lk(m_);
        if (closed_ || !known_locked(*n)) return;
        scan_locked(*n);
    }

    void fail(const error_code& ec, const std::string& what) {
        OOMWATCH_LOG(error) << what << ": tree watch failed: " << ec.message();
        state_->publish_failed(ec, what);
    }

    // A cgroup's watch saw it removed (with the watch's lock held: posted).
    void post_ended(std::shared_ptr<tree_node> n) {
        asio::post(ex_, [w = weak_from_this(), n = std::move(n)] {
            if (auto t = w.lock()) t->node_ended(n);
        });
    }

private:
    static counted_array counted(const memory_counters& c) {
        counted_array a;
        for (std::size_t i = 0; i < counted_count; ++i) a[i] = c.get(counted_kinds[i]);
        return a;
    }

    // A cgroup's hierarchical baseline. Read late (a leaf found at the start), less what
    // it reported since the start, which is in it. With m_ held.
    void read_base_locked(tree_node& n) {
        memory_counters h;
        if (!n.watch || read_hierarchical(n.dir(), h)) return;
        n.base_h = counted(h);
        for (std::size_t i = 0; i < counted_count; ++i) {
            const auto r = n.reported[i].load(std::memory_order_relaxed);
            n.base_h[i] = n.base_h[i] > r ? n.base_h[i] - r : 0;
        }
        n.has_h = true;
    }

    // The hierarchical baselines of the cgroups found at the start, a batch per handler
    // (a tree of 10,000 takes some 50 ms to read: other handlers run in between).
    void read_bases() {
        std::lock_guard lk(m_);
        if (closed_) return;
        constexpr std::size_t batch = 512;
        for (std::size_t i = 0; i < batch && !unread_.empty(); ++i) {
            auto n = std::move(unread_.back());
            unread_.pop_back();
            if (!n->has_h && known_locked(*n)) read_base_locked(*n);
        }
        if (!unread_.empty())
            asio::post(ex_, [w = weak_from_this()] {
                if (auto t = w.lock()) t->read_bases();
            });
    }

    // With m_ held.
    bool known_locked(const tree_node& n) const {
        auto it = nodes_.find(n.dir());
        return it != nodes_.end() && it->second.get() == &n;
    }

    // `ino`: the directory's inode when a listing gave it (0: stat it). With m_ held.
    error_code add_node_locked(const std::string& dir, unsigned depth, bool from_zero, bool is_root,
                               bool has_counters = true, ino_t ino = 0, bool parent_watched = false) {
        if (!ino) {
            struct stat st{};
            if (auto ec = stat_path(dir, st)) {
                if (!is_root && ec != boost::system::errc::no_such_file_or_directory) skip(dir, ec);
                return ec;
            }
            if (!S_ISDIR(st.st_mode)) return make_error_code(error::not_a_cgroup);
            ino = st.st_ino;
        }
        if (auto it = nodes_.find(dir); it != nodes_.end()) {
            if (it->second->ino == ino) return {};  // known already (a scan and its event)
            // A namesake in place of a removed one: the old watch ends by itself.
            retired_.push_back(it->second);
            nodes_.erase(it);
        }
        source_ref src = is_root ? state_->root()
                                 : std::make_shared<event_source_info>(event_source_info{dir, version_, event_origin::here});
        auto node = std::make_shared<tree_node>(weak_from_this(), src, depth, ino);
        if (!is_root) state_->publish_created(src, {});

        if (has_counters) {
            node_role role;
            role.src = is_root ? source_ref{} : src;
            role.from_zero = from_zero;
            if (starting_ && opts_.resume_from) role.resume_from = opts_.resume_from(std::filesystem::path(dir));
            role.observer = node;
            role.ino = ino;
            // The root's removal ends the tree: the tree says it, after its descendants'.
            role.report_removed = !is_root;
            // Below the root, the parent's directory watch sees the name go.
            role.owner_sees_removal = parent_watched;
            role.local_failure = !is_root;
            error_code ec;
            if (version_ == cgroup_version::v1) {
                node->watch = start_v1_watch(ex_, state_, ec, std::move(role));
            } else {
                watch_options o;
                o.counters = watch_options::scope::local;  // each cgroup's own: every event once
                o.liveness_interval = opts_.liveness_interval;
                node->watch = start_v2_watch(ex_, o, state_, ec, std::move(role));
            }
            if (ec) {
                if (is_root) return ec;
                if (ec == boost::system::errc::no_such_file_or_directory || ec == boost::system::errc::no_such_device) {
                    // Gone before it could be watched: say so, it was announced.
                    state_->publish_removed(src, clock::now());
                } else {
                    skip(src, ec);
                }
                return {};
            }
        }
        if (version_ == cgroup_version::v2 && node->watch && !starting_) {
            // Made after the start: everything in its memory.events is news (as in its
            // local file). Renamed in: from now on.
            memory_counters h;
            if (from_zero) {
                node->has_h = true;
            } else if (!read_hierarchical(dir, h)) {
                node->base_h = counted(h);
                node->has_h = true;
            }
        }
        auto& n = *nodes_.emplace(node->dir(), node).first->second;
        if (!opts_.max_depth || depth < *opts_.max_depth) {
            // The directory watch first, then the listing: a child made in between is in
            // the one or the other (both: the second finds it known).
            if (auto ec = svc_.add_dir(ex_, n.dir(), node, n.dir_reg)) {
                if (is_root) {
                    nodes_.erase(n.dir());
                    if (node->watch) node->watch->stop();
                    return ec;
                }
                OOMWATCH_LOG(warning) << dir << ": its new subdirectories will not be found: " << ec.message();
                state_->publish_skipped(src, ec);
            } else {
                n.dir_watched = true;
            }
            scan_locked(n);
        }
        return {};
    }

    // A descendant that cannot be watched: the tree goes on, and says so.
    void skip(const std::string& dir, const error_code& ec) {
        skip(std::make_shared<event_source_info>(event_source_info{dir, version_, event_origin::here}), ec);
    }
    void skip(const source_ref& src, const error_code& ec) {
        OOMWATCH_LOG(warning) << src->cgroup << ": not watched: " << ec.message();
        state_->publish_skipped(src, ec);
    }

    // With m_ held.
    void add_child_locked(const tree_node& parent, std::string_view name, bool from_zero, ino_t ino = 0) {
        if (name.empty() || name[0] == '.') return;
        std::string dir;
        dir.reserve(parent.dir().size() + 1 + name.size());
        dir.append(parent.dir()).append("/").append(name);
        if (opts_.filter && !opts_.filter(std::filesystem::path(dir))) return;
        add_node_locked(dir, parent.depth + 1, from_zero, /*is_root=*/false, true, ino, parent.dir_watched);
    }

    // Lists a directory and watches the subdirectories not known yet. With m_ held.
    // getdents64 itself, not readdir: it gives each entry's inode, which saves a stat
    // per cgroup, and opendir's own fstat.
    void scan_locked(tree_node& n) {
        unique_fd fd(::open(n.dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fd) {
            if (errno != ENOENT) OOMWATCH_LOG(warning) << n.dir() << ": cannot list: " << std::strerror(errno);
            return;
        }
        thread_local std::vector<std::pair<std::string, ino_t>> found;
        found.clear();
        alignas(8) char buf[16384];
        for (;;) {
            const ssize_t got = ::getdents64(fd.get(), buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) {
                OOMWATCH_LOG(warning) << n.dir() << ": cannot list: " << std::strerror(errno);
                break;
            }
            if (got == 0) break;
            for (ssize_t off = 0; off < got;) {
                // The fields by offset (struct linux_dirent64): d_ino, d_off, d_reclen, d_type, d_name.
                std::uint64_t d_ino;
                unsigned short reclen;
                std::memcpy(&d_ino, buf + off, sizeof d_ino);
                std::memcpy(&reclen, buf + off + 16, sizeof reclen);
                const unsigned char type = static_cast<unsigned char>(buf[off + 18]);
                const char* name = buf + off + 19;
                if (reclen == 0) break;
                if ((type == DT_DIR || type == DT_UNKNOWN) && name[0] != '.')
                    found.emplace_back(name, type == DT_DIR ? static_cast<ino_t>(d_ino) : 0);
                off += reclen;
            }
        }
        fd.reset();
        const auto names = std::move(found);  // add_child may scan (and use `found`) again
        found.clear();
        if (starting_ && !names.empty()) n.had_children = true;
        for (auto& [name, ino] : names) add_child_locked(n, name, /*from_zero=*/!starting_, ino);
    }

    void node_ended(const std::shared_ptr<tree_node>& gone) {
        {
            std::lock_guard lk(m_);
            if (closed_) return;
            auto it = nodes_.find(gone->dir());
            const bool current = it != nodes_.end() && it->second == gone;
            if (current && gone->dir() == root_dir_) {
                root_ended_locked();
                return;
            }
            if (current)
                nodes_.erase(it);
            else if (std::erase(retired_, gone) == 0)
                return;  // the tree let go of it already
        }
        if (gone->dir_watched) svc_.remove_dir(gone->dir_reg);
        std::lock_guard lk(m_);
        if (closed_) return;
        if (root_gone_) {
            finish_if_empty_locked();
            return;
        }
        // Its counts stay in its parent's memory.events: keep them in the parent's sum.
        const auto slash = gone->dir().rfind('/');
        if (slash == std::string::npos) return;
        auto it = nodes_.find(std::string_view(gone->dir()).substr(0, slash));
        if (it == nodes_.end()) return;
        for (std::size_t i = 0; i < counted_count; ++i)
            it->second->reported[i].fetch_add(gone->reported[i].load(std::memory_order_relaxed),
                                              std::memory_order_relaxed);
        request_reconcile_locked(it->second);
    }

    // The root is gone, so is everything below it (rmdir needs an empty cgroup): the
    // descendants' own watches report their removals (v1: once their removal signal is
    // in), then the tree reports the root's, last. Bounded: what has not ended by then
    // is reported removed by the tree.
    static constexpr std::chrono::milliseconds root_end_bound{11'000};

    // With m_ held.
    void root_ended_locked() {
        root_gone_ = true;
        if (finish_if_empty_locked()) return;
        end_timer_ = std::make_unique<asio::steady_timer>(ex_);
        end_timer_->expires_after(root_end_bound);
        end_timer_->async_wait([w = weak_from_this()](error_code ec) {
            auto t = w.lock();
            if (ec || !t) return;
            std::lock_guard lk(t->m_);
            if (t->closed_) return;
            for (auto& [d, n] : t->nodes_)
                if (d != t->root_dir_) {
                    OOMWATCH_LOG(warning) << d << ": no removal seen " << root_end_bound.count()
                                          << " ms after its ancestor's; reported removed";
                    t->state_->publish_removed(n->src, clock::now());
                }
            t->finish_locked();
        });
    }

    // With m_ held.
    bool finish_if_empty_locked() {
        if (nodes_.size() > (nodes_.contains(root_dir_) ? 1u : 0u)) return false;
        finish_locked();
        return true;
    }

    // With m_ held.
    void finish_locked() {
        if (end_timer_) end_timer_->cancel();
        state_->publish_removed();  // the tree's last event
        // Nothing is left to watch: release the watches (not here: m_ is held).
        asio::post(ex_, [w = weak_from_this()] {
            if (auto t = w.lock()) t->stop();
        });
    }

    // Reconciliation (v2): the kills of descendants removed before the tree could read
    // them are in the hierarchical counters of every ancestor. The nearest one still
    // there compares its memory.events growth with what its subtree reported and reports
    // the difference, marked as coming from removed descendants. Asked for when a child
    // goes; done a little later (the kernel delays notifications by up to 10 ms), for
    // every cgroup that asked, deepest first, so that a parent's sum holds what its
    // children attributed. A positive difference is checked again after re-reading the
    // living subtree (their news may be on its way); a subtree with a removal the tree
    // has not processed yet waits for the next round, where the nearer cgroup goes first.
    static constexpr std::chrono::milliseconds reconcile_delay{50};

    // With m_ held.
    void request_reconcile_locked(std::shared_ptr<tree_node> p) {
        if (closed_) return;
        // A cgroup whose baseline is not read yet leaves it to the nearest one that has.
        while (!p->has_h) {
            const auto slash = p->dir().rfind('/');
            if (p->dir() == root_dir_ || slash == std::string::npos) return;
            auto it = nodes_.find(std::string_view(p->dir()).substr(0, slash));
            if (it == nodes_.end()) return;
            p = it->second;
        }
        if (!p->reconcile_pending) {
            p->reconcile_pending = true;
            pending_.push_back(p);
        }
        if (pass_armed_) return;
        pass_armed_ = true;
        if (!pass_timer_) pass_timer_ = std::make_unique<asio::steady_timer>(ex_);
        pass_timer_->expires_after(reconcile_delay);
        pass_timer_->async_wait([w = weak_from_this()](error_code ec) {
            if (auto t = w.lock(); t && !ec) t->reconcile_pass();
        });
    }

    void reconcile_pass() {
        std::lock_guard lk(m_);
        pass_armed_ = false;
        if (closed_) return;
        auto pending = std::move(pending_);
        pending_.clear();
        std::sort(pending.begin(), pending.end(), [](auto& a, auto& b) { return a->depth > b->depth; });
        for (auto& p : pending) {
            p->reconcile_pending = false;
            if (!known_locked(*p)) continue;  // gone meanwhile: its parent has asked
            if (!reconcile_locked(*p)) request_reconcile_locked(p);  // next round
        }
    }

    // False when it must wait for the next round. With m_ held.
    bool reconcile_locked(tree_node& p) {
        memory_counters now;
        if (read_hierarchical(p.dir(), now)) return true;  // gone too: its parent will
        const auto h = counted(now);
        // The living subtree, collected once.
        std::vector<tree_node*> sub;
        for (auto& [d_, n] : nodes_)
            if (in_subtree(p, *n)) sub.push_back(n.get());
        auto gap = gap_of(p, h, sub);
        if (gap.empty()) return true;
        for (auto* n : sub)
            if (n->watch) n->watch->refresh();
        for (auto* n : sub)
            if (n->ended) return false;  // a removal still to account
        gap = gap_of(p, h, sub);
        if (gap.empty()) return true;
        if (!p.gone_src)
            p.gone_src = std::make_shared<event_source_info>(
                event_source_info{p.dir(), version_, event_origin::removed_descendant});
        for (std::size_t i = 0; i < counted_count; ++i)
            if (auto g = gap.get(counted_kinds[i])) p.reported[i].fetch_add(g, std::memory_order_relaxed);
        OOMWATCH_LOG(debug) << p.dir() << ": " << gap.get(event_kind::oom_kill)
                            << " kill(s) in descendants removed before they were read";
        state_->publish(p.gone_src, gap, now);
        return true;
    }

    static bool in_subtree(const tree_node& p, const tree_node& n) {
        const auto& pd = p.dir();
        const auto& nd = n.dir();
        return &p == &n || (nd.size() > pd.size() && nd.compare(0, pd.size(), pd) == 0 && nd[pd.size()] == '/');
    }

    // What p's memory.events grew by (to `now`) that its subtree did not report.
    static counter_delta gap_of(const tree_node& p, const counted_array& now, const std::vector<tree_node*>& sub) {
        counted_array sum{};
        for (auto* n : sub)
            for (std::size_t i = 0; i < counted_count; ++i) sum[i] += n->reported[i].load(std::memory_order_relaxed);
        counter_delta gap;
        for (std::size_t i = 0; i < counted_count; ++i) {
            const auto growth = now[i] > p.base_h[i] ? now[i] - p.base_h[i] : 0;
            gap.by_kind[static_cast<std::size_t>(counted_kinds[i])] = growth > sum[i] ? growth - sum[i] : 0;
        }
        return gap;
    }

    asio::any_io_executor ex_;
    inotify_service& svc_;
    std::shared_ptr<watcher_state> state_;
    const tree_options opts_;
    const cgroup_version version_;
    mutable std::mutex m_;
    // Keyed by the node's own directory string (its source's): no second copy.
    std::unordered_map<std::string_view, std::shared_ptr<tree_node>> nodes_;
    std::vector<std::shared_ptr<tree_node>> retired_;  // replaced by a namesake; ending
    std::vector<std::shared_ptr<tree_node>> pending_;  // asked for reconciliation
    std::vector<std::shared_ptr<tree_node>> unread_;   // found at the start, hierarchical baseline not read yet
    std::unique_ptr<asio::steady_timer> pass_timer_;  // the next reconciliation round
    std::unique_ptr<asio::steady_timer> end_timer_;   // bounds the wait for descendants after the root went
    std::string root_dir_;
    bool root_gone_ = false;
    bool pass_armed_ = false;
    bool starting_ = false;
    bool closed_ = false;
};

void tree_node::on_child_appeared(const std::string& name, bool moved_in) {
    if (auto t = tree_.lock()) t->child_appeared(*this, name, moved_in);
}

void tree_node::on_child_gone(const std::string& name) {
    if (auto t = tree_.lock()) t->child_gone(*this, name);
}

void tree_node::on_end() noexcept {
    ended = true;
    try {
        if (auto t = tree_.lock()) t->post_ended(shared_from_this());
    } catch (const std::exception& e) {
        // Out of memory: the liveness sweep and the root's end bound still settle it.
        OOMWATCH_LOG(error) << dir() << ": cannot tell the tree of its removal: " << e.what();
    }
}

void tree_node::on_rescan() {
    if (auto t = tree_.lock()) t->rescan(shared_from_this());
}

void tree_node::on_dir_service_failed(const error_code& ec) {
    if (auto t = tree_.lock()) t->fail(ec, "inotify (watching " + dir() + ")");
}

} // namespace detail

namespace {

const std::filesystem::path empty_path;

// The root as `watcher` would take it; the root of a v2 hierarchy too (it has no
// counters of its own, but its descendants do).
result<cgroup_location> locate_root(const std::filesystem::path& p, const tree_options& opts,
                                            bool& has_counters) {
    has_counters = true;
    std::error_code fec;
    auto real = std::filesystem::canonical(p, fec);
    auto n = fec ? p.lexically_normal() : real;
    if (!n.has_filename() && n.has_parent_path() && n != n.root_path()) n = n.parent_path();
    auto loc = opts.force_version ? check_cgroup_directory(n, *opts.force_version) : detail::resolve_cgroup(n);
    if (!loc && loc.error() == error::root_cgroup) {
        has_counters = false;
        return cgroup_location{n, cgroup_version::v2};
    }
    return loc;
}

} // namespace

tree_watcher::tree_watcher(const executor_type& ex, const std::filesystem::path& root, const tree_options& opts)
    : ex_(ex) {
    error_code ec;
    open(root, opts, ec);
    if (ec) throw cgroup_error(ec, root);
}

tree_watcher::tree_watcher(const executor_type& ex, const std::filesystem::path& root, const tree_options& opts,
                           error_code& ec)
    : ex_(ex) {
    open(root, opts, ec);
}

void tree_watcher::open(const std::filesystem::path& root, const tree_options& opts, error_code& ec) {
    ec = {};
    if (opts.liveness_interval <= std::chrono::milliseconds::zero()) {
        ec = make_error_code(boost::system::errc::invalid_argument);
        return;
    }
    bool has_counters = true;
    auto loc = locate_root(root, opts, has_counters);
    if (!loc) {
        ec = loc.error();
        return;
    }
    if (opts.victim_hold < std::chrono::milliseconds::zero()) {
        ec = make_error_code(boost::system::errc::invalid_argument);
        return;
    }
    auto st = std::make_shared<detail::watcher_state>(ex_, loc->directory, loc->version, opts.kinds);
    // Each cgroup's own counters: a kill is matched to the victim's cgroup alone.
    if (opts.victims && !opts.force_version) detail::enable_victims_of(*st, opts.victim_hold, false);
    std::shared_ptr<detail::tree> t;
    try {
        t = std::make_shared<detail::tree>(ex_, st, opts, loc->version);
        ec = t->start(loc->directory.native(), has_counters);
    } catch (const boost::system::system_error& e) {
        ec = e.code();
    } catch (const std::bad_alloc&) {
        ec = make_error_code(boost::system::errc::not_enough_memory);
    }
    if (ec) {
        if (t) t->stop();
        return;
    }
    st->attach(t);
    st->start_victims();
    state_ = std::move(st);
    tree_ = std::move(t);
    OOMWATCH_LOG(trace) << loc->directory.string() << ": watching the tree (cgroup v"
                        << static_cast<int>(loc->version) << ", " << tree_->size() << " cgroups)";
}

tree_watcher::tree_watcher(tree_watcher&& other) noexcept
    : ex_(other.ex_), state_(std::move(other.state_)), tree_(std::move(other.tree_)) {}

tree_watcher& tree_watcher::operator=(tree_watcher&& other) noexcept {
    if (this != &other) {
        close();
        ex_ = other.ex_;
        state_ = std::move(other.state_);
        tree_ = std::move(other.tree_);
    }
    return *this;
}

tree_watcher::~tree_watcher() { close(); }

bool tree_watcher::is_open() const noexcept { return state_ && state_->open(); }

const std::filesystem::path& tree_watcher::root() const noexcept { return state_ ? state_->cgroup() : empty_path; }

cgroup_version tree_watcher::version() const noexcept { return state_ ? state_->version() : cgroup_version::v1; }

std::size_t tree_watcher::size() const { return tree_ && is_open() ? tree_->size() : 0; }

std::vector<std::pair<std::filesystem::path, memory_counters>> tree_watcher::counters() const {
    if (!tree_ || !is_open()) return {};
    return tree_->counters();
}

std::optional<cgroup_error> tree_watcher::failure() const {
    if (!state_) return std::nullopt;
    auto f = state_->failure();
    if (!f) return std::nullopt;
    return cgroup_error(f->ec, f->path);
}

bool tree_watcher::victims_available() const { return state_ && state_->victims_available(); }

error_code tree_watcher::victims_error() const { return state_ ? state_->victims_error() : error_code{}; }

void tree_watcher::async_next_event_impl(event_handler handler) {
    detail::async_next_of(ex_, state_, std::move(handler));
}

asio::awaitable<oom_event> tree_watcher::next_event() { return detail::next_event_of(ex_, state_); }

subscription tree_watcher::subscribe_impl(executor_type ex, std::function<void(const oom_event&)> fn) {
    if (!state_) return subscription{};
    return subscription(state_->subscribe(std::move(ex), std::move(fn)));
}

void tree_watcher::cancel() {
    if (state_) state_->cancel_wait();
}

void tree_watcher::close() {
    if (state_) state_->close();  // stops the tree (its source), which stops every cgroup's watch
}

} // namespace oomwatch
