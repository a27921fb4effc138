// The shared state behind a pressure_watcher: what has happened and not been delivered,
// to `async_next_event` and to each subscriber. Its sources publish into it from their
// handlers; unit tests drive it directly.
#pragma once

#include <oomwatch/error.hpp>
#include <oomwatch/pressure_event.hpp>

#include "logger.hpp"
#include "pending_wait.hpp"
#include "subscriber.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace oomwatch {

namespace detail {

namespace asio = boost::asio;
using boost::system::error_code;
using clock = std::chrono::system_clock;
using pressure_handler = asio::any_completion_handler<void(error_code, pressure_event)>;

/// What every event of a watch names: the pressure file's cgroup and each trigger's level.
struct pressure_info {
    std::filesystem::path name;
    std::vector<std::optional<pressure_level>> levels;
};

/// Wake-ups of one trigger (`count` of them), or the end of the watch.
struct pressure_occurrence {
    std::size_t trigger = 0;
    std::uint64_t count = 0;
    clock::time_point when;
    std::optional<pressure_averages> averages;
    std::optional<pressure_event> end;  // `removed` or `failed`
};

/// Events not yet delivered to one consumer: one slot per trigger (counts add up, the
/// newest averages kept), served in the order they first fired, then the end. Memory is
/// bounded by the number of triggers however far the consumer falls behind.
class pressure_backlog {
public:
    pressure_backlog() = default;
    explicit pressure_backlog(std::shared_ptr<const pressure_info> info)
        : info_(std::move(info)), slots_(info_->levels.size()) {}

    void add(const pressure_occurrence& o) {
        if (o.end) {
            end_ = o.end;
            return;
        }
        if (o.count == 0) return;
        auto& s = slots_[o.trigger];
        if (s.count == 0) {
            s.first = o.when;
            order_.push_back(o.trigger);
        }
        s.count += o.count;
        if (o.averages) s.averages = o.averages;
    }

    bool empty() const noexcept { return head_ == order_.size() && !end_; }

    std::optional<pressure_event> pop() {
        if (head_ < order_.size()) {
            const std::size_t t = order_[head_++];
            if (head_ == order_.size()) {
                order_.clear();
                head_ = 0;
            }
            auto& s = slots_[t];
            pressure_event ev;
            ev.cgroup = info_->name;
            ev.trigger = t;
            ev.level = info_->levels[t];
            ev.count = s.count;
            ev.time = s.first;
            ev.averages = std::move(s.averages);
            s = slot{};
            return ev;
        }
        return std::exchange(end_, std::nullopt);
    }

    void clear() noexcept {
        for (auto& s : slots_) s = slot{};
        order_.clear();
        head_ = 0;
        end_.reset();
    }

private:
    struct slot {
        std::uint64_t count = 0;
        clock::time_point first;
        std::optional<pressure_averages> averages;
    };
    std::shared_ptr<const pressure_info> info_;
    std::vector<slot> slots_;
    std::vector<std::size_t> order_;  // triggers with a count, in the order they fired
    std::size_t head_ = 0;
    std::optional<pressure_event> end_;
};

class pressure_state;

/// One subscription to a pressure watcher.
class pressure_subscriber final : public basic_subscriber<pressure_event, pressure_backlog> {
public:
    pressure_subscriber(asio::any_io_executor ex, std::function<void(const pressure_event&)> fn,
                        std::shared_ptr<const pressure_info> info, std::weak_ptr<pressure_state> owner)
        : basic_subscriber(std::move(ex), std::move(fn), pressure_backlog(std::move(info))), owner_(std::move(owner)) {}
    void released() noexcept override;

private:
    bool is_last(const pressure_event& ev) const override { return ev.kind != pressure_kind::pressure; }
    std::weak_ptr<pressure_state> owner_;
};

/// What has happened and not been delivered, to `async_next_event` and to each
/// subscriber; sources publish into it from their handlers.
class pressure_state : public std::enable_shared_from_this<pressure_state> {
public:
    class source {
    public:
        virtual ~source() = default;
        virtual void stop() noexcept = 0;
    };

    pressure_state(asio::any_io_executor ex, std::filesystem::path name, std::vector<std::optional<pressure_level>> levels)
        : ex_(std::move(ex)),
          info_(std::make_shared<const pressure_info>(pressure_info{std::move(name), std::move(levels)})),
          own_(info_) {}

    const std::filesystem::path& name() const noexcept { return info_->name; }

    void attach(std::shared_ptr<source> s) {
        std::lock_guard lk(m_);
        sources_.push_back(std::move(s));
    }

    void publish(std::size_t trigger, std::uint64_t n, std::optional<pressure_averages> a) {
        std::unique_lock lk(m_);
        if (phase_ != phase::open || n == 0) return;
        enqueue_locked(pressure_occurrence{trigger, n, clock::now(), std::move(a), std::nullopt});
        wake_locked(lk);
    }

    /// The end of the watch: `removed` (no `ec`) or `failed`.
    void publish_end(error_code ec, std::string path) {
        std::unique_lock lk(m_);
        if (phase_ != phase::open) return;
        phase_ = phase::ending;
        if (ec) {
            failure_ = ec;
            failure_path_ = std::move(path);
            OOMWATCH_LOG(error) << failure_path_ << ": pressure watch failed: " << ec.message();
        }
        enqueue_locked(pressure_occurrence{0, 0, clock::now(), std::nullopt, end_event()});
        auto sources = std::move(sources_);
        sources_.clear();
        wake_locked(lk);
        for (auto& s : sources) s->stop();
    }

