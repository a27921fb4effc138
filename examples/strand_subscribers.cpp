// strand_subscribers: one watcher, two subscribers, each on its own strand of a
// two-thread pool. Each subscriber gets every event, in order, never concurrently with
// itself; a slow subscriber never delays the other one.
//
//   example_strand_subscribers /sys/fs/cgroup/memory/myapp   # or /sys/fs/cgroup/myapp on v2
//
// Stops when the cgroup is removed, or on Ctrl-C (SIGINT) or SIGTERM.
#include <oomwatch/oomwatch.hpp>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <csignal>
#include <exception>
#include <iostream>
#include <mutex>
#include <string_view>
#include <thread>

namespace asio = boost::asio;

int main(int argc, char* argv[]) {
    if (argc != 2) {
        std::cerr << "usage: " << argv[0] << " CGROUP\n";
        return 2;
    }
    asio::thread_pool pool(2);
    try {
        // The watcher runs on a strand of its own too: the pool has two threads, and a
        // watcher must not be used from two threads at once.
        oomwatch::watcher w(asio::make_strand(pool), argv[1]);
        std::cout << "watching " << w.cgroup().string() << std::endl;

        std::mutex out_mutex;          // both strands print to std::cout
        std::atomic<int> subscribers{2};  // when both have seen `removed`, we are done
        auto printer = [&](std::string_view name) {
            return [&, name](const oomwatch::oom_event& ev) {
                {
                    std::lock_guard lock(out_mutex);
                    std::cout << '[' << name << " on thread " << std::this_thread::get_id() << "] "
                              << oomwatch::to_string(ev.kind) << " x" << ev.count
                              << " (oom_kill " << ev.counters.oom_kill << " so far)" << std::endl;
                }
                if (ev.kind == oomwatch::event_kind::removed && --subscribers == 0) pool.stop();
            };
        };
        oomwatch::subscription alerts = w.subscribe(asio::make_strand(pool), printer("alerts"));
        oomwatch::subscription metrics = w.subscribe(asio::make_strand(pool), printer("metrics"));

        asio::signal_set signals(pool, SIGINT, SIGTERM);
        signals.async_wait([&](const boost::system::error_code& ec, int) {
            if (!ec) pool.stop();
        });

        // Runs until pool.stop(). Then no handler runs any more, and the subscriptions,
        // the signal set and the watcher are destroyed here, before the pool.
        pool.join();
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << '\n';
        pool.stop();
        pool.join();
        return 1;
    }
    return 0;
}
