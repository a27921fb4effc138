// coroutine_watch: prints the OOM events of one memory cgroup, with a coroutine.
//
//   example_coroutine_watch /sys/fs/cgroup/memory/myapp   # cgroup v1
//   example_coroutine_watch /sys/fs/cgroup/myapp          # cgroup v2
//   example_coroutine_watch /myapp                        # a path inside the memory hierarchy
//
// Stops when the cgroup is removed, or on Ctrl-C (SIGINT) or SIGTERM.
#include <oomwatch/oomwatch.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <exception>
#include <filesystem>
#include <iostream>

namespace asio = boost::asio;

// The cgroup is taken by value: a coroutine outlives the caller's arguments.
asio::awaitable<void> watch(asio::any_io_executor ex, std::filesystem::path cgroup) {
    oomwatch::watcher w(ex, cgroup);  // throws oomwatch::cgroup_error if it cannot watch
    std::cout << "watching " << w.cgroup().string() << " (cgroup v" << static_cast<int>(w.version())
              << ")" << std::endl;
    for (;;) {
        oomwatch::oom_event ev = co_await w.next_event();
        std::cout << oomwatch::to_string(ev.kind) << " x" << ev.count << " in " << ev.cgroup.string()
                  << " (oom " << ev.counters.oom << ", oom_kill " << ev.counters.oom_kill << " so far)"
                  << std::endl;
        if (ev.kind == oomwatch::event_kind::removed) break;
    }
}

int main(int argc, char* argv[]) {
    if (argc != 2) {
        std::cerr << "usage: " << argv[0] << " CGROUP\n";
        return 2;
    }
    asio::io_context ioc;

    // A signal cancels the coroutine: the pending next_event() throws operation_aborted.
    asio::cancellation_signal stop;
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&stop](const boost::system::error_code& ec, int) {
        if (!ec) stop.emit(asio::cancellation_type::terminal);
    });

    int status = 0;
    asio::co_spawn(ioc, watch(ioc.get_executor(), argv[1]),
                   asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) {
                       signals.cancel();  // the watch is over: stop waiting for signals
                       if (!e) return;
                       try {
                           std::rethrow_exception(e);
                       } catch (const boost::system::system_error& x) {
                           if (x.code() == asio::error::operation_aborted) return;  // signalled
                           std::cerr << "error: " << x.what() << '\n';
                           status = 1;
                       } catch (const std::exception& x) {
                           std::cerr << "error: " << x.what() << '\n';
                           status = 1;
                       }
                   }));
    ioc.run();
    return status;
}