    void async_next(pressure_handler h) {
        std::unique_lock lk(m_);
        error_code ec;
        std::optional<pressure_event> ev;
        if (phase_ == phase::closed) {
            ec = error::watcher_closed;
        } else if (wait_.pending()) {
            ec = error::operation_in_progress;
        } else if ((ev = pop_locked())) {
            if (ev->kind == pressure_kind::failed) ec = ev->error;
        } else if (phase_ == phase::finished) {
            if (failure_) {
                ev = end_event();
                ec = failure_;
            } else {
                ec = error::cgroup_removed;
            }
        } else {
            wait_.park(std::move(h), ex_, [w = weak_from_this()](std::uint64_t id) {
                if (auto s = w.lock()) s->abort_wait(id);
            });
            return;
        }
        lk.unlock();
        asio::post(ex_, asio::append(std::move(h), ec, ev ? std::move(*ev) : pressure_event{}));
    }

    std::shared_ptr<pressure_subscriber> subscribe(asio::any_io_executor ex, std::function<void(const pressure_event&)> fn) {
        auto s = std::make_shared<pressure_subscriber>(std::move(ex), std::move(fn), info_, weak_from_this());
        std::lock_guard lk(m_);
        switch (phase_) {
        case phase::open:
            subscribers_.add(s);
            break;
        case phase::ending:
        case phase::finished:
            // Subscribed after the end: tell it, rather than leave it waiting.
            s->publish(pressure_occurrence{0, 0, clock::now(), std::nullopt, end_event()});
            break;
        case phase::closed:
            s->deactivate(false);
            break;
        }
        return s;
    }

    /// A subscription was reset: forget the dead ones.
    void subscriber_gone() {
        std::lock_guard lk(m_);
        subscribers_.gone();
    }

    void cancel_wait() { abort_wait(std::nullopt); }

    void close() {
        std::unique_lock lk(m_);
        if (phase_ == phase::closed) return;
        phase_ = phase::closed;
        own_.clear();
        auto sources = std::move(sources_);
        sources_.clear();
        auto subs = subscribers_.take();
        auto t = wait_.take();
        lk.unlock();
        for (auto& s : sources) s->stop();
        // Not under m_: a handler that is running may call into this watcher.
        for (auto& w : subs)
            if (auto s = w.lock()) s->deactivate(true);
        if (t) complete(std::move(*t), asio::error::operation_aborted, {});
    }

    bool open() const {
        std::lock_guard lk(m_);
        return phase_ == phase::open;
    }

    std::optional<cgroup_error> failure() const {
        std::lock_guard lk(m_);
        if (!failure_) return std::nullopt;
        return cgroup_error(failure_, failure_path_);
    }

    error_code failure_code() const {
        std::lock_guard lk(m_);
        return failure_;
    }

    std::size_t subscriber_slots() const {  // for tests
        std::lock_guard lk(m_);
        return subscribers_.size();
    }

private:
    enum class phase { open, ending, finished, closed };
    using waiter = pending_wait<pressure_handler>;

    pressure_event end_event() const {
        pressure_event ev;
        ev.cgroup = info_->name;
        ev.kind = failure_ ? pressure_kind::failed : pressure_kind::removed;
        ev.time = clock::now();
        ev.error = failure_;
        return ev;
    }

    void enqueue_locked(const pressure_occurrence& o) {
        own_.add(o);
        subscribers_.publish(o);
    }


    std::optional<pressure_event> pop_locked() {
        auto ev = own_.pop();
        if (ev && ev->kind != pressure_kind::pressure) phase_ = phase::finished;
        return ev;
    }

    void wake_locked(std::unique_lock<std::mutex>& lk) {
        if (!wait_.pending()) return;
        auto ev = pop_locked();
        if (!ev) return;
        auto t = wait_.take();
        lk.unlock();
        const error_code ec = ev->kind == pressure_kind::failed ? ev->error : error_code{};
        complete(std::move(*t), ec, std::move(*ev));
        lk.lock();
    }

    /// Completes the pending wait (the one `id` names, if given) with `operation_aborted`.
    void abort_wait(std::optional<std::uint64_t> id) {
        std::unique_lock lk(m_);
        if (id && !wait_.is(*id)) return;
        auto t = wait_.take();
        lk.unlock();
        if (t) complete(std::move(*t), asio::error::operation_aborted, {});
    }

    void complete(waiter::taken t, error_code ec, pressure_event ev) {
        // Never inline; the post tracks work on the handler's executor before ours goes.
        asio::post(ex_, asio::append(std::move(t.handler), ec, std::move(ev)));
        t.work.reset();
    }

    asio::any_io_executor ex_;
    const std::shared_ptr<const pressure_info> info_;
    mutable std::mutex m_;
    phase phase_ = phase::open;
    pressure_backlog own_;  // for async_next_event
    error_code failure_;
    std::string failure_path_;
    waiter wait_;
    subscriber_list<pressure_subscriber> subscribers_;
    std::vector<std::shared_ptr<source>> sources_;
};

inline void pressure_subscriber::released() noexcept {
    if (auto owner = owner_.lock()) owner->subscriber_gone();
}

} // namespace detail
} // namespace oomwatch
