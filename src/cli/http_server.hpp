// A minimal HTTP/1.1 server (Boost.Beast) for one document: GET /metrics. It shares the
// watchers' io_context, so every limit here is there to keep a slow or hostile client
// from holding memory, descriptors or time: a bounded request header and no body, a
// timeout on every read and write (idle keep-alive included), and a connection limit.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <string_view>

namespace oomwatch::cli {

/// "ADDR:PORT" (IPv4, "[IPv6]", or empty for every IPv4 address), numeric only: no
/// name lookups. Empty on a malformed one.
std::optional<boost::asio::ip::tcp::endpoint> parse_listen_address(std::string_view text);

/// What one client may take of the server.
struct http_limits {
    std::size_t max_connections = 64;  ///< beyond it a new connection is closed at once
    std::uint32_t header_bytes = 8 * 1024;  ///< request line and headers; larger: 431 and close
    /// To send a request (from the connection or the last answer: idle time included), and
    /// to read an answer.
    std::chrono::steady_clock::duration timeout = std::chrono::seconds(10);
};

class http_server {
public:

    /// Document served at `path` (GET or HEAD), as `content_type`, made anew per request.
    struct document {
        std::string path;
        std::string content_type;
        std::function<std::string()> render;
    };

    /// Binds and listens (throws boost::system::system_error); serves after start().
    http_server(boost::asio::any_io_executor ex, const boost::asio::ip::tcp::endpoint& at, document doc,
                http_limits lim = {});

    boost::asio::ip::tcp::endpoint local_endpoint() const;
    void start();
    /// Closes the listening socket and every connection; the coroutines then end, so the
    /// io_context can run out of work. Idempotent.
    void stop();

private:
    using connection_list = std::list<boost::beast::tcp_stream>;
    boost::asio::awaitable<void> accept_loop();
    boost::asio::awaitable<void> serve(connection_list::iterator conn);

    boost::asio::any_io_executor ex_;
    boost::asio::ip::tcp::acceptor acceptor_;
    document doc_;
    http_limits limits_;
    connection_list connections_;  // each erased by its own coroutine when it ends
    bool stopped_ = false;
};

} // namespace oomwatch::cli
