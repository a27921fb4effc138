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

// What one cgroup's watch published (and what was attributed to it), per kind: shared
// with the watch's callback, which may outlive the node by a handler or two.
struct node_counts {
    std::array<std::atomic<std::uint64_t>, event_kind_count> reported{};
    std::atomic<bool> ended{false};  // its watch saw it removed (the tree may not know yet)
};

// The kinds the kernel counts hierarchically (memory.events) and locally.
constexpr event_kind counted_kinds[] = {event_kind::oom,  event_kind::oom_kill, event_kind::oom_group_kill,
                                        event_kind::high, event_kind::max,      event_kind::low};

// A cgroup's hierarchical counters (v2 memory.events).
error_code read_hierarchical(const std::string& dir, memory_counters& c) {
    thread_local std::string text;
    if (auto ec = read_file(dir + "/memory.events", text)) return ec;
    auto r = parse_memory_events(text);
    if (!r) return r.error();
    c = std::move(*r);
    return {};
}

// One cgroup of the tree: its counters watch, and (above the depth limit) the watch on
// its directory that finds its children.
class tree_node final : public inotify_dir_client, public std::enable_shared_from_this<tree_node> {
public:
    tree_node(std::weak_ptr<tree> t, std::string d, unsigned level, ino_t inode)
        : tree_(std::move(t)), dir(std::move(d)), depth(level), ino(inode) {}

    void on_child_appeared(const std::string& name, bool moved_in) override;
    void on_child_gone(const std::string& name) override;
    void on_rescan() override;
    void on_dir_service_failed(const error_code& ec) override;

    std::weak_ptr<tree> tree_;
    const std::string dir;
    const unsigned depth;
    const ino_t ino;
    std::shared_ptr<source> watch;  // null for a v2 hierarchy root (it has no counters)
    source_ref src;                 // how its events name it
    inotify_service::registration dir_reg;
    bool dir_watched = false;

