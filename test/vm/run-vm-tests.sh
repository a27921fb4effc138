#!/usr/bin/env bash
# The vm_cgroup_v2 and vm_cgroup_v1 tests (see tests.cmake): runs oomwatch_kernel_tests
# on a real kernel whose memory controller is on cgroup v2 (or v1), booted under qemu.
#
# 1. Debian's kernel (the linux-image-6.x package that linux-image-amd64 depends on) is
#    fetched once with apt-get download and cached, decompressed to an ELF vmlinux that
#    qemu boots directly (PVH), in $OOMWATCH_VM_CACHE (default /var/cache/oomwatch-vm,
#    or ~/.cache/oomwatch-vm when not root).
# 2. An initramfs gets static busybox, the test program with the shared libraries ldd
#    names (and the dynamic loader at its path) and init.sh as /init.
# 3. qemu (TCG, bounded by timeout) boots it; the guest mounts cgroup2 (or v1 memory,
#    booted with psi=0, a controller-less cgroup2 beside it), runs the tests (v1: then
#    `oomwatch --json status`) and prints OOMWATCH-VM-* lines on the serial console.
# 4. Pass or fail comes from the serial log alone: no result marker, a panic, a kernel
#    warning, a hang (timeout) or a skipped test case (v2: any; v1: any outside v2_only)
#    is a failure.
#
# Exit status: 0 passed, 1 failed, 77 skipped (qemu, busybox or the kernel cannot be had,
# and OOMWATCH_REQUIRE_KERNEL is not 1; with it, that is a failure).
set -euo pipefail

mode=v2
test_binary=''
cli_binary=''  # optional: v1 runs its `status` in the guest (PSI off there)
log=''
timeout_s=600
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mode) mode=$2 ;;
        --test-binary) test_binary=$2 ;;
        --log) log=$2 ;;
        --cli-binary) cli_binary=$2 ;;
        --timeout) timeout_s=$2 ;;
        *) echo "run-vm-tests.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift 2
done
if [[ "$mode" != v1 && "$mode" != v2 ]]; then
    echo "run-vm-tests.sh: --mode must be v1 or v2" >&2
    exit 2
fi
if [[ -z "$test_binary" || -z "$log" ]]; then
    echo "run-vm-tests.sh: --test-binary and --log are required" >&2
    exit 2
fi
if [[ ! -x "$test_binary" ]]; then
    echo "run-vm-tests.sh: $test_binary is not built; build oomwatch_kernel_tests first" >&2
    exit 1
fi

name="vm_cgroup_$mode"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
t_start=$SECONDS

# "Cannot run here": a failure when the kernel tests are required (CI), else a skip.
unavailable() {
    if [[ "${OOMWATCH_REQUIRE_KERNEL:-}" == 1 ]]; then
        echo "$name: FAIL: $* (OOMWATCH_REQUIRE_KERNEL=1 makes this a failure)" >&2
        exit 1
    fi
    echo "$name: SKIP: $* (set OOMWATCH_REQUIRE_KERNEL=1 to fail instead)"
    exit 77
}

for tool in qemu-system-x86_64 busybox cpio gzip xz dpkg-deb apt-get apt-cache ldd timeout flock; do
    command -v "$tool" >/dev/null || unavailable "$tool not found (scripts/bootstrap installs what the VM needs)"
done
busybox_bin="$(command -v busybox)"
# A dynamic busybox would need its own libraries in the guest: insist on busybox-static.
if ldd "$busybox_bin" >/dev/null 2>&1; then
    unavailable "$busybox_bin is not statically linked (install busybox-static)"
fi

