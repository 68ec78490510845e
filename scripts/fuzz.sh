#!/usr/bin/env bash
# Bounded fuzzing of every decoder target (tests/fuzz/, docs/RELIABILITY.md
# "Fuzzing") with libFuzzer, ASan and UBSan.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Builds the targets with clang into build-fuzz/ (configured with
# -DHAST_FUZZ=ON), then fuzzes each for the given time (default 60 s),
# starting from a scratch copy of its committed corpus so that the corpus
# in the tree changes only by hand. Prints per target the executions, the
# coverage (libFuzzer's cov: edges, ft: features) and what was found.
# Exits nonzero if any target crashed, leaked, hung, ran out of memory or
# drew a sanitizer report; the input that did it is kept under
# build-fuzz/fuzz-work/<target>/artifacts/, the log next to it.
#
# Environment: BUILD_DIR (default build-fuzz), JOBS (build jobs, default 2).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
build=${BUILD_DIR:-$here/build-fuzz}
jobs=${JOBS:-2}
all_targets=(nbd_options nbd_requests peer_frame frame_reader control_request control_handler metadata
  activemap hastconf toml)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: $0 [seconds-per-target] [target...]" >&2
  exit 2
fi

if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DHAST_FUZZ=ON >"$build.configure.log" 2>&1 ||
    { cat "$build.configure.log" >&2; exit 1; }
fi
cmake --build "$build" -j"$jobs" --target $(printf '%s_fuzz ' "${targets[@]}") >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=0
printf '%-16s %12s %8s %8s %8s  %s\n' target executions cov ft corpus result
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/${t}_fuzz"
  work="$build/fuzz-work/$t"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp "$here/tests/fuzz/corpus/$t/"* "$work/corpus/" 2>/dev/null || true
  status=0
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$work/log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  found=$(find "$work/artifacts" -type f | wc -l)
  if [ "$status" -ne 0 ] || [ "$found" -ne 0 ] ||
     grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$work/log"; then
    result="FAILED (exit $status, $found artifact(s); see $work)"
    failed=1
  else
    result=ok
  fi
  printf '%-16s %12s %8s %8s %8s  %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
done
exit $failed
