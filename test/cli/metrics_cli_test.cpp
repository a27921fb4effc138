// `oomwatch watch --metrics/--textfile` run for real: exact counts of real OOM kills in
// /metrics and in the text file, a removed cgroup's retention, hostile HTTP clients that
// must not stall event handling, and a real Prometheus scraping it (with promtool's
// lint). Part of oomwatch_cli_tests (cli_test.cpp has the module).
//
// Every wait is bounded: sockets are polled with deadlines; the programs are children
// killed and reaped by their destructors; scratch cgroups and temporary folders are
// removed by theirs.
#include "cli_process.hpp"
#include "test_support.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

using namespace oomwatch;
using namespace oomwatch::test;
using namespace oomwatch::test::cli;
using namespace std::chrono_literals;

namespace {

// A TCP connection to 127.0.0.1:port, every wait bounded.
class tcp_client {
public:
    explicit tcp_client(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
        if (!fd_) throw_errno("socket");
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connected_ = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;  // loopback: at once
        ::fcntl(fd_.get(), F_SETFL, ::fcntl(fd_.get(), F_GETFL) | O_NONBLOCK);
    }
    bool connected() const { return connected_; }

    /// False when the server closed or reset the connection (or the deadline passed).
    bool send(std::string_view data, std::chrono::milliseconds timeout = 5s) {
        const auto deadline = clock_type::now() + timeout;
        while (!data.empty()) {
            const ssize_t n = ::send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
            if (n > 0) {
                data.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
            if (!wait(POLLOUT, deadline)) return false;
        }
        return true;
    }

    /// Reads until the server closes (true) or `timeout` passes (false); `text` keeps
    /// what came. A reset counts as a close.
    bool read_to_close(std::chrono::milliseconds timeout = 10s) { return read_until({}, timeout); }

    /// Reads until `text` holds `needle` (or, with an empty one, until the server
    /// closes): true then, false when the connection closed first or `timeout` passed.
    bool read_until(std::string_view needle, std::chrono::milliseconds timeout) {
        const auto deadline = clock_type::now() + timeout;
        for (;;) {
            if (!needle.empty() && text.find(needle) != std::string::npos) return true;
            char buf[4096];
            const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
            if (n > 0) {
                text.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return needle.empty();
            if (!wait(POLLIN, deadline)) return false;
        }
    }

    std::string text;

private:
    bool wait(short events, clock_type::time_point deadline) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock_type::now());
        if (left <= 0ms) return false;
        pollfd p{fd_.get(), events, 0};
        return ::poll(&p, 1, static_cast<int>(left.count())) >= 0;
    }