# Every temporary directory is removed on exit, whatever happens.
temp_dirs=()
cleanup() {
    local d
    for d in "${temp_dirs[@]}"; do rm -rf -- "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT  # so that the EXIT trap runs on these too
trap 'exit 143' TERM

# ---- 1. the kernel -------------------------------------------------------------------
if [[ -n "${OOMWATCH_VM_CACHE:-}" ]]; then
    cache=$OOMWATCH_VM_CACHE
elif [[ "$(id -u)" -eq 0 ]]; then
    cache=/var/cache/oomwatch-vm
else
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/oomwatch-vm"
fi
mkdir -p "$cache" || unavailable "cannot create the kernel cache $cache"

# The linux-image-6.x-... package that the metapackage points at, or nothing.
kernel_package() {
    { apt-cache depends linux-image-amd64 2>/dev/null || true; } |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && !found { print $2; found = 1 }'
}

apt_update() {
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "$name: apt-get update needs root; not running it" >&2
        return 1
    fi
    echo "$name: apt-get update"
    apt-get update -q </dev/null >/dev/null
}

# Called as "fetch_kernel || ...", where set -e does not apply: every step checks itself.
fetch_kernel() {
    local work pkg deb vmlinuz offsets offset release
    rm -rf "$cache"/fetch.*  # left by a run that was killed; we hold the lock
    work="$(mktemp -d "$cache/fetch.XXXXXX")"
    temp_dirs+=("$work")
    # apt-get download drops to the _apt user, which must be able to write here.
    if [[ "$(id -u)" -eq 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi

    pkg="$(kernel_package)"
    if [[ -z "$pkg" ]]; then
        apt_update || true
        pkg="$(kernel_package)"
    fi
    [[ -n "$pkg" ]] || { echo "$name: apt knows no linux-image-amd64 dependency" >&2; return 1; }
    echo "$name: fetching $pkg (once; cached in $cache)"
    # Only stale or missing package lists justify an apt-get update.
    if ! (cd "$work" && apt-get download -q "$pkg" </dev/null >/dev/null); then
        apt_update || return 1
        pkg="$(kernel_package)"
        (cd "$work" && apt-get download -q "$pkg" </dev/null >/dev/null) || return 1
    fi
    deb=("$work"/*.deb)
    [[ -f "${deb[0]}" ]] || return 1
    dpkg-deb --fsys-tarfile "${deb[0]}" | tar -x -C "$work" --wildcards './boot/vmlinuz-*' || return 1
    vmlinuz=("$work"/boot/vmlinuz-*)
    [[ -f "${vmlinuz[0]}" ]] || { echo "$name: no ./boot/vmlinuz-* in ${deb[0]}" >&2; return 1; }
    release="${vmlinuz[0]##*/vmlinuz-}"

    # The bzImage carries the kernel as an xz stream; the ELF inside boots through PVH
    # without the ~3 s that decompression costs under TCG.
    offsets="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "${vmlinuz[0]}" | cut -d: -f1)"
    offset="${offsets%%$'\n'*}"
    [[ -n "$offset" ]] || { echo "$name: no xz payload in ${vmlinuz[0]}" >&2; return 1; }
    tail -c +"$((offset + 1))" "${vmlinuz[0]}" >"$work/payload.xz" || return 1
    # --single-stream: the relocation data after the stream is not xz.
    xz -dc --single-stream "$work/payload.xz" >"$work/vmlinux" || return 1
    [[ "$(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' \n')" == 7f454c46 ]] ||
        { echo "$name: the decompressed kernel is not an ELF file" >&2; return 1; }

    # Renames within the cache: a reader sees the old kernel or the new one, never half.
    printf '%s %s (uname -r: %s)\n' "$(dpkg-deb -f "${deb[0]}" Package)" "$(dpkg-deb -f "${deb[0]}" Version)" \
        "$release" >"$work/about" || return 1
    mv -f "$work/vmlinux" "$cache/vmlinux" && mv -f "$work/about" "$cache/vmlinux.about"
}

t0=$SECONDS
{
    # One fetch at a time, for parallel ctest runs of several build trees.
    flock -w 900 9 || unavailable "timed out waiting for the lock on $cache"
    if [[ ! -s "$cache/vmlinux" || ! -s "$cache/vmlinux.about" ]]; then
        fetch_kernel || unavailable "cannot fetch Debian's kernel package (see above)"
    fi
} 9>"$cache/.lock"
kernel="$cache/vmlinux"
kernel_about="$(cat "$cache/vmlinux.about")"
t_fetch=$((SECONDS - t0))

# ---- 2. the initramfs ----------------------------------------------------------------
t0=$SECONDS
stage="$(mktemp -d)"
temp_dirs+=("$stage")
root="$stage/root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc}
cp "$busybox_bin" "$root/bin/busybox"
cp "$here/init.sh" "$root/init"
chmod 755 "$root/init"
# Debug information is most of the binary's size and only slows the boot.
if command -v strip >/dev/null; then
    strip --strip-debug -o "$root/oomwatch_kernel_tests" "$test_binary"
else
    cp "$test_binary" "$root/oomwatch_kernel_tests"
fi
if [[ -n "$cli_binary" ]]; then
    [[ -x "$cli_binary" ]] || { echo "$name: FAIL: $cli_binary is not built" >&2; exit 1; }
    strip --strip-debug -o "$root/oomwatch" "$cli_binary" 2>/dev/null || cp "$cli_binary" "$root/oomwatch"
fi
# The libraries at the paths ldd names them (the loader's default directories), and the
# loader itself at the path the binary asks for (/lib64/ld-linux-x86-64.so.2).
libs=()
while read -r line; do
    case "$line" in
        *"not found"*) echo "$name: FAIL: a library of the test program is missing: $line" >&2; exit 1 ;;
        *"=> /"*) lib="${line#*=> }"; libs+=("${lib%% (*}") ;;
        /*) libs+=("${line%% (*}") ;;
    esac
done < <(ldd "$test_binary"; if [[ -n "$cli_binary" ]]; then ldd "$cli_binary"; fi)
for lib in "${libs[@]}"; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
{
    echo "mode=$mode"
    # Extra options for the test program, e.g. OOMWATCH_VM_TEST_ARGS=--run_test=v2_only.
    printf 'test_args=%q\n' "${OOMWATCH_VM_TEST_ARGS:-}"
    # The test program's own settings travel into the guest (a seed to replay, debug logs).
    for var in OOMWATCH_TEST_SEED OOMWATCH_TEST_LOG; do
        if [[ -n "${!var:-}" ]]; then printf 'export %s=%q\n' "$var" "${!var}"; fi
    done
} >"$root/oomwatch-vm.conf"
# The kernel opens /dev/console for /init before anything is mounted; only root can
# make the node (init.sh reopens the console after mounting devtmpfs in any case).
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
initrd="$stage/initramfs.cpio.gz"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 >"$initrd"
t_initrd=$((SECONDS - t0))

# ---- 3. boot -------------------------------------------------------------------------
mkdir -p "$(dirname "$log")"
# v1 boots with PSI off: the pressure tests check error::psi_disabled there (one boot
# serves both; v1's own tests need no PSI), and `oomwatch status` says so.
kernel_args=''
if [[ "$mode" == v1 ]]; then kernel_args='psi=0'; fi
echo "$name: booting $kernel_about under qemu (TCG), cgroup $mode, timeout ${timeout_s}s"
t0=$SECONDS
qemu_rc=0
# qemu exits 0 even after a guest panic (panic=-1 reboots, -no-reboot exits): its status
# only tells about qemu itself and the timeout.
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
    -accel tcg -machine q35 -cpu max -smp 1 -m 1024 \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet $kernel_args" \
    -nographic -no-reboot -nic none </dev/null >"$log" 2>&1 || qemu_rc=$?
t_boot=$((SECONDS - t0))

# ---- 4. the verdict --------------------------------------------------------------------
# The serial console ends lines with \r\n.
clean="$stage/serial.txt"
tr -d '\r' <"$log" >"$clean"

marker() { sed -n "/^$1 /{s/^$1 //;p;q}" "$clean"; }
guest_kernel="$(marker OOMWATCH-VM-KERNEL)"
result="$(marker OOMWATCH-VM-RESULT)"

echo "$name: guest kernel: ${guest_kernel:-unknown (no OOMWATCH-VM-KERNEL line)}"
echo "$name: guest cgroup: $(marker OOMWATCH-VM-CGROUP)"
echo "---- guest test output ----"
sed -n '/^OOMWATCH-VM-BEGIN$/,/^OOMWATCH-VM-RESULT /p' "$clean" | grep -v '^OOMWATCH-VM-\(BEGIN\|END\)$' || true
per_test="$(
    grep -E '^ *Test case "[^"]*" (has passed|has failed|was skipped|was aborted|is skipped)' "$clean" |
        sed -E 's/^ *//; s/ with:$//' || true
    grep -E 'Test (case|suite) "[^"]*" is skipped because' "$clean" | sed -E 's/^.*: (Test (case|suite))/\1/' || true
)"
echo "---- per test case ----"
echo "$per_test"
echo "----"

