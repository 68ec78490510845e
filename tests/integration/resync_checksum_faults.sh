#!/usr/bin/env bash
# resync-checksum on (docs/PROTOCOL.md, "Checksum resync") where
# resync_checksum.sh does not go: the copy from the secondary, and a node
# that cannot read (digest) its copy. A memsync pair, 64 MiB in 1 MiB
# extents, both nodes running hastd_faults (rules in $T/faults-a, -b;
# tests/fault/fault_env.hpp), no fault unless a part sets one.
#   A. nodeA (primary) stops; nodeB is made primary and the whole export is
#      written there with the same bytes except three blocks; nodeB stops.
#      nodeA comes back as primary with nodeB secondary: nodeA is the stale
#      side and syncs secondary -> primary. The resync covers the whole
#      region, moves exactly the three blocks, and both regions hold what
#      nodeB's client wrote.
#   B. The same, with nodeA's reads of two extents failing (EIO) while it
#      digests them: those extents come whole from the secondary (the
#      digests' answer ignored), the other differing block alone; the
#      resync completes, nodeA counts the read errors, both regions hold
#      what was written.
#   C. The plain direction (primary -> secondary) with nodeB's reads of one
#      extent failing, so that nodeB cannot digest it: the resync stops,
#      reported (`synchronization interrupted (remote digest error)`, the
#      syncintr hook), the resource is not complete and nodeA's copy still
#      holds everything its client wrote. Once nodeB's disk reads again and
#      nodeB reconnects, the resync ends complete and both regions hold it.
# Usage: resync_checksum_faults.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"
[[ -x $BUILD/hastd_faults ]] || fail "$BUILD/hastd_faults is not built"

res=rf
BLOCK=4096
for n in a b; do
  cat > "$T/hastd-faulty-$n" <<EOF
#!/bin/sh
exec "$BUILD/hastd_faults" --faults "$T/faults-$n" "\$@"
EOF
  chmod +x "$T/hastd-faulty-$n"
done
cat > "$T/hook.sh" <<EOF
#!/bin/sh
echo "\$*" >> "$T/events"
EOF
chmod +x "$T/hook.sh"

# set_faults a|b TEXT: new rules for that node, renamed over the old file.
# The daemons read them at start here (each part restarts the node it
# faults), so no wait is needed.
set_faults() {
  printf '%s\n' "$2" > "$T/faults-$1.new"
  mv "$T/faults-$1.new" "$T/faults-$1"
}
set_faults a ""
set_faults b ""

write_pair_config "$res" memsync "  resync-checksum on
  exec $T/hook.sh"
PAIR_HASTD_A=$T/hastd-faulty-a PAIR_HASTD_B=$T/hastd-faulty-b start_pair "$res"
ctl_on nodeA dump --json "$res" > "$T/dump.json"
datasize=$(json_get "$T/dump.json" "j['resources'][0]['datasize']")
localoff=$(json_get "$T/dump.json" "j['resources'][0]['localoff']")
E=$(json_get "$T/dump.json" "j['resources'][0]['extentsize']")
[[ $E -eq $((1 << 20)) ]] || fail "extent size $E, expected 1 MiB"

head -c "$datasize" /dev/urandom > "$T/data"
nbdcopy "$T/data" "$(nbd_uri_of nodeA "$res")" || fail "nbdcopy of the random data"
wait_status nodeA "$res" complete 30
wait_until 30 "nodeB to have written everything" secondary_caught_up "$res"

# plant BLOCK_INDEX...: changes those 4 KiB blocks of $T/data.
plant() {
  local b
  for b in "$@"; do
    head -c $BLOCK /dev/urandom | dd of="$T/data" bs=$BLOCK seek="$b" conv=notrunc status=none
  done
}

# last_sync FIELD: from nodeA's newest "synchronization complete" line:
# bytes (synced), moved, identical.
last_sync() {
  local line
  line=$(grep "$res: synchronization complete:" "$T/nodeA.log" | tail -1)
  [[ -n $line ]] || fail "no 'synchronization complete' line in nodeA's log"
  case $1 in
    bytes) sed -E 's/.*complete: ([0-9]+) bytes in.*/\1/' <<<"$line" ;;
    moved) sed -E 's/.*\(([0-9]+) bytes moved.*/\1/' <<<"$line" ;;
    identical) sed -E 's/.* ([0-9]+) found identical.*/\1/' <<<"$line" ;;
  esac
}
count() { grep -c -- "$1" "$2" 2>/dev/null || true; }

# both_hold_data WHAT: both data regions are byte-identical and equal to
# $T/data (what the clients wrote last).
both_hold_data() {
  same_regions "$res"
  region_of nodeA "$res" "$T/region"
  cmp -s "$T/region" "$T/data" || fail "$1: the data regions do not hold what the client wrote"
  rm -f "$T/region"
}

