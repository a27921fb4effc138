#define BOOST_TEST_MODULE oomwatch_unit_tests
#include <boost/test/unit_test.hpp>