problems=()
if [[ $qemu_rc -eq 124 || $qemu_rc -eq 137 ]]; then
    problems+=("the guest did not finish within ${timeout_s}s (hang)")
elif [[ $qemu_rc -ne 0 ]]; then
    problems+=("qemu exited with status $qemu_rc")
fi
if grep -q 'Kernel panic' "$clean"; then
    problems+=("the guest kernel panicked: $(grep -m1 'Kernel panic' "$clean")")
fi
if [[ -z "$result" ]]; then
    problems+=("no OOMWATCH-VM-RESULT marker in the serial log")
elif [[ "$result" != "rc=0" ]]; then
    problems+=("the tests in the guest failed ($result)")
fi
if grep -q '^OOMWATCH-VM-ERROR ' "$clean"; then
    problems+=("guest setup: $(marker OOMWATCH-VM-ERROR)")
fi
if [[ "$mode" == v1 && -n "$cli_binary" ]]; then
    status_json="$(marker OOMWATCH-VM-STATUS)"
    if [[ "$status_json" != *'"psi":{"file":"/proc/pressure/memory","available":false,'*'"disabled":true'* ]]; then
        problems+=("oomwatch status in the guest (psi=0) does not report PSI disabled: ${status_json:-no OOMWATCH-VM-STATUS line}")
    fi