    fd_guard fd_;
    bool connected_ = false;
};

// One HTTP/1.1 request with `Connection: close`; the whole answer, or empty when the
// connection failed or the answer did not end within 10 s.
std::string http_get(std::uint16_t port, const std::string& target) {
    tcp_client c(port);
    if (!c.connected() || !c.send("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
        return {};
    return c.read_to_close() ? c.text : std::string();
}

std::string body_of(const std::string& answer) {
    const auto pos = answer.find("\r\n\r\n");
    return pos == std::string::npos ? std::string() : answer.substr(pos + 4);
}

// What sample() gives for a series not in the text.
constexpr std::uint64_t absent = UINT64_MAX;

// The value of the sample `series` ("name{labels}") in exposition text, or `absent`.
std::uint64_t sample(const std::string& text, const std::string& series) {
    const std::string needle = "\n" + series + " ";
    const auto pos = ("\n" + text).find(needle);
    if (pos == std::string::npos) return absent;
    std::uint64_t v = 0;
    const char* begin = text.data() + pos + needle.size() - 1;
    if (std::from_chars(begin, text.data() + text.size(), v).ec != std::errc{}) return absent;
    return v;
}

std::string kills_series(const std::filesystem::path& cg) {
    return "oomwatch_events_total{cgroup=\"" + cg.string() + "\",kind=\"oom_kill\"}";
}

// oomwatch watch with --metrics on a port of its choosing, announced with -v.
struct metrics_run {
    explicit metrics_run(std::vector<std::string> args) : p(with_metrics(std::move(args))) {
        const std::string prefix = "oomwatch: serving metrics on http://127.0.0.1:";
        const bool up = p.run_until([&] { return p.err().find("/metrics\n") != std::string::npos || p.status(); }, 10s);
        const auto pos = p.err().find(prefix);
        BOOST_TEST_REQUIRE((up && pos != std::string::npos && !p.status()),
                           "oomwatch did not serve metrics within 10 s; stderr: " << p.err());
        unsigned v = 0;
        std::from_chars(p.err().data() + pos + prefix.size(), p.err().data() + p.err().size(), v);
        port = static_cast<std::uint16_t>(v);
        BOOST_TEST_REQUIRE(port != 0u);
    }
    static std::vector<std::string> with_metrics(std::vector<std::string> args) {
        args.insert(args.begin(), {"-v", "watch", "--metrics", "127.0.0.1:0"});
        return args;
    }
    std::string metrics() { return body_of(http_get(port, "/metrics")); }
    // Waits (bounded) until oomwatch printed `n` oom_kill lines' worth for `cg`.
    void require_kills_printed(std::uint64_t n) {
        auto printed = [&] {
            std::uint64_t seen = 0;
            for (auto pos = p.out().find("\"kind\":\"oom_kill\""); pos != std::string::npos;
                 pos = p.out().find("\"kind\":\"oom_kill\"", pos + 1))
                ++seen;
            return seen;
        };
        BOOST_TEST_REQUIRE(p.run_until([&] { return printed() >= n || p.status(); }, 20s),
                           "fewer than " << n << " oom_kill lines; stdout: " << p.out() << "; stderr: " << p.err());
    }

    cli_process p;
    std::uint16_t port = 0;
};

// A temporary folder, removed with what it holds.
struct temp_dir {
    temp_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "oomwatch-metrics-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) throw_errno("mkdtemp");
        path = tmpl;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::filesystem::path path;
};

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Lints exposition text with `promtool check metrics` (on stdin); its verdict.
void require_promtool_clean(const std::string& text, const temp_dir& dir) {
    const auto file = dir.path / "lint.prom";
    std::ofstream(file) << text;
    cli_process lint({"-c", "exec promtool check metrics < \"$0\"", file.string()}, {.program = "/bin/sh"});
    const auto st = lint.wait_exit(30s);
    BOOST_TEST(exited_with(st, 0), "promtool check metrics: " << describe(st) << "; " << lint.out() << lint.err()
                                                                 << "\non:\n" << text);
    BOOST_TEST(lint.out().empty(), lint.out());
}

// Prometheus is installed (scripts/bootstrap installs it), or the test is skipped; with
// OOMWATCH_REQUIRE_KERNEL=1 it fails instead.
bool prometheus_available() {
    const bool there = std::filesystem::exists("/usr/bin/prometheus") && std::filesystem::exists("/usr/bin/promtool");
    if (!there && kernel_required()) BOOST_TEST_REQUIRE(false, "prometheus/promtool not installed (scripts/bootstrap)");
    if (!there) BOOST_TEST_MESSAGE("skipped: prometheus is not installed (scripts/bootstrap installs it)");
    return there;
}

// A port free now on 127.0.0.1 (bound, read, released): for Prometheus, which cannot
// announce one of its choosing.
std::uint16_t free_port() {
    fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0)
        throw_errno("bind 127.0.0.1:0");
    return ntohs(sa.sin_port);
}

std::string url_encode(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            char buf[4];
            std::snprintf(buf, sizeof buf, "%%%02X", c);
            out += buf;
        }
    }
    return out;
}

// The value of an instant query's single sample ("3"), or empty.
std::optional<std::string> prometheus_value(std::uint16_t port, const std::string& query) {
    const auto body = body_of(http_get(port, "/api/v1/query?query=" + url_encode(query)));
    boost::system::error_code ec;
    const auto v = boost::json::parse(body, ec);
    if (ec || !v.is_object()) return std::nullopt;
    const auto* data = v.as_object().if_contains("data");
    if (!data || !data->is_object()) return std::nullopt;
    const auto* result = data->as_object().if_contains("result");
    if (!result || !result->is_array() || result->as_array().size() != 1) return std::nullopt;
    return std::string(result->as_array()[0].at("value").as_array()[1].as_string().c_str());
}

} // namespace

// Bad usage of the metrics options: status 2 and the reason, before anything is watched.
BOOST_AUTO_TEST_CASE(metrics_options_usage_errors) {
    const std::vector<usage_case> cases = {
        {{"watch", "--metrics", "localhost:9101", "/tmp"}, "--metrics needs ADDR:PORT"},
        {{"watch", "--metrics=127.0.0.1", "/tmp"}, "--metrics needs ADDR:PORT"},
        {{"watch", "--metrics", "::1:9101", "/tmp"}, "--metrics needs ADDR:PORT"},
        {{"watch", "--metrics", "127.0.0.1:65536", "/tmp"}, "--metrics needs ADDR:PORT"},
        {{"watch", "/tmp", "--textfile"}, "--textfile needs a value"},
        {{"watch", "--metrics-retention", "5x", "--metrics", ":0", "/tmp"}, "--metrics-retention needs a duration"},
        {{"watch", "--metrics-retention=1h", "/tmp"}, "--metrics-retention needs --metrics or --textfile"},
        {{"--metrics", "127.0.0.1:0", "demo"}, "--metrics and --textfile are options of watch"},
    };
    check_usage_errors(cases);
}

