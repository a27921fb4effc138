// Test seams for failures that a real kernel gives only when something is badly wrong
// (a failing eventfd or inotify read). Internal: not installed. A test stores an errno;
// the next operation of that kind fails with it, once.
#pragma once

#include <boost/system/error_code.hpp>

#include <atomic>
#include <cerrno>

namespace oomwatch::detail::fault {

inline std::atomic<int> eventfd_read_errno{0};
inline std::atomic<int> inotify_wait_errno{0};
inline std::atomic<int> inotify_read_errno{0};
inline std::atomic<int> kmsg_read_errno{0};  // a /dev/kmsg read (EPIPE: records overwritten)
inline std::atomic<int> vmstat_read_errno{0};  // a /proc/vmstat read (the system watcher's)

/// Takes the injected errno, if any: sets `errno` and returns it as an error code.
inline boost::system::error_code take(std::atomic<int>& slot) noexcept {
    const int e = slot.load(std::memory_order_relaxed) != 0 ? slot.exchange(0) : 0;
    if (e == 0) return {};
    errno = e;
    return {e, boost::system::system_category()};
}

} // namespace oomwatch::detail::fault
