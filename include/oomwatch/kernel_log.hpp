// oomwatch/kernel_log.hpp: the state of an execution context's kernel-log reader.
#pragma once

#include <boost/asio/execution_context.hpp>

#include <cstdint>

namespace oomwatch {

/// What the kernel-log (`/dev/kmsg`) reader of an execution context has seen since it was
/// made. One reader serves the victims of every watcher and the system watchers of the
/// context; it reads only while one of them is open.
struct kernel_log_stats {
    /// Records read (of every facility).
    std::uint64_t records_read = 0;
    /// Records overwritten in the kernel's ring buffer before they were read (EPIPE, or a
    /// gap in the sequence numbers): a kill among them goes without its victim named.
    std::uint64_t records_lost = 0;
    /// Records not written by the kernel (a process wrote them to `/dev/kmsg`), ignored
    /// however much they look like the kernel's OOM lines.
    std::uint64_t foreign_records = 0;
    /// Whether `/dev/kmsg` is open now.
    bool reading = false;
};

/// The statistics of `ctx`'s kernel-log reader (all zero before anyone used it).
/// Thread safety: safe to call from any thread.
kernel_log_stats kernel_log_statistics(boost::asio::execution_context& ctx);

} // namespace oomwatch
