# install_consumer: installs this build into a scratch prefix under the build tree,
# then configures, builds and runs test/install/consumer against it: a separate CMake
# project (its own build tree and cache) that does find_package(oomwatch CONFIG REQUIRED)
# and links oomwatch::oomwatch, as an application would.
# Included from test/CMakeLists.txt.
add_test(NAME install_consumer
  COMMAND bash "${CMAKE_CURRENT_LIST_DIR}/run.sh"
    --build-dir "${PROJECT_BINARY_DIR}"
    --work-dir "${PROJECT_BINARY_DIR}/install-test"
    --consumer-dir "${CMAKE_CURRENT_LIST_DIR}/consumer"
    --library "$<TARGET_FILE:oomwatch>"
    --config "$<CONFIG>"
    --cmake "${CMAKE_COMMAND}"
    --generator "${CMAKE_GENERATOR}"
    --cxx "${CMAKE_CXX_COMPILER}")
set_tests_properties(install_consumer PROPERTIES TIMEOUT 300)
