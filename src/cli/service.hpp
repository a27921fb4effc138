// The systemd service protocol (sd_notify(3)) without libsystemd: readiness, the
// watchdog and shutdown, as datagrams to $NOTIFY_SOCKET. Outside systemd (no
// NOTIFY_SOCKET) every call does nothing.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace oomwatch::cli {

class service_notifier {
public:
    /// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; sends nothing yet.
    explicit service_notifier(boost::asio::io_context& ioc);

    service_notifier(const service_notifier&) = delete;
    service_notifier& operator=(const service_notifier&) = delete;
    ~service_notifier();

    /// READY=1, then (if systemd asked for a watchdog) WATCHDOG=1 every WATCHDOG_USEC/2,
    /// sent from the io_context: a stalled event loop stops the pings and systemd
    /// restarts us.
    void ready();

    /// STOPPING=1 and no more pings (their timer would keep the io_context running).
    /// Idempotent.
    void stopping();

private:
    void ping();
    void send(std::string_view message);

    std::string socket_;  // as in NOTIFY_SOCKET; empty: not under systemd
    std::optional<std::chrono::microseconds> watchdog_;
    boost::asio::steady_timer timer_;
    int fd_ = -1;
    bool stopped_ = false;
    bool warned_ = false;
};

} // namespace oomwatch::cli
