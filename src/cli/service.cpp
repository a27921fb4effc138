// sd_notify(3) by hand: one AF_UNIX datagram socket, "KEY=VALUE" messages.
#include "service.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <iostream>

namespace oomwatch::cli {

namespace {

// A decimal number and nothing else, as systemd writes them.
template <class T>
std::optional<T> env_number(const char* name) {
    const char* text = std::getenv(name);
    if (!text || !*text) return std::nullopt;
    T value{};
    const char* end = text + std::strlen(text);
    const auto [ptr, ec] = std::from_chars(text, end, value);
    if (ec != std::errc{} || ptr != end) return std::nullopt;
    return value;
}

} // namespace

service_notifier::service_notifier(boost::asio::io_context& ioc) : timer_(ioc) {
    if (const char* s = std::getenv("NOTIFY_SOCKET")) socket_ = s;
    // The watchdog is ours unless systemd named another process (WATCHDOG_PID).
    const auto usec = env_number<unsigned long long>("WATCHDOG_USEC");
    const auto pid = env_number<long long>("WATCHDOG_PID");
    if (usec && *usec > 0 && (!std::getenv("WATCHDOG_PID") || (pid && *pid == ::getpid())))
        watchdog_ = std::chrono::microseconds(*usec / 2);
}

service_notifier::~service_notifier() {
    if (fd_ >= 0) ::close(fd_);
}

void service_notifier::ready() {
    if (socket_.empty() || stopped_) return;
    send("READY=1");
    if (watchdog_) ping();
}

void service_notifier::stopping() {
    if (stopped_) return;
    stopped_ = true;
    timer_.cancel();
    if (!socket_.empty()) send("STOPPING=1");
}

void service_notifier::ping() {
    send("WATCHDOG=1");
    timer_.expires_after(*watchdog_);
    timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec && !stopped_) ping();
    });
}

void service_notifier::send(std::string_view message) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    // "@name" is an abstract socket: a leading NUL instead of the '@', no terminator.
    const bool abstract = socket_.front() == '@';
    const bool usable = (abstract || socket_.front() == '/') && socket_.size() < sizeof addr.sun_path;
    int err = EAFNOSUPPORT;  // e.g. vsock:, which we do not speak
    if (usable) {
        socket_.copy(addr.sun_path, socket_.size());
        if (abstract) addr.sun_path[0] = '\0';
        const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_.size() + (abstract ? 0 : 1));
        if (fd_ < 0) fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd_ >= 0 &&
            ::sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), len) ==
                static_cast<ssize_t>(message.size()))
            return;
        err = errno;
    }
    // Once: a service manager that cannot hear us will time out or restart us anyway.
    if (!warned_) {
        warned_ = true;
        std::cerr << "oomwatch: NOTIFY_SOCKET=" << socket_ << ": " << std::strerror(err) << '\n';
    }
}

} // namespace oomwatch::cli
