#!/usr/bin/env bash
# failover auto under seeded random faults (label long): one three-node
# cluster (lib/witness.bash, timeout 2 s), FAILOVER_TRIALS trials (default
# 50) from HAST_TEST_SEED (default 1). Each trial has a writer on the
# primary and a follower waiting at the secondary's export, then one fault:
#   kill      kill -9 of the primary's hastd          -> the secondary takes over
#   isolate   the primary cut off from both others      -> the secondary takes over
#   witness   kill -9 of the witness                    -> nothing changes
#   peer      the link between the data nodes cut       -> nothing changes
#   restart   the secondary's hastd killed and started  -> nothing changes
# In every trial: no instant has both nodes completing writes
# (two_primaries_check.py), no acknowledged write is lost (verify_acked.py on
# the node that is primary afterwards), and after the repair the pair is
# complete with identical data. Prints a summary with the failover times.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)
source "$LIB/witness.bash"

RES=chaos
TIMEOUT=2
TRIALS=${FAILOVER_TRIALS:-50}
SEED=${HAST_TEST_SEED:-1}
BOUND=$(python3 -c "print($TIMEOUT * 1.5 + 3)")

start_failover_cluster "$RES" "$TIMEOUT"
ctl_on nodeA role primary "$RES"
wait_status nodeA "$RES" complete 30

other() { [[ $1 == nodeA ]] && echo nodeB || echo nodeA; }
first_block() { [[ $1 == nodeA ]] && echo 0 || echo 2048; }
pick() { python3 -c "import random; r=random.Random('$SEED/$1'); print(r.choice('kill isolate witness peer restart'.split()), '%.2f' % r.uniform(0.3, 1.5))"; }

declare -a TIMES=()
declare -A COUNT=()
P=nodeA
for trial in $(seq 1 "$TRIALS"); do
  S=$(other "$P")
  read -r fault delay < <(pick "$trial")
  COUNT[$fault]=$((${COUNT[$fault]:-0} + 1))
  tag=t$trial
  rm -f "$T/$tag"-*.times
  start_writer "$P" "$RES" "$tag-p" "$(first_block "$P")"
  writer=$WRITER_PID
  wait_acks "$tag-p" 20
  [[ $fault == kill || $fault == isolate ]] && wait_witness_in_sync "$RES"
  start_follower "$S" "$RES" "$tag-s" "$(first_block "$S")"
  sleep "$delay"
  at=$(now)
  case $fault in
    kill) kill9_node "$P" ;;
    isolate) isolate "$P"; at=$(now) ;;  # once every relay confirmed
    witness) kill9_node nodeW ;;
    peer) relays cut A-B B-A ;;
    restart) kill9_node "$S"; start_data_node "$S" ;;
  esac
  case $fault in
    kill|isolate)
      wait_role "$S" "$RES" primary 30
      wait_acks "$tag-s" 20 30
      ;;
    *)
      sleep $((TIMEOUT * 2))
      [[ $(role_of "$P" "$RES") == primary ]] || fail "trial $trial ($fault): $P lost the primary role"
      before=$(acks_in "$T/$tag-p.times")
      sleep 1
      [[ $(acks_in "$T/$tag-p.times") -gt $before ]] || fail "trial $trial ($fault): writes stopped on $P"
      ;;
  esac
  stop_writer "$FOLLOWER_PID"
  stop_writer "$writer"
  if [[ $fault == kill || $fault == isolate ]]; then
    python3 "$LIB/two_primaries_check.py" --before "$T/$tag-p.times" --after "$T/$tag-s.times" \
      --fault "$at" >"$T/check.out" || { cat "$T/check.out" >&2; fail "trial $trial ($fault): two nodes completed writes at once"; }
    TIMES+=("$(sed -n 's/.*failover time \([0-9.]*\) s.*/\1/p' "$T/check.out")")
    verify_on "$S" "$RES" "$tag-p" "$tag-s" >/dev/null
    NEWP=$S
  else
    [[ ! -s $T/$tag-s.times ]] || fail "trial $trial ($fault): the secondary completed writes"
    verify_on "$P" "$RES" "$tag-p" >/dev/null
    NEWP=$P
  fi
  # Repair, and wait for a complete pair.
  case $fault in
    kill) start_data_node "$P" ;;
    isolate) reconnect "$P" ;;
    witness) start_node nodeW ;;
    peer) relays pass A-B B-A ;;
  esac
  OLDP=$P
  P=$NEWP
  wait_role "$(other "$P")" "$RES" secondary 30
  wait_status "$P" "$RES" complete 60
  wait_status "$(other "$P")" "$RES" complete 30
  same_regions "$RES"
  echo "trial $trial: $fault after ${delay}s on $OLDP -> primary $P${TIMES:+ (last failover ${TIMES[-1]} s)}"
done
summary=$(printf '%s\n' "${TIMES[@]}" | python3 -c "import sys; t=[float(x) for x in sys.stdin if x.strip()]; print('failovers %d, time min %.2f max %.2f mean %.2f s' % (len(t), min(t), max(t), sum(t)/len(t)) if t else 'no failovers')")
faults=""
for f in "${!COUNT[@]}"; do faults+="$f=${COUNT[$f]} "; done
pass "$TRIALS trials ($faults): no two nodes completed writes at once, nothing acknowledged lost; $summary (bound $BOUND s)"
