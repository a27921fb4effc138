#!/bin/busybox sh
# /init of the VM that run-vm-tests.sh boots: mounts what the real-kernel tests need,
# runs them, and reports over the serial console. The host decides pass or fail from
# the lines starting with OOMWATCH-VM- alone, so every path ends in a RESULT line or in
# no marker at all (which the host counts as a failure), never in a false pass.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "OOMWATCH-VM-ERROR $*"
    echo "OOMWATCH-VM-RESULT rc=125"
    poweroff -f
    exit 1  # if poweroff failed: init exiting panics the kernel, which the host sees
}

mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs"
# The cpio holds /dev/console when it was packed as root; this covers the other case.
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc || fail "cannot mount proc"
mount -t sysfs sysfs /sys || fail "cannot mount sysfs"
mount -t tmpfs tmpfs /tmp || fail "cannot mount /tmp"
mkdir -p /dev/shm || fail "cannot mkdir /dev/shm"
mount -t tmpfs tmpfs /dev/shm || fail "cannot mount /dev/shm"

# mode=v1|v2, test_args=... and exported test settings: written by run-vm-tests.sh.
mode='' test_args=''
# shellcheck source=/dev/null
. /oomwatch-vm.conf || fail "no /oomwatch-vm.conf"

case "$mode" in
    v2)
        mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
        echo +memory >/sys/fs/cgroup/cgroup.subtree_control || fail "cannot enable +memory"
        # Out of the root cgroup, as on a systemd machine: the root has no memory.events,
        # so a process there has no memory cgroup to name.
        mkdir /sys/fs/cgroup/vm-init || fail "cannot create /sys/fs/cgroup/vm-init"
        echo $$ >/sys/fs/cgroup/vm-init/cgroup.procs || fail "cannot move init to vm-init"
        ;;
    v1)
        # Only v1: mounting v1 memory after using it on v2 makes the kernel warn.
        mount -t tmpfs cgroup /sys/fs/cgroup || fail "cannot mount a tmpfs at /sys/fs/cgroup"
        mkdir /sys/fs/cgroup/memory || fail "cannot mkdir /sys/fs/cgroup/memory"
        mount -t cgroup -o memory memory /sys/fs/cgroup/memory || fail "cannot mount cgroup v1 memory"
        # A hybrid machine's cgroup2 beside it (no controllers): with psi=0 its cgroups
        # have no memory.pressure, which the pressure tests check.
        mkdir /sys/fs/cgroup/unified || fail "cannot mkdir /sys/fs/cgroup/unified"
        mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified || fail "cannot mount cgroup2 at /sys/fs/cgroup/unified"
        ;;
    *) fail "unknown mode '$mode'" ;;
esac

echo  # the firmware's last line has no newline: start the markers on a line of their own
echo "OOMWATCH-VM-KERNEL $(uname -r)"
echo "OOMWATCH-VM-CGROUP $mode: $(grep ' /sys/fs/cgroup' /proc/mounts | tr '\n' ';') init in $(cat /proc/self/cgroup | tr '\n' ' ')"
echo "OOMWATCH-VM-BEGIN"
start=$(cut -d' ' -f1 /proc/uptime)
# test_args is split on purpose: it holds separate options.
# shellcheck disable=SC2086
# OOMWATCH_IN_VM: the tests that would harm a host (a machine-wide OOM) run here only.
OOMWATCH_IN_VM=1 OOMWATCH_REQUIRE_KERNEL=1 /oomwatch_kernel_tests --log_level=test_suite --report_level=detailed \
    --color_output=no $test_args
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
echo "OOMWATCH-VM-END"
# The host checks that status reports PSI as this boot has it (v1: psi=0).
if [ -x /oomwatch ]; then
    echo "OOMWATCH-VM-STATUS $(/oomwatch --json status 2>&1 | tr -d '\n')"
fi
echo "OOMWATCH-VM-TIME tests=$(awk "BEGIN { printf \"%.1f\", $end - $start }")s boot=${start}s"
# Kernel warnings (not shown on the console under "quiet") mean the guest is unsound.
dmesg | grep -E 'WARNING:|BUG:|Oops|general protection|page_counter underflow' | sed 's/^/OOMWATCH-VM-SPLAT /'
echo "OOMWATCH-VM-RESULT rc=$rc"
poweroff -f
