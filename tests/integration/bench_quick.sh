#!/usr/bin/env bash
# The benchmark harness end to end, in its --quick form (every code path once,
# under a minute): bench/run.py drives raw fio, nbdkit, qemu-nbd, a standalone
# hastd, a hastd pair straight to the secondary (memsync) and one through the
# delay relay (async 0 ms), runs the resync test and (when perf exists) a
# short profile, and writes a report and a chart. This checks that the report
# and the chart exist, that every contender has a row in every workload table
# and that the resync, targets and profile sections are there, and that
# run.py left no process and no file behind. It never compares a figure with a
# time or a target. A hast row marked failed fails the test; another
# contender's failed row (nbdkit, qemu-nbd, raw fio: the machine's tools) is
# printed as a warning (the report itself says what failed and why).
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
REPO=$(cd "$(dirname "$0")/../.." && pwd)

python3 "$REPO/bench/run.py" --quick --build "$BUILD" --backing "$T/backing" --out "$T/b.md" \
    >"$T/run.log" 2>&1 || { tail -n 60 "$T/run.log" >&2; fail "bench/run.py --quick exited non-zero"; }

[[ -s $T/b.md ]] || fail "no report at $T/b.md"
[[ $(head -c 4 "$T/benchmarks.png" | od -An -c | tr -d ' ') == 211PNG ]] \
  || fail "no PNG chart next to the report"
pass "report and chart written"

contenders=(raw nbdkit qemu-nbd "hast standalone" "hast memsync direct" "hast async 0 ms")
workloads=$(grep -c '^### ' "$T/b.md")
[[ $workloads -ge 5 ]] || fail "expected 5 workload tables, found $workloads"
for c in "${contenders[@]}"; do
  rows=$(grep -c -F "| $c |" "$T/b.md" || true)
  [[ $rows -ge 5 ]] || fail "contender '$c' has $rows rows, expected one per workload table"
  if grep -F "| $c |" "$T/b.md" | grep -q '\*\*failed\*\*'; then
    why=$(grep -F -A3 -e "**$c failed**" -e "**$c, " "$T/b.md" || true)
    # hast failing is this test failing; another contender (a tool of the
    # machine's) failing is reported and left to the report.
    [[ $c != hast* ]] || fail "'$c' is reported as failed: $why"
    echo "warning: '$c' (not hast) is reported as failed: $why" >&2
  fi
done
pass "every contender (${#contenders[@]}) has a row in every workload table"
[[ $(grep -c '× qemu-nbd' "$T/b.md") -ge 5 ]] || fail "workload tables lack the × qemu-nbd column"

grep -q '^## Resync' "$T/b.md" || fail "no resync section"
# The resync and verify phases are hast's own: one that failed fails the test.
if grep -E '^\* \*\*(resync|verify)[^*]* failed\*\*|^\| [0-9]+ MiB \|.*\*\*failed\*\*' "$T/b.md" >&2; then
  fail "a hast phase of the benchmark failed (above)"
fi
grep -qE '^\| 8 MiB \|' "$T/b.md" || fail "no resync row for 8 MiB"
grep -q '^## Targets' "$T/b.md" || fail "no targets section"
grep -q '^## Machine' "$T/b.md" || fail "no machine section"
if command -v perf >/dev/null; then
  grep -q '^## Profile' "$T/b.md" || fail "perf is installed but the report has no profile section"
fi
pass "resync, targets, profile and machine sections present"

# run.py stops what it starts and removes its files.
if pgrep -f -- "$T/backing" >/dev/null; then
  pgrep -af -- "$T/backing" >&2
  fail "processes of the benchmark are still running"
fi
left=$(find "$T/backing" -mindepth 1 2>/dev/null | head -n 5)
[[ -z $left ]] || fail "run.py left files behind: $left"
pass "no process and no file left behind"
