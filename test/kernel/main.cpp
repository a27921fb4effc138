#define BOOST_TEST_MODULE oomwatch_kernel_tests
#include "test_support.hpp"

#include <boost/test/unit_test.hpp>

using oomwatch::test::log_to_stderr;
BOOST_TEST_GLOBAL_FIXTURE(log_to_stderr);
