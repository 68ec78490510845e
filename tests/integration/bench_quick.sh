#!/usr/bin/env bash
# The benchmark harness end to end, in its --quick form: bench/run.py drives
# raw fio, nbdkit, a standalone hastd and hastd pairs in every replication
# mode (direct and through the delay relay), runs the resync test, and writes
# a report and a chart. This checks that the report and the chart exist, that
# every contender has a row in every workload table and that the resync table
# is there, and that run.py left no process and no file behind. It never
# compares a figure with a time or a target: rows marked failed are listed as
# warnings, not errors (the report itself says what failed and why).
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
REPO=$(cd "$(dirname "$0")/../.." && pwd)

python3 "$REPO/bench/run.py" --quick --build "$BUILD" --backing "$T/backing" --out "$T/b.md" \
    >"$T/run.log" 2>&1 || { tail -n 60 "$T/run.log" >&2; fail "bench/run.py --quick exited non-zero"; }

[[ -s $T/b.md ]] || fail "no report at $T/b.md"
[[ $(head -c 4 "$T/benchmarks.png" | od -An -c | tr -d ' ') == 211PNG ]] \
  || fail "no PNG chart next to the report"
pass "report and chart written"

contenders=(raw nbdkit "hast standalone")
for mode in async memsync fullsync; do
  for delay in direct "0 ms" "0.5 ms" "5 ms"; do
    contenders+=("hast $mode $delay")
  done
done
workloads=$(grep -c '^### ' "$T/b.md")
[[ $workloads -ge 5 ]] || fail "expected 5 workload tables, found $workloads"
for c in "${contenders[@]}"; do
  rows=$(grep -c -F "| $c |" "$T/b.md" || true)
  [[ $rows -ge 5 ]] || fail "contender '$c' has $rows rows, expected one per workload table"
  if grep -F "| $c |" "$T/b.md" | grep -q '\*\*failed\*\*'; then
    echo "warning: '$c' is reported as failed:" >&2
    grep -F -A3 "**$c failed**" "$T/b.md" >&2 || true
  fi
done
pass "every contender (${#contenders[@]}) has a row in every workload table"

grep -q '^## Resync' "$T/b.md" || fail "no resync section"
grep -qE '^\| 16 MiB \|' "$T/b.md" || fail "no resync row for 16 MiB"
grep -q '^## Where we stand against the targets' "$T/b.md" || fail "no targets section"
grep -q '^## Machine' "$T/b.md" || fail "no machine section"
pass "resync, targets and machine sections present"

# run.py stops what it starts and removes its files.
if pgrep -f -- "$T/backing" >/dev/null; then
  pgrep -af -- "$T/backing" >&2
  fail "processes of the benchmark are still running"
fi
left=$(find "$T/backing" -mindepth 1 2>/dev/null | head -n 5)
[[ -z $left ]] || fail "run.py left files behind: $left"
pass "no process and no file left behind"
