#!/usr/bin/env bash
# The `unprivileged` test (see tests.cmake): runs oomwatch_unprivileged_tests as
# uid/gid 65534 (no groups, no capabilities, no_new_privs) through setpriv.
#
# As root, first:
#   1. copies the test program into a fresh 0755 directory under /tmp (the build tree
#      may sit in a 0700 directory that uid 65534 cannot enter, as CI's `mktemp -d`
#      clone does), with any shared library it loads from the build tree;
#   2. has oomwatch_unprivileged_helper create a scratch memory cgroup with the children
#      owned (cgroup.event_control chowned to 65534), plain and locked (0700);
#   3. builds a fake cgroup v2 tree on /dev/shm (some of it root's and readable, some
#      the user's, some unreadable);
#   4. makes two fifos through which the test asks root for what it may not do itself
#      (real OOM kills after its watcher is armed, fake counter writes, removals), and
#      serves them while the test runs. Every wait is bounded.
# A trap removes all of it (cgroups, processes in them, files) on any exit.
#
# Exit status: the test program's; 77 (skip) when not root, when setpriv (util-linux)
# is missing, or when no memory cgroup hierarchy is mounted, unless
# OOMWATCH_REQUIRE_KERNEL=1, which makes those a failure.
set -euo pipefail

test_binary=''
helper=''
build_dir=''
uid=65534
limit_s=240
while [[ $# -gt 0 ]]; do
    case "$1" in
        --) shift; break ;;  # the rest goes to the test program (e.g. --run_test=...)
        --test-binary) test_binary=$2 ;;
        --helper) helper=$2 ;;
        --build-dir) build_dir=$2 ;;
        --uid) uid=$2 ;;
        --timeout) limit_s=$2 ;;
        *) echo "run-unprivileged.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift 2
done
if [[ -z "$test_binary" || -z "$helper" ]]; then
    echo "run-unprivileged.sh: --test-binary and --helper are required" >&2
    exit 2
fi

unavailable() {
    if [[ "${OOMWATCH_REQUIRE_KERNEL:-}" == 1 ]]; then
        echo "unprivileged: FAIL: $* (OOMWATCH_REQUIRE_KERNEL=1 makes this a failure)" >&2
        exit 1
    fi
    echo "unprivileged: SKIP: $* (set OOMWATCH_REQUIRE_KERNEL=1 to fail instead)"
    exit 77
}

if [[ "$(id -u)" -ne 0 ]]; then
    unavailable "needs root, to prepare cgroups and to become uid $uid (running as uid $(id -u))"
fi
if ! command -v setpriv >/dev/null 2>&1; then
    unavailable "setpriv (util-linux) is not installed"
fi
for f in "$test_binary" "$helper"; do
    if [[ ! -x "$f" ]]; then
        echo "unprivileged: FAIL: $f is not built" >&2
        exit 1
    fi
done

tmp=''
fake=''
cg_parent=''
test_pid=''

