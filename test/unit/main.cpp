#define BOOST_TEST_MODULE oomwatch_unit_tests
#include "test_support.hpp"

#include <boost/test/unit_test.hpp>

// main() is test/support/test_main.cpp (oomwatch_skip_aware_main in test/CMakeLists.txt):
// a run whose every case was skipped exits with 77, which ctest shows as skipped.

// Boost.Log prints every record to stdout when no sink is set: route the library's
// records to stderr, warnings and up, like an application would.
using oomwatch::test::log_to_stderr;
BOOST_TEST_GLOBAL_FIXTURE(log_to_stderr);
