// A memory-pressure load for the real-kernel tests of pressure watchers (test/kernel)
// and of `oomwatch watch --pressure` (test/cli): one child in a scratch cgroup stalling
// on memory until the object is destroyed.
#pragma once

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

namespace oomwatch::test {

inline constexpr std::size_t load_file_size = 96u << 20;

// A child in `cg` stalling on memory until killed (or 60 s, a bound should the test die
// without killing it); killed and reaped on destruction. v1 (the host, on disk): it
// re-reads a file thrice the cgroup's limit (page cache reclaim, refaults). v2 (the VM,
// whose root is an initramfs: no reclaimable page cache): memory.high far below what it
// touches over and over, which the kernel throttles as a memory stall.
class reclaim_load {
public:
    reclaim_load(const std::filesystem::path& cg, bool v1) : file_(std::filesystem::path("/var/tmp") / ("oomwatch-psi-" + std::to_string(::getpid()))) {
        if (!v1) {
            // No memory.max: over memory.high the load is throttled, never killed.
            std::ofstream(cg / "memory.max") << "max" << std::flush;
            std::ofstream high(cg / "memory.high");
            high << (8u << 20) << std::flush;
            BOOST_TEST_REQUIRE(high.good(), "cannot set memory.high in " << cg);
            file_.clear();
        }
        if (v1) {
            std::ofstream out(file_, std::ios::binary);
            std::string mb(1u << 20, 'x');
            for (std::size_t i = 0; i < load_file_size; i += mb.size()) out << mb;
        }
        // Out of the page cache, so that the child's reads are charged to its cgroup.
        if (v1) {
            int fd = ::open(file_.c_str(), O_RDONLY | O_CLOEXEC);
            BOOST_TEST_REQUIRE(fd >= 0);
            ::fdatasync(fd);
            ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            ::close(fd);
        }
        pid_ = ::fork();
        BOOST_TEST_REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            std::ofstream procs(cg / "cgroup.procs");
            procs << ::getpid() << std::flush;
            if (!procs) ::_exit(2);
            ::alarm(60);
            if (file_.empty()) {
                std::vector<char> anon(32u << 20);
                for (char k = 1;; ++k)
                    for (std::size_t i = 0; i < anon.size(); i += 4096) anon[i] = k;
            }
            static char buf[1 << 16];
            for (;;) {
                int f = ::open(file_.c_str(), O_RDONLY);
                if (f < 0) ::_exit(3);
                while (::read(f, buf, sizeof buf) > 0) {}
                ::close(f);
            }
        }
    }
    ~reclaim_load() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            int status = 0;
            ::waitpid(pid_, &status, 0);
        }
        std::error_code ec;
        if (!file_.empty()) std::filesystem::remove(file_, ec);
    }
    /// The child under load (to put it in a second hierarchy too).
    pid_t pid() const noexcept { return pid_; }
    reclaim_load(const reclaim_load&) = delete;
    reclaim_load& operator=(const reclaim_load&) = delete;

private:
    std::filesystem::path file_;
    pid_t pid_ = -1;
};

} // namespace oomwatch::test
