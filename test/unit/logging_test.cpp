// The library is silent unless asked: no record reaches Boost.Log before
// enable_logging(); after it, an application's sink receives the records, on channel
// "oomwatch" with an oomwatch::log_severity. (That a program which never touches
// Boost.Log prints nothing during real OOM kills is checked by the kernel tests.)
#include "test_support.hpp"

#include <oomwatch/oomwatch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/log/attributes/value_extraction.hpp>
#include <boost/log/core/core.hpp>
#include <boost/log/sinks/basic_sink_backend.hpp>
#include <boost/log/sinks/sync_frontend.hpp>
#include <boost/make_shared.hpp>
#include <boost/test/unit_test.hpp>

#include <mutex>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace logging = boost::log;
using namespace oomwatch;
using namespace oomwatch::test;

namespace {

struct record {
    std::string channel;
    log_severity severity;
    std::string message;
};

class collecting_backend : public logging::sinks::basic_sink_backend<logging::sinks::synchronized_feeding> {
public:
    void consume(const logging::record_view& rec) {
        std::lock_guard lk(m);
        auto ch = logging::extract<std::string>("Channel", rec);
        auto sev = logging::extract<log_severity>("Severity", rec);
        auto msg = logging::extract<std::string>("Message", rec);
        if (ch && *ch == "oomwatch" && sev) records.push_back({*ch, *sev, msg ? *msg : std::string()});
    }
    std::mutex m;
    std::vector<record> records;
};

// Adds a sink for the test, restores the logging state (and the test program's own
// setting) afterwards.
struct sink_fixture {
    sink_fixture() : backend(boost::make_shared<collecting_backend>()) {
        sink = boost::make_shared<logging::sinks::synchronous_sink<collecting_backend>>(backend);
        logging::core::get()->add_sink(sink);
    }
    ~sink_fixture() {
        logging::core::get()->remove_sink(sink);
        enable_logging(log_severity::warning);  // as the test program's global fixture had it
    }
    boost::shared_ptr<collecting_backend> backend;
    boost::shared_ptr<logging::sinks::synchronous_sink<collecting_backend>> sink;
    asio::io_context ctx;
    fake_v2_tree tree;
};

// A watch from construction to removal, with an event.
void watch_a_lifetime(asio::io_context& ctx, fake_v2_tree& tree) {
    auto cg = tree.make_cgroup("a");
    watcher w(ctx, cg, fake_v2_options());
    event_log log(w);
    log.arm();
    fake_v2_tree::write_events(cg, with(1, 1));
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::oom_kill] == 1u; }));
    fake_v2_tree::remove_cgroup(cg);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return log.t[event_kind::removed] == 1u; }));
}

} // namespace

BOOST_AUTO_TEST_SUITE(logging_opt_in)

BOOST_FIXTURE_TEST_CASE(nothing_is_emitted_until_enabled, sink_fixture) {
    disable_logging();
    watch_a_lifetime(ctx, tree);
    BOOST_TEST(backend->records.empty(), backend->records.size() << " records while logging was off");
}

BOOST_FIXTURE_TEST_CASE(an_applications_sink_receives_the_records, sink_fixture) {
    enable_logging();
    watch_a_lifetime(ctx, tree);
    BOOST_TEST_REQUIRE(!backend->records.empty());
    bool removal_seen = false;
    for (auto& r : backend->records) {
        BOOST_TEST(r.channel == "oomwatch");
        // The normal path is debug or trace, never info or above.
        BOOST_TEST(r.severity <= log_severity::debug, r.message);
        if (r.message.find("removed") != std::string::npos) removal_seen = true;
    }
    BOOST_TEST(removal_seen);
}

BOOST_FIXTURE_TEST_CASE(the_minimum_severity_is_honoured, sink_fixture) {
    enable_logging(log_severity::warning);
    watch_a_lifetime(ctx, tree);
    for (auto& r : backend->records) BOOST_TEST(r.severity >= log_severity::warning, r.message);
}

BOOST_AUTO_TEST_SUITE_END()
