# Install rules and the exported package `oomwatch` (target oomwatch::oomwatch).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS oomwatch EXPORT oomwatchTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/oomwatch DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT oomwatchTargets NAMESPACE oomwatch:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/oomwatch)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/oomwatchConfig.cmake.in
  ${PROJECT_BINARY_DIR}/oomwatchConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/oomwatch)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/oomwatchConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/oomwatchConfig.cmake ${PROJECT_BINARY_DIR}/oomwatchConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/oomwatch)
