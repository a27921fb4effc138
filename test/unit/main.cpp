#define BOOST_TEST_MODULE oomwatch_unit_tests
#include "test_support.hpp"

#include <boost/test/unit_test.hpp>

// Boost.Log prints every record to stdout when no sink is set: route the library's
// records to stderr, warnings and up, like an application would.
using oomwatch::test::log_to_stderr;
BOOST_TEST_GLOBAL_FIXTURE(log_to_stderr);