BOOST_AUTO_TEST_SUITE(cli_metrics_kernel, *boost::unit_test::precondition(kernel_precondition{}))

BOOST_FIXTURE_TEST_CASE(metrics_and_textfile_count_real_oom_kills_exactly, scratch_oom) {
    temp_dir dir;
    const auto prom = dir.path / "oomwatch.prom";
    metrics_run m({"--textfile", prom.string(), cg->path().string()});
    BOOST_TEST_REQUIRE(std::filesystem::exists(prom), "no text file at start");  // written before serving
    BOOST_TEST(sample(m.metrics(), kills_series(cg->path())) == 0);
    constexpr std::uint64_t kills = 3;
    for (std::uint64_t i = 0; i < kills; ++i) oom_kill_one(cg->path());
    m.require_kills_printed(kills);
    const auto text = m.metrics();
    BOOST_TEST(sample(text, kills_series(cg->path())) == kills, text);
    BOOST_TEST(sample(text, "oomwatch_watched_cgroups") == 1, text);
    BOOST_TEST(sample(text, "oomwatch_build_info{version=\"" OOMWATCH_EXPECTED_VERSION "\"}") ==
               1);
    // The text file follows within the rate limit (a second).
    const bool written = m.p.run_until([&] { return sample(read_file(prom), kills_series(cg->path())) == kills; }, 5s);
    BOOST_TEST(written, "text file: " << read_file(prom));
    if (std::filesystem::exists("/usr/bin/promtool")) require_promtool_clean(text, dir);
    // The removal ends the watch; the last write has it.
    BOOST_TEST_REQUIRE(!cg->remove());
    CHECK_EXIT(m.p, exit_ok, 10s);
    const auto last = read_file(prom);
    BOOST_TEST(sample(last, kills_series(cg->path())) == kills, last);
    BOOST_TEST(last.find("kind=\"removed\"} 1\n") != std::string::npos, last);
    BOOST_TEST(!std::filesystem::exists(prom.string() + ".tmp"));
}

BOOST_FIXTURE_TEST_CASE(a_removed_cgroups_counts_stay_for_the_retention, scratch_oom) {
    auto sub = child("gone", oom_limit);
    // A tree with a short retention: the child's series outlive it by 2 s.
    metrics_run m({"-r", "--metrics-retention", "2s", cg->path().string()});
    oom_kill_one(sub.path());
    m.require_kills_printed(1);
    BOOST_TEST_REQUIRE(!sub.remove());
    BOOST_TEST_REQUIRE(m.p.run_until([&] { return m.p.out().find("\"kind\":\"removed\"") != std::string::npos; }));
    const auto removed_at = clock_type::now();
    const auto right_after = m.metrics();
    const bool kept = clock_type::now() - removed_at < 2s;  // a slow machine may be past the retention
    if (kept) BOOST_TEST(sample(right_after, kills_series(sub.path())) == 1, right_after);
    // Then it goes (bounded; polled at the pace of the program's output wait).
    const bool gone = m.p.run_until([&] { return sample(m.metrics(), kills_series(sub.path())) == absent; }, 10s);
    BOOST_TEST(gone, m.metrics());
    BOOST_TEST((clock_type::now() - removed_at >= 2s));
    BOOST_TEST(sample(m.metrics(), "oomwatch_watched_cgroups") == 1);  // the root
}

