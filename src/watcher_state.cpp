#include "watcher_state.hpp"

#include <oomwatch/error.hpp>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/execution/context.hpp>

#include "logger.hpp"

#include <algorithm>

#include <time.h>

namespace asio = boost::asio;
using boost::system::error_code;

namespace oomwatch::detail {

namespace {

// Victims of one event in the log's order: a record placed late (the first victim of a
// group kill whose report was rate limited is placed with its second record) may come
// after later ones.
void in_log_order(std::vector<victim>& vs) {
    auto by_seq = [](const victim& a, const victim& b) { return a.kernel_seq < b.kernel_seq; };
    if (!std::is_sorted(vs.begin(), vs.end(), by_seq)) std::stable_sort(vs.begin(), vs.end(), by_seq);
}

} // namespace

// ---- backlog ------------------------------------------------------------------------

void backlog::add(const occurrence& o) {
    const bool any = !o.d.empty() || o.end;
    if (!any) return;
    auto [it, fresh] = slots_.try_emplace(o.src.get());
    auto& sl = it->second;
    if (fresh) sl.src = o.src;
    auto put = [&](std::size_t i, std::uint64_t n) {
        if (n == 0) return;
        if (sl.count[i] == 0) sl.first[i] = o.when;
        sl.count[i] += n;
    };
    for (std::size_t i = 0; i < event_kind_count; ++i) put(i, o.d.by_kind[i]);
    if (o.end) put(static_cast<std::size_t>(*o.end), 1);
    if (o.error) sl.error = o.error;  // for `failed` and `skipped`
    if (o.d.get(event_kind::oom_kill) != 0) {
        for (const auto& v : o.victims) {
            if (sl.victims.size() < max_victims_per_event)
                sl.victims.push_back(v);
            else
                ++sl.unattributed;  // bounded: a consumer far behind keeps counts, not names
        }
        in_log_order(sl.victims);
        sl.unattributed += o.unattributed;
    }
    sl.counters = o.counters;
    if (!sl.queued) {
        sl.queued = true;
        queue_.push_back(o.src.get());
    }
}

void backlog::pop_front() noexcept {
    if (++head_ == queue_.size()) {
        queue_.clear();  // keeps the capacity
        head_ = 0;
    } else if (head_ >= 64 && head_ * 2 >= queue_.size()) {
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(head_));
        head_ = 0;
    }
}

std::optional<oom_event> backlog::pop() {
    while (!empty()) {
        auto it = slots_.find(queue_[head_]);
        if (it == slots_.end()) {
            pop_front();
            continue;
        }
        auto& sl = it->second;
        // `created` first: it announces the cgroup before its other events.
        static constexpr std::size_t created = static_cast<std::size_t>(event_kind::created);
        for (std::size_t j = 0; j < event_kind_count; ++j) {
            const std::size_t i = j == 0 ? created : (j <= created ? j - 1 : j);
            if (sl.count[i] == 0) continue;
            oom_event ev;
            ev.cgroup = sl.src->cgroup;
            ev.kind = static_cast<event_kind>(i);
            ev.count = sl.count[i];
            ev.counters = sl.counters;
            ev.time = sl.first[i];
            ev.version = sl.src->version;
            ev.origin = sl.src->origin;
            if (ev.kind == event_kind::failed || ev.kind == event_kind::skipped) ev.error = sl.error;
            if (ev.kind == event_kind::oom_kill) {
                ev.victims = std::move(sl.victims);
                sl.victims.clear();
                ev.unattributed = sl.unattributed;
                sl.unattributed = 0;
            }
            sl.count[i] = 0;
            bool more = false;
            for (auto c : sl.count) more |= c != 0;
            if (!more) {
                pop_front();
                sl.queued = false;
            }
            // That cgroup is over: its slot goes (a tree sees many come and go).
            if (ev.kind == event_kind::removed || ev.kind == event_kind::failed) slots_.erase(it);
            return ev;
        }
        pop_front();  // nothing left in it (cannot happen: queued slots have counts)
        sl.queued = false;
    }
    return std::nullopt;
}

// ---- subscriber ---------------------------------------------------------------------

subscriber::subscriber(asio::any_io_executor ex, std::function<void(const oom_event&)> fn,
                       std::weak_ptr<watcher_state> owner)
    : basic_subscriber(std::move(ex), std::move(fn)), owner_(std::move(owner)) {}

bool subscriber::is_last(const oom_event& ev) const {
    // The watched cgroup (a tree's root) removed, or a failure.
    if (ev.kind == event_kind::failed) return true;
    if (ev.kind != event_kind::removed || ev.origin != event_origin::here) return false;
    auto owner = owner_.lock();
    return !owner || ev.cgroup == owner->cgroup();
}

