# vm_cgroup_v2 and vm_cgroup_v1: oomwatch_kernel_tests on a real kernel booted under qemu
# (TCG) by run-vm-tests.sh, with the memory controller on cgroup v2, and in a separate
# boot on cgroup v1 (with psi=0, where `oomwatch status` runs too). Run only them with
# `ctest -R vm` (-V shows the guest's per-test results and kernel version). The kernel
# is fetched once from Debian's packages into $OOMWATCH_VM_CACHE (default
# /var/cache/oomwatch-vm). Without qemu or the kernel they skip (77), or fail when
# OOMWATCH_REQUIRE_KERNEL=1.
# Included from test/CMakeLists.txt.
# The CLI (not in every build, e.g. the sanitizer ones): v1 then checks its status too.
set(vm_cli_args "")
if(TARGET oomwatch_cli)
  set(vm_cli_args --cli-binary "$<TARGET_FILE:oomwatch_cli>")
endif()
foreach(mode v2 v1)
  add_test(NAME vm_cgroup_${mode}
    COMMAND bash "${CMAKE_CURRENT_LIST_DIR}/run-vm-tests.sh"
      --mode ${mode}
      --test-binary "$<TARGET_FILE:oomwatch_kernel_tests>"
      ${vm_cli_args}
      --log "${CMAKE_CURRENT_BINARY_DIR}/vm/serial-${mode}.log"
      --timeout 600)
  # One core each for the guest; alone, so the guest's timing-bounded tests have the CPU.
  set_tests_properties(vm_cgroup_${mode} PROPERTIES
    RUN_SERIAL TRUE
    TIMEOUT 900
    SKIP_RETURN_CODE 77
    LABELS vm)
endforeach()