# stale_primary_outage: nodeA stops, nodeB becomes primary and the client
# writes $T/data there, nodeB stops; then nodeA returns as primary with
# nodeB secondary and catches up from it. Returns once nodeA is complete.
stale_primary_outage() {
  stop_node nodeA
  ctl_on nodeB role primary "$res"
  nbdcopy "$T/data" "$(nbd_uri_of nodeB "$res")" || fail "nbdcopy on nodeB"
  stop_node nodeB
  HASTD=$T/hastd-faulty-b start_node nodeB
  HASTD=$T/hastd-faulty-a start_node nodeA
  ctl_on nodeB role secondary "$res"
  ctl_on nodeA role primary "$res"
  wait_status nodeA "$res" complete 120
}

# --- A. the stale primary catches up from the secondary ------------------------------
blocks=$((datasize / BLOCK))
plant 0 $((17 * 256 + 2)) $((blocks - 1))
caught=$(count "caught up with the secondary" "$T/nodeA.log")
stale_primary_outage
[[ $(count "caught up with the secondary" "$T/nodeA.log") -gt $caught ]] \
  || fail "A: nodeA did not sync from the secondary (no 'caught up with the secondary' line)"
grep -q "syncstart $res" "$T/events" || fail "A: no syncstart event"
[[ $(last_sync bytes) -eq $datasize ]] \
  || fail "A: the resync covered $(last_sync bytes) bytes, not the whole region ($datasize)"
[[ $(last_sync moved) -eq $((3 * BLOCK)) ]] \
  || fail "A: the copy from the secondary moved $(last_sync moved) bytes, not the 3 differing blocks"
[[ $(last_sync identical) -eq $((datasize - 3 * BLOCK)) ]] \
  || fail "A: identical bytes $(last_sync identical), expected $((datasize - 3 * BLOCK))"
both_hold_data A
pass "A. secondary -> primary with resync-checksum on: 3 blocks moved of $datasize, regions hold nodeB's writes"

# --- B. nodeA cannot read two extents while it digests them ---------------------------
plant $((5 * 256 + 9)) $((30 * 256 + 1))
set_faults a "read $T/a/$res.img $((localoff + 5 * E)) $E
read $T/a/$res.img $((localoff + 20 * E)) $E"
stale_primary_outage
set_faults a ""
grep -q "cannot read extent 5 for the resync" "$T/nodeA.log" \
  || fail "B: nodeA's read of extent 5 did not fail (the fault did not hold)"
grep -q "cannot read extent 20 for the resync" "$T/nodeA.log" \
  || fail "B: nodeA's read of extent 20 did not fail (the fault did not hold)"
! grep -q "$res: synchronization interrupted" "$T/nodeA.log" \
  || fail "B: the resync was interrupted: $(grep "synchronization interrupted" "$T/nodeA.log" | tail -1)"
# nodeA restarted in this part, so its counters count this part only.
ctl_on nodeA list --json "$res" > "$T/list.json"
read_errors=$(json_get "$T/list.json" "j['resources'][0]['counters']['read_errors']")
[[ $read_errors -ge 2 ]] || fail "B: nodeA counts $read_errors local read errors, expected at least 2"
[[ $(last_sync moved) -eq $((2 * E + BLOCK)) ]] \
  || fail "B: moved $(last_sync moved) bytes, expected the 2 unreadable extents whole and 1 block ($((2 * E + BLOCK)))"
both_hold_data B
pass "B. nodeA's digest reads of 2 extents failed: $read_errors read errors counted, those extents came whole ($(last_sync moved) bytes moved), resync complete, regions hold nodeB's writes"

# --- C. nodeB cannot digest one extent: primary -> secondary stops, reported -----------
plant $((7 * 256 + 3))
stop_node nodeB
wait_status nodeA "$res" degraded 30
nbdcopy "$T/data" "$(nbd_uri_of nodeA "$res")" || fail "nbdcopy on nodeA during the outage"
set_faults b "read $T/b/$res.img $((localoff + 7 * E)) $E"
intr=$(count "$res: synchronization interrupted (remote digest error)" "$T/nodeA.log")
HASTD=$T/hastd-faulty-b start_node nodeB
ctl_on nodeB role secondary "$res"
interrupted() {
  [[ $(count "$res: synchronization interrupted (remote digest error)" "$T/nodeA.log") -gt $intr ]]
}
wait_until 60 "nodeA to report the resync interrupted by nodeB's digest error" interrupted
wait_until 10 "the syncintr hook" grep -q "syncintr $res" "$T/events"
ctl_on nodeA status "$res" | grep -q "^${res}[[:space:]]*complete" \
  && fail "C: nodeA says complete although nodeB could not digest extent 7"
region_of nodeA "$res" "$T/region"
cmp -s "$T/region" "$T/data" || fail "C: nodeA's copy lost what its client wrote"
rm -f "$T/region"
pass "C. nodeB's digest read failed: resync interrupted and reported, not complete, nodeA's copy intact"

set_faults b ""
ctl_on nodeB role init "$res"
ctl_on nodeB role secondary "$res"
wait_status nodeA "$res" complete 120
both_hold_data C
pass "C. after nodeB's disk reads again and it reconnects: complete, regions hold nodeA's writes"
stop_node nodeA
stop_node nodeB
