// One reader of the kernel log (/dev/kmsg) per execution context, shared by everyone
// who wants to know who the OOM killer killed (issue 10). Internal: not installed.
//
// It reads only while it has clients, one record per read, from the end of the log as
// it was when reading started (old kills are never replayed), keeps only the kernel's
// own records (facility 0: forged ones are dropped), assembles the OOM reports into
// kill records (detail/oom_report.hpp) and hands each to every client. Records lost
// (overwritten before they were read: EPIPE, or a gap in the sequence numbers) are
// counted and logged.
#pragma once

#include "detail/oom_report.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace oomwatch::detail {

/// What the service tells its clients. Called from the service's handlers (on a thread
/// running the context), never with the service's lock held, one record at a time in
/// the log's order.
class kernel_log_client {
public:
    virtual ~kernel_log_client() = default;
    /// The kernel logged an OOM kill.
    virtual void on_kill(const kill_record& k) = 0;
    /// The kernel log cannot be read: /dev/kmsg could not be opened (EPERM or EACCES
    /// without CAP_SYSLOG under kernel.dmesg_restrict, ENOENT without the device) or a
    /// read failed for good (EIO). Called once; the registration is gone afterwards (a
    /// later `add` tries again).
    virtual void on_log_unavailable(const boost::system::error_code& ec) = 0;
};

class kernel_log_service : public boost::asio::execution_context::service {
public:
    using key_type = kernel_log_service;
    static boost::asio::execution_context::id id;

    /// The records one read may return: a record is at most about 1 KiB of text plus
    /// its dictionary; the kernel fails a read with EINVAL when the buffer is too small.
    static constexpr std::size_t read_buffer_size = 16384;
    /// Victims whose cgroup is looked up in /proc when the report's summary is missing:
    /// only records this recent (kernel timestamp against CLOCK_MONOTONIC), so that the
    /// pid is unlikely to be a new process's already.
    static constexpr std::chrono::milliseconds proc_lookup_age{2000};

    explicit kernel_log_service(boost::asio::execution_context& ctx);
    ~kernel_log_service() override;

    /// Registers a client; the first one opens /dev/kmsg (O_NONBLOCK|O_CLOEXEC) and
    /// seeks to its end, so only records logged from now on are read. `ex` is an
    /// executor of this service's context. Returns the registration's key (never 0).
    /// When the log cannot be opened, the client's `on_log_unavailable` is posted to
    /// `ex` and the key is already void.
    /// `why`, when given, is set to the error when the log cannot be opened (the key is 0).
    /// That error is logged once per service (at `warning`), however many clients ask.
    std::uint64_t add(const boost::asio::any_io_executor& ex, std::weak_ptr<kernel_log_client> client,
                      boost::system::error_code* why = nullptr);
    /// Undoes `add` (a void key is ignored). With the last client gone the log is
    /// closed: the context can run out of work, and the next `add` starts at the end
    /// of the log again.
    void remove(std::uint64_t registration);

    /// Records lost since the service was made: overwritten before they were read
    /// (EPIPE; the gap in sequence numbers then says how many, at least 1 per EPIPE),
    /// or missing in the sequence of records read.
    std::uint64_t records_lost() const;
    /// Records read (of every facility), and of those not the kernel's (dropped).
    std::uint64_t records_seen() const;
    std::uint64_t foreign_records() const;

    /// Where the reader is in the log, for a later restart: the boot it belongs to
    /// (/proc/sys/kernel/random/boot_id; empty if unreadable) and the sequence number
    /// of the last record read (none before the first).
    struct log_position {
        std::string boot_id;
        std::optional<std::uint64_t> last_seq;
    };
    log_position position() const;

    /// Whether /dev/kmsg is open, and how many clients are registered (for tests).
    bool is_open() const;
    std::size_t client_count() const;

    /// For tests: called (from the read's handler, without the lock) with every record
    /// read, of any facility, before it is assembled.
    void set_record_hook(std::function<void(const kmsg_record&)> hook);

private:
    void shutdown() override;
    boost::system::error_code open_locked(const boost::asio::any_io_executor& ex);
    void close_locked();
    void start_reading();  // with m_ held
    void on_read(std::uint64_t gen, boost::system::error_code ec, std::size_t n);
    void count_lost_locked(std::uint64_t n);
    // The I/O part of a kill record: its cgroup from /proc when the report had none.
    void fill_from_proc(kill_record& k);

    mutable std::mutex m_;
    std::optional<boost::asio::any_io_executor> exec_;  // the context's; set on first open
    std::optional<boost::asio::posix::stream_descriptor> fd_;
    std::uint64_t gen_ = 0;  // of the open descriptor: a closed one's late handler is ignored
    std::unique_ptr<char[]> buf_;
    std::unordered_map<std::uint64_t, std::weak_ptr<kernel_log_client>> clients_;
    std::uint64_t next_key_ = 1;
    oom_report_assembler assembler_;
    std::function<void(const kmsg_record&)> hook_;

    std::string boot_id_;
    std::optional<std::uint64_t> last_seq_;  // of this descriptor: a reopen skips ahead
    std::optional<std::uint64_t> position_seq_;
    bool epipe_ = false;  // the next record says how many were lost
    std::uint64_t lost_ = 0, seen_ = 0;
    std::uint64_t lost_unlogged_ = 0;
    std::chrono::steady_clock::time_point last_loss_log_{};
    std::optional<bool> v2_hierarchy_;  // for the /proc lookups, found on first need
    bool reading_ = false;
    bool shut_down_ = false;
    bool open_failure_logged_ = false;
};

} // namespace oomwatch::detail