# Kills what is left in a cgroup and removes it, children first. Bounded.
remove_cgroup_tree() {
    local d=$1 c i pids
    [[ -d "$d" ]] || return 0
    chmod 0755 "$d" 2>/dev/null || true
    for c in "$d"/*/; do
        if [[ -d "$c" ]]; then remove_cgroup_tree "${c%/}" || true; fi
    done
    for ((i = 0; i < 500; i++)); do
        pids=$(cat "$d/cgroup.procs" 2>/dev/null || true)
        if [[ -n "$pids" ]]; then kill -KILL $pids 2>/dev/null || true; fi
        if rmdir "$d" 2>/dev/null || [[ ! -d "$d" ]]; then return 0; fi
        sleep 0.01  # polling the kernel for an empty cgroup: v1 has no event for it
    done
    echo "unprivileged: could not remove $d" >&2
    return 1
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$test_pid" ]] && kill -0 "$test_pid" 2>/dev/null; then
        kill -KILL "$test_pid" 2>/dev/null
        wait "$test_pid" 2>/dev/null
    fi
    if [[ -n "$cg_parent" ]]; then remove_cgroup_tree "$cg_parent" || rc=1; fi
    if [[ -n "$fake" ]]; then rm -rf -- "$fake"; fi
    if [[ -n "$tmp" ]]; then rm -rf -- "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The program, where uid 65534 can reach it.
tmp=$(mktemp -d /tmp/oomwatch-unpriv.XXXXXX)
chmod 0755 "$tmp"
bin="$tmp/$(basename "$test_binary")"
cp -- "$test_binary" "$bin"
chmod 0755 "$bin"
libdir=''
if [[ -n "$build_dir" ]]; then
    # Shared libraries from the build tree (a -DBUILD_SHARED_LIBS=ON build) go along.
    while read -r lib; do
        if [[ "$lib" == "$build_dir"/* && -f "$lib" ]]; then
            libdir="$tmp/lib"
            mkdir -p "$libdir"
            cp -- "$lib" "$libdir/"
        fi
    done < <(ldd "$test_binary" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
    if [[ -n "$libdir" ]]; then chmod -R a+rX "$libdir"; fi
fi

# 2. Real cgroups.
setup_out="$tmp/setup.env"
set +e
"$helper" setup "$uid" >"$setup_out"
setup_rc=$?
set -e
if [[ -f "$setup_out" ]]; then
    cg_parent=$(sed -n 's/^OOMWATCH_UNPRIV_PARENT=//p' "$setup_out")
fi
if ((setup_rc == 77)); then unavailable "no memory cgroup hierarchy is mounted"; fi
if ((setup_rc != 0)); then
    echo "unprivileged: FAIL: the root-side setup failed" >&2
    exit 1
fi
while IFS='=' read -r key value; do
    case "$key" in
        OOMWATCH_UNPRIV_*) export "$key=$value" ;;
    esac
done <"$setup_out"
echo "unprivileged: scratch cgroup $OOMWATCH_UNPRIV_PARENT (cgroup v$OOMWATCH_UNPRIV_VERSION)"

# 3. A fake cgroup v2 tree.
fake_base=/dev/shm
[[ -d "$fake_base" ]] || fake_base=/tmp
fake=$(mktemp -d "$fake_base/oomwatch-unpriv-fake.XXXXXX")
chmod 0755 "$fake"
events() {  # events FILE OOM KILL: like the kernel's memory.events
    printf 'low 0\nhigh 0\nmax 0\noom %s\noom_kill %s\noom_group_kill 0\n' "$2" "$3" >"$1"
}
make_fake() {  # make_fake DIR OWNER DIRMODE FILEMODE
    mkdir -m "$3" "$1"
    events "$1/memory.events" 0 0
    events "$1/memory.events.local" 0 0
    chmod "$4" "$1/memory.events" "$1/memory.events.local"
    chown -R "$2" "$1"
}
mkdir -m 0755 "$fake/parent"
chown "$uid:$uid" "$fake/parent"  # the user may remove its own fake cgroup
make_fake "$fake/parent/rooted" root 0755 0644
make_fake "$fake/parent/rooted2" root 0755 0644
make_fake "$fake/parent/mine" "$uid:$uid" 0755 0644
make_fake "$fake/parent/locked" root 0700 0644
make_fake "$fake/parent/secret" root 0755 0600
export OOMWATCH_UNPRIV_FAKE="$fake"

# 4. The request and reply fifos. Opened read-write here first, so that neither side's
# open blocks, whoever comes first.
req="$tmp/req.fifo"
rep="$tmp/rep.fifo"
mkfifo -m 0600 "$req" "$rep"
chown "$uid:$uid" "$req" "$rep"
exec 3<>"$req" 4<>"$rep"
export OOMWATCH_UNPRIV_REQ="$req" OOMWATCH_UNPRIV_REP="$rep"

reply() { printf '%s\n' "$*" >&4; }
# A path the test may name: inside what we made, with no "..".
inside() { [[ "$1" == "$2"/* && "$1" != *..* ]]; }

serve() {
    local cmd a b c out
    read -r cmd a b c <<<"$1"
    case "$cmd" in
        oom)  # oom DIR N: N real OOM kills in one of our real cgroups
            if inside "$a" "$cg_parent" && [[ "$b" =~ ^[1-9][0-9]?$ ]]; then
                if out=$("$helper" oom "$a" "$b" 2>&1); then reply "ok $out"; else reply "fail ${out//$'\n'/ }"; fi
            else
                reply "fail refused: $1"
            fi ;;
        write)  # write DIR OOM KILL: a fake cgroup's counters
            if inside "$a" "$fake/parent" && [[ "$b" =~ ^[0-9]+$ && "$c" =~ ^[0-9]+$ ]] && events "$a/memory.events" "$b" "$c"; then
                reply ok
            else
                reply "fail refused or failed: $1"
            fi ;;
        rmfake)  # rmfake DIR: a fake cgroup goes away
            if inside "$a" "$fake/parent" && rm -rf -- "$a"; then reply ok; else reply "fail $1"; fi ;;
        rmdir)  # rmdir DIR: one of our real cgroups goes away
            if inside "$a" "$cg_parent" && remove_cgroup_tree "$a"; then reply ok; else reply "fail $1"; fi ;;
        *) reply "fail unknown request: $1" ;;
    esac
}

alive() {  # the test process exists and is no zombie
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z ]]
}

cd "$tmp"
echo "unprivileged: running $bin as uid $uid"
t0=$SECONDS
setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all --no-new-privs -- \
    env ${libdir:+LD_LIBRARY_PATH="$libdir"} "$bin" --log_level=test_suite --report_level=short "$@" &
test_pid=$!

timed_out=0
while alive "$test_pid"; do
    if ((SECONDS - t0 > limit_s)); then
        echo "unprivileged: FAIL: the test program ran longer than ${limit_s}s; killing it" >&2
        kill -KILL "$test_pid" 2>/dev/null || true
        timed_out=1
        break
    fi
    line=''
    if read -r -t 1 -u 3 line; then
        echo "unprivileged: root side: $line"
        serve "$line"
    fi
done
rc=0
wait "$test_pid" || rc=$?
test_pid=''
if ((timed_out)); then rc=1; fi
echo "unprivileged: test program exited with status $rc after $((SECONDS - t0))s"
exit "$rc"
