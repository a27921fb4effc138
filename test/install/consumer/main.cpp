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
    // What a user programs against is public; the parsers and the other test seams are
    // not installed.
#if __has_include(<oomwatch/parse.hpp>)
    check(false, "oomwatch/parse.hpp is not installed");
#endif

    // The lookups, in both forms, on a path that exists but is no cgroup.
    boost::system::error_code lookup_ec;
    auto tmp = oomwatch::resolve_cgroup("/proc/self", lookup_ec);
    check(lookup_ec && tmp.directory.empty(), "resolve_cgroup(path, ec) refuses /proc/self");
    try {
        oomwatch::resolve_cgroup("/proc/self");
        check(false, "resolve_cgroup(path) throws");
    } catch (const oomwatch::cgroup_error& e) {
        std::cout << "cgroup_error: " << e.what() << '\n';
        check(e.code() == lookup_ec && e.path() == "/proc/self",
              "resolve_cgroup(path) throws cgroup_error with the error and the path");
    }
    oomwatch::memory_cgroup_of(-1, lookup_ec);
    check(lookup_ec == std::errc::no_such_process, "memory_cgroup_of(-1, ec) gives no_such_process");

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