void subscriber::released() noexcept {
    if (auto owner = owner_.lock()) owner->subscriber_gone();
}

// ---- watcher_state ------------------------------------------------------------------

watcher_state::watcher_state(asio::any_io_executor ex, std::filesystem::path cgroup, cgroup_version v,
                             kind_set kinds)
    : ex_(std::move(ex)),
      cgroup_(std::move(cgroup)),
      root_(std::make_shared<event_source_info>(event_source_info{cgroup_.native(), v, event_origin::here})),
      kinds_(kinds.insert(event_kind::removed).insert(event_kind::failed).insert(event_kind::skipped)) {}

void watcher_state::set_baseline(const memory_counters& c) {
    std::lock_guard lk(m_);
    counters_ = c;
}

void watcher_state::attach(std::shared_ptr<source> s) {
    std::lock_guard lk(m_);
    source_ = std::move(s);
}

void watcher_state::publish(const source_ref& src, const counter_delta& d, const memory_counters& c) {
    std::unique_lock lk(m_);
    if (phase_ != phase::open) return;
    if (src == root_) counters_ = c;
    route_locked(occurrence{src, d, std::nullopt, c, clock::now(), {}, {}, 0}, lk);
}

void watcher_state::publish_resumed(const source_ref& src, const counter_delta& d, const memory_counters& c) {
    std::unique_lock lk(m_);
    if (phase_ != phase::open) return;
    if (src == root_) counters_ = c;
    occurrence o{src, d, std::nullopt, c, clock::now(), {}, {}, 0};
    o.unattributed = kinds_.contains(event_kind::oom_kill) ? d.get(event_kind::oom_kill) : 0;
    publish_locked(std::move(o), lk);
}

void watcher_state::publish_removed(const source_ref& src, clock::time_point when, const memory_counters& c) {
    std::unique_lock lk(m_);
    occurrence o{src, {}, event_kind::removed, src == root_ ? counters_ : c, when, {}, {}, 0};
    if (src == root_) {
        // The last event: whatever waits for its victims goes first, without them.
        release_held_locked(std::chrono::steady_clock::now(), true);
        const auto log_key = end_victims_locked();
        publish_locked(std::move(o), lk);
        stop_log(log_key);
        return;
    }
    route_locked(std::move(o), lk);  // behind that cgroup's held events, if any
}

void watcher_state::publish_created(const source_ref& src, const memory_counters& c) {
    std::unique_lock lk(m_);
    if (!kinds_.contains(event_kind::created)) return;
    counter_delta d;
    d.by_kind[static_cast<std::size_t>(event_kind::created)] = 1;
    publish_locked(occurrence{src, d, std::nullopt, c, clock::now(), {}, {}, 0}, lk);
}

void watcher_state::publish_kills(const source_ref& src, std::vector<victim> victims, std::uint64_t unattributed,
                                  const memory_counters& c) {
    std::unique_lock lk(m_);
    if (phase_ != phase::open) return;
    counters_ = c;
    counter_delta d;
    d.by_kind[static_cast<std::size_t>(event_kind::oom_kill)] = victims.size() + unattributed;
    publish_locked(occurrence{src, d, std::nullopt, c, clock::now(), {}, std::move(victims), unattributed}, lk);
}

void watcher_state::publish_skipped(const source_ref& src, error_code ec) {
    std::unique_lock lk(m_);
    counter_delta d;
    d.by_kind[static_cast<std::size_t>(event_kind::skipped)] = 1;
    publish_locked(occurrence{src, d, std::nullopt, {}, clock::now(), ec, {}, 0}, lk);
}

void watcher_state::publish_failed(error_code ec, std::string path) {
    std::unique_lock lk(m_);
    if (phase_ != phase::open) return;
    failure_ = failure_info{ec, std::move(path)};
    release_held_locked(std::chrono::steady_clock::now(), true);
    const auto log_key = end_victims_locked();
    publish_locked(occurrence{root_, {}, event_kind::failed, counters_, clock::now(), ec, {}, 0}, lk);
    stop_log(log_key);
}

void watcher_state::publish_locked(occurrence o, std::unique_lock<std::mutex>& lk) {
    if (phase_ != phase::open) return;
    enqueue_locked(std::move(o));
    wake_waiter(lk);
}

