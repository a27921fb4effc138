#define BOOST_TEST_MODULE oomwatch_kernel_tests
#include "test_support.hpp"

#include <boost/test/unit_test.hpp>

// main() is test/support/test_main.cpp (oomwatch_skip_aware_main in test/CMakeLists.txt):
// without root or a memory cgroup hierarchy every case skips, and the program exits with
// 77, which ctest shows as skipped; with OOMWATCH_REQUIRE_KERNEL=1 they fail instead.

using oomwatch::test::log_to_stderr;
BOOST_TEST_GLOBAL_FIXTURE(log_to_stderr);
