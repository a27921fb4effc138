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

// Adds what a re-read found (and the removal) to a backlog.
void add_all(backlog& b, const counter_delta& d, bool removed, clock::time_point when) {
    for (std::size_t i = 0; i < event_kind_count; ++i) b.add(static_cast<event_kind>(i), d.by_kind[i], when);
    if (removed) b.add(event_kind::removed, 1, when);
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
                       std::function<void(const oom_event&)> fn)
    : info_(std::move(info)), ex_(std::move(ex)), fn_(std::move(fn)) {}

void subscriber::publish(const counter_delta& d, bool removed, const memory_counters& c, clock::time_point when) {
    std::lock_guard lk(m_);
    if (!active_) return;
    counters_ = c;
    add_all(pending_, d, removed, when);
    if (!pending_.empty()) schedule();
}

void subscriber::schedule() {
    if (scheduled_) return;
    scheduled_ = true;
    asio::post(ex_, [self = shared_from_this()] { self->deliver_one(); });
}

void subscriber::deliver_one() {
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
        if (p->first == event_kind::removed) active_ = false;  // the last event
    }
    // Reschedule (or not) even when the handler throws, so one exception does not stop
    // this subscription for good.
    struct reschedule {
        subscriber* self;
        ~reschedule() {
            std::lock_guard lk(self->m_);
            self->scheduled_ = false;
            if (self->active_ && !self->pending_.empty()) self->schedule();
        }
    } guard{this};
    fn_(*ev);
}

void subscriber::deactivate() noexcept {
    std::lock_guard lk(m_);
    active_ = false;
    pending_.clear();
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
      kinds_(kinds.insert(event_kind::removed)) {}

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
    counters_ = c;
    publish_locked(d, false, clock::now(), lk);
}

void watcher_state::publish_removed() {
    std::unique_lock lk(m_);
    publish_locked(counter_delta{}, true, clock::now(), lk);
}

void watcher_state::publish_locked(const counter_delta& raw, bool removed, clock::time_point when,
                                   std::unique_lock<std::mutex>& lk) {
    if (phase_ != phase::open) return;
    counter_delta d;  // only the kinds asked for
    for (std::size_t i = 0; i < event_kind_count; ++i)
        if (kinds_.contains(static_cast<event_kind>(i))) d.by_kind[i] = raw.by_kind[i];
    if (d.empty() && !removed) return;
    if (removed) phase_ = phase::removed;

    add_all(own_, d, removed, when);
    std::erase_if(subscribers_, [](const std::weak_ptr<subscriber>& w) { return w.expired(); });
    for (auto& w : subscribers_)
        if (auto s = w.lock()) s->publish(d, removed, counters_, when);

    std::optional<event_handler> h = waiter_ ? take_waiter_locked() : std::nullopt;
    std::optional<oom_event> ev = h ? pop_event_locked() : std::nullopt;
    lk.unlock();
    if (h) complete(std::move(*h), {}, std::move(*ev));
}

std::optional<oom_event> watcher_state::pop_event_locked() {
    clock::time_point first;
    auto p = own_.pop(first);
    if (!p) return std::nullopt;
    if (p->first == event_kind::removed) phase_ = phase::finished;
    return make_event(*info_, p->first, p->second, counters_, first);
}

std::optional<event_handler> watcher_state::take_waiter_locked() {
    std::optional<event_handler> h;
    h.swap(waiter_);
    // The operation is over: a later emit on this slot must not reach us.
    if (h) h->get_cancellation_slot().clear();
    return h;
}

void watcher_state::complete(event_handler h, error_code ec, oom_event ev) {
    // Never inline: post through the watcher's executor to the handler's own.
    asio::post(ex_, asio::append(std::move(h), ec, std::move(ev)));
}

void watcher_state::async_next(event_handler h) {
    std::unique_lock lk(m_);
    error_code ec;
    std::optional<oom_event> ev;
    if (phase_ == phase::closed)
        ec = error::watcher_closed;
    else if (waiter_)
        ec = error::operation_in_progress;
    else if ((ev = pop_event_locked()))
        ;
    else if (phase_ == phase::finished)
        ec = error::cgroup_removed;
    else {
        auto slot = h.get_cancellation_slot();
        if (slot.is_connected()) {
            // Waiting consumes nothing, so every cancellation type can be honoured.
            // A slot can outlive its operation (a completed wait does not always clear
            // it): the id makes a late emit a no-op instead of cancelling a later wait.
            slot.assign([w = weak_from_this(), id = waiter_id_ + 1](asio::cancellation_type_t) {
                if (auto s = w.lock()) {
                    std::unique_lock lk2(s->m_);
                    if (s->waiter_id_ != id) return;
                    std::optional<event_handler> h2;
                    h2.swap(s->waiter_);  // not take_waiter_locked: we are inside this slot's handler
                    lk2.unlock();
                    if (h2) s->complete(std::move(*h2), asio::error::operation_aborted, {});
                }
            });
        }
        ++waiter_id_;
        waiter_.emplace(std::move(h));
        return;
    }
    lk.unlock();
    complete(std::move(h), ec, ev ? std::move(*ev) : oom_event{});
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
    for (auto& w : subscribers_)
        if (auto s = w.lock()) s->deactivate();
    subscribers_.clear();
    auto src = std::move(source_);
    lk.unlock();
    if (src) src->stop();
    if (h) complete(std::move(*h), asio::error::operation_aborted, {});
}

std::shared_ptr<subscriber> watcher_state::subscribe(asio::any_io_executor ex, std::function<void(const oom_event&)> fn) {
    auto s = std::make_shared<subscriber>(info_, std::move(ex), std::move(fn));
    std::lock_guard lk(m_);
    switch (phase_) {
    case phase::open:
        subscribers_.push_back(s);
        break;
    case phase::removed:
    case phase::finished:
        // Subscribed after the cgroup went away: tell it, rather than leave it waiting.
        s->publish(counter_delta{}, true, counters_, clock::now());
        break;
    case phase::closed:
        s->deactivate();
        break;
    }
    return s;
}

memory_counters watcher_state::counters() const {
    std::lock_guard lk(m_);
    return counters_;
}

bool watcher_state::closed() const {
    std::lock_guard lk(m_);
    return phase_ == phase::closed;
}

} // namespace oomwatch::detail
