#!/usr/bin/env bash
# A stranger at the witness (docs/SECURITY.md): without the key, a
# connection that sends a plaintext witness_hello naming the primary, and one
# that opens a session naming the primary and never proves anything, both
# sending keepalives, displace nothing: the primary's witness link stays up
# (the witness lists it as connected throughout, and never logs a
# replacement), the stranger's plaintext hello is closed at once, so is an
# unproven session that sends keepalives (a keepalive is no proof), a silent
# one at the 10 s authentication deadline, and afterwards failover still works (kill -9 of the primary:
# nodeB takes over).
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)
source "$LIB/witness.bash"
PY=/usr/bin/python3
$PY -c 'import cryptography' 2>/dev/null || { echo "SKIP: python3-cryptography is missing"; exit 77; }

RES=sw
start_failover_cluster "$RES" 2
ctl_on nodeA role primary "$RES"
wait_status nodeA "$RES" complete 30
wait_witness_in_sync "$RES"
members() {
  ctl_on nodeW status --json "$RES" 2>/dev/null \
    | python3 -c 'import json,sys; print(",".join(json.load(sys.stdin)["resources"][0]["members_connected"]))'
}
[[ $(members) == nodeA,nodeB ]] || fail "the witness does not list both members: $(members)"

$PY "$LIB/attacker.py" stranger-witness "$PORT_W" "$RES" nodeA --hold 14 > "$T/stranger.json" &
stranger=$!
STARTED_PIDS+=("$stranger")
lost=0
while kill -0 "$stranger" 2>/dev/null; do
  [[ $(members) == *nodeA* ]] || lost=$((lost + 1))
  [[ $(role_of nodeA "$RES") == primary ]] || fail "nodeA stopped being primary during the stranger's visit"
  sleep 0.2
done
wait "$stranger" || fail "the attacker failed"
cat "$T/stranger.json"
[[ $lost -eq 0 ]] || fail "the primary's witness link was missing $lost times while the stranger talked"
grep -q "replaced by a new connection" "$T/nodeW.log" && fail "the witness replaced a link"
closed_after() { json_get "$T/stranger.json" "j['closed_after_s'].get('$1', 99)"; }
plain=$(closed_after witness_hello)
chatty=$(closed_after session_open)
silent=$(closed_after silent)
python3 -c "import sys; sys.exit(0 if $plain <= 2 else 1)" \
  || fail "a plaintext witness_hello was kept for $plain s"
python3 -c "import sys; sys.exit(0 if $chatty <= 2 else 1)" \
  || fail "an unproven session sending keepalives was kept for $chatty s"
python3 -c "import sys; sys.exit(0 if 5 <= $silent <= 12 else 1)" \
  || fail "an unproven silent session was closed after $silent s (the deadline is 10 s)"
pass "a stranger naming the primary displaces nothing; closed after $plain s, $chatty s" \
  "(keepalives before proof), $silent s (silent, the deadline)"

# Failover still works.
kill9_node nodeA
wait_role nodeB "$RES" primary 20
pass "after the stranger's visit, kill -9 of the primary still fails over to nodeB"
