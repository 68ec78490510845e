#!/usr/bin/env bash
# failover auto with a witness (docs/FAILOVER.md), three hastd on 127.0.0.1
# with every link through its own fault relay, timeout 2 s:
#  1. kill -9 of the primary while a client writes: the secondary becomes
#     primary by itself; every completion on the old primary precedes the
#     first on the new one; no acknowledged write is lost; the failover time
#     is printed and bounded; the old primary comes back as secondary and the
#     pair is complete with identical data.
#  2. the primary cut off from both others while a client writes to it: its
#     writes stop completing before the other node's first write completes,
#     it emits lease-lost and steps down; back on the network it rejoins as
#     secondary, complete, identical data.
#  3. the witness killed: no role changes, writes go on.
#  4. the secondary cut off while the primary writes, the link back (slow)
#     and the resync running when the primary is killed: the stale
#     secondary is not promoted and says why.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)
source "$LIB/checks.bash"
source "$LIB/witness.bash"

RES=fo
TIMEOUT=2
# The design's bound: lease + margin + a claim interval, plus slack for
# entering primary and the writer reconnecting on a loaded machine.
BOUND=$(python3 -c "print($TIMEOUT * 1.5 + 3)")

# failover auto: both become secondary by themselves.
start_failover_cluster "$RES" "$TIMEOUT"
# Nobody is promoted automatically before a primary was ever chosen.
sleep $((TIMEOUT * 2))
[[ $(role_of nodeB "$RES") == secondary && $(role_of nodeA "$RES") == secondary ]] \
  || fail "a node was promoted before any primary was set by hand"
ctl_on nodeA role primary "$RES"
wait_status nodeA "$RES" complete 30
pass "the first primary is set by hand; the pair is complete"

# The witness answers only a data node that proves the key, fails closed
# otherwise, and keeps running.
head -c 32 /dev/urandom | base64 >"$T/wrong.key"
chmod 600 "$T/wrong.key"
client() { python3 "$LIB/witness_client.py" "$PORT_W" "$@"; }
[[ $(client "$RES" nodeB "$T/wrong.key") == closed ]] || fail "the witness answered a wrong key"
[[ $(client "$RES" nodeX "$T/key") == closed ]] || fail "the witness answered a node that is not a member"
[[ $(client other nodeB "$T/key") == closed ]] || fail "the witness answered for a resource it does not witness"
out=$(client "$RES" nodeB "$T/key" claim)
[[ $out == *'"granted":false'*'"holder":"nodeA"'*witness-proved* ]] \
  || fail "a claim by hand against a live holder: $out"
grep -q "nodeB at .* did not authenticate: authentication failed" "$T/nodeW.log" \
  || fail "the wrong key is not logged"
[[ $(role_of nodeA "$RES") == primary ]] || fail "a refused claim changed the primary"
ctl_on nodeW status "$RES" | grep -q witness || fail "the witness stopped answering"
pass "the witness refuses a wrong key, a stranger and an unknown resource, and names the holder"

# --- 1. kill -9 of the primary ----------------------------------------------------------------
start_writer nodeA "$RES" w1a 0
wait_acks w1a 50
wait_witness_in_sync "$RES"
start_follower nodeB "$RES" w1b 2048
wait_until 10 "the follower w1b is trying nodeB's export" test -s "$T/w1b.out"
fault=$(now)
kill9_node nodeA
wait_acks w1b 50 30
stop_writer "$FOLLOWER_PID"
wait "$WRITER_PID" 2>/dev/null || true
python3 "$LIB/two_primaries_check.py" --before "$T/w1a.times" --after "$T/w1b.times" \
  --fault "$fault" | tee "$T/check1.out" | sed 's/^/  /'
grep -q "check: ok" "$T/check1.out" || fail "both nodes completed writes at the same time"
took=$(sed -n 's/.*failover time \([0-9.]*\) s.*/\1/p' "$T/check1.out")
python3 -c "import sys; sys.exit(0 if $took <= $BOUND else 1)" \
  || fail "failover took $took s, more than the bound $BOUND s"
echo "  failover time: $took s (timeout $TIMEOUT s)"
[[ $(role_of nodeB "$RES") == primary ]] || fail "nodeB is not primary"
verify_on nodeB "$RES" w1a w1b
grep -q "nodeB promote $RES" "$T/events.log" || fail "no promote event on nodeB"
pass "kill -9 of the primary: nodeB took over in $took s, nothing acknowledged lost"

