#define BOOST_TEST_MODULE oomwatch_kernel_tests
#include <boost/test/unit_test.hpp>
