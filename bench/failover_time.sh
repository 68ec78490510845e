#!/usr/bin/env bash
# Failover time of failover auto (docs/FAILOVER.md): three hastd on
# 127.0.0.1 (tests/integration/lib/witness.bash), a client writing to the
# primary and another waiting at the secondary's export.
#   bench/failover_time.sh [build dir]     TIMEOUT (s, default 20), RUNS (default 3)
# Each run kills the primary's hastd with -9 and measures the time to the
# first write completed by the other node (both clients read one clock),
# then restarts the killed node, waits for a complete pair and swaps the
# roles for the next run. A last run measures a switchover: `hastctl role
# secondary` on the primary to the first write completed by the other node.
# Prints one line per run and "median M s, max X s".
set -euo pipefail
BUILD=$(cd "${1:-$(dirname "$0")/../build}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../tests/integration/lib/common.bash"
LIB=$HERE/../tests/integration/lib
source "$LIB/witness.bash"
TIMEOUT=${TIMEOUT:-20}
RUNS=${RUNS:-3}
RES=bench

start_failover_cluster "$RES" "$TIMEOUT"
ctl_on nodeA role primary "$RES"
wait_status nodeA "$RES" complete 60

other() { [[ $1 == nodeA ]] && echo nodeB || echo nodeA; }
first_block() { [[ $1 == nodeA ]] && echo 0 || echo 2048; }
times=()
P=nodeA
# measure RUN FAULT: the fault is "kill" or "switchover".
measure() {
  local run=$1 fault=$2 S at took
  S=$(other "$P")
  rm -f "$T"/r"$run"-*.times
  start_writer "$P" "$RES" "r$run-p" "$(first_block "$P")"
  local writer=$WRITER_PID
  wait_acks "r$run-p" 20
  wait_witness_in_sync "$RES"
  start_follower "$S" "$RES" "r$run-s" "$(first_block "$S")"
  sleep 1
  at=$(now)
  if [[ $fault == kill ]]; then kill9_node "$P"; else ctl_on "$P" role -f secondary "$RES"; fi
  wait_acks "r$run-s" 1 $((TIMEOUT * 3 + 30))
  stop_writer "$FOLLOWER_PID"
  stop_writer "$writer"
  python3 "$LIB/two_primaries_check.py" --before "$T/r$run-p.times" --after "$T/r$run-s.times" \
    --fault "$at" >"$T/check.out" || { cat "$T/check.out" >&2; fail "run $run: two nodes completed writes at once"; }
  took=$(sed -n 's/.*failover time \([0-9.]*\) s.*/\1/p' "$T/check.out")
  echo "run $run: $fault of $P -> first write on $S after $took s (timeout $TIMEOUT s)"
  [[ $fault == kill ]] && times+=("$took")
  [[ $fault == kill ]] && start_data_node "$P"
  wait_role "$P" "$RES" secondary 60
  P=$S
  wait_status "$P" "$RES" complete 120
  wait_status "$(other "$P")" "$RES" complete 60
}
for run in $(seq 1 "$RUNS"); do measure "$run" kill; done
measure switch switchover
printf '%s\n' "${times[@]}" | python3 -c "import statistics,sys; t=[float(x) for x in sys.stdin]; print('kill -9, timeout %s s: %d runs, median %.2f s, max %.2f s' % ('$TIMEOUT', len(t), statistics.median(t), max(t)))"
