#!/usr/bin/env bash
# kill -9 of either node under write load, restart, rejoin, resync of only
# what is dirty. nodeA is primary, nodeB secondary, acked_writer.py writes
# through nodeA's export. Each round (victim and timing drawn from a seeded
# generator):
#   - kill -9 the victim at a random point while the writer runs; if it was
#     the secondary, the writer goes on against the primary for a while
#     (those writes must succeed), then stops;
#   - sometimes ("twice") the victim is restarted, given its role back and
#     killed again at once, i.e. during the handshake or its resync;
#   - the dirty extents both sides report before the sync are recorded: the
#     running node's `list --json` dirty_bytes (and its on-disk map), the
#     dead node's on-disk map (`dump --json`, the daemon is down);
#   - the victim is restarted with its previous role, the pair goes back to
#     complete, and the bytes the resync copied (`synced_bytes` delta) must
#     not exceed the dirty extents of both sides -- a full copy fails.
# At the end the writer stops, both nodes stop (primary first), the data
# regions are byte-identical, and every acknowledged write is in them.
# Environment: CRASH_ROUNDS (default 6), HAST_TEST_SEED (default 1).
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)

ROUNDS=${CRASH_ROUNDS:-6}
SEED=${HAST_TEST_SEED:-1}
res=cr
MEDIA=256M
EXTENT=1M
KEEPDIRTY=4                               # few hot extents stay dirty on disk

write_pair_config "$res" memsync
start_pair "$res" -m "$MEDIA" -e "$EXTENT" -k "$KEEPDIRTY"

ctl_on nodeA dump --json "$res" > "$T/dump0.json"
DATASIZE=$(json_get "$T/dump0.json" "j['resources'][0]['datasize']")
EXTSIZE=$(json_get "$T/dump0.json" "j['resources'][0]['extentsize']")
SPAN_BLOCKS=4096                          # 16 MiB of writes per round
MAX_FIRST=$(( DATASIZE / 4096 - SPAN_BLOCKS ))