fi
if grep -q '^OOMWATCH-VM-SPLAT ' "$clean"; then
    problems+=("the guest kernel logged warnings: $(grep '^OOMWATCH-VM-SPLAT ' "$clean" | awk 'NR <= 3' | tr '\n' ' ')")
fi
# The VM exists to run these cases: one that skipped there did not prove anything.
# ("because disabled" is a --run_test filter from OOMWATCH_VM_TEST_ARGS: asked for.)
skips="$(grep -E 'Test (case|suite) "[^"]*" is skipped because' "$clean" | grep -v 'is skipped because disabled$' || true)"
if [[ "$mode" == v1 ]]; then
    skips="$(grep -v 'Test suite "v2_only" is skipped because' <<<"$skips" || true)"
fi
if [[ -n "$skips" ]]; then
    problems+=("test cases were skipped in the VM: $(awk 'NR <= 3' <<<"$skips" | tr '\n' ' ')")
fi

summary="guest kernel ${guest_kernel:-unknown}; $(marker OOMWATCH-VM-TIME); kernel fetch ${t_fetch}s, initramfs ${t_initrd}s, qemu ${t_boot}s, total $((SECONDS - t_start))s; serial log: $log"
verdict=PASSED
if [[ ${#problems[@]} -gt 0 ]]; then
    verdict=FAILED
    echo "---- end of the serial log ----"
    tail -n 40 "$clean"
    echo "----"
    for p in "${problems[@]}"; do echo "$name: FAIL: $p" >&2; done
fi
echo "$name: $verdict ($summary)"
# ctest shows a passing test's output only with -V: this file keeps the gist for CI logs.
printf '%s\n' "$name: $verdict ($summary)" "$per_test" "${problems[@]/#/FAIL: }" >"${log%.log}.summary"
[[ $verdict == PASSED ]]
