#!/usr/bin/env bash
# failover auto: the lease itself keeps two primaries apart in time
# (docs/FAILOVER.md, "Why it is safe", 1.). Three hastd as in
# witness_failover.sh (lib/witness.bash, timeout 2 s).
#
# In witness_failover.sh a cut-off primary stops completing writes at once
# (its secondary and the witness go at the same instant), so the lease's
# length is never what stops it. Here the primary first loses only its
# secondary (a visible cut): it tells the witness in_sync = false and goes on
# under its lease. Then the witness is cut off from it (a black hole) while a
# client keeps writing: the primary completes writes until its lease ends,
# then emits lease-lost and steps down. Meanwhile `hastctl role primary` is
# tried on nodeB again and again (a manual claim needs only the old lease to
# have run out plus the margin). Asserted:
#  - the old primary completed writes after the witness was cut off (the lease
#    carried them: the check below is not vacuous);
#  - every one of its completions is earlier than nodeB's first completion;
#  - the witness refused nodeB at least once before it granted, naming the
#    holder, and granted no earlier than about L after the cut;
#  - nodeA emitted lease-lost and is secondary.
# Acknowledged writes of nodeA that nodeB lacks are not checked: promoting a
# node by hand that the witness knows to be behind is the operator's choice
# (a split brain, docs/FAILOVER.md 5.).
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)
source "$LIB/witness.bash"

RES=lease
TIMEOUT=2

start_failover_cluster "$RES" "$TIMEOUT" 32M
ctl_on nodeA role primary "$RES"
wait_status nodeA "$RES" complete 30
wait_witness_in_sync "$RES"
pass "nodeA is primary, the pair complete, the witness knows it in sync"

start_writer nodeA "$RES" wa 0
writer_a=$WRITER_PID
wait_acks wa 50

# 1. Only the secondary goes: the primary goes on without it.
relays cut A-B B-A
n=$(acks_in "$T/wa.times")
wait_acks wa $((n + 50)) 20
for _ in $(seq 100); do
  ctl_on nodeW list "$RES" 2>/dev/null | grep -q "reports its secondary missing writes" && break
  sleep 0.1
done
ctl_on nodeW list "$RES" | grep -q "reports its secondary missing writes" \
  || fail "the witness does not know that nodeB misses writes"
pass "without its secondary nodeA goes on writing under its lease"

# 2. Now the witness goes too; a client keeps writing to nodeA.
before_cut=$(now)
relays blackhole A-W
cut_at=$(now)  # once the relay confirmed it
refused=0
granted_at=""
for _ in $(seq 200); do
  if ctl_on nodeB role primary "$RES" >"$T/claim.out" 2>&1; then
    granted_at=$(now)
    break
  fi
  refused=$((refused + 1))
  cp "$T/claim.out" "$T/claim-refused.out"
  sleep 0.05
done
[[ -n $granted_at ]] || { cat "$T/claim.out" >&2; fail "nodeB was never granted the lease by hand"; }
start_follower nodeB "$RES" wb 4096
wait_acks wb 20 20
stop_writer "$FOLLOWER_PID"
wait "$writer_a" 2>/dev/null || true  # ended by lease-lost's EIO
sed 's/^/  nodeA writer: /' "$T/wa.out"

[[ $refused -ge 1 ]] || fail "the witness granted nodeB's first claim: nodeA's lease was not waited out"
echo "  last refusal: $(cat "$T/claim-refused.out")"
grep -q "nodeA holds the lease" "$T/claim-refused.out" || fail "the refusal does not name the holder"
# The witness frees the lease L + M after the last renew it received, which
# may have come up to L/4 before the cut: at least L after the cut, less the
# renew's jitter; L * 3/4 from a time taken before the cut began.
wait_gap=$(python3 -c "print('%.2f' % ($granted_at - $before_cut))")
echo "  nodeB granted $wait_gap s after the cut began, after $refused refused claim(s)"
python3 -c "import sys; sys.exit(0 if $granted_at - $before_cut >= $TIMEOUT * 0.75 else 1)" \
  || fail "nodeB was granted the lease $wait_gap s after nodeA's witness link was cut (< 3/4 L)"

under_lease=$(python3 -c "
print(sum(1 for l in open('$T/wa.times') if len(l.split()) == 3 and float(l.split()[2]) > $cut_at))")
echo "  nodeA completed $under_lease write(s) after its witness link was cut"
[[ $under_lease -ge 1 ]] || fail "nodeA completed nothing after the cut: the lease was not exercised"

python3 "$LIB/two_primaries_check.py" --before "$T/wa.times" --after "$T/wb.times" \
  --fault "$cut_at" | tee "$T/check.out" | sed 's/^/  /'
grep -q "check: ok" "$T/check.out" || fail "nodeA completed writes after nodeB's first"
pass "nodeA's completions under its lease all precede nodeB's first"

wait_role nodeA "$RES" secondary 20
for _ in $(seq 50); do
  grep -q "nodeA lease-lost $RES" "$T/events.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "nodeA lease-lost $RES" "$T/events.log" || fail "no lease-lost event on nodeA"
pass "nodeA's lease ran out: lease-lost, and it stepped down"
