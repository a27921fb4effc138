// oomwatch's tree contender, used the way its users use it: one `oomwatch::tree_watcher`
// on an io_context run by one thread, one coroutine looping on `co_await tw.next_event()`.
#include "bench_util.hpp"
#include "tree_contenders.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <pthread.h>

#include <optional>
#include <thread>

namespace bench {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

class tree_oomwatch final : public tree_contender {
public:
    explicit tree_oomwatch(const tree_contender_options& o) : o_(o) {}
    ~tree_oomwatch() override { stop(); }

    std::string name() const override { return "oomwatch"; }

    arm_result arm(const fs::path& root, tree_sink& s) override {
        sink_ = &s;
        arm_result r;
        ctx_.emplace(1);
        oomwatch::tree_options opts;
        // Fake cgroup folders live on tmpfs, outside any cgroup file system: say which
        // version they are.
        opts.force_version = cgroup_version::v2;
        if (o_.report_created) opts.kinds.insert(event_kind::created);
        boost::system::error_code ec;
        tw_.emplace(ctx_->get_executor(), root, opts, ec);
        if (ec) {
            r.error = root.string() + ": " + ec.message();
            r.error_errno = ec.category() == boost::system::system_category() ? ec.value() : 0;
            return r;
        }
        r.armed = tw_->size();
        return r;
    }

    void start() override {
        asio::co_spawn(*ctx_, consume(), asio::detached);
        work_.emplace(ctx_->get_executor());
        th_ = std::thread([this] {
            ::pthread_setname_np(::pthread_self(), "bench-tree-ow");
            ctx_->run();
        });
    }

    void stop() override {
        if (!ctx_) return;
        work_.reset();
        ctx_->stop();
        if (th_.joinable()) th_.join();
        if (tw_) tw_->close();
        tw_.reset();
        ctx_.reset();
    }

    std::size_t watched() const override { return tw_ ? tw_->size() : 0; }

    double thread_cpu_seconds() const override { return bench::thread_cpu_seconds(th_); }

private:
    asio::awaitable<void> consume() {
        for (;;) {
            oomwatch::oom_event ev;
            try {
                ev = co_await tw_->next_event();
            } catch (const boost::system::system_error&) {
                co_return;  // closed, or the root is gone
            }
            sink_->on_event(ev.cgroup.native(), ev.kind, ev.count);
        }
    }

    tree_contender_options o_;
    tree_sink* sink_ = nullptr;
    std::optional<asio::io_context> ctx_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::optional<oomwatch::tree_watcher> tw_;
    std::thread th_;
};

} // namespace

std::unique_ptr<tree_contender> make_tree_oomwatch(const tree_contender_options& o) {
    return std::make_unique<tree_oomwatch>(o);
}

std::unique_ptr<tree_contender> make_tree_contender(const std::string& which, const tree_contender_options& o) {
    if (which == "floor") return make_tree_floor(o);
    if (which == "oomwatch") return make_tree_oomwatch(o);
    return nullptr;
}

} // namespace bench
