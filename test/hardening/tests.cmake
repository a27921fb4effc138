# Hardening tests (issue 5): unprivileged use and the churn soak. See README.md here.
# Included from test/CMakeLists.txt.
#
#   unprivileged  run-unprivileged.sh prepares, as root, a v1 scratch cgroup (one child
#                 whose cgroup.event_control is chowned to 65534, one not, one 0700) and
#                 a fake v2 tree on /dev/shm, then runs oomwatch_unprivileged_tests as
#                 uid/gid 65534 (setpriv) from a copy in a fresh 0755 directory, serving
#                 its requests for root-side actions (real OOM kills, fake writes)
#                 through fifos. Skips (77) without root or setpriv, or fails with
#                 OOMWATCH_REQUIRE_KERNEL=1.
#   soak          oomwatch_soak: cgroups created and removed, real OOM kills, watchers
#                 and subscribers coming and going, on one thread and on a 2-thread
#                 pool; exact counts, fds and RSS back where they started. 60 s by
#                 default; OOMWATCH_SOAK_SECONDS=N for another duration (the ctest
#                 TIMEOUT is OOMWATCH_SOAK_TIMEOUT, 600 s by default: for longer soaks
#                 run the program directly or raise it).

# The tests, run as uid 65534.
add_executable(oomwatch_unprivileged_tests ${CMAKE_CURRENT_LIST_DIR}/unprivileged_test.cpp)
target_include_directories(oomwatch_unprivileged_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(oomwatch_unprivileged_tests PRIVATE oomwatch_test_support oomwatch_warnings)
# Run outside run-unprivileged.sh every case skips: exit 77, not 0 (test/CMakeLists.txt).
oomwatch_skip_aware_main(oomwatch_unprivileged_tests)

# Their root-side helper: creates the v1 scratch cgroups, runs OOM victims.
add_executable(oomwatch_unprivileged_helper ${CMAKE_CURRENT_LIST_DIR}/unprivileged_helper.cpp)
target_link_libraries(oomwatch_unprivileged_helper PRIVATE oomwatch oomwatch_scratch oomwatch_warnings)

add_test(NAME unprivileged
  COMMAND bash "${CMAKE_CURRENT_LIST_DIR}/run-unprivileged.sh"
    --test-binary "$<TARGET_FILE:oomwatch_unprivileged_tests>"
    --helper "$<TARGET_FILE:oomwatch_unprivileged_helper>"
    --build-dir "${PROJECT_BINARY_DIR}")
# It creates cgroups and runs OOM kills: alone, like the kernel tests.
set_tests_properties(unprivileged PROPERTIES
  SKIP_RETURN_CODE 77
  TIMEOUT 300
  RUN_SERIAL TRUE
  LABELS hardening)

# The churn soak.
add_executable(oomwatch_soak ${CMAKE_CURRENT_LIST_DIR}/soak.cpp)
target_include_directories(oomwatch_soak PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(oomwatch_soak PRIVATE oomwatch_test_support oomwatch_warnings)

set(OOMWATCH_SOAK_TIMEOUT 600 CACHE STRING "ctest TIMEOUT of the soak test, in seconds")
add_test(NAME soak COMMAND oomwatch_soak --log_level=test_suite --report_level=short)
set_tests_properties(soak PROPERTIES
  SKIP_RETURN_CODE 77
  TIMEOUT ${OOMWATCH_SOAK_TIMEOUT}
  RUN_SERIAL TRUE
  LABELS "hardening;soak")
