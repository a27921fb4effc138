// Pressure watchers (issue 12) without a kernel: the pressure file parser, trigger
// validation, and the constructor's checks.
#include "test_support.hpp"

#include "detail/parse.hpp"

#include <oomwatch/pressure_watcher.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

using namespace oomwatch;
using namespace std::chrono_literals;
using boost::system::error_code;

BOOST_AUTO_TEST_SUITE(pressure_unit)

BOOST_AUTO_TEST_CASE(parses_the_kernel_layout) {
    auto p = parse_pressure("some avg10=1.50 avg60=0.25 avg300=0.00 total=67674788\n"
                            "full avg10=0.00 avg60=0.01 avg300=100.00 total=18210187\n");
    BOOST_TEST_REQUIRE(p.has_value());
    BOOST_TEST(p->some.avg10 == 1.5);
    BOOST_TEST(p->some.avg60 == 0.25);
    BOOST_TEST(p->some.total == 67674788u);
    BOOST_TEST_REQUIRE(p->full.has_value());
    BOOST_TEST(p->full->avg300 == 100.0);
    BOOST_TEST(p->full->total == 18210187u);
}

BOOST_AUTO_TEST_CASE(full_is_optional_and_extras_are_ignored) {
    auto p = parse_pressure("some total=5 avg300=0.00 avg60=0.00 avg10=0.00 future=7");
    BOOST_TEST_REQUIRE(p.has_value());
    BOOST_TEST(!p->full.has_value());
    BOOST_TEST(p->some.total == 5u);
    BOOST_TEST(parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nnew avg10=x\n").has_value());
}

BOOST_AUTO_TEST_CASE(rejects_malformed_text) {
    const std::string_view bad[] = {
        "",
        "\n\n",
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",                                        // no some
        "some avg10=0.00 avg60=0.00 avg300=0.00\n",                                                // no total
        "some avg10=0.00 avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",                             // repeated key
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        "some avg10=-1.00 avg60=0.00 avg300=0.00 total=0\n",
        "some avg10=inf avg60=0.00 avg300=0.00 total=0\n",
        "some avg10=1e5 avg60=0.00 avg300=0.00 total=0\n",
        "some avg10=1. avg60=0.00 avg300=0.00 total=0\n",
        "some avg10=0.0.0 avg60=0.00 avg300=0.00 total=0\n",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=18446744073709551616\n",  // overflow
        "some avg10=0.00 avg60=0.00 avg300=0.00 total\n",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1 junk\n",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=\n",
        std::string_view("some\0avg10=0.00 avg60=0.00 avg300=0.00 total=0", 46),
    };
    for (auto text : bad) {
        auto p = parse_pressure(text);
        BOOST_TEST(!p.has_value(), "accepted: " << text);
        if (!p) BOOST_TEST(p.error() == error_code(error::malformed_counters));
    }
}

BOOST_AUTO_TEST_CASE(validates_triggers_as_the_kernel_does) {
    BOOST_TEST(!validate(pressure_trigger{}));
    BOOST_TEST(pressure_trigger{}.threshold == 200ms);
    BOOST_TEST(pressure_trigger{}.window == 2s);
    BOOST_TEST(!validate({stall::full, 500ms, 500ms}));
    BOOST_TEST(!validate({stall::some, 1us, 10s}));
    const pressure_trigger bad[] = {{stall::some, 100ms, 499ms}, {stall::some, 100ms, 10001ms},
                                    {stall::some, 0us, 2s},      {stall::some, -1ms, 2s},
                                    {stall::some, 2001ms, 2s}};
    for (const auto& t : bad) BOOST_TEST(validate(t) == error_code(error::invalid_pressure_trigger));
}

BOOST_AUTO_TEST_CASE(constructor_checks_before_the_kernel) {
    boost::asio::io_context ctx;
    try {
        pressure_watcher pw(ctx.get_executor(), system_pressure{}, pressure_trigger{stall::some, 3s, 2s});
        BOOST_TEST(false, "no error");
    } catch (const cgroup_error& e) {
        BOOST_TEST(e.code() == error_code(error::invalid_pressure_trigger));
        BOOST_TEST(e.path() == "/proc/pressure/memory");
        BOOST_TEST(std::string(e.what()).find("500 ms to 10 s") != std::string::npos);
    }
    try {
        pressure_watcher pw(ctx.get_executor(), system_pressure{}, std::vector<pressure_trigger>{});
        BOOST_TEST(false, "no error");
    } catch (const cgroup_error& e) {
        BOOST_TEST(e.code() == error_code(error::invalid_pressure_trigger));
    }
}

BOOST_AUTO_TEST_CASE(names_and_messages) {
    BOOST_TEST(to_string(pressure_kind::removed) == "removed");
    BOOST_TEST(to_string(stall::full) == "full");
    BOOST_TEST(to_string(pressure_level::critical) == "critical");
    BOOST_TEST(error_code(error::psi_disabled).message().find("psi=0") != std::string::npos);
    BOOST_TEST(error_code(error::pressure_trigger_refused).message().find("CAP_SYS_RESOURCE") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
