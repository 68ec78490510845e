#!/usr/bin/env bash
# Builds hast with a sanitizer and runs the tests under it.
#
#   scripts/sanitize.sh address [ctest args...]   ASan + UBSan in build-asan/
#   scripts/sanitize.sh thread  [ctest args...]   TSan in build-tsan/
#
# address runs every registered test: unit, actor and integration (the long_*
# soak tests stay disabled as in the normal build). thread runs the threaded
# io tests (peer transport, NBD server, disk engine, provider, activemap group
# commit), which involve no CAF: Debian's libcaf_core is not instrumented, so
# every message between actors on two threads reads as a race to TSan (see
# docs/RELIABILITY.md, Sanitizers). Extra arguments replace that default
# selection, e.g. `scripts/sanitize.sh address -L integration` or
# `scripts/sanitize.sh thread -R PeerTransport`.
#
# Any report fails the test that caused it: ASan, UBSan (no recovery) and
# TSan make the process exit nonzero, and tests/integration/lib/common.bash
# collects the reports of the daemons it started. Exits nonzero on any
# failure. BUILD_TYPE (default RelWithDebInfo) and JOBS (default 2) apply.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=${1:-}
case $mode in
  address) build=build-asan ;;
  thread) build=build-tsan ;;
  *)
    echo "usage: $0 address|thread [ctest args...]" >&2
    exit 2
    ;;
esac
shift
jobs=${JOBS:-2}

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DHAST_SANITIZE="$mode"
targets=(hastd hastctl hast_unit_tests hast_actor_tests)
if [[ $mode == thread && $# -eq 0 ]]; then
  targets=(hast_unit_tests)
fi
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

# Reports go to stderr (the test's output) unless common.bash points them at
# a file of its own; the exit status carries them in either case.
case $mode in
  address)
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
    selection=()
    ;;
  thread)
    export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:suppressions=$root/tests/sanitizers/tsan.supp"
    selection=(-R '^(PeerTransport|NbdServer|disk_engine|activemap_group_commit|Provider|provider_rmw)\.|/disk_engine_test\.')
    ;;
esac
if (($#)); then
  selection=("$@")
fi

ctest --test-dir "$build" --output-on-failure -j"$jobs" "${selection[@]}"
