#!/usr/bin/env bash
# The package test (see tests.cmake): builds the .deb packages with cpack into a scratch
# folder, unpacks both into a scratch root with dpkg-deb -x, and checks what a user gets:
# the program runs, its unit verifies against it, the man page and docs are there, and
# an application builds against the -dev package alone (test/install/consumer).
#   package.sh BUILD_DIR WORK_DIR SOURCE_DIR CMAKE
set -euo pipefail
build=$1 work=$2 source=$3 cmake=$4
cpack=$(dirname "$cmake")/cpack
version=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")/\1/p' "$build/CPackConfig.cmake")

rm -rf "$work"
mkdir -p "$work/root"
echo "== cpack (version $version)"
"$cpack" --config "$build/CPackConfig.cmake" -B "$work/packages"
bin_deb="$work/packages/oomwatch_${version}_amd64.deb"
dev_deb="$work/packages/liboomwatch-dev_${version}_amd64.deb"
for deb in "$bin_deb" "$dev_deb"; do
    [[ -f "$deb" ]] || { echo "package: $deb was not made; made: $(ls "$work/packages")" >&2; exit 1; }
    dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\):/  &/p'
    dpkg-deb -x "$deb" "$work/root"
done
root="$work/root"

fail() { echo "package: $*" >&2; exit 1; }
# dpkg-shlibdeps found the Boost runtime the program links.
dpkg-deb -f "$bin_deb" Depends | grep -q 'libboost-log1\.81\.0' || fail "oomwatch does not depend on libboost-log1.81.0"
dpkg-deb -f "$dev_deb" Depends | grep -q 'libboost1\.81-dev' || fail "liboomwatch-dev does not depend on libboost1.81-dev"

echo "== the program"
program="$root/usr/bin/oomwatch"
[[ "$("$program" --version)" == "oomwatch $version" ]] || fail "oomwatch --version: $("$program" --version)"
"$program" --help | grep -q '^Usage: oomwatch' || fail "oomwatch --help has no usage"
[[ -f "$root/usr/share/man/man1/oomwatch.1.gz" ]] || fail "no man page"
zcat "$root/usr/share/man/man1/oomwatch.1.gz" | grep -q '^\.TH OOMWATCH "1"' || fail "the man page is no section 1 page"
[[ -f "$root/usr/share/doc/oomwatch/README.md" ]] || fail "no /usr/share/doc/oomwatch"
[[ -f "$root/usr/share/doc/oomwatch/examples/oomwatch-alerts.yml" ]] || fail "no alerting rules in /usr/share/doc/oomwatch/examples"

echo "== the unit"
unit="$root/lib/systemd/system/oomwatch.service"
[[ -f "$unit" ]] || fail "no /lib/systemd/system/oomwatch.service"
grep -q '^ExecStart=/usr/bin/oomwatch watch -r' "$unit" || fail "the unit does not run /usr/bin/oomwatch watch -r"
rc=0
bash "$(dirname "$0")/verify-unit.sh" "$unit" "$program" "$root/usr/share/man" "$work/verify" || rc=$?
[[ $rc -eq 0 || $rc -eq 77 ]] || exit "$rc"

echo "== the -dev package: an application against it alone"
for f in include/oomwatch/oomwatch.hpp lib/liboomwatch.a lib/cmake/oomwatch/oomwatchConfig.cmake; do
    [[ -f "$root/usr/$f" ]] || fail "liboomwatch-dev has no /usr/$f"
done
"$cmake" -S "$source/test/install/consumer" -B "$work/consumer" \
    "-DCMAKE_PREFIX_PATH=$root/usr" "-DOOMWATCH_EXPECTED_PREFIX=$root/usr" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF
"$cmake" --build "$work/consumer"
"$work/consumer/oomwatch_consumer"
echo "package: ok"
