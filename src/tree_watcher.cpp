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
#include <boost/asio/use_awaitable.hpp>

#include <dirent.h>
#include <sys/stat.h>

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

// One cgroup of the tree: its counters watch, and (above the depth limit) the watch on
// its directory that finds its children.
class tree_node final : public inotify_dir_client, public std::enable_shared_from_this<tree_node> {
public:
    tree_node(std::weak_ptr<tree> t, std::string d, unsigned level, ino_t inode)
        : tree_(std::move(t)), dir(std::move(d)), depth(level), ino(inode) {}

    void on_child_appeared(const std::string& name, bool moved_in) override;
    void on_child_gone(const std::string&) override {}  // the child's own watch reports it
    void on_rescan() override;
    void on_dir_service_failed(const error_code& ec) override;

    std::weak_ptr<tree> tree_;
    const std::string dir;
    const unsigned depth;
    const ino_t ino;
    std::shared_ptr<source> watch;  // null for a v2 hierarchy root (it has no counters)
    inotify_service::registration dir_reg;
    bool dir_watched = false;
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
        starting_ = true;
        auto ec = add_node_locked(root, 0, /*from_zero=*/false, /*is_root=*/true, root_has_counters);
        starting_ = false;
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
        if (auto ec = stat_path(dir, st)) return ec;
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
        if (!is_root) state_->publish_created(src, {});

        if (has_counters) {
            node_role role;
            role.src = is_root ? source_ref{} : src;
            role.from_zero = from_zero;
            role.on_end = [w = weak_from_this(), ex = ex_, raw = node.get()] {
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
                    OOMWATCH_LOG(warning) << dir << ": not watched: " << ec.message();
                }
                return {};
            }
        }
        nodes_.emplace(dir, node);
        if (!opts_.max_depth || depth < *opts_.max_depth) {
            // The directory watch first, then the listing: a child made in between is in
            // the one or the other (both: the second finds it known).
            if (auto ec = svc_.add_dir(ex_, dir, node, node->dir_reg)) {
                OOMWATCH_LOG(warning) << dir << ": its new subdirectories will not be found: " << ec.message();
                if (is_root) return ec;
            } else {
                node->dir_watched = true;
            }
            scan_locked(*node);
        }
        return {};
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
    }

    asio::any_io_executor ex_;
    inotify_service& svc_;
    std::shared_ptr<watcher_state> state_;
    const tree_options opts_;
    const cgroup_version version_;
    mutable std::mutex m_;
    std::unordered_map<std::string, std::shared_ptr<tree_node>> nodes_;
    std::vector<std::shared_ptr<tree_node>> retired_;  // replaced by a namesake; ending
    bool starting_ = false;
    bool closed_ = false;
};

void tree_node::on_child_appeared(const std::string& name, bool moved_in) {
    if (auto t = tree_.lock()) t->child_appeared(*this, name, moved_in);
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
