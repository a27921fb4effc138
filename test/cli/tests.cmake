# Tests of the built `oomwatch` program (src/cli), run as a child process: arguments,
# exit statuses, JSON lines for real OOM kills, signals, removal, output errors; and of
# its JSON lines alone (output_test.cpp, with src/cli/output.cpp compiled in).
# Included from test/CMakeLists.txt. Only with the tool (OOMWATCH_BUILD_TOOLS); the
# sanitizer builds turn it off, and then this test does not exist.
#
#   cli   oomwatch_cli_tests: the usage and output cases run anywhere; the real-kernel ones
#         (suite cli_kernel) need root and a memory cgroup hierarchy, and skip without
#         them unless OOMWATCH_REQUIRE_KERNEL=1, which makes them fail instead.
if(OOMWATCH_BUILD_TOOLS AND TARGET oomwatch_cli)
  find_package(Boost 1.81 CONFIG REQUIRED COMPONENTS json log_setup)
  add_executable(oomwatch_cli_tests ${CMAKE_CURRENT_LIST_DIR}/cli_test.cpp ${CMAKE_CURRENT_LIST_DIR}/output_test.cpp
                                    ${CMAKE_CURRENT_LIST_DIR}/metrics_cli_test.cpp ${CMAKE_CURRENT_LIST_DIR}/status_cli_test.cpp
                                    ${CMAKE_CURRENT_LIST_DIR}/pressure_cli_test.cpp
                                    ${PROJECT_SOURCE_DIR}/src/cli/output.cpp)
  target_include_directories(oomwatch_cli_tests PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/src/cli)
  target_link_libraries(oomwatch_cli_tests PRIVATE oomwatch_test_support Boost::json Boost::log_setup oomwatch_warnings)
  target_compile_definitions(oomwatch_cli_tests PRIVATE
    OOMWATCH_CLI_PATH="$<TARGET_FILE:oomwatch_cli>"
    OOMWATCH_EXPECTED_VERSION="${PROJECT_VERSION}")
  add_dependencies(oomwatch_cli_tests oomwatch_cli)  # the program it runs
  add_test(NAME cli COMMAND oomwatch_cli_tests --log_level=test_suite --report_level=short)
  # It creates cgroups and runs OOM kills: alone, like the kernel tests.
  set_tests_properties(cli PROPERTIES TIMEOUT 300 RUN_SERIAL TRUE)

  # cli_service: the systemd notify protocol (READY=1, WATCHDOG=1, STOPPING=1) on a
  # socket the test binds; its real-kernel cases skip or fail like those of cli.
  add_executable(oomwatch_service_tests ${CMAKE_CURRENT_LIST_DIR}/service_test.cpp)
  target_link_libraries(oomwatch_service_tests PRIVATE oomwatch_test_support oomwatch_warnings)
  target_compile_definitions(oomwatch_service_tests PRIVATE OOMWATCH_CLI_PATH="$<TARGET_FILE:oomwatch_cli>")
  add_dependencies(oomwatch_service_tests oomwatch_cli)
  add_test(NAME cli_service COMMAND oomwatch_service_tests --log_level=test_suite --report_level=short)
  set_tests_properties(cli_service PROPERTIES TIMEOUT 120 RUN_SERIAL TRUE)
endif()

# The metrics registry of `watch --metrics/--textfile` (src/cli/metrics.cpp), unit tested
# with a clock of the test's: runs anywhere, fast.
if(OOMWATCH_BUILD_TOOLS AND TARGET oomwatch_cli)
  add_executable(oomwatch_cli_metrics_tests ${CMAKE_CURRENT_LIST_DIR}/metrics_test.cpp
    ${PROJECT_SOURCE_DIR}/src/cli/metrics.cpp)
  target_include_directories(oomwatch_cli_metrics_tests PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(oomwatch_cli_metrics_tests PRIVATE oomwatch_test_support oomwatch_warnings)
  add_test(NAME cli_metrics COMMAND oomwatch_cli_metrics_tests --log_level=test_suite --report_level=short)
endif()
