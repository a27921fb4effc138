// Uses an installed oomwatch the way an application does: through find_package and
// oomwatch::oomwatch alone. Exits non-zero on any mismatch.
#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>

#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <system_error>

namespace {

int failures = 0;

void check(bool ok, std::string_view what) {
    std::cout << (ok ? "ok:   " : "FAIL: ") << what << '\n';
    if (!ok) ++failures;
}

} // namespace

int main() {
    // A parser, with a key this version does not know.
    auto counters = oomwatch::parse_memory_events(
        "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\nsock_throttled 7\n");
    check(counters.has_value(), "parse_memory_events accepts a memory.events text");
    if (counters) {
        const oomwatch::memory_counters& c = *counters;
        check(c.low == 1 && c.high == 2 && c.max == 3 && c.oom == 4 && c.oom_kill == 5 &&
                  c.oom_group_kill == 6,
              "parse_memory_events reads the known counters");
        check(c.other.size() == 1 && c.other[0].first == "sock_throttled" && c.other[0].second == 7,
              "parse_memory_events keeps the unknown key");
        check(c.get(oomwatch::event_kind::oom_kill) == 5, "memory_counters::get(oom_kill)");
    }
    auto bad = oomwatch::parse_memory_events("oom many\n");
    check(!bad.has_value() && bad.error() == oomwatch::error::malformed_counters,
          "parse_memory_events rejects a value that is not a number");

    // The error category and the event names.
    std::string category = oomwatch::error_category().name();
    std::cout << "error category: " << category << '\n';
    check(category == "oomwatch", "error_category().name() is \"oomwatch\"");
    check(oomwatch::to_string(oomwatch::event_kind::oom_kill) == "oom_kill", "to_string(event_kind)");

    // A watcher on a cgroup that does not exist: both constructor overloads.
    const std::string missing = "/sys/fs/cgroup/memory/oomwatch-install-test-no-such-cgroup";
    boost::asio::io_context ioc;
    boost::system::error_code ec;
    oomwatch::watcher w(ioc.get_executor(), missing, {}, ec);
    std::cout << "watcher on " << missing << ": " << ec.message() << '\n';
    check(ec == std::errc::no_such_file_or_directory, "the error_code overload gives no_such_file_or_directory");
    check(!w.is_open(), "the failed watcher is closed");

    try {
        oomwatch::watcher thrown(ioc, missing);
        check(false, "the throwing constructor throws");
    } catch (const oomwatch::cgroup_error& e) {
        std::cout << "cgroup_error: " << e.what() << '\n';
        check(e.code() == std::errc::no_such_file_or_directory && e.path() == missing,
              "the throwing constructor throws cgroup_error with the error and the path");
    } catch (const std::exception& e) {
        std::cout << "unexpected exception: " << e.what() << '\n';
        check(false, "the throwing constructor throws cgroup_error");
    }

    if (failures != 0) {
        std::cout << failures << " check(s) failed\n";
        return 1;
    }
    std::cout << "the installed oomwatch works\n";
    return 0;
}
