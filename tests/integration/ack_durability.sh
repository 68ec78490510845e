#!/usr/bin/env bash
# What the primary acknowledged survives the primary's death: for each mode
# and seed, a complete pair, acked_writer.py writing through nodeA's export
# (8 requests in flight, each acknowledged write logged and fsync'd only
# after the reply), kill -9 of nodeA's hastd at a seeded random point,
# `role primary` on nodeB, and verify_acked.py reading every acknowledged
# block back through nodeB's export.
#   fullsync, memsync: not one acknowledged block may be missing or stale.
#   async:             the number lost is measured and printed, not asserted.
# Environment: ACK_SEEDS (seeds per mode, default 3), HAST_TEST_SEED (first
# seed, default 1) -- long_ack_durability.sh runs this with more seeds.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)

SEEDS=${ACK_SEEDS:-3}
FIRST_SEED=${HAST_TEST_SEED:-1}
declare -A LOST_TOTAL ACKED_TOTAL

one_run() {
  local mode=$1 seed=$2 res="${1}s$2"
  write_pair_config "$res" "$mode"
  start_pair "$res" -m 64M

  local ack=$T/$res.ack issued=$T/$res.issued
  python3 "$LIB/acked_writer.py" --socket "$T/a/$res.nbd" --export "$res" --seed "$seed" \
    --ack-log "$ack" --issued-log "$issued" --depth 8 --span-blocks 4096 \
    >"$T/$res.writer.out" 2>&1 &
  local writer=$!
  STARTED_PIDS+=("$writer")
  # The delay counts from the first acknowledged write.
  for _ in $(seq 300); do
    [[ $(grep -vc '^#' "$ack" 2>/dev/null || true) -ge 1 ]] && break
    kill -0 "$writer" 2>/dev/null || { cat "$T/$res.writer.out" >&2; fail "$res: writer died before its first ack"; }
    sleep 0.1
  done
  [[ $(grep -vc '^#' "$ack" 2>/dev/null || true) -ge 1 ]] || fail "$res: no write was acknowledged"
  local delay
  delay=$(python3 -c "import random; print('%.2f' % random.Random('$mode/$seed').uniform(0.3, 2.0))")
  sleep "$delay"
  kill9_node nodeA
  local wrc=0
  wait "$writer" || wrc=$?
  # 3: the connection was lost, as it must be when the server dies.
  [[ $wrc -eq 3 || $wrc -eq 0 ]] || { cat "$T/$res.writer.out" >&2; fail "$res: writer exited $wrc"; }
  echo "  $(cat "$T/$res.writer.out")"

  ctl_on nodeB role primary "$res"
  local vrc=0
  python3 "$LIB/verify_acked.py" --socket "$T/b/$res.nbd" --export "$res" \
    --ack-log "$ack" --issued-log "$issued" >"$T/$res.verify.out" 2>&1 || vrc=$?
  sed 's/^/  /' "$T/$res.verify.out"
  [[ $vrc -le 1 ]] || fail "$res: verify could not read nodeB's export"
  local lost acked
  lost=$(sed -n 's/^verify: .* lost=\([0-9]*\) .*/\1/p' "$T/$res.verify.out")
  acked=$(sed -n 's/^verify: acked=\([0-9]*\) .*/\1/p' "$T/$res.verify.out")
  [[ -n $lost && -n $acked ]] || fail "$res: cannot parse the verify output"
  LOST_TOTAL[$mode]=$(( ${LOST_TOTAL[$mode]:-0} + lost ))
  ACKED_TOTAL[$mode]=$(( ${ACKED_TOTAL[$mode]:-0} + acked ))
  if [[ $mode != async ]]; then
    [[ $lost -eq 0 ]] || fail "$mode seed $seed: $lost of $acked acknowledged blocks lost after kill -9 of the primary (delay ${delay}s)"
  fi
  stop_node nodeB
  rm -f "$T/a/$res.img" "$T/b/$res.img"
  echo "ok: $mode seed $seed: delay ${delay}s, $acked acked blocks checked on nodeB, $lost lost"
}

for mode in fullsync memsync async; do
  for ((seed = FIRST_SEED; seed < FIRST_SEED + SEEDS; seed++)); do
    one_run "$mode" "$seed"
  done
done

pass "fullsync: ${ACKED_TOTAL[fullsync]} acknowledged blocks over $SEEDS crashes, ${LOST_TOTAL[fullsync]} lost"
pass "memsync: ${ACKED_TOTAL[memsync]} acknowledged blocks over $SEEDS crashes, ${LOST_TOTAL[memsync]} lost"
echo "report: async: ${LOST_TOTAL[async]} of ${ACKED_TOTAL[async]} acknowledged blocks lost over $SEEDS crashes (not asserted)"
