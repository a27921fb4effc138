// oomwatch/subscription.hpp: a subscription to a watcher's events (any kind of watcher).
#pragma once

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace oomwatch {

namespace detail {
class subscription_target;

/// A subscription's handler as the subscriber keeps it.
template <class Event, class Handler>
std::function<void(const Event&)> subscriber_function(Handler&& h) {
    using H = std::decay_t<Handler>;
    if constexpr (std::is_copy_constructible_v<H>) {
        return std::function<void(const Event&)>(std::forward<Handler>(h));
    } else {  // std::function needs a copyable target
        auto p = std::make_shared<H>(std::forward<Handler>(h));
        return [p](const Event& ev) { (*p)(ev); };
    }
}
} // namespace detail

/// A subscription made by `subscribe` on a `watcher`, `tree_watcher`, `system_watcher` or
/// `pressure_watcher`. Destroying or resetting it stops delivery: once `reset()` (or the
/// destructor) returns, the handler is neither running nor invoked again. When the
/// handler is running on another thread at that moment, `reset()` waits for it to
/// return, as `std::stop_callback`'s destructor does; called from within the handler
/// itself it returns at once. So do not reset a subscription while holding a lock that
/// its handler takes.
class subscription {
public:
    subscription() noexcept = default;
    subscription(subscription&&) noexcept = default;
    subscription& operator=(subscription&& other) noexcept;
    subscription(const subscription&) = delete;
    subscription& operator=(const subscription&) = delete;
    ~subscription();

    /// Stops delivery (see the class comment). Safe to call from within the handler and
    /// from any thread.
    void reset() noexcept;
    /// True until `reset()`, destruction, or delivery of the `removed` or `failed` event.
    bool active() const noexcept;

private:
    friend class watcher;
    friend class tree_watcher;
    friend class system_watcher;
    friend class pressure_watcher;
    explicit subscription(std::shared_ptr<detail::subscription_target> s) noexcept : sub_(std::move(s)) {}
    std::shared_ptr<detail::subscription_target> sub_;
};

} // namespace oomwatch
