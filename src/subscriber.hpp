// Delivery to one subscription, shared by the OOM watchers and the pressure watcher: a
// backlog of its own, at most one delivery posted at a time, and reset() that waits for
// a handler running on another thread; and a watch's list of them.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <cstddef>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace oomwatch::detail {

/// What an `oomwatch::subscription` holds.
class subscription_target {
public:
    virtual ~subscription_target() = default;
    /// Stops delivery. With `wait`, also waits for an invocation of the handler running
    /// on another thread to return (never for one running on this thread: a handler may
    /// reset its own subscription).
    virtual void deactivate(bool wait) noexcept = 0;
    virtual bool active() const noexcept = 0;
    /// The subscription let go of it (after `deactivate`): the owner may tidy its list.
    virtual void released() noexcept {}
};

/// One subscription's delivery state over a `Backlog` of `Event`s (`add(args...)`,
/// `pop()`, `empty()`, `clear()`). It delivers one event per post and reposts itself
/// while the backlog is not empty, so a slow handler only grows this subscriber's
/// counts, never anyone's queue.
template <class Event, class Backlog>
class basic_subscriber : public subscription_target,
                         public std::enable_shared_from_this<basic_subscriber<Event, Backlog>> {
public:
    basic_subscriber(boost::asio::any_io_executor ex, std::function<void(const Event&)> fn, Backlog b = {})
        : ex_(std::move(ex)), fn_(std::move(fn)), pending_(std::move(b)) {}

    template <class... Args>
    void publish(Args&&... args) {
        std::lock_guard lk(m_);
        if (!active_) return;
        pending_.add(std::forward<Args>(args)...);
        if (!pending_.empty()) schedule();
    }

    void deactivate(bool wait) noexcept override {
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

    bool active() const noexcept override {
        std::lock_guard lk(m_);
        return active_;
    }

protected:
    /// After this event nothing more comes (called with the lock held).
    virtual bool is_last(const Event& ev) const = 0;

private:
    void schedule() {  // with m_ held
        if (scheduled_) return;
        scheduled_ = true;
        boost::asio::post(ex_, [self = this->shared_from_this()] { self->deliver_one(); });
    }

    void deliver_one() {
        // Held until the handler returns: a reset() on another thread waits for it.
        std::unique_lock call(call_m_);
        std::optional<Event> ev;
        {
            std::lock_guard lk(m_);
            ev = active_ ? pending_.pop() : std::nullopt;
            if (!ev) {
                scheduled_ = false;
                return;
            }
            if (is_last(*ev)) active_ = false;
            caller_ = std::this_thread::get_id();
        }
        // Reschedule (or not) even when the handler throws, so one exception does not
        // stop this subscription for good.
        struct reschedule {
            basic_subscriber* self;
            ~reschedule() {
                std::lock_guard lk(self->m_);
                self->caller_ = {};
                self->scheduled_ = false;
                if (self->active_ && !self->pending_.empty()) self->schedule();
            }
        } guard{this};
        fn_(*ev);
    }

    boost::asio::any_io_executor ex_;
    std::function<void(const Event&)> fn_;
    // Held for the whole of a handler invocation, so that deactivation from another
    // thread can wait for it: after reset() returns, the handler neither runs nor starts.
    std::mutex call_m_;
    mutable std::mutex m_;
    std::thread::id caller_;  // the thread running the handler, if any
    Backlog pending_;
    bool scheduled_ = false;
    bool active_ = true;
};

/// A watch's subscribers, held weakly: a reset subscription lets its subscriber go.
/// Dead entries are dropped on publish, when the vector would grow, and once as many were
/// reset as are listed, so subscribe/reset churn on a quiet watch does not grow it
/// (amortised: at most as many dead as live ones). The caller's lock guards every call.
template <class Sub>
class subscriber_list {
public:
    void add(std::shared_ptr<Sub> s) {
        if (subs_.size() >= 8 && subs_.size() == subs_.capacity()) prune();
        subs_.push_back(std::move(s));
    }

    /// A subscription was reset.
    void gone() {
        if (++resets_since_prune_ * 2 > subs_.size()) prune();
    }

    template <class Occurrence>
    void publish(const Occurrence& o) {
        std::erase_if(subs_, [](const std::weak_ptr<Sub>& w) { return w.expired(); });
        for (auto& w : subs_)
            if (auto s = w.lock()) s->publish(o);
    }

    /// Empties the list (close: the caller deactivates them outside its lock).
    std::vector<std::weak_ptr<Sub>> take() {
        resets_since_prune_ = 0;
        return std::exchange(subs_, {});
    }

    std::size_t size() const noexcept { return subs_.size(); }

private:
    void prune() {
        std::erase_if(subs_, [](const std::weak_ptr<Sub>& w) {
            auto s = w.lock();
            return !s || !s->active();
        });
        resets_since_prune_ = 0;
        // Give memory back after a crowd of subscribers left.
        if (subs_.capacity() > 16 && subs_.size() < subs_.capacity() / 4) subs_.shrink_to_fit();
    }

    std::vector<std::weak_ptr<Sub>> subs_;
    std::size_t resets_since_prune_ = 0;
};

} // namespace oomwatch::detail