start_data_node nodeA
wait_role nodeA "$RES" secondary 20
wait_status nodeB "$RES" complete 60
wait_status nodeA "$RES" complete 30
same_regions "$RES"
pass "the old primary rejoined as secondary by itself; data identical"

# --- 2. the primary (nodeB) cut off from both others -------------------------------------------
start_writer nodeB "$RES" w2b 4096
wait_acks w2b 50
wait_witness_in_sync "$RES"
start_follower nodeA "$RES" w2a 6144
wait_until 10 "the follower w2a is trying nodeA's export" test -s "$T/w2a.out"
isolate nodeB
fault=$(now)  # once every relay confirmed: the partition is in effect
wait_role nodeA "$RES" primary 30
wait_acks w2a 50 30
stop_writer "$FOLLOWER_PID"
stop_writer "$WRITER_PID"
python3 "$LIB/two_primaries_check.py" --before "$T/w2b.times" --after "$T/w2a.times" \
  --fault "$fault" | tee "$T/check2.out" | sed 's/^/  /'
grep -q "check: ok" "$T/check2.out" || fail "both nodes completed writes at the same time"
verify_on nodeA "$RES" w2b w2a
wait_role nodeB "$RES" secondary 30
grep -q "nodeB lease-lost $RES" "$T/events.log" || fail "no lease-lost event on nodeB"
grep -q "nodeB demote $RES" "$T/events.log" || fail "no demote event on nodeB"
reconnect nodeB
wait_status nodeA "$RES" complete 60
wait_status nodeB "$RES" complete 30
same_regions "$RES"
pass "a cut-off primary stopped before the other took over, stepped down and rejoined"

# --- 3. the witness dies: nothing changes ------------------------------------------------------
kill9_node nodeW
sleep $((TIMEOUT * 3))
[[ $(role_of nodeA "$RES") == primary && $(role_of nodeB "$RES") == secondary ]] \
  || fail "roles changed when only the witness went away"
[[ $(json_field nodeA "$RES" witness) == disconnected ]] || fail "nodeA does not show the witness gone"
python3 "$LIB/acked_writer.py" --socket "$T/a/$RES.nbd" --export "$RES" --seed 3 \
  --ack-log "$T/w3.ack" --count 200 --depth 4 --first-block 8192 --span-blocks 2048 \
  >"$T/w3.out" 2>&1 || { cat "$T/w3.out" >&2; fail "writes stopped without the witness"; }
start_node nodeW
pass "without the witness the roles stay and writes complete"

# --- 4. a stale secondary is never promoted automatically --------------------------------------
for _ in $(seq 100); do
  [[ $(json_field nodeA "$RES" witness) == connected ]] && break
  sleep 0.1
done
relay A-B cut
relay B-A cut
# Writes all over the disk: nearly every extent waits for the resync, which
# then takes several round trips over the slow link below.
python3 "$LIB/acked_writer.py" --socket "$T/a/$RES.nbd" --export "$RES" --seed 4 \
  --ack-log "$T/w4.ack" --count 2000 --depth 8 --first-block 0 --span-blocks 16000 \
  >"$T/w4.out" 2>&1 || { cat "$T/w4.out" >&2; fail "the primary could not write without its secondary"; }
# The link comes back slow: the resync to nodeB starts and is still
# running when nodeA dies.
# (1 s each way; at most 16 MiB of resync in flight: several seconds.)
relays "delay 1000" A-B B-A
killed=no
for _ in $(seq 300); do
  if ctl_on nodeA list "$RES" | grep -q "synchronization: primary->secondary"; then
    kill9_node nodeA
    killed=yes
    break
  fi
  sleep 0.05
done
[[ $killed == yes ]] || fail "no resync started on nodeA"
relays pass A-B B-A
sleep $((TIMEOUT * 4))
[[ $(role_of nodeB "$RES") == secondary ]] || fail "a stale secondary was promoted"
why=$(json_field nodeB "$RES" eligibility)
echo "  nodeB: $why"
[[ $why == *"missing writes"* ]] || fail "nodeB does not say why it is not promoted: $why"
pass "a secondary that missed writes is not promoted and says why"