BOOST_FIXTURE_TEST_CASE(hostile_clients_get_an_answer_or_a_close_and_stall_nothing, scratch_oom) {
    metrics_run m({cg->path().string()});
    // A slowloris: a byte of a request now, more below, one a second.
    tcp_client slow(m.port);
    BOOST_TEST_REQUIRE(slow.send("G"));
    const auto slow_start = clock_type::now();

    BOOST_TEST(http_get(m.port, "/nope").starts_with("HTTP/1.1 404 "));
    {
        tcp_client post(m.port);
        BOOST_TEST_REQUIRE(post.send("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
        BOOST_TEST(post.read_until("\r\n\r\n", 5s), post.text);  // kept alive: no close to wait for
        BOOST_TEST(post.text.starts_with("HTTP/1.1 405 "), post.text);
    }
    {
        tcp_client big(m.port);
        big.send("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20 * 1024, 'a') + "\r\n\r\n");
        BOOST_TEST(big.read_to_close(5s), "20 KiB of headers: not closed");
        BOOST_TEST((big.text.empty() || big.text.starts_with("HTTP/1.1 431 ")), big.text);
    }
    {
        tcp_client junk(m.port);
        junk.send(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n", 30));
        BOOST_TEST(junk.read_to_close(5s), "garbage: not closed");
        BOOST_TEST((junk.text.empty() || junk.text.starts_with("HTTP/1.1 400 ")), junk.text);
    }
    // Meanwhile an OOM kill: printed and counted.
    oom_kill_one(cg->path());
    m.require_kills_printed(1);
    BOOST_TEST(sample(m.metrics(), kills_series(cg->path())) == 1);

    // The slowloris goes on, a byte a second; the server's 10 s request timeout ends it.
    const std::string_view rest = "ET /metrics HTTP/1.1\r\nHost: x\r\n";
    bool closed = false;
    for (std::size_t i = 0; !closed && clock_type::now() - slow_start < 20s; ++i) {
        if (!slow.send(rest.substr(i % rest.size(), 1), 1s)) closed = true;
        if (!closed) closed = slow.read_to_close(1s);  // paces the bytes: a second each
    }
    BOOST_TEST(closed, "the slowloris client was not closed within 20 s");
    BOOST_TEST(slow.text.empty(), slow.text);  // no answer to half a request
    BOOST_TEST((clock_type::now() - slow_start >= 9s));
    BOOST_TEST(sample(m.metrics(), kills_series(cg->path())) == 1);
}

BOOST_FIXTURE_TEST_CASE(connections_beyond_the_limit_are_closed_at_once, scratch_oom) {
    metrics_run m({cg->path().string()});
    std::vector<tcp_client> idle;
    idle.reserve(64);
    for (int i = 0; i < 64; ++i) idle.emplace_back(m.port);
    // Accepted and served one by one: the 64 are in once each answered a request.
    for (auto& c : idle) {
        BOOST_TEST_REQUIRE(c.send("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    for (auto& c : idle) {
        BOOST_TEST_REQUIRE(c.read_until("\r\n\r\n", 5s), "no answer: " << c.text);  // and kept alive
        BOOST_TEST_REQUIRE(c.text.starts_with("HTTP/1.1 200 "), c.text);
    }
    tcp_client over(m.port);
    BOOST_TEST(over.read_to_close(5s), "the 65th connection was not closed");
    BOOST_TEST(over.text.empty(), over.text);
    idle.clear();
    // Room again once the server saw them go (bounded retries).
    bool served = false;
    m.p.run_until([&] { return served = !m.metrics().empty(); }, 5s);
    BOOST_TEST(served);
}

// A real Prometheus scrapes oomwatch once a second; its query API must show exactly the
// kills made.
BOOST_FIXTURE_TEST_CASE(prometheus_scrapes_the_exact_count, scratch_oom) {
    if (!prometheus_available()) return;
    temp_dir dir;
    metrics_run m({cg->path().string()});
    const auto prom_port = free_port();
    const auto config = dir.path / "prometheus.yml";
    std::ofstream(config) << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                             "scrape_configs:\n  - job_name: oomwatch\n    static_configs:\n"
                             "      - targets: ['127.0.0.1:" << m.port << "']\n";
    cli_process prometheus({"--config.file=" + config.string(), "--storage.tsdb.path=" + (dir.path / "data").string(),
                            "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                           {.program = "/usr/bin/prometheus"});
    const bool ready = prometheus.run_until(
        [&] { return http_get(prom_port, "/-/ready").starts_with("HTTP/1.1 200") || prometheus.status(); }, 60s);
    BOOST_TEST_REQUIRE((ready && !prometheus.status()), "prometheus not ready within 60 s: " << describe(prometheus.status())
                                                                                            << "; " << prometheus.err());
    constexpr std::uint64_t kills = 2;
    for (std::uint64_t i = 0; i < kills; ++i) oom_kill_one(cg->path());
    m.require_kills_printed(kills);
    const std::string query = "oomwatch_events_total{kind=\"oom_kill\",cgroup=\"" + cg->path().string() + "\"}";
    std::optional<std::string> value;
    // Polled at the pace of prometheus's output wait, up to 60 s.
    prometheus.run_until([&] { return (value = prometheus_value(prom_port, query)) == std::to_string(kills); }, 60s);
    BOOST_TEST(value.value_or("(none)") == std::to_string(kills), "prometheus stderr: " << prometheus.err());
    BOOST_TEST(prometheus_value(prom_port, "up{job=\"oomwatch\"}").value_or("(none)") == "1");
}

BOOST_AUTO_TEST_SUITE_END()
