// A client of the kernel-log reader (src/kernel_log.hpp) that keeps what it is told,
// for the unit and the real-kernel tests.
#pragma once

#include "kernel_log.hpp"
#include "detail/cgroup.hpp"
#include "fault_support.hpp"

#include <boost/system/error_code.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <vector>

namespace oomwatch::test {

struct kill_recorder : detail::kernel_log_client {
    std::vector<detail::kill_record> kills;
    std::vector<boost::system::error_code> errors;
    void on_kill(const detail::kill_record& k) override { kills.push_back(k); }
    void on_log_unavailable(const boost::system::error_code& ec) override { errors.push_back(ec); }
    /// The kill of `pid`, or nullptr.
    const detail::kill_record* of(pid_t pid) const {
        for (auto& k : kills)
            if (k.pid == pid) return &k;
        return nullptr;
    }
};

/// A cgroup directory as the kernel prints it: its path inside the hierarchy.
inline std::string hierarchy_path(const std::filesystem::path& dir) {
    auto h = detail::find_memory_hierarchy();
    BOOST_TEST_REQUIRE(h.has_value());
    auto rel = dir.lexically_relative(h->mount_point).generic_string();
    return (h->root == "/" ? std::string() : h->root) + "/" + rel;
}

/// The comm of this program, and so of the victims it forks.
inline std::string own_comm() {
    auto c = read_text("/proc/self/comm");
    if (!c.empty() && c.back() == '\n') c.pop_back();
    return c;
}

/// One record written to /dev/kmsg ("<N>" sets the level; the kernel gives a writer
/// facility 1 unless it names another non-zero one). With its newline: since 5.10 a
/// record without one stays open for a continuation, unseen by readers until the next.
inline void write_kmsg(std::string text) {
    text += '\n';
    int fd = ::open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    BOOST_TEST_REQUIRE(fd >= 0, "open /dev/kmsg for writing: errno " << errno);
    auto n = ::write(fd, text.data(), text.size());
    const int e = errno;
    ::close(fd);
    BOOST_TEST_REQUIRE(n == static_cast<ssize_t>(text.size()), "write /dev/kmsg: errno " << e);
}

} // namespace oomwatch::test