# plan: one line per round: victim delay_before_kill delay_after_kill twice first_block
python3 - "$SEED" "$ROUNDS" "$MAX_FIRST" > "$T/plan" <<'PY'
import random, sys
seed, rounds, max_first = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = random.Random("crash_rejoin/%d" % seed)
for i in range(rounds):
    victim = "nodeA" if i == 0 else ("nodeB" if i == 1 else r.choice(["nodeA", "nodeB"]))
    print(victim, "%.2f" % r.uniform(0.3, 1.5), "%.2f" % r.uniform(0.2, 1.0),
          int(r.random() < 0.35), r.randrange(0, max_first) // 256 * 256)
PY

ACK_ARGS=()
WRITER=

# start_writer ROUND FIRST_BLOCK: acked_writer.py against nodeA's export.
start_writer() {
  local round=$1 first=$2 ack=$T/ack.$1
  python3 "$LIB/acked_writer.py" --socket "$T/a/$res.nbd" --export "$res" \
    --seed $((SEED * 1000 + round)) --seq-base $((round * 100000000)) \
    --ack-log "$ack" --issued-log "$T/issued.$round" --depth 8 \
    --first-block "$first" --span-blocks "$SPAN_BLOCKS" >"$T/writer.$round.out" 2>&1 &
  WRITER=$!
  STARTED_PIDS+=("$WRITER")
  ACK_ARGS+=(--ack-log "$ack" --issued-log "$T/issued.$round")
  for _ in $(seq 300); do
    [[ $(grep -vc '^#' "$ack" 2>/dev/null || true) -ge 1 ]] && return 0
    kill -0 "$WRITER" 2>/dev/null || break
    sleep 0.1
  done
  cat "$T/writer.$round.out" >&2
  fail "round $round: the writer got no acknowledgement from nodeA"
}

# stop_writer ROUND: SIGTERM, it drains what is in flight and exits 0.
stop_writer() {
  local rc=0
  kill -TERM "$WRITER" 2>/dev/null || true
  wait "$WRITER" || rc=$?
  echo "  $(cat "$T/writer.$1.out")"
  [[ $rc -eq 0 ]] || fail "round $1: writer exited $rc: $(cat "$T/writer.$1.out")"
}

role_of() { [[ $1 == nodeA ]] && echo primary || echo secondary; }
other() { [[ $1 == nodeA ]] && echo nodeB || echo nodeA; }

# synced NODE: its synced_bytes (0 when the daemon is down).
synced() {
  kill -0 "${NODE_PID[$1]}" 2>/dev/null || { echo 0; return; }
  ctl_on "$1" list --json "$res" > "$T/list-$1.json"
  local v
  v=$(json_get "$T/list-$1.json" "j['resources'][0].get('synced_bytes')")
  [[ $v != None ]] || fail "$1: 'hastctl list --json' has no synced_bytes"
  echo "$v"
}

# dirty_of NODE: the larger of its on-disk map and (if it runs) its in-memory
# dirty bytes.
dirty_of() {
  local node=$1 disk mem=0
  ctl_on "$node" dump --json "$res" > "$T/dd-$node.json"
  disk=$(json_get "$T/dd-$node.json" "j['resources'][0]['dirty_bytes']")
  if kill -0 "${NODE_PID[$node]}" 2>/dev/null; then
    ctl_on "$node" list --json "$res" > "$T/dl-$node.json"
    mem=$(json_get "$T/dl-$node.json" "j['resources'][0]['dirty_bytes']")
  fi
  echo $(( disk > mem ? disk : mem ))
}

restart_with_role() {
  local node=$1
  start_node "$node"
  ctl_on "$node" role "$(role_of "$node")" "$res"
}

round=0
while read -r victim d1 d2 twice first; do
  round=$((round + 1))
  survivor=$(other "$victim")
  echo "round $round: kill -9 $victim ($(role_of "$victim")) after ${d1}s of writes at block $first$([[ $twice == 1 ]] && echo ', twice')"
  start_writer "$round" "$first"
  sleep "$d1"
  kill9_node "$victim"
  if [[ $victim == nodeB ]]; then
    # The primary goes on alone; its writes become dirty extents.
    sleep "$d2"
    kill -0 "$WRITER" 2>/dev/null || fail "round $round: the writer stopped while only the secondary was down: $(cat "$T/writer.$round.out")"
    stop_writer "$round"
  else
    wrc=0
    wait "$WRITER" || wrc=$?
    echo "  $(cat "$T/writer.$round.out")"
    [[ $wrc -eq 3 || $wrc -eq 0 ]] || fail "round $round: writer exited $wrc"
  fi
  if [[ $twice == 1 ]]; then
    restart_with_role "$victim"
    sleep "$(python3 -c "import random; print('%.2f' % random.Random('$SEED/$round').uniform(0, 0.5))")"
    kill9_node "$victim"
    echo "  $victim killed again right after rejoining"
  fi

  # What each side reports dirty before the sync; the resync may copy at most
  # their union (bounded here by the sum).
  dirty_s=$(dirty_of "$survivor")
  dirty_v=$(dirty_of "$victim")
  bound=$(( dirty_s + dirty_v ))
  before_a=$(synced nodeA)
  before_b=$(synced nodeB)
  restart_with_role "$victim"
  wait_status nodeA "$res" complete 120
  wait_status nodeB "$res" complete 60
  after_a=$(synced nodeA)
  after_b=$(synced nodeB)
  [[ $victim == nodeA ]] && before_a=0 || before_b=0   # restarted: counts from zero
  copied=$(( after_a - before_a > after_b - before_b ? after_a - before_a : after_b - before_b ))
  echo "  dirty before the sync: $survivor $dirty_s, $victim $dirty_v bytes; resync copied $copied bytes (datasize $DATASIZE)"
  [[ $copied -le $bound ]] || fail "round $round: the resync copied $copied bytes, more than the $bound dirty bytes reported before it"
  [[ $copied -lt $DATASIZE ]] || fail "round $round: the resync copied the whole disk ($copied bytes)"
  pass "round $round: $victim rejoined, resync within the dirty extents ($copied <= $bound)"
done < "$T/plan"

# A last burst with both nodes up, then the final comparison.
start_writer $((round + 1)) 0
sleep 1  # the length of the burst (start_writer already waited for its first ack)
stop_writer $((round + 1))
wait_status nodeA "$res" complete 60
ctl_on nodeA dump --json "$res" > "$T/dumpA.json"
ctl_on nodeB dump --json "$res" > "$T/dumpB.json"
stop_node nodeA
stop_node nodeB
same_regions "$res"
pass "after $ROUNDS crash rounds both data regions are byte-identical"
for node in nodeA nodeB; do
  dir=$([[ $node == nodeA ]] && echo a || echo b)
  off=$(json_get "$T/dump${node#node}.json" "j['resources'][0]['localoff']")
  python3 "$LIB/verify_acked.py" --file "$T/$dir/$res.img" --offset "$off" "${ACK_ARGS[@]}" \
    > "$T/verify-$node.out" || { cat "$T/verify-$node.out" >&2; fail "$node: acknowledged writes are missing"; }
  echo "  $node: $(head -1 "$T/verify-$node.out")"
done
pass "every acknowledged write of every round is on both nodes"
