#include "watcher_state.hpp"

#include <oomwatch/error.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

namespace asio = boost::asio;
using boost::system::error_code;

namespace oomwatch::detail {

// ---- backlog ------------------------------------------------------------------------

void backlog::add(event_kind k, std::uint64_t n, clock::time_point when) {
    if (n == 0) return;
    auto i = static_cast<std::size_t>(k);
    if (count_[i] == 0) first_[i] = when;
    count_[i] += n;
}

bool backlog::empty() const noexcept {
    for (auto c : count_)
        if (c != 0) return false;
    return true;
}

std::optional<std::pair<event_kind, std::uint64_t>> backlog::pop(clock::time_point& first_seen) {
    for (std::size_t i = 0; i < count_.size(); ++i) {
        if (count_[i] == 0) continue;
        std::pair<event_kind, std::uint64_t> r{static_cast<event_kind>(i), count_[i]};
        first_seen = first_[i];
        count_[i] = 0;
        return r;
    }
    return std::nullopt;
}

namespace {

// Adds what a re-read found (and the end of the watch) to a backlog.
void add_all(backlog& b, const counter_delta& d, std::optional<event_kind> terminal, clock::time_point when) {
    for (std::size_t i = 0; i < event_kind_count; ++i) b.add(static_cast<event_kind>(i), d.by_kind[i], when);
    if (terminal) b.add(*terminal, 1, when);
}

oom_event make_event(const event_source_info& info, event_kind k, std::uint64_t n, const memory_counters& c,
                     clock::time_point first) {
    oom_event ev;
    ev.cgroup = info.cgroup;
    ev.kind = k;
    ev.count = n;
    ev.counters = c;
    ev.time = first;
    ev.version = info.version;
    return ev;
}

} // namespace

// ---- subscriber ---------------------------------------------------------------------

subscriber::subscriber(std::shared_ptr<const event_source_info> info, asio::any_io_executor ex,
                       std::function<void(const oom_event&)> fn, std::weak_ptr<watcher_state> owner)
    : info_(std::move(info)), ex_(std::move(ex)), fn_(std::move(fn)), owner_(std::move(owner)) {}

void subscriber::publish(const counter_delta& d, std::optional<event_kind> terminal, const memory_counters& c,
                         clock::time_point when, const error_code& error) {
    std::lock_guard lk(m_);
    if (!active_) return;
    counters_ = c;
    if (terminal == event_kind::failed) error_ = error;
    add_all(pending_, d, terminal, when);
    if (!pending_.empty()) schedule();
}

void subscriber::schedule() {
    if (scheduled_) return;
    scheduled_ = true;
    asio::post(ex_, [self = shared_from_this()] { self->deliver_one(); });
}

void subscriber::deliver_one() {
    // Held until the handler returns: a reset() on another thread waits for it.
    std::unique_lock call(call_m_);
    std::optional<oom_event> ev;
    {
        std::lock_guard lk(m_);
        clock::time_point first;
        auto p = active_ ? pending_.pop(first) : std::nullopt;
        if (!p) {
            scheduled_ = false;
            return;
        }
        ev = make_event(*info_, p->first, p->second, counters_, first);
        if (p->first == event_kind::failed) ev->error = error_;
        if (p->first == event_kind::removed || p->first == event_kind::failed) active_ = false;  // the last event
        caller_ = std::this_thread::get_id();
    }
    // Reschedule (or not) even when the handler throws, so one exception does not stop
    // this subscription for good.
    struct reschedule {
        subscriber* self;
        ~reschedule() {
            std::lock_guard lk(self->m_);
            self->caller_ = {};
            self->scheduled_ = false;
            if (self->active_ && !self->pending_.empty()) self->schedule();
        }
    } guard{this};
    fn_(*ev);
}

void subscriber::deactivate(bool wait) noexcept {
    bool in_own_handler = false;
    {
        std::lock_guard lk(m_);
        active_ = false;
        pending_.clear();
        in_own_handler = caller_ == std::this_thread::get_id();
    }
    // An invocation that began before the flag was cleared holds call_m_ until it
    // returns; one that begins later sees the flag and does nothing.
    if (wait && !in_own_handler) std::lock_guard call(call_m_);
}

bool subscriber::active() const noexcept {
    std::lock_guard lk(m_);
    return active_;
}

// ---- watcher_state ------------------------------------------------------------------

watcher_state::watcher_state(asio::any_io_executor ex, std::filesystem::path cgroup, cgroup_version v,
                             kind_set kinds)
    : ex_(std::move(ex)),
      info_(std::make_shared<event_source_info>(event_source_info{std::move(cgroup), v})),
      kinds_(kinds.insert(event_kind::removed).insert(event_kind::failed)) {}

void watcher_state::set_baseline(const memory_counters& c) {
    std::lock_guard lk(m_);
    counters_ = c;
}

void watcher_state::attach(std::shared_ptr<source> s) {
    std::lock_guard lk(m_);
    source_ = std::move(s);
}

void watcher_state::publish(const counter_delta& d, const memory_counters& c) {
    std::unique_lock lk(m_);
    if (phase_ != phase::open) return;
    counters_ = c;
    publish_locked(d, std::nullopt, clock::now(), lk);
}

void watcher_state::publish_removed() {
    std::unique_lock lk(m_);
    publish_locked(counter_delta{}, event_kind::removed, clock::now(), lk);
}

void watcher_state::publish_failed(error_code ec, std::string path) {
    std::unique_lock lk(m_);
    if (phase_ != phase::open) return;
    failure_ = failure_info{ec, std::move(path)};
    publish_locked(counter_delta{}, event_kind::failed, clock::now(), lk);
}

void watcher_state::publish_locked(const counter_delta& raw, std::optional<event_kind> terminal,
                                   clock::time_point when, std::unique_lock<std::mutex>& lk) {
    if (phase_ != phase::open) return;
    counter_delta d;  // only the kinds asked for
    for (std::size_t i = 0; i < event_kind_count; ++i)
        if (kinds_.contains(static_cast<event_kind>(i))) d.by_kind[i] = raw.by_kind[i];
    if (d.empty() && !terminal) return;
    if (terminal) phase_ = *terminal == event_kind::removed ? phase::removed : phase::failed;

    add_all(own_, d, terminal, when);
    const error_code failure = failure_ ? failure_->ec : error_code{};
    std::erase_if(subscribers_, [](const std::weak_ptr<subscriber>& w) { return w.expired(); });
    for (auto& w : subscribers_)
        if (auto s = w.lock()) s->publish(d, terminal, counters_, when, failure);

    auto h = take_waiter_locked();
    std::optional<oom_event> ev = h ? pop_event_locked() : std::nullopt;
    lk.unlock();
    if (h) {
        error_code ec = ev->kind == event_kind::failed ? ev->error : error_code{};
        complete(std::move(*h), ec, std::move(*ev));
    }
}

std::optional<oom_event> watcher_state::pop_event_locked() {
    clock::time_point first;
    auto p = own_.pop(first);
    if (!p) return std::nullopt;
    if (p->first == event_kind::removed || p->first == event_kind::failed) phase_ = phase::finished;
    auto ev = make_event(*info_, p->first, p->second, counters_, first);
    if (p->first == event_kind::failed && failure_) ev.error = failure_->ec;
    return ev;
}

std::optional<watcher_state::taken_waiter> watcher_state::take_waiter_locked() {
    // The cancellation slot is left alone: it belongs to the waiting consumer's thread,
    // and the wait id already makes a late emit harmless.
    if (!waiter_) return std::nullopt;
    taken_waiter t{std::move(*waiter_), std::move(waiter_work_)};
    waiter_.reset();
    waiter_work_.reset();
    return t;
}

void watcher_state::complete(taken_waiter t, error_code ec, oom_event ev) {
    // Never inline: post through the watcher's executor to the handler's own. The post
    // tracks work on the handler's executor from here on; only then is ours let go, or
    // its io_context could run out of work (and stop) in between.
    asio::post(ex_, asio::append(std::move(t.handler), ec, std::move(ev)));
    t.work.reset();
}

void watcher_state::async_next(event_handler h) {
    std::unique_lock lk(m_);
    error_code ec;
    std::optional<oom_event> ev;
    if (phase_ == phase::closed) {
        ec = error::watcher_closed;
    } else if (waiter_) {
        ec = error::operation_in_progress;
    } else if ((ev = pop_event_locked())) {
        if (ev->kind == event_kind::failed) ec = ev->error;
    } else if (phase_ == phase::finished) {
        if (failure_) {
            // Every wait after the failure learns it, with the failed event.
            ev = make_event(*info_, event_kind::failed, 1, counters_, clock::now());
            ev->error = ec = failure_->ec;
        } else {
            ec = error::cgroup_removed;
        }
    } else {
        auto slot = h.get_cancellation_slot();
        if (slot.is_connected()) {
            // Waiting consumes nothing, so every cancellation type can be honoured.
            // A slot can outlive its operation (a completed wait does not clear it): the
            // id makes a late emit a no-op instead of cancelling a later wait.
            slot.assign([w = weak_from_this(), id = waiter_id_ + 1](asio::cancellation_type_t) {
                if (auto s = w.lock()) {
                    std::unique_lock lk2(s->m_);
                    if (s->waiter_id_ != id || !s->waiter_) return;
                    auto h2 = s->take_waiter_locked();
                    lk2.unlock();
                    if (h2) s->complete(std::move(*h2), asio::error::operation_aborted, {});
                }
            });
        }
        ++waiter_id_;
        waiter_work_.emplace(
            asio::prefer(asio::get_associated_executor(h, ex_), asio::execution::outstanding_work.tracked));
        waiter_.emplace(std::move(h));
        return;
    }
    lk.unlock();
    complete(taken_waiter{std::move(h), std::nullopt}, ec, ev ? std::move(*ev) : oom_event{});
}

void watcher_state::cancel_wait() {
    std::unique_lock lk(m_);
    auto h = take_waiter_locked();
    lk.unlock();
    if (h) complete(std::move(*h), asio::error::operation_aborted, {});
}

void watcher_state::close() {
    std::unique_lock lk(m_);
    if (phase_ == phase::closed) return;
    phase_ = phase::closed;
    auto h = take_waiter_locked();
    own_.clear();
    auto subs = std::move(subscribers_);
    subscribers_.clear();
    auto src = std::move(source_);
    lk.unlock();
    if (src) src->stop();
    // Not under m_: a handler that is running may call into this watcher.
    for (auto& w : subs)
        if (auto s = w.lock()) s->deactivate(true);
    if (h) complete(std::move(*h), asio::error::operation_aborted, {});
}

std::shared_ptr<subscriber> watcher_state::subscribe(asio::any_io_executor ex, std::function<void(const oom_event&)> fn) {
    auto s = std::make_shared<subscriber>(info_, std::move(ex), std::move(fn), weak_from_this());
    std::lock_guard lk(m_);
    switch (phase_) {
    case phase::open:
        // Dead entries go here as well as on publish, so subscribe/reset churn on a
        // quiet cgroup does not grow the list (amortised: at most as many as live ones).
        if (subscribers_.size() >= 8 && subscribers_.size() == subscribers_.capacity()) prune_locked();
        subscribers_.push_back(s);
        break;
    case phase::removed:
    case phase::failed:
    case phase::finished:
        // Subscribed after the end: tell it, rather than leave it waiting.
        s->publish(counter_delta{}, failure_ ? event_kind::failed : event_kind::removed, counters_, clock::now(),
                   failure_ ? failure_->ec : error_code{});
        break;
    case phase::closed:
        s->deactivate(false);
        break;
    }
    return s;
}

void watcher_state::subscriber_gone() {
    std::lock_guard lk(m_);
    if (++resets_since_prune_ * 2 > subscribers_.size()) prune_locked();
}

void watcher_state::prune_locked() {
    std::erase_if(subscribers_, [](const std::weak_ptr<subscriber>& w) {
        auto s = w.lock();
        return !s || !s->active();
    });
    resets_since_prune_ = 0;
    // Give memory back after a crowd of subscribers left.
    if (subscribers_.capacity() > 16 && subscribers_.size() < subscribers_.capacity() / 4) subscribers_.shrink_to_fit();
}

memory_counters watcher_state::counters() const {
    std::lock_guard lk(m_);
    return counters_;
}

bool watcher_state::closed() const {
    std::lock_guard lk(m_);
    return phase_ == phase::closed;
}

bool watcher_state::open() const {
    std::lock_guard lk(m_);
    return phase_ == phase::open;
}

std::optional<failure_info> watcher_state::failure() const {
    std::lock_guard lk(m_);
    return failure_;
}

std::size_t watcher_state::subscriber_slots() const {
    std::lock_guard lk(m_);
    return subscribers_.size();
}

} // namespace oomwatch::detail
