// The public watcher: picks the v1 or v2 implementation and forwards to the shared state.
#include <oomwatch/watcher.hpp>

#include <oomwatch/cgroup.hpp>

#include "detail/cgroup.hpp"
#include "detail/error.hpp"
#include "logger.hpp"
#include "v1_watcher.hpp"
#include "v2_watcher.hpp"
#include "watcher_state.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

namespace asio = boost::asio;
using boost::system::error_code;

namespace oomwatch {

// ---- subscription -------------------------------------------------------------------

subscription& subscription::operator=(subscription&& other) noexcept {
    if (this != &other) {
        reset();
        sub_ = std::move(other.sub_);
    }
    return *this;
}

subscription::~subscription() { reset(); }

void subscription::reset() noexcept {
    if (sub_) {
        sub_->deactivate(true);
        auto s = std::move(sub_);
        s->released();
    }
}

bool subscription::active() const noexcept { return sub_ && sub_->active(); }

// ---- watcher ------------------------------------------------------------------------

namespace {

const std::filesystem::path empty_path;

std::filesystem::path normalized(const std::filesystem::path& p) {
    // Through symlinks to the real directory: removal is reported in the real parent,
    // and that is the one to watch. A path that does not exist is left for the lookup
    // to interpret (or to report).
    std::error_code ec;
    auto real = std::filesystem::canonical(p, ec);
    auto n = ec ? p.lexically_normal() : real;
    if (!n.has_filename() && n.has_parent_path() && n != n.root_path()) n = n.parent_path();  // "a/b/" -> "a/b"
    return n;
}

// The cgroup a path names: taken as it is with `force_version`, else looked up.
result<cgroup_location> locate(const std::filesystem::path& cgroup, const watch_options& opts) {
    return opts.force_version ? check_cgroup_directory(normalized(cgroup), *opts.force_version)
                              : detail::resolve_cgroup(normalized(cgroup));
}

} // namespace

watcher::watcher(const executor_type& ex, const std::filesystem::path& cgroup, const watch_options& opts)
    : ex_(ex) {
    error_code ec;
    auto loc = locate(cgroup, opts);
    if (!loc) throw cgroup_error(loc.error(), cgroup);
    open(loc->directory, loc->version, opts, ec);
    throw_if(ec, loc->directory);
}

watcher::watcher(const executor_type& ex, const std::filesystem::path& cgroup, const watch_options& opts,
                 error_code& ec)
    : ex_(ex) {
    ec = {};
    auto loc = locate(cgroup, opts);
    if (!loc) {
        ec = loc.error();
        OOMWATCH_LOG(debug) << cgroup.string() << ": cannot watch: " << ec.message();
        return;
    }
    open(loc->directory, loc->version, opts, ec);
}

watcher::watcher(const executor_type& ex, process p, const watch_options& opts) : ex_(ex) {
    auto loc = detail::memory_cgroup_of(p.pid);
    if (!loc) throw cgroup_error(loc.error(), "/proc/" + std::to_string(p.pid) + "/cgroup");
    error_code ec;
    open(loc->directory, loc->version, opts, ec);
    throw_if(ec, loc->directory);
}

watcher::watcher(const executor_type& ex, process p, const watch_options& opts, error_code& ec) : ex_(ex) {
    ec = {};
    auto loc = detail::memory_cgroup_of(p.pid);
    if (!loc) {
        ec = loc.error();
        return;
    }
    open(loc->directory, loc->version, opts, ec);
}

void watcher::open(const std::filesystem::path& dir, cgroup_version v, const watch_options& opts, error_code& ec) {
    if (opts.liveness_interval <= std::chrono::milliseconds::zero()) {
        ec = make_error_code(boost::system::errc::invalid_argument);
        OOMWATCH_LOG(debug) << dir.string() << ": cannot watch: liveness_interval must be positive";
        return;
    }
    if (opts.victim_hold < std::chrono::milliseconds::zero()) {
        ec = make_error_code(boost::system::errc::invalid_argument);
        OOMWATCH_LOG(debug) << dir.string() << ": cannot watch: victim_hold must not be negative";
        return;
    }
    auto st = std::make_shared<detail::watcher_state>(ex_, dir, v, opts.kinds);
    // Victims only for a cgroup of the mounted hierarchy: a forced folder has no kernel log.
    if (opts.victims && !opts.force_version)
        detail::enable_victims_of(*st, opts.victim_hold,
                                  v == cgroup_version::v2 && opts.counters == watch_options::scope::hierarchical);
    detail::node_role role;
    role.resume_from = opts.resume_from;
    auto src = v == cgroup_version::v1 ? detail::start_v1_watch(ex_, st, ec, std::move(role))
                                       : detail::start_v2_watch(ex_, opts, st, ec, std::move(role));
    if (ec) {
        OOMWATCH_LOG(debug) << dir.string() << ": cannot watch: " << ec.message();
        return;
    }
    st->attach(std::move(src));
    st->start_victims();
    state_ = std::move(st);
    OOMWATCH_LOG(trace) << dir.string() << ": watching (cgroup v" << static_cast<int>(v) << ")";
}

watcher::watcher(watcher&& other) noexcept : ex_(other.ex_), state_(std::move(other.state_)) {}

watcher& watcher::operator=(watcher&& other) noexcept {
    if (this != &other) {
        close();
        ex_ = other.ex_;
        state_ = std::move(other.state_);
    }
    return *this;
}

watcher::~watcher() { close(); }

bool watcher::is_open() const noexcept { return state_ && state_->open(); }

const std::filesystem::path& watcher::cgroup() const noexcept { return state_ ? state_->cgroup() : empty_path; }

cgroup_version watcher::version() const noexcept { return state_ ? state_->version() : cgroup_version::v1; }

memory_counters watcher::counters() const { return state_ ? state_->counters() : memory_counters{}; }

bool watcher::victims_available() const { return state_ && state_->victims_available(); }

error_code watcher::victims_error() const { return state_ ? state_->victims_error() : error_code{}; }

void watcher::async_next_event_impl(event_handler handler) { detail::async_next_of(ex_, state_, std::move(handler)); }

std::optional<cgroup_error> watcher::failure() const {
    if (!state_) return std::nullopt;
    auto f = state_->failure();
    if (!f) return std::nullopt;
    return cgroup_error(f->ec, f->path);
}

asio::awaitable<oom_event> watcher::next_event() { return detail::next_event_of(ex_, state_); }

subscription watcher::subscribe_impl(executor_type ex, subscriber_fn fn) {
    if (!state_) return subscription{};
    return subscription(state_->subscribe(std::move(ex), std::move(fn)));
}

void watcher::cancel() {
    if (state_) state_->cancel_wait();
}

void watcher::close() {
    if (state_) state_->close();
}

namespace detail {

void enable_victims_of(watcher_state& st, std::chrono::milliseconds hold, bool root_hierarchical) {
    auto h = find_memory_hierarchy();
    if (!h) {
        OOMWATCH_LOG(debug) << st.cgroup().string() << ": no victims: " << h.error().message();
        return;
    }
    st.enable_victims(hierarchy_view{h->mount_point.native(), h->root}, hold, root_hierarchical);
}

void async_next_of(const asio::any_io_executor& ex, const std::shared_ptr<watcher_state>& st, event_handler handler) {
    if (!st) {
        asio::post(ex, asio::append(std::move(handler), error_code(error::watcher_closed), oom_event{}));
        return;
    }
    st->async_next(std::move(handler));
}

namespace {

// The exception `next_event()` throws: a `cgroup_error` naming the file that failed, or
// else the cgroup.
std::exception_ptr to_exception(const error_code& ec, const std::shared_ptr<watcher_state>& st) {
    if (st && ec != asio::error::operation_aborted)
        if (auto f = st->failure(); f && f->ec == ec) return std::make_exception_ptr(cgroup_error(ec, f->path));
    return std::make_exception_ptr(cgroup_error(ec, st ? st->cgroup() : std::filesystem::path{}));
}

} // namespace

// Not a coroutine of its own: the operation's awaitable is returned as it is, which
// saves a coroutine frame per waiting consumer. Its completion carries an exception_ptr,
// so that use_awaitable throws a cgroup_error naming the path.
asio::awaitable<oom_event> next_event_of(const asio::any_io_executor& ex, std::shared_ptr<watcher_state> st) {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, oom_event)>(
        [ex, st = std::move(st)](auto handler) {
            auto slot = asio::get_associated_cancellation_slot(handler);
            auto hex = asio::get_associated_executor(handler, ex);
            async_next_of(ex, st,
                          asio::bind_cancellation_slot(
                              slot, asio::bind_executor(hex, [h = std::move(handler), st](error_code ec,
                                                                                          oom_event ev) mutable {
                                  std::exception_ptr e;
                                  if (ec) e = to_exception(ec, st);
                                  std::move(h)(e, std::move(ev));
                              })));
        },
        asio::use_awaitable);
}

} // namespace detail

} // namespace oomwatch
