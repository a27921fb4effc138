// A client of the kernel-log reader (src/kernel_log.hpp) that keeps what it is told,
// for the unit and the real-kernel tests.
#pragma once

#include "kernel_log.hpp"

#include <boost/system/error_code.hpp>

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

} // namespace oomwatch::test
