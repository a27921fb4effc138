// main() of the Boost.Test programs that link oomwatch_test_main (test/CMakeLists.txt,
// oomwatch_skip_aware_main): their module file defines BOOST_TEST_MODULE, which defines
// init_unit_test(), and the target defines BOOST_TEST_NO_MAIN, which leaves main() to
// this file. It runs the tests as Boost.Test's own main() would, except that a run in
// which every test case was skipped (no root, no memory cgroup hierarchy) exits with 77,
// which ctest shows as skipped rather than passed; see run_test_program.
#include "test_support.hpp"

bool init_unit_test();

int main(int argc, char* argv[]) { return oomwatch::test::run_test_program(&init_unit_test, argc, argv); }
