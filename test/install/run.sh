#!/usr/bin/env bash
# The install_consumer test (see tests.cmake): installs the main build into a scratch
# prefix, then builds and runs the consumer project against that prefix alone.
set -euo pipefail

build_dir='' work_dir='' consumer_dir='' library='' config='' cmake=cmake generator='' cxx=''
while [[ $# -gt 0 ]]; do
    case "$1" in
        --build-dir) build_dir=$2 ;;
        --work-dir) work_dir=$2 ;;
        --consumer-dir) consumer_dir=$2 ;;
        --library) library=$2 ;;
        --config) config=$2 ;;
        --cmake) cmake=$2 ;;
        --generator) generator=$2 ;;
        --cxx) cxx=$2 ;;
        *) echo "run.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift 2
done
for v in build_dir work_dir consumer_dir library; do
    if [[ -z "${!v}" ]]; then
        echo "run.sh: --${v//_/-} is required" >&2
        exit 2
    fi
done
if [[ ! -f "$library" ]]; then
    echo "run.sh: $library is not built; build the project before running the tests" >&2
    exit 1
fi

prefix="$work_dir/prefix"
consumer_build="$work_dir/consumer-build"
rm -rf "$work_dir"
mkdir -p "$work_dir"

# DESTDIR from the environment would install somewhere else than --prefix.
unset DESTDIR

config_args=()
if [[ -n "$config" ]]; then
    config_args=(--config "$config")
fi

echo "== install into $prefix"
"$cmake" --install "$build_dir" --prefix "$prefix" "${config_args[@]}"

echo "== configure the consumer"
configure_args=(-S "$consumer_dir" -B "$consumer_build"
    "-DCMAKE_PREFIX_PATH=$prefix"
    "-DOOMWATCH_EXPECTED_PREFIX=$prefix"
    # Find oomwatch in the prefix or nowhere: not in a package registry, not in the system.
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if [[ -n "$generator" ]]; then configure_args+=(-G "$generator"); fi
if [[ -n "$cxx" ]]; then configure_args+=("-DCMAKE_CXX_COMPILER=$cxx"); fi
if [[ -n "$config" ]]; then configure_args+=("-DCMAKE_BUILD_TYPE=$config"); fi
"$cmake" "${configure_args[@]}"

echo "== build the consumer"
"$cmake" --build "$consumer_build" "${config_args[@]}"

echo "== run the consumer"
consumer="$consumer_build/oomwatch_consumer"
if [[ ! -x "$consumer" && -n "$config" && -x "$consumer_build/$config/oomwatch_consumer" ]]; then
    consumer="$consumer_build/$config/oomwatch_consumer"  # multi-config generators
fi
"$consumer"