    // v2: what keeps the tree's counts whole when descendants go before they are read.
    // With the tree's lock held, except `counts`.
    std::shared_ptr<node_counts> counts = std::make_shared<node_counts>();
    std::array<std::uint64_t, event_kind_count> gone{};  // reported by removed children's subtrees
    memory_counters base_h;  // memory.events when the watch began (zero: made after the start)
    bool has_h = false;
    source_ref gone_src;  // this cgroup, as the events of its removed descendants name it
    memory_counters snapshot;  // memory.events as the last reconciliation read it
    bool reconcile_pending = false;
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
            // shows as reported beyond the hierarchical growth, never as a loss.
            for (auto& [d_, n] : nodes_)
                if (n->watch && !read_hierarchical(n->dir, n->base_h)) n->has_h = true;
        }
        return ec;
    }

    void stop() noexcept override {
        std::unordered_map<std::string, std::shared_ptr<tree_node>> nodes;
        std::vector<std::shared_ptr<tree_node>> retired;
        {
            std::lock_guard lk(m_);
            closed_ = true;
            nodes.swap(nodes_);
            retired.swap(retired_);
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

    void child_appeared(const tree_node& parent, const std::string& name, bool moved_in) {
        std::lock_guard lk(m_);
        if (closed_ || !nodes_.contains(parent.dir)) return;
        // Made after the start: everything in it is news. Renamed into the tree: an old
        // cgroup, whose counters so far are not.
        add_child_locked(parent, name, /*from_zero=*/!moved_in);
    }

    // A subdirectory went: known or not (made and removed between two looks), its kills
    // are in this cgroup's hierarchical counters.
    void child_gone(const tree_node& parent) {
        std::lock_guard lk(m_);
        if (closed_) return;
        if (auto it = nodes_.find(parent.dir); it != nodes_.end()) request_reconcile_locked(it->second);
    }

    void rescan(const std::shared_ptr<tree_node>& n) {
        std::lock_guard lk(m_);
        if (closed_ || !nodes_.contains(n->dir)) return;
        scan_locked(*n);
    }

    void fail(const error_code& ec, const std::string& what) {
        OOMWATCH_LOG(error) << what << ": tree watch failed: " << ec.message();
        state_->publish_failed(ec, what);
    }

private:
    // With m_ held.
    error_code add_node_locked(const std::string& dir, unsigned depth, bool from_zero, bool is_root,
                               bool has_counters = true) {
        struct stat st{};
        if (auto ec = stat_path(dir, st)) {
            if (!is_root && ec != boost::system::errc::no_such_file_or_directory) skip(dir, ec);
            return ec;
        }
        if (!S_ISDIR(st.st_mode)) return make_error_code(error::not_a_cgroup);
        if (auto it = nodes_.find(dir); it != nodes_.end()) {
            if (it->second->ino == st.st_ino) return {};  // known already (a scan and its event)
            // A namesake in place of a removed one: the old watch ends by itself.
            retired_.push_back(it->second);
            nodes_.erase(it);
        }
        auto node = std::make_shared<tree_node>(weak_from_this(), dir, depth, st.st_ino);
        source_ref src = is_root ? state_->root()
                                 : std::make_shared<event_source_info>(event_source_info{dir, version_, event_origin::here});
        node->src = src;
        if (!is_root) state_->publish_created(src, {});

        if (has_counters) {
            node_role role;
            role.src = is_root ? source_ref{} : src;
            role.from_zero = from_zero;
            role.on_published = [counts = node->counts](const counter_delta& d) {
                for (std::size_t i = 0; i < event_kind_count; ++i)
                    if (d.by_kind[i]) counts->reported[i].fetch_add(d.by_kind[i], std::memory_order_relaxed);
            };
            // The root's removal ends the tree: the tree says it, after its descendants'.
            role.report_removed = !is_root;
            role.on_end = [w = weak_from_this(), ex = ex_, raw = node.get(), counts = node->counts] {
                counts->ended = true;
                // Posted: the watch calls this with its own lock held.
                asio::post(ex, [w, raw] {
                    if (auto t = w.lock()) t->node_ended(raw);
                });
            };
            error_code ec;
            if (version_ == cgroup_version::v1) {
                node->watch = start_v1_watch(ex_, dir, state_, ec, std::move(role));
            } else {
                watch_options o;
                o.counters = watch_options::scope::local;  // each cgroup's own: every event once
                o.liveness_interval = opts_.liveness_interval;
                node->watch = start_v2_watch(ex_, dir, o, state_, ec, std::move(role));
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
            if (from_zero)
                node->has_h = true;
            else if (!read_hierarchical(dir, node->base_h))
                node->has_h = true;
        }
        nodes_.emplace(dir, node);
        if (!opts_.max_depth || depth < *opts_.max_depth) {
            // The directory watch first, then the listing: a child made in between is in
            // the one or the other (both: the second finds it known).
            if (auto ec = svc_.add_dir(ex_, dir, node, node->dir_reg)) {
                if (is_root) {
                    nodes_.erase(dir);
                    if (node->watch) node->watch->stop();
                    return ec;
                }
                OOMWATCH_LOG(warning) << dir << ": its new subdirectories will not be found: " << ec.message();
                state_->publish_skipped(src, ec);
            } else {
                node->dir_watched = true;
            }
            scan_locked(*node);
        }
        return {};
    }

    // A descendant that cannot be watched: the tree goes on, and says so.
    void skip(const std::string& dir, const error_code& ec) {
        skip(std::make_shared<event_source_info>(event_source_info{dir, version_, event_origin::here}), ec);
    }
    void skip(const source_ref& src, const error_code& ec) {
        OOMWATCH_LOG(warning) << src->cgroup.string() << ": not watched: " << ec.message();
        state_->publish_skipped(src, ec);
    }

    // With m_ held.
    void add_child_locked(const tree_node& parent, const std::string& name, bool from_zero) {
        if (name.empty() || name[0] == '.') return;
        const std::string dir = parent.dir + "/" + name;
        if (opts_.filter && !opts_.filter(std::filesystem::path(dir))) return;
        add_node_locked(dir, parent.depth + 1, from_zero, /*is_root=*/false);
    }

    // Lists a directory and watches the subdirectories not known yet. With m_ held.
    void scan_locked(const tree_node& n) {
        std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(n.dir.c_str()), &::closedir);
        if (!d) {
            if (errno != ENOENT)
                OOMWATCH_LOG(warning) << n.dir << ": cannot list: " << std::strerror(errno);
            return;
        }
        std::vector<std::string> names;
        while (auto* e = ::readdir(d.get()))
            if (e->d_type == DT_DIR && e->d_name[0] != '.') names.emplace_back(e->d_name);
        d.reset();
        for (auto& name : names) {
            const std::string dir = n.dir + "/" + name;
            if (auto it = nodes_.find(dir); it != nodes_.end()) continue;
            add_child_locked(n, name, /*from_zero=*/!starting_);
        }
    }

    void node_ended(const tree_node* which) {
        std::shared_ptr<tree_node> gone;
        {
            std::lock_guard lk(m_);
            if (closed_) return;
            if (auto r = nodes_.find(root_dir_); r != nodes_.end() && r->second.get() == which) {
                root_ended_locked();
                return;
            }
            for (auto it = nodes_.begin(); it != nodes_.end(); ++it)
                if (it->second.get() == which) {
                    gone = it->second;
                    nodes_.erase(it);
                    break;
                }
            if (!gone)
                std::erase_if(retired_, [&](const std::shared_ptr<tree_node>& n) {
                    if (n.get() != which) return false;
                    gone = n;
                    return true;
                });
        }
        if (gone && gone->dir_watched) svc_.remove_dir(gone->dir_reg);
        if (!gone) return;
        std::lock_guard lk(m_);
        if (closed_) return;
        if (root_gone_) {
            finish_if_empty_locked();
            return;
        }
        // Its counts stay in its parent's memory.events: keep them in the parent's sum.
        const auto slash = gone->dir.rfind('/');
        if (slash == std::string::npos) return;
        auto it = nodes_.find(gone->dir.substr(0, slash));
        if (it == nodes_.end()) return;
        for (std::size_t i = 0; i < event_kind_count; ++i)
            it->second->gone[i] += gone->counts->reported[i].load(std::memory_order_relaxed) + gone->gone[i];
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
        for (auto& [d, n_] : nodes_)
            if (d != root_dir_) return false;
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
    void request_reconcile_locked(const std::shared_ptr<tree_node>& p) {
        if (!p->has_h || closed_) return;
        p->reconcile_pending = true;
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
        std::vector<std::shared_ptr<tree_node>> pending;
        for (auto& [d_, n] : nodes_)
            if (n->reconcile_pending) pending.push_back(n);
        std::sort(pending.begin(), pending.end(), [](auto& a, auto& b) { return a->depth > b->depth; });
        for (auto& p : pending) {
            p->reconcile_pending = false;
            if (!reconcile_locked(*p)) request_reconcile_locked(p);  // next round
        }
    }

    // False when it must wait for the next round. With m_ held.
    bool reconcile_locked(tree_node& p) {
        if (read_hierarchical(p.dir, p.snapshot)) return true;  // gone too: its parent will
        auto gap = gap_locked(p);
        if (gap.empty()) return true;
        for (auto& [d_, n] : nodes_)
            if (n->watch && in_subtree(p, *n)) n->watch->refresh();
        for (auto& [d_, n] : nodes_)
            if (in_subtree(p, *n) && n->counts->ended) return false;  // a removal still to account
        gap = gap_locked(p);
        if (gap.empty()) return true;
        if (!p.gone_src)
            p.gone_src = std::make_shared<event_source_info>(
                event_source_info{p.dir, version_, event_origin::removed_descendant});
        for (std::size_t i = 0; i < event_kind_count; ++i)
            if (gap.by_kind[i]) p.counts->reported[i].fetch_add(gap.by_kind[i], std::memory_order_relaxed);
        OOMWATCH_LOG(debug) << p.dir << ": " << gap.get(event_kind::oom_kill)
                            << " kill(s) in descendants removed before they were read";
        state_->publish(p.gone_src, gap, p.snapshot);
        return true;
    }

    static bool in_subtree(const tree_node& p, const tree_node& n) {
        return &p == &n || (n.dir.size() > p.dir.size() && n.dir.compare(0, p.dir.size(), p.dir) == 0 &&
                            n.dir[p.dir.size()] == '/');
    }

    // What p's memory.events grew by that its subtree did not report. With m_ held.
    counter_delta gap_locked(const tree_node& p) const {
        std::array<std::uint64_t, event_kind_count> sum{};
        for (auto& [d_, n] : nodes_) {
            if (!in_subtree(p, *n)) continue;
            for (std::size_t i = 0; i < event_kind_count; ++i)
                sum[i] += n->counts->reported[i].load(std::memory_order_relaxed) + n->gone[i];
        }
        counter_delta gap;
        for (auto k : counted_kinds) {
            const auto i = static_cast<std::size_t>(k);
            const auto now = p.snapshot.get(k), base = p.base_h.get(k);
            const auto growth = now > base ? now - base : 0;
            gap.by_kind[i] = growth > sum[i] ? growth - sum[i] : 0;
        }
        return gap;
    }

    asio::any_io_executor ex_;
    inotify_service& svc_;
    std::shared_ptr<watcher_state> state_;
    const tree_options opts_;
    const cgroup_version version_;
    mutable std::mutex m_;
    std::unordered_map<std::string, std::shared_ptr<tree_node>> nodes_;
    std::vector<std::shared_ptr<tree_node>> retired_;  // replaced by a namesake; ending
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

void tree_node::on_child_gone(const std::string&) {
    if (auto t = tree_.lock()) t->child_gone(*this);
}

void tree_node::on_rescan() {
    if (auto t = tree_.lock()) t->rescan(shared_from_this());
}

void tree_node::on_dir_service_failed(const error_code& ec) {
    if (auto t = tree_.lock()) t->fail(ec, "inotify (watching " + dir + ")");
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
    auto st = std::make_shared<detail::watcher_state>(ex_, loc->directory, loc->version, opts.kinds);
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

std::optional<cgroup_error> tree_watcher::failure() const {
    if (!state_) return std::nullopt;
    auto f = state_->failure();
    if (!f) return std::nullopt;
    return cgroup_error(f->ec, f->path);
}

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
