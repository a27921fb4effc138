// pressure_watch: warns while a memory cgroup stalls on memory, and reports its OOM kills,
// with two coroutines on one io_context.
//
//   example_pressure_watch /sys/fs/cgroup/myapp          # cgroup v2: PSI, some 200ms per 2s
//   example_pressure_watch /sys/fs/cgroup/memory/myapp   # cgroup v1: the medium level
//
// Stops when the cgroup is removed, or on Ctrl-C (SIGINT) or SIGTERM.
#include <oomwatch/oomwatch.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <filesystem>
#include <iostream>

namespace asio = boost::asio;

// The watchers are main's, which outlive the loops.
asio::awaitable<void> warn(oomwatch::pressure_watcher& pw) {
    for (;;) {
        oomwatch::pressure_event pe = co_await pw.next_event();
        if (pe.kind != oomwatch::pressure_kind::pressure) break;  // removed
        std::cout << "pressure x" << pe.count << " in " << pe.cgroup.string();
        if (pe.level) std::cout << " (" << oomwatch::to_string(*pe.level) << ")";
        if (pe.averages) std::cout << " (some avg10 " << pe.averages->some.avg10 << "%)";
        std::cout << std::endl;
    }
}

asio::awaitable<void> report(oomwatch::watcher& w) {
    for (;;) {
        oomwatch::oom_event ev = co_await w.next_event();
        std::cout << oomwatch::to_string(ev.kind) << " x" << ev.count << " in " << ev.cgroup.string();
        for (const auto& v : ev.victims) std::cout << ", killed " << v.pid << " (" << v.comm << ")";
        std::cout << std::endl;
        if (ev.kind == oomwatch::event_kind::removed) break;
    }
}

int main(int argc, char* argv[]) {
    if (argc != 2) {
        std::cerr << "usage: " << argv[0] << " CGROUP\n";
        return 2;
    }
    asio::io_context ioc;
    try {
        const auto where = oomwatch::resolve_cgroup(argv[1]);
        oomwatch::watcher w(ioc.get_executor(), where.directory);
        // PSI triggers on v2, pressure levels on v1: the kernel offers one or the other.
        oomwatch::pressure_watcher pw =
            where.version == oomwatch::cgroup_version::v2
                ? oomwatch::pressure_watcher(ioc.get_executor(), where.directory, oomwatch::pressure_trigger{})
                : oomwatch::pressure_watcher(ioc.get_executor(), where.directory,
                                             oomwatch::pressure_level_trigger{oomwatch::pressure_level::medium});
        std::cout << "watching " << where.directory.string() << std::endl;

        asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&](const boost::system::error_code& ec, int) {
            if (ec) return;
            w.close();
            pw.close();
        });
        // Ends: a closed watcher's next_event() throws watcher_closed or operation_aborted,
        // a removed one's cgroup_removed. Anything else is a failure worth saying.
        int status = 0;
        auto check = [&status](std::exception_ptr e) {
            if (!e) return;
            try {
                std::rethrow_exception(e);
            } catch (const boost::system::system_error& x) {
                if (x.code() == oomwatch::error::watcher_closed || x.code() == oomwatch::error::cgroup_removed ||
                    x.code() == asio::error::operation_aborted)
                    return;
                std::cerr << "error: " << x.what() << '\n';
                status = 1;
            } catch (const std::exception& x) {
                std::cerr << "error: " << x.what() << '\n';
                status = 1;
            }
        };
        asio::co_spawn(ioc, warn(pw), check);
        // The OOM watch decides the end (its `removed` is the last line): then the pressure
        // watch and the signal wait go too, and run() returns.
        asio::co_spawn(ioc, report(w), [&](std::exception_ptr e) {
            pw.close();
            signals.cancel();
            check(e);
        });
        ioc.run();
        return status;
    } catch (const oomwatch::cgroup_error& e) {
        std::cerr << "error: " << e.what() << '\n';
        return 1;
    }
}
