# The fuzz smoke test for ctest. Include it from test/CMakeLists.txt:
#
#   include(${CMAKE_CURRENT_SOURCE_DIR}/fuzz/ctest.cmake)
#
# It registers `fuzz_smoke`, which runs `scripts/fuzz 20`: the fuzz targets are built
# with clang in their own directory (here: <build>/test/fuzz, so that several main
# build trees never share one) and each runs 20 s, two at a time on two cores.
# About 1.5 minutes in all, most of it fuzzing. Longer runs: see test/fuzz/README.md.
#
# -DOOMWATCH_FUZZ_SMOKE=OFF leaves it out (e.g. in the sanitizer builds, which would
# only fuzz the same parsers again); `ctest -LE fuzz` skips it for one run.
option(OOMWATCH_FUZZ_SMOKE "Register the fuzz_smoke test (needs clang++-14 and libFuzzer)" ON)
if(OOMWATCH_FUZZ_SMOKE)
  get_filename_component(_oomwatch_fuzz_script "${CMAKE_CURRENT_LIST_DIR}/../../scripts/fuzz" ABSOLUTE)
  add_test(NAME fuzz_smoke COMMAND "${_oomwatch_fuzz_script}" 20)
  set_tests_properties(fuzz_smoke PROPERTIES
    ENVIRONMENT "OOMWATCH_FUZZ_BUILD_DIR=${CMAKE_CURRENT_BINARY_DIR}/fuzz"
    LABELS fuzz
    # It keeps both cores busy: nothing else alongside it under ctest -j.
    RUN_SERIAL TRUE
    TIMEOUT 300)
  unset(_oomwatch_fuzz_script)
endif()
