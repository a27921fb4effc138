# Install rules and the exported package `oomwatch` (target oomwatch::oomwatch).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Component dev: the liboomwatch-dev package (cmake/package.cmake).
install(TARGETS oomwatch EXPORT oomwatchTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
# The public headers: include/oomwatch holds the API and nothing else. The internal
# headers (src/detail/: parsers, lookup seams, throw_if) are not installed, and no
# public header may include them; test/install builds a consumer against this alone.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/oomwatch DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT dev FILES_MATCHING PATTERN "*.hpp")
install(EXPORT oomwatchTargets NAMESPACE oomwatch:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/oomwatch
  COMPONENT dev)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/oomwatchConfig.cmake.in
  ${PROJECT_BINARY_DIR}/oomwatchConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/oomwatch)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/oomwatchConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/oomwatchConfig.cmake ${PROJECT_BINARY_DIR}/oomwatchConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/oomwatch COMPONENT dev)
