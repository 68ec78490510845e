#!/usr/bin/env bash
# resync-checksum on: after an outage the resync compares SHA-256 block
# digests of every dirty extent with the secondary first and moves only the
# blocks that differ. A memsync pair nodeA primary / nodeB secondary, one
# resource of 64 MiB in 1 MiB extents, `resync-checksum on`.
#   1. Random data fills the export; nodeB is stopped; the whole export is
#      written again through nodeA with the same bytes except three 4 KiB
#      blocks (the first, one inside an extent, the last), so every extent
#      is dirty and three blocks differ. nodeB comes back: the resync covers
#      the whole data region, moves exactly 3 x 4096 bytes and finds the
#      rest identical (nodeA's log line), and both data regions are
#      byte-identical.
#   2. The same outage with `resync-checksum off` set by a reload (SIGHUP):
#      the resync moves the whole data region, as before this option, and
#      the regions are identical again.
#   3. The option on again, and the outage repeated while fio writes random
#      blocks through nodeA during the resync: it ends complete and both
#      regions are identical once the writer stopped (digests never hide a
#      concurrent write).
#   4. Every block different: each extent moves whole (the buffer read for
#      the digests goes as it is), and the regions are identical.
# Usage: resync_checksum.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

res=rc
BLOCK=4096
write_pair_config "$res" memsync "  resync-checksum on"
start_pair "$res"
ctl_on nodeA dump --json "$res" > "$T/dump.json"
datasize=$(json_get "$T/dump.json" "j['resources'][0]['datasize']")
uri=$(nbd_uri_of nodeA "$res")

head -c "$datasize" /dev/urandom > "$T/data"
nbdcopy "$T/data" "$uri" || fail "nbdcopy of the random data"
wait_status nodeA "$res" complete 30

# plant BLOCK_INDEX...: changes those 4 KiB blocks of $T/data.
plant() {
  local b
  for b in "$@"; do
    head -c $BLOCK /dev/urandom | dd of="$T/data" bs=$BLOCK seek="$b" conv=notrunc status=none
  done
}

# outage: nodeB stops, nodeA rewrites the whole region from $T/data, nodeB
# comes back as secondary; returns once nodeA is complete again.
outage() {
  stop_node nodeB
  wait_status nodeA "$res" degraded 30
  nbdcopy "$T/data" "$uri" || fail "nbdcopy during the outage"
  start_node nodeB
  ctl_on nodeB role secondary "$res"
  wait_status nodeA "$res" complete 120
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

# --- 1. three blocks differ --------------------------------------------------------------
blocks=$((datasize / BLOCK))
plant 0 $((17 * 256 + 2)) $((blocks - 1))
outage
[[ $(last_sync bytes) -eq $datasize ]] \
  || fail "the resync covered $(last_sync bytes) bytes, not the whole region ($datasize)"
[[ $(last_sync moved) -eq $((3 * BLOCK)) ]] \
  || fail "resync-checksum on moved $(last_sync moved) bytes, not the 3 differing blocks"
[[ $(last_sync identical) -eq $((datasize - 3 * BLOCK)) ]] \
  || fail "identical bytes $(last_sync identical), expected $((datasize - 3 * BLOCK))"
same_regions "$res"
pass "resync-checksum on: $datasize bytes dirty, 3 blocks differ, 12288 bytes moved, regions identical"

# --- 2. off by a reload: everything moves -----------------------------------------------
sed -i 's/resync-checksum on/resync-checksum off/' "$T/hast.conf"
kill -HUP "${NODE_PID[nodeA]}"
wait_until 30 "nodeA to reload" grep -q "$res: configuration reloaded" "$T/nodeA.log"
plant 5
outage
[[ $(last_sync moved) -eq $datasize ]] \
  || fail "resync-checksum off moved $(last_sync moved) bytes, not the whole region"
same_regions "$res"
pass "resync-checksum off (reloaded): the whole region moved, regions identical"

# --- 3. on again, with a writer during the resync ---------------------------------------
sed -i 's/resync-checksum off/resync-checksum on/' "$T/hast.conf"
kill -HUP "${NODE_PID[nodeA]}"
wait_until 30 "nodeA to reload again" \
  bash -c "[[ \$(grep -c '$res: configuration reloaded' '$T/nodeA.log') -ge 2 ]]"
plant 9 $((40 * 256))
stop_node nodeB
wait_status nodeA "$res" degraded 30
nbdcopy "$T/data" "$uri" || fail "nbdcopy during the third outage"
fio_bg writer --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --iodepth=4 \
  --time_based --runtime=600 --size="$datasize"
writer=$FIO_PID
start_node nodeB
ctl_on nodeB role secondary "$res"
wait_status nodeA "$res" complete 120
kill -INT "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
same_regions "$res"
pass "resync-checksum on under client writes: complete, regions identical"

# --- 4. on, with every block different: each extent goes whole ---------------------------
head -c "$datasize" /dev/urandom > "$T/data"
outage
[[ $(last_sync moved) -eq $datasize && $(last_sync identical) -eq 0 ]] \
  || fail "every block differs: moved $(last_sync moved), identical $(last_sync identical)"
same_regions "$res"
pass "resync-checksum on, every block different: the whole region moved, regions identical"