void watcher_state::enqueue_locked(occurrence o) {
    if (phase_ != phase::open) return;
    for (std::size_t i = 0; i < event_kind_count; ++i)  // only the kinds asked for
        if (!kinds_.contains(static_cast<event_kind>(i))) o.d.by_kind[i] = 0;
    if (o.d.empty() && !o.end) return;
    if (o.end == event_kind::failed) phase_ = phase::failed;
    if (o.end == event_kind::removed && o.src == root_) phase_ = phase::removed;

    own_.add(o);
    subscribers_.publish(o);
}

void watcher_state::wake_waiter(std::unique_lock<std::mutex>& lk) {
    std::optional<taken_waiter> h;
    std::optional<oom_event> ev;
    if (wait_.pending() && (ev = pop_event_locked())) h = wait_.take();
    lk.unlock();
    if (h) {
        error_code ec = ev->kind == event_kind::failed ? ev->error : error_code{};
        complete(std::move(*h), ec, std::move(*ev));
    }
}

std::optional<oom_event> watcher_state::pop_event_locked() {
    auto ev = own_.pop();
    if (!ev) return std::nullopt;
    if (ev->kind == event_kind::failed ||
        (ev->kind == event_kind::removed && ev->origin == event_origin::here && ev->cgroup == cgroup_))
        phase_ = phase::finished;
    return ev;
}

void watcher_state::abort_wait(std::uint64_t id) {
    std::unique_lock lk(m_);
    if (!wait_.is(id)) return;
    auto h = wait_.take();
    lk.unlock();
    complete(std::move(*h), asio::error::operation_aborted, {});
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
    } else if (wait_.pending()) {
        ec = error::operation_in_progress;
    } else if ((ev = pop_event_locked())) {
        if (ev->kind == event_kind::failed) ec = ev->error;
    } else if (phase_ == phase::finished) {
        if (failure_) {
            // Every wait after the failure learns it, with the failed event.
            ev.emplace();
            ev->cgroup = cgroup_;
            ev->kind = event_kind::failed;
            ev->counters = counters_;
            ev->time = clock::now();
            ev->version = root_->version;
            ev->error = ec = failure_->ec;
        } else {
            ec = error::cgroup_removed;
        }
    } else {
        // Waiting consumes nothing, so every cancellation type can be honoured.
        wait_.park(std::move(h), ex_, [w = weak_from_this()](std::uint64_t id) {
            if (auto s = w.lock()) s->abort_wait(id);
        });
        return;
    }
    lk.unlock();
    complete(taken_waiter{std::move(h), std::nullopt}, ec, ev ? std::move(*ev) : oom_event{});
}

void watcher_state::cancel_wait() {
    std::unique_lock lk(m_);
    auto h = wait_.take();
    lk.unlock();
    if (h) complete(std::move(*h), asio::error::operation_aborted, {});
}

void watcher_state::close() {
    std::unique_lock lk(m_);
    if (phase_ == phase::closed) return;
    phase_ = phase::closed;
    auto h = wait_.take();
    own_.clear();
    auto subs = subscribers_.take();
    auto src = std::move(source_);
    const auto log_key = end_victims_locked();
    lk.unlock();
    stop_log(log_key);
    if (src) src->stop();
    // Not under m_: a handler that is running may call into this watcher.
    for (auto& w : subs)
        if (auto s = w.lock()) s->deactivate(true);
    if (h) complete(std::move(*h), asio::error::operation_aborted, {});
}

std::shared_ptr<subscriber> watcher_state::subscribe(asio::any_io_executor ex, std::function<void(const oom_event&)> fn) {
    auto s = std::make_shared<subscriber>(std::move(ex), std::move(fn), weak_from_this());
    std::lock_guard lk(m_);
    switch (phase_) {
    case phase::open:
        subscribers_.add(s);
        break;
    case phase::removed:
    case phase::failed:
    case phase::finished:
        // Subscribed after the end: tell it, rather than leave it waiting.
        s->publish(occurrence{root_, {}, failure_ ? event_kind::failed : event_kind::removed, counters_, clock::now(),
                              failure_ ? failure_->ec : error_code{}, {}, 0});
        break;
    case phase::closed:
        s->deactivate(false);
        break;
    }
    return s;
}

void watcher_state::subscriber_gone() {
    std::lock_guard lk(m_);
    subscribers_.gone();
}

// ---- victims ------------------------------------------------------------------------

namespace {

// The kernel timestamp (local_clock, taken as CLOCK_MONOTONIC) by which the records of
// kills given up on now were logged: they were logged as their count rose, before it was
// read, `read_ago` or more before now; a later kill's record is logged after now. Half
// the hold is the margin against the two clocks' offset (a few ms).
std::uint64_t logged_by_usec(std::chrono::milliseconds margin) {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const auto now = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
    const auto m = static_cast<std::uint64_t>(std::max<std::int64_t>(margin.count(), 2)) * 1000u;
    return now > m ? now - m : 0;
}

} // namespace

