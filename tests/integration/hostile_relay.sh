#!/usr/bin/env bash
# An attacker on the path (docs/SECURITY.md): the primary's link to its
# secondary runs through lib/attacker.py mitm, which flips one bit of a write
# frame, holds one write frame back behind the next (reorder), sends an
# earlier write frame again after newer data overwrote it (replay), or sends
# a fabricated write frame (inject). Each attack, twice: the secondary
# detects it (its log names the refused frame), drops the link, and nothing
# changes on its disk (its data region equals the copy taken before the
# attack); then the link comes back by itself, resyncs, and both data
# regions are identical.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)
PY=/usr/bin/python3
$PY -c 'import cryptography' 2>/dev/null || { echo "SKIP: python3-cryptography is missing"; exit 77; }
command -v nbdcopy >/dev/null || { echo "SKIP: nbdcopy is missing"; exit 77; }

res=mi
printf 'nobody on the path knows this\n' > "$T/key"
chmod 600 "$T/key"
write_pair_config "$res" fullsync "  secret $T/key"
$PY "$LIB/attacker.py" mitm --target "$PORT_B" --control "$T/mitm.ctl" > "$T/mitm.port" \
  2> "$T/mitm.log" &
STARTED_PIDS+=("$!")
for _ in $(seq 50); do [[ -s $T/mitm.port ]] && break; sleep 0.1; done
MITM=$(head -1 "$T/mitm.port")
[[ -n $MITM ]] || fail "the relay did not start"
sed -i "s|remote tcp://127.0.0.1:$PORT_B|remote tcp://127.0.0.1:$MITM|" "$T/hast.conf"
mitm() { $PY "$LIB/attacker.py" control "$T/mitm.ctl" "$1" | grep -q "^ok" || fail "relay: $1 failed"; }
start_pair "$res"

write_block() { # write_block SEED: 1 MiB of pseudo-random bytes at offset 0 of the primary
  $PY -c "import random,sys; random.seed($1); sys.stdout.buffer.write(random.randbytes(1 << 20))" \
    > "$T/block"
  nbdcopy "$T/block" "$(nbd_uri_of nodeA "$res")" || fail "a write on the primary failed"
}
detected() { grep -c "fails authentication" "$T/nodeB.log" || true; }

seed=1
for round in 1 2; do
  for attack in flip reorder replay inject; do
    mitm pass
    wait_status nodeA "$res" complete 60
    before=$(detected)
    case $attack in
      flip | reorder)
        region_of nodeB "$res" "$T/snap"
        mitm "$attack"
        write_block $((seed++))
        ;;
      replay | inject)
        write_block $((seed++))   # the relay remembers a write frame of this data
        mitm freeze
        write_block $((seed++))   # newer data over it
        region_of nodeB "$res" "$T/snap"
        mitm "$attack"
        ;;
    esac
    wait_status nodeA "$res" degraded 30
    for _ in $(seq 50); do [[ $(detected) -gt $before ]] && break; sleep 0.1; done
    [[ $(detected) -gt $before ]] || fail "round $round: the secondary did not detect $attack"
    region_of nodeB "$res" "$T/after"
    cmp -s "$T/snap" "$T/after" || fail "round $round: $attack changed the secondary's disk"
    pass "round $round: $attack detected, the link dropped, nothing of it on the secondary's disk"
  done
done
grep "fails authentication" "$T/nodeB.log" | head -4 | sed 's/^/  /'

mitm pass
wait_status nodeA "$res" complete 60
stop_node nodeA
stop_node nodeB
same_regions "$res"
pass "the link came back after every attack, resynced, and both data regions are identical"
