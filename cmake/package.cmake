# The systemd unit, the man page and the Debian packages (CPack), from one build:
#   cmake --build build --target package
#   -> oomwatch_<ver>_amd64.deb         /usr/bin/oomwatch, its unit, man page, docs
#   -> liboomwatch-dev_<ver>_amd64.deb  headers, static library, CMake package
# Install components: bin (the program, man page, docs), unit (the unit for this
# prefix), dev (the library: cmake/install.cmake), deb_unit (the packages' unit).
include(GNUInstallDirs)

# ---- the systemd unit ------------------------------------------------------------
# ExecStart names the installed program: one unit for `cmake --install` (this prefix,
# under <prefix>/lib/systemd/system, which systemd also reads for /usr/local), and one
# for the packages (/usr/bin; in /lib/systemd/system as Debian 12 places units). That
# one is installed only by CPack: EXCLUDE_FROM_ALL keeps it out of every prefix.
set(OOMWATCH_UNIT_BINDIR ${CMAKE_INSTALL_FULL_BINDIR})
configure_file(${PROJECT_SOURCE_DIR}/dist/oomwatch.service.in ${PROJECT_BINARY_DIR}/dist/oomwatch.service @ONLY)
set(OOMWATCH_UNIT_BINDIR /usr/${CMAKE_INSTALL_BINDIR})
configure_file(${PROJECT_SOURCE_DIR}/dist/oomwatch.service.in ${PROJECT_BINARY_DIR}/dist/deb/oomwatch.service @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/dist/oomwatch.service DESTINATION lib/systemd/system COMPONENT unit)
install(FILES ${PROJECT_BINARY_DIR}/dist/deb/oomwatch.service DESTINATION /lib/systemd/system
  COMPONENT deb_unit EXCLUDE_FROM_ALL)

# ---- the man page: oomwatch --help, through help2man --------------------------------
find_program(HELP2MAN help2man)
if(HELP2MAN)
  # In a man1 folder: the service_unit test points MANPATH at its parent.
  set(OOMWATCH_MAN ${PROJECT_BINARY_DIR}/dist/man/man1/oomwatch.1.gz)
  add_custom_command(OUTPUT ${OOMWATCH_MAN}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/dist/man/man1
    COMMAND ${HELP2MAN} --no-info --section=1 --name=report\ Linux\ memory\ cgroup\ OOM\ events
      --output=${PROJECT_BINARY_DIR}/dist/man/man1/oomwatch.1 $<TARGET_FILE:oomwatch_cli>
    # -n: no timestamp, so the same build gives the same package.
    COMMAND gzip -9nf ${PROJECT_BINARY_DIR}/dist/man/man1/oomwatch.1
    DEPENDS oomwatch_cli
    COMMENT "Generating the man page oomwatch.1 from oomwatch --help"
    VERBATIM)
  add_custom_target(oomwatch_man ALL DEPENDS ${OOMWATCH_MAN})
  install(FILES ${OOMWATCH_MAN} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT bin)
else()
  message(WARNING "help2man not found (scripts/bootstrap installs it): no man page")
endif()
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT bin)
install(FILES ${PROJECT_SOURCE_DIR}/dist/prometheus/oomwatch-alerts.yml DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples
        COMPONENT bin)

# ---- the Debian packages ---------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME oomwatch)
set(CPACK_PACKAGE_VENDOR oomwatch)
set(CPACK_PACKAGE_CONTACT "oomwatch maintainers <maintainers@users.noreply.r-seed-59ebc8e7.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Linux memory cgroup OOM events, as they happen")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL bin deb_unit dev)
set(CPACK_COMPONENTS_GROUPING ONE_PER_GROUP)
set(CPACK_COMPONENT_BIN_GROUP oomwatch)
set(CPACK_COMPONENT_DEB_UNIT_GROUP oomwatch)
set(CPACK_COMPONENT_DEV_GROUP dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_STRIP_FILES ON)  # RelWithDebInfo: the debug information would triple the size

set(CPACK_DEBIAN_OOMWATCH_PACKAGE_NAME oomwatch)
set(CPACK_DEBIAN_OOMWATCH_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_OOMWATCH_PACKAGE_SHLIBDEPS ON)  # dpkg-shlibdeps: the Boost runtime libraries
set(CPACK_DEBIAN_OOMWATCH_DESCRIPTION
  "oomwatch reports every OOM event of Linux memory cgroups (v1 and v2) as JSON lines,\nwith the processes killed; the oomwatch service watches the whole hierarchy.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME liboomwatch-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# (The first line of every Description is CPACK_PACKAGE_DESCRIPTION_SUMMARY.)
# The static library and its CMake package need Boost's headers and Boost.Log (public).
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libboost1.81-dev, libboost-log1.81-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION
  "The C++20 library: headers, static library and CMake package (find_package(oomwatch)) of oomwatch,\na Boost.Asio library that reports memory cgroup OOM events.")

include(CPack)
