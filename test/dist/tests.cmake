# The service unit and the Debian packages (cmake/package.cmake). Included from
# test/CMakeLists.txt, with the tool only.
#
#   service_unit  systemd-analyze verify dist/oomwatch.service, run against the built
#                 program; skipped without systemd-analyze unless OOMWATCH_REQUIRE_KERNEL=1
#   package       cpack, dpkg-deb -x both packages, run the program, verify its unit,
#                 build test/install/consumer against the -dev package
#   prometheus_rules  promtool check rules on dist/prometheus/oomwatch-alerts.yml and on
#                 README.md's copy of it, which must be the same
if(TARGET oomwatch_cli)
  add_test(NAME service_unit
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/verify-unit.sh ${PROJECT_BINARY_DIR}/dist/oomwatch.service
      $<TARGET_FILE:oomwatch_cli> ${PROJECT_BINARY_DIR}/dist/man ${PROJECT_BINARY_DIR}/service-unit-test)
  set_tests_properties(service_unit PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 60)
  add_test(NAME package
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/package.sh ${PROJECT_BINARY_DIR} ${PROJECT_BINARY_DIR}/package-test
      ${PROJECT_SOURCE_DIR} ${CMAKE_COMMAND})
  set_tests_properties(package PROPERTIES TIMEOUT 600)
endif()
add_test(NAME prometheus_rules COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/check-rules.sh ${PROJECT_SOURCE_DIR})
set_tests_properties(prometheus_rules PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 60)
