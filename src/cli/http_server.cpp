// The /metrics HTTP server: one coroutine accepting, one per connection.
#include "http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <charconv>
#include <utility>

namespace oomwatch::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::optional<tcp::endpoint> parse_listen_address(std::string_view text) {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::string_view host = text.substr(0, colon);
    const std::string_view port_text = text.substr(colon + 1);
    unsigned short port = 0;
    const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || ec != std::errc{} || end != port_text.data() + port_text.size()) return std::nullopt;
    const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
    if (bracketed) host = host.substr(1, host.size() - 2);
    if (host.empty() && !bracketed) return tcp::endpoint(tcp::v4(), port);
    boost::system::error_code aec;
    const auto addr = asio::ip::make_address(std::string(host), aec);
    // An IPv6 address needs its brackets, an IPv4 one must not have them.
    if (aec || addr.is_v6() != bracketed) return std::nullopt;
    return tcp::endpoint(addr, port);
}

http_server::http_server(asio::any_io_executor ex, const tcp::endpoint& at, document doc, http_limits lim)
    : ex_(std::move(ex)), acceptor_(ex_), doc_(std::move(doc)), limits_(lim) {
    acceptor_.open(at.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));  // a restart right after a stop
    acceptor_.bind(at);
    acceptor_.listen();
}

tcp::endpoint http_server::local_endpoint() const { return acceptor_.local_endpoint(); }

void http_server::start() { asio::co_spawn(ex_, accept_loop(), asio::detached); }

void http_server::stop() {
    stopped_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (auto& c : connections_) c.close();
}

asio::awaitable<void> http_server::accept_loop() {
    asio::steady_timer pause(ex_);
    while (!stopped_) {
        auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
        if (stopped_) break;
        if (ec) {
            // Out of descriptors, say: a pending connection stays in the backlog, so
            // accepting again at once would spin. Retry a little later.
            pause.expires_after(std::chrono::milliseconds(100));
            co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
            continue;
        }
        if (connections_.size() >= limits_.max_connections) {
            boost::system::error_code ignored;
            socket.close(ignored);  // over the limit: closed at once, nothing read
            continue;
        }
        connections_.emplace_back(std::move(socket));
        asio::co_spawn(ex_, serve(std::prev(connections_.end())), asio::detached);
    }
}

namespace {

// The answer to a request that parsed. HEAD gets GET's headers without the body.
http::response<http::string_body> answer(const http::request<http::empty_body>& req,
                                         const http_server::document& doc) {
    http::response<http::string_body> res;
    res.version(11);
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));  // a query changes nothing
    if (path != doc.path) {
        res.result(http::status::not_found);
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() = "404 not found: only " + doc.path + " is served\n";
    } else if (req.method() != http::verb::get && req.method() != http::verb::head) {
        res.result(http::status::method_not_allowed);
        res.set(http::field::allow, "GET, HEAD");
        res.set(http::field::content_type, "text/plain; charset=utf-8");
        res.body() = "405 method not allowed\n";
    } else {
        res.result(http::status::ok);
        res.set(http::field::content_type, doc.content_type);
        res.body() = doc.render();
    }
    res.prepare_payload();  // Content-Length of the full body, for HEAD too
    if (req.method() == http::verb::head) res.body().clear();
    return res;
}

// The answer to a request that did not parse: it is answered, then the connection closed
// (what follows in the stream cannot be trusted to start a request).
http::response<http::string_body> refusal(const boost::system::error_code& ec) {
    http::response<http::string_body> res;
    res.version(11);
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        res.result(http::status::request_header_fields_too_large);
    } else if (ec == http::error::body_limit || ec == http::error::unexpected_body) {
        res.result(http::status::payload_too_large);  // a request with a body: none is accepted
    } else {
        res.result(http::status::bad_request);
    }
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::to_string(res.result_int()) + " " + std::string(res.reason()) + "\n";
    res.keep_alive(false);
    res.prepare_payload();
    return res;
}

} // namespace

asio::awaitable<void> http_server::serve(connection_list::iterator conn) {
    beast::tcp_stream& stream = *conn;
    // Bounded: the parser stops at the header limit, the buffer at the same size.
    beast::flat_buffer buffer(limits_.header_bytes);
    const auto& http_category = http::make_error_code(http::error::end_of_stream).category();
    while (!stopped_) {
        http::request_parser<http::empty_body> parser;
        parser.header_limit(limits_.header_bytes);
        parser.body_limit(0);
        // One deadline for the whole request: a client sending a byte at a time gains
        // nothing. Between requests it is the idle timeout.
        stream.expires_after(limits_.timeout);
        auto [rec, n] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
        if (stopped_) break;
        // The client closed between requests, or mid-request, or the socket failed or
        // timed out: nobody to answer.
        if (rec == http::error::end_of_stream || rec == http::error::partial_message) break;
        if (rec && rec.category() != http_category) break;
        auto res = rec ? refusal(rec) : answer(parser.get(), doc_);
        if (!rec) res.keep_alive(parser.get().keep_alive());
        stream.expires_after(limits_.timeout);
        auto [wec, m] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
        if (stopped_ || wec || !res.keep_alive()) break;
    }
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);  // FIN after the last answer
    stream.close();
    connections_.erase(conn);
}

} // namespace oomwatch::cli
