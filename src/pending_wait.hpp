// The one pending `async_next_event` of a watcher: its handler, the work it keeps on its
// executor, and which wait a cancellation slot belongs to. Shared by the OOM and the
// pressure watchers' states; the caller holds its own lock around every call.
#pragma once

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>

#include <cstdint>
#include <optional>
#include <utility>

namespace oomwatch::detail {

template <class Handler>
class pending_wait {
public:
    struct taken {
        Handler handler;
        // Released only after the completion is posted: the post tracks work on the
        // handler's executor from then on, so its io_context never runs out in between.
        std::optional<boost::asio::any_completion_executor> work;
    };

    bool pending() const noexcept { return handler_.has_value(); }
    /// True while the wait `id` (given to `on_cancel`) is the one pending.
    bool is(std::uint64_t id) const noexcept { return handler_ && id == id_; }

    /// Parks `h`, keeping work on its executor (else `ex`). A cancellation through its
    /// slot calls `on_cancel(id)`, possibly late (a completed wait does not clear its
    /// slot): the callee checks `is(id)` under its lock.
    template <class OnCancel>
    void park(Handler h, const boost::asio::any_io_executor& ex, OnCancel on_cancel) {
        namespace asio = boost::asio;
        const std::uint64_t id = ++id_;
        auto slot = h.get_cancellation_slot();
        if (slot.is_connected())
            slot.assign([on_cancel = std::move(on_cancel), id](asio::cancellation_type_t) { on_cancel(id); });
        work_.emplace(asio::prefer(asio::get_associated_executor(h, ex), asio::execution::outstanding_work.tracked));
        handler_.emplace(std::move(h));
    }

    /// Takes the handler out for completion. The cancellation slot is left alone: it
    /// belongs to the waiting consumer's thread, and the id makes a late emit harmless.
    std::optional<taken> take() {
        if (!handler_) return std::nullopt;
        taken t{std::move(*handler_), std::move(work_)};
        handler_.reset();
        work_.reset();
        return t;
    }

private:
    std::optional<Handler> handler_;
    std::optional<boost::asio::any_completion_executor> work_;
    std::uint64_t id_ = 0;
};

} // namespace oomwatch::detail
