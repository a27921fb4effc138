// oomwatch as its users use it: one watcher per cgroup on an io_context, and either a
// coroutine per watcher looping on `co_await w.next_event()`, or subscribers, each on
// a strand of its own. With more than one thread each watcher lives on a strand too
// (a watcher must not be used from two threads at once).
#include "bench_util.hpp"
#include "contenders.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <optional>
#include <thread>

#include <pthread.h>

namespace bench {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

class oomwatch_contender final : public contender {
public:
    explicit oomwatch_contender(const contender_options& o) : o_(o) {}
    ~oomwatch_contender() override { stop(); }

    std::string name() const override {
        return o_.mode == contender_options::delivery::next_event ? "oomwatch co_await" : "oomwatch strand";
    }

    arm_result arm(const std::vector<fs::path>& dirs, sink& s) override {
        sink_ = &s;
        arm_result r;
        ctx_.emplace(static_cast<int>(o_.threads));
        oomwatch::watch_options opts;
        // Fake cgroup folders live on tmpfs, outside any cgroup file system: say which
        // version they are. Real cgroups are looked up like any user would.
        if (o_.version == cgroup_version::v2) opts.force_version = cgroup_version::v2;
        opts.victims = o_.victims;
        if (o_.victim_hold) opts.victim_hold = *o_.victim_hold;
        ws_.reserve(dirs.size());
        for (std::size_t i = 0; i < dirs.size(); ++i) {
            boost::system::error_code ec;
            auto ex = o_.threads > 1 ? asio::any_io_executor(asio::make_strand(*ctx_))
                                     : asio::any_io_executor(ctx_->get_executor());
            oomwatch::watcher w(ex, dirs[i], opts, ec);
            if (ec) {
                r.error = dirs[i].string() + ": " + ec.message();
                r.error_errno = ec.category() == boost::system::system_category() ? ec.value() : 0;
                return r;
            }
            ws_.push_back(std::move(w));
            r.armed = i + 1;
        }
        return r;
    }

    void start() override {
        if (o_.mode == contender_options::delivery::next_event) {
            for (std::size_t i = 0; i < ws_.size(); ++i) asio::co_spawn(ws_[i].get_executor(), consume(i), asio::detached);
        } else {
            subs_.reserve(ws_.size() * o_.subscribers);
            for (std::size_t i = 0; i < ws_.size(); ++i)
                for (unsigned s = 0; s < o_.subscribers; ++s)
                    subs_.push_back(ws_[i].subscribe(asio::make_strand(*ctx_),
                                                     [this, i, s](const oomwatch::oom_event& ev) { deliver(s, i, ev); }));
        }
        work_.emplace(ctx_->get_executor());
        for (unsigned t = 0; t < o_.threads; ++t)
            threads_.emplace_back([this] {
                ::pthread_setname_np(::pthread_self(), "bench-oomwatch");
                ctx_->run();
            });
    }

    void stop() override {
        if (!ctx_) return;
        work_.reset();
        ctx_->stop();
        for (auto& t : threads_) t.join();
        threads_.clear();
        subs_.clear();
        for (auto& w : ws_) w.close();
        ws_.clear();
        ctx_.reset();
    }

private:
    asio::awaitable<void> consume(std::size_t i) {
        auto& w = ws_[i];
        for (;;) {
            oomwatch::oom_event ev;
            try {
                ev = co_await w.next_event();
            } catch (const boost::system::system_error&) {
                co_return;  // closed, or the cgroup is gone
            }
            deliver(0, i, ev);
            if (ev.kind == event_kind::removed) co_return;
        }
    }

    void deliver(unsigned s, std::size_t i, const oomwatch::oom_event& ev) {
        if (ev.kind == event_kind::oom_kill) sink_->on_named(s, i, ev.victims.size());
        sink_->on_event(s, i, ev.kind, ev.count, ev.counters.get(ev.kind));
    }

    contender_options o_;
    sink* sink_ = nullptr;
    std::optional<asio::io_context> ctx_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::vector<oomwatch::watcher> ws_;
    std::vector<oomwatch::subscription> subs_;
    std::vector<std::thread> threads_;
};

} // namespace

std::unique_ptr<contender> make_oomwatch(const contender_options& o) { return std::make_unique<oomwatch_contender>(o); }

std::unique_ptr<contender> make_contender(const std::string& which, const contender_options& o) {
    if (which == "floor") return make_floor(o);
    if (which == "seed") return make_seed(o);
    if (which == "oomwatch") return make_oomwatch(o);
    return nullptr;
}

} // namespace bench