void watcher_state::enable_victims(hierarchy_view h, std::chrono::milliseconds hold, bool root_hierarchical) {
    std::lock_guard lk(m_);
    v_ = std::make_unique<victims_part>();
    v_->matcher.emplace(std::move(h));
    v_->hold = hold;
    v_->root_hierarchical = root_hierarchical;
}

void watcher_state::start_victims() {
    {
        std::lock_guard lk(m_);
        if (!matching_locked() || v_->log_key || phase_ == phase::closed) return;
    }
    auto& svc = asio::use_service<kernel_log_service>(asio::query(ex_, asio::execution::context));
    error_code ec;
    const auto key = svc.add(ex_, std::weak_ptr<kernel_log_client>(shared_from_this()), &ec);
    std::unique_lock lk(m_);
    if (!key) {
        victims_off_locked(ec);
        return;
    }
    if (phase_ != phase::open || !matching_locked()) {  // ended, closed, or the log failed meanwhile
        lk.unlock();
        svc.remove(key);
        return;
    }
    v_->log_key = key;
}

void watcher_state::watch_victims(const source_ref& src, std::weak_ptr<source> poke) {
    std::lock_guard lk(m_);
    if (!matching_locked()) return;
    const bool hierarchical = src == root_ && v_->root_hierarchical;
    if (!v_->matcher->add_target(src.get(), src->cgroup, hierarchical)) return;
    if (!poke.expired()) v_->pokes[src.get()] = std::move(poke);
}

void watcher_state::unwatch_victims(const source_ref& src) noexcept {
    std::lock_guard lk(m_);
    if (!v_) return;
    if (v_->matcher) v_->matcher->remove_target(src.get());
    v_->pokes.erase(src.get());
}

bool watcher_state::victims_available() const {
    std::lock_guard lk(m_);
    return matching_locked() && phase_ != phase::closed;
}

error_code watcher_state::victims_error() const {
    std::lock_guard lk(m_);
    return v_ ? v_->error : error_code{};
}

std::size_t watcher_state::held_count() const {
    std::lock_guard lk(m_);
    return v_ ? v_->held.size() : 0;
}

std::uint64_t watcher_state::end_victims_locked() {
    // The watch is over: nothing more to match, and the kernel log must not keep the
    // execution context busy (its run() returns once every watch ended).
    if (!v_) return 0;
    v_->held.clear();
    if (v_->timer) v_->timer->cancel();
    v_->timer_due.reset();
    return std::exchange(v_->log_key, 0);
}

void watcher_state::stop_log(std::uint64_t log_key) {
    if (log_key) asio::use_service<kernel_log_service>(asio::query(ex_, asio::execution::context)).remove(log_key);
}

void watcher_state::victims_off_locked(const error_code& ec) {
    if (!v_) return;
    if (!v_->error) v_->error = ec;
    // Counts go on exactly; what waited for its victims goes now, without them.
    release_held_locked(std::chrono::steady_clock::now(), true);
    v_->matcher.reset();
    v_->pokes.clear();
    v_->log_key = 0;  // the service forgot it
}

void watcher_state::on_log_unavailable(const error_code& ec) {
    std::unique_lock lk(m_);
    victims_off_locked(ec);
    wake_waiter(lk);
}

void watcher_state::on_kill(const kill_record& k) {
    std::unique_lock lk(m_);
    if (!matching_locked() || phase_ != phase::open) return;
    const auto now = std::chrono::steady_clock::now();
    auto key = v_->matcher->on_record(k, now);
    OOMWATCH_LOG(trace) << cgroup_.native() << ": kernel log: pid " << k.pid << " killed in '" << k.task_memcg
                        << "'" << (k.group ? " (group " + k.group_memcg + ")" : std::string())
                        << (key ? ": ours" : ": not ours");
    if (!key) return;
    // The earliest held count of that cgroup still missing victims gets it.
    for (auto& h : v_->held) {
        if (h.o.src.get() != key) continue;
        if (h.missing == 0) continue;
        h.missing -= v_->matcher->take_into(key, h.missing, now, h.o.victims);
        in_log_order(h.o.victims);
        break;
    }
    release_held_locked(now, false);
    std::shared_ptr<source> poke;
    if (auto p = v_->pokes.find(static_cast<const event_source_info*>(key)); p != v_->pokes.end()) poke = p->second.lock();
    wake_waiter(lk);  // unlocks
    // v1 has no notification of the kill itself: the record is the first sign of it.
    if (poke) poke->kill_logged();
}

void watcher_state::route_locked(occurrence o, std::unique_lock<std::mutex>& lk) {
    const std::uint64_t kills = kinds_.contains(event_kind::oom_kill) ? o.d.get(event_kind::oom_kill) : 0;
    const bool matched = matching_locked() && v_->matcher->has_target(o.src.get());
    if (!matched) {
        // No victims for it: unattributed, at no cost.
        o.unattributed = kills;
        publish_locked(std::move(o), lk);
        return;
    }
    const bool behind = std::any_of(v_->held.begin(), v_->held.end(), [&](const victims_part::held_occurrence& h) { return h.o.src == o.src; });
    const auto now = std::chrono::steady_clock::now();
    std::uint64_t missing = kills;
    // Behind a held one, the records go to that one first.
    if (kills && !behind) missing -= v_->matcher->take_into(o.src.get(), kills, now, o.victims);
    if (behind || (missing && v_->hold.count() > 0)) {
        bool publish_early = false;
        if (missing && !behind) {
            OOMWATCH_LOG(trace) << o.src->cgroup << ": " << missing << " kill(s) wait for their kernel log records";
            // Only the kills wait (and the group kill counted with them, which comes after
            // them): the `oom` found by the same read happened before them and goes now.
            if (!o.end) {
                occurrence early = o;
                early.victims.clear();
                early.d.by_kind[static_cast<std::size_t>(event_kind::oom_kill)] = 0;
                early.d.by_kind[static_cast<std::size_t>(event_kind::oom_group_kill)] = 0;
                if (!early.d.empty()) {
                    for (std::size_t i = 0; i < event_kind_count; ++i)
                        if (early.d.by_kind[i]) o.d.by_kind[i] = 0;
                    publish_early = true;
                    enqueue_locked(std::move(early));
                }
            }
        }
        v_->held.push_back(victims_part::held_occurrence{std::move(o), missing, now + v_->hold});
        arm_hold_timer_locked();
        if (publish_early) wake_waiter(lk);
        return;
    }
    if (missing) v_->matcher->give_up(o.src.get(), missing, now, logged_by_usec(std::chrono::milliseconds(0)));
    o.unattributed = missing;
    publish_locked(std::move(o), lk);
}

void watcher_state::release_held_locked(std::chrono::steady_clock::time_point now, bool all) {
    if (!v_) return;
    // In order; an occurrence goes only when every earlier one of its cgroup went.
    std::vector<const event_source_info*> blocked;
    std::size_t kept = 0;
    for (std::size_t i = 0; i < v_->held.size(); ++i) {
        auto& h = v_->held[i];
        const bool is_blocked = std::find(blocked.begin(), blocked.end(), h.o.src.get()) != blocked.end();
        if (!is_blocked && (all || h.missing == 0 || h.due <= now)) {
            if (h.missing) {
                if (v_->matcher) v_->matcher->give_up(h.o.src.get(), h.missing, now, logged_by_usec(v_->hold / 2));
                h.o.unattributed = h.missing;
                OOMWATCH_LOG(debug) << h.o.src->cgroup << ": " << h.missing
                                    << " kill(s) delivered without their kernel log records";
            }
            enqueue_locked(std::move(h.o));
            continue;
        }
        if (!is_blocked) blocked.push_back(h.o.src.get());
        if (kept != i) v_->held[kept] = std::move(h);
        ++kept;
    }
    v_->held.resize(kept);
}

void watcher_state::arm_hold_timer_locked() {
    if (!v_ || v_->held.empty()) return;
    auto due = v_->held.front().due;
    for (auto& h : v_->held) due = std::min(due, h.due);
    if (v_->timer_due && *v_->timer_due <= due) return;  // armed for earlier: it re-arms
    if (!v_->timer) v_->timer = std::make_unique<asio::steady_timer>(ex_);
    v_->timer_due = due;
    v_->timer->expires_at(due);
    v_->timer->async_wait([w = weak_from_this()](error_code ec) {
        if (ec) return;
        if (auto s = w.lock()) s->on_hold_timer();
    });
}

void watcher_state::on_hold_timer() {
    std::unique_lock lk(m_);
    if (!v_) return;
    v_->timer_due.reset();
    if (phase_ != phase::open) return;
    release_held_locked(std::chrono::steady_clock::now(), false);
    arm_hold_timer_locked();
    wake_waiter(lk);
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
