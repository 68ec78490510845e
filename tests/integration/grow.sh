#!/usr/bin/env bash
# hastctl grow: online growth of a memsync pair (docs/METADATA.md, "Online
# growth"). nodeA primary, nodeB secondary, resource gr created on 32 MiB
# provider files with 1 MiB extents; the files stand in for LVM volumes
# (`truncate` plays lvextend).
#   1. 16 MiB of random data are written through nodeA's export (checked
#      again after every step below).
#   2. Failure modes, nothing changed by any of them (both datasizes as
#      before): neither provider grew (exit 2, EHAST_INVALID, "did not grow"); only
#      nodeA's grew (refused by the secondary, the message names nodeB and
#      its reason); on the secondary (exit 22, names the primary); an unknown
#      resource (exit 1); no operand (EX_USAGE).
#   3. Both files grow to 64 MiB (nodeB's new area gets 2 MiB of random
#      bytes, as a reused volume would hold); `hastctl grow` runs while fio writes (and
#      verifies) [16 MiB, 32 MiB) through the export: it prints the new size,
#      both nodes' `list --json` show it, the `grow` event reaches the
#      stream, a new NBD connection sees the new size, the new space is
#      resynced (status complete), fio's verify passes, `hastctl verify`
#      finds 0 differing blocks and both data regions are byte-identical.
#   4. Random data written to the new space through a new connection reads
#      back; the pair stays identical.
#   5. --assume-clean (both files to 96 MiB, sparse zeros on both): no
#      resync, verify finds 0 differences.
#   6. kill -9 inside the grow, placed by failing the victim's metadata
#      slot writes (hastd_faults): the primary after the secondary grew
#      (grow fails saying the secondary grew; nodeA restarts with the old
#      size, nodeB has the new one, the pair connects anyway and nodeA logs
#      the interrupted grow), then the secondary during its own grow (the
#      primary is refused and unchanged; nodeB restarts with the old size).
#      Each time a second `hastctl grow` completes the pair, the data is
#      intact and verify finds 0.
#   7. Slots too small: the files grow to 40 GiB (sparse), past what the
#      metadata slots can describe with 1 MiB extents (32 GiB): refused,
#      the message gives the limit and says to recreate; nothing changed.
#   8. A second resource created larger on nodeA than on nodeB: the
#      secondary refuses the primary at the handshake, saying it is smaller.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

MiB=$((1 << 20))
res=gr
# Both nodes run hastd_faults (step 6 fails their metadata writes on
# purpose); with no rules it is hastd.
[[ -x $BUILD/hastd_faults ]] || fail "$BUILD/hastd_faults is not built"
: > "$T/faults"
printf '#!/bin/sh\nexec "%s" --faults "%s" "$@"\n' "$BUILD/hastd_faults" "$T/faults" > "$T/hastd-faulty"
chmod +x "$T/hastd-faulty"
HASTD=$T/hastd-faulty
write_pair_config "$res" memsync
# gs (step 8): created larger on nodeA than on nodeB.
cat >> "$T/hast.conf" <<CONF
resource gs {
  device off
  replication memsync
  timeout 5
  on nodeA {
    local $T/a/gs.img
    remote tcp://127.0.0.1:$PORT_B
    nbd uds://$T/a/gs.nbd
  }
  on nodeB {
    local $T/b/gs.img
    remote tcp://127.0.0.1:$PORT_A
    nbd uds://$T/b/gs.nbd
  }
}
CONF
ctl_on nodeA create -m 32M -e 1M "$res"
ctl_on nodeB create -m 32M -e 1M "$res"
start_node nodeA
start_node nodeB
ctl_on nodeB role secondary "$res"
ctl_on nodeA role primary "$res"
wait_status nodeA "$res" complete 30
URI=$(nbd_uri_of nodeA "$res")

# datasize NODE: the resource's data size in NODE's `list --json`.
datasize() {
  ctl_on "$1" list --json "$res" > "$T/ds-$1.json"
  json_get "$T/ds-$1.json" "j['resources'][0]['datasize']"
}
# both_sizes_are N: both nodes report data size N.
both_sizes_are() { [[ $(datasize nodeA) -eq $1 && $(datasize nodeB) -eq $1 ]]; }
# check_before: the first 16 MiB still hold what step 1 wrote.
check_before() {
  nbdcopy "$URI" "$T/now" || fail "nbdcopy read of the export"
  cmp -n $((16 * MiB)) "$T/before" "$T/now" || fail "data written before the grow changed ($1)"
  rm -f "$T/now"
}
# verify_clean: hastctl verify finds 0 differing blocks.
verify_clean() {
  local out
  out=$(ctl_on nodeA verify "$res" 2>&1) || fail "hastctl verify: $out"
  wait_until 120 "the verify of $res to end" verify_ended
  ctl_on nodeA list --json "$res" > "$T/v.json"
  [[ $(json_get "$T/v.json" "j['resources'][0]['verify']['outcome']") == complete ]] \
    || fail "verify did not complete: $(cat "$T/v.json")"
  [[ $(json_get "$T/v.json" "j['resources'][0]['verify']['differing_blocks']") -eq 0 ]] \
    || fail "verify found differences after the grow ($1): $(cat "$T/v.json")"
}
verify_ended() {
  ctl_on nodeA list --json "$res" > "$T/ve.json"
  [[ $(json_get "$T/ve.json" "j['resources'][0]['verify']['active']") == False ]]
}

# ---- 1. data before the grow ------------------------------------------------------------
OLD=$(datasize nodeA)
[[ $OLD -eq $((32 * MiB - 16384)) ]] || fail "unexpected data size $OLD"
head -c $((16 * MiB)) /dev/urandom > "$T/before"
nbdcopy "$T/before" "$URI" || fail "nbdcopy of the data before the grow"
check_before "step 1"
pass "16 MiB written before the grow"

# ---- 2. failure modes --------------------------------------------------------------------
expect_exit 2 "did not grow" ctl_on nodeA grow "$res"
[[ $ERR == *"lvextend"* ]] || fail "the error does not say what to do: $ERR"
plain_message "$ERR"
both_sizes_are "$OLD" || fail "a refused grow changed the data size"

truncate -s 64M "$T/a/$res.img"
expect_fail "nodeB" ctl_on nodeA grow "$res"
[[ $ERR == *"did not grow"* || $ERR == *"at most"* ]] || fail "the secondary's reason is missing: $ERR"
plain_message "$ERR"
both_sizes_are "$OLD" || fail "a grow the secondary refused changed a data size"
pass "a secondary whose provider did not grow refuses; nothing changed"

expect_exit 22 "primary" ctl_on nodeB grow "$res"
expect_exit 1 "" ctl_on nodeA grow nosuch
expect_exit 64 "expected" ctl_on nodeA grow
both_sizes_are "$OLD" || fail "a refused grow changed the data size"
pass "failure modes"

# ---- 3. grow under load ------------------------------------------------------------------
truncate -s 64M "$T/b/$res.img"
# The volumes' new areas hold unrelated bytes: nodeB's gets random ones,
# which the resync of the new space must replace.
dd if=/dev/urandom of="$T/b/$res.img" bs=1M seek=40 count=2 conv=notrunc status=none
NEW=$((64 * MiB - 16384))
ctl_on nodeA events --json "$res" > "$T/events.json" 2>&1 &
EVENTS_PID=$!
STARTED_PIDS+=("$EVENTS_PID")
stream_up() { grep -q '"event":"exists"' "$T/events.json"; }
wait_until 10 "the event stream to start" stream_up
fio_bg load --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=8 \
  --offset=16M --size=16M --verify=crc32c --do_verify=1 --verify_fatal=1 --loops=3
out=$(ctl_on nodeA grow "$res" 2>&1) || fail "hastctl grow: $out"
[[ $out == "$res: grown from $OLD to $NEW bytes"* ]] || fail "hastctl grow printed: $out"
echo "$out"
wait "$FIO_PID" || fail "fio (writes and their verify during the grow) failed: $(cat "$T/fio-load.txt")"
both_sizes_are "$NEW" || fail "data sizes after the grow: nodeA $(datasize nodeA), nodeB $(datasize nodeB)"
[[ $(nbdinfo --size "$URI") -eq $NEW ]] || fail "a new NBD connection sees $(nbdinfo --size "$URI") bytes"
grows_seen() { grep -q '"event":"grow"' "$T/events.json"; }
wait_until 10 "the grow event on the stream" grows_seen
grep '"event":"grow"' "$T/events.json" | grep -q "\"new\":\"$NEW\"" \
  || fail "the grow event lacks the new size: $(grep grow "$T/events.json")"
kill "$EVENTS_PID" 2>/dev/null || true
log_has "$res: grown from $OLD to $NEW" "$T/nodeA.log" || fail "nodeA's log lacks the grow"
log_has "$res: grown from $OLD to $NEW bytes for the primary" "$T/nodeB.log" \
  || fail "nodeB's log lacks the grow"
wait_status nodeA "$res" complete 60
check_before "after the grow"
verify_clean "step 3"
same_regions "$res"
pass "grown under load; new space resynced; verify finds 0; regions identical"

# ---- 4. the new space through a new connection --------------------------------------------
head -c "$NEW" /dev/urandom > "$T/full"
cp "$T/full" "$T/before"
nbdcopy "$T/full" "$URI" || fail "nbdcopy of $NEW bytes to the grown export"
nbdcopy "$URI" "$T/back" || fail "nbdcopy read of the grown export"
cmp "$T/full" "$T/back" || fail "the grown export does not read back what was written"
rm -f "$T/back" "$T/full"
wait_status nodeA "$res" complete 60
same_regions "$res"
pass "the new space is readable and writable and replicated"

# ---- 5. --assume-clean ---------------------------------------------------------------------
truncate -s 96M "$T/a/$res.img" "$T/b/$res.img"
OLD=$NEW
NEW=$((96 * MiB - 16384))
syncs=$(grep -c "synchronization started" "$T/nodeA.log" || true)
out=$(ctl_on nodeA grow --assume-clean "$res" 2>&1) || fail "hastctl grow --assume-clean: $out"
[[ $out == *"assumed clean"* ]] || fail "grow --assume-clean printed: $out"
both_sizes_are "$NEW" || fail "data sizes after grow --assume-clean"
wait_status nodeA "$res" complete 30
[[ $(grep -c "synchronization started" "$T/nodeA.log" || true) -eq $syncs ]] \
  || fail "grow --assume-clean started a resync"
check_before "after grow --assume-clean"
verify_clean "step 5"
pass "--assume-clean: no resync, verify finds 0"

# ---- 6. kill -9 during the grow --------------------------------------------------------------
# The kill must land between the secondary's metadata write and the
# primary's (or inside the secondary's): the metadata slots of the victim's
# provider fail their writes (hastd_faults), so its grow cannot reach its
# disk, and it is killed there.
set_faults() {
  printf '%s\n' "$1" > "$T/faults.new"
  mv "$T/faults.new" "$T/faults"
}
# kill_during NODE: grow (files 32 MiB larger) with NODE's metadata writes
# failing, kill -9 NODE, restart it without faults, complete the grow.
# hastd_faults looks at its rules at an I/O at most every 50 ms, so a grow
# right after set_faults may still go through: then the files grow by
# 32 MiB more and the grow is tried again, until one fails.
kill_during() {
  local victim=$1 a b want dir tries=0
  dir=$([[ $victim == nodeA ]] && echo a || echo b)
  set_faults "write $T/$dir/$res.img 0 16384"
  while :; do
    MIB=$((MIB + 32))
    truncate -s "${MIB}M" "$T/a/$res.img" "$T/b/$res.img"
    want=$((MIB * MiB - 16384))
    OLD=$(datasize nodeA)
    out=$(ctl_on nodeA grow "$res" 2>&1) || break
    ((++tries < 50)) || fail "$victim's metadata writes never failed: $out"
  done
  [[ $out == *"could not be written"* ]] || fail "the grow failed for another reason: $out"
  echo "grow with $victim's metadata failing: $out"
  if [[ $victim == nodeA ]]; then
    [[ $out == *"secondary has grown"* ]] || fail "the primary's failure does not say the secondary grew: $out"
    [[ $(datasize nodeB) -eq $want ]] || fail "nodeB did not grow before nodeA"
  else
    [[ $out == *"nodeB"* ]] || fail "the secondary's failure does not name it: $out"
    [[ $(datasize nodeA) -eq $OLD ]] || fail "nodeA grew although nodeB refused"
  fi
  kill9_node "$victim"
  set_faults ""
  start_node "$victim"
  if [[ $victim == nodeA ]]; then
    ctl_on nodeA role primary "$res"
  else
    ctl_on nodeB role secondary "$res"
  fi
  a=$(datasize nodeA)
  b=$(datasize nodeB)
  echo "after kill -9 of $victim: nodeA $a, nodeB $b (old $OLD, new $want)"
  [[ $a -eq $OLD ]] || fail "nodeA came back with $a bytes, not the old $OLD"
  if [[ $victim == nodeA ]]; then
    [[ $b -eq $want ]] || fail "nodeB has $b bytes, not the new $want"
  else
    [[ $b -eq $OLD ]] || fail "nodeB came back with $b bytes, not the old $OLD"
  fi
  # The pair connects either way (a secondary larger than its primary is
  # an interrupted grow), and a second grow completes it.
  wait_status nodeA "$res" complete 60
  if [[ $victim == nodeA ]]; then
    log_has "interrupted grow" "$T/nodeA.log" || fail "nodeA does not log the interrupted grow"
  fi
  out=$(ctl_on nodeA grow "$res" 2>&1) || fail "hastctl grow after kill -9 of $victim: $out"
  both_sizes_are "$want" || fail "the pair did not reach $want after kill -9 of $victim"
  wait_status nodeA "$res" complete 60
  check_before "after kill -9 of $victim"
  verify_clean "kill -9 of $victim"
  same_regions "$res"
  pass "kill -9 of $victim inside a grow: it came back with the old size, the grow completed, data intact"
}
MIB=96
kill_during nodeA
kill_during nodeB

# ---- 7. slots too small ---------------------------------------------------------------------
SIZE=$(datasize nodeA)
truncate -s 40G "$T/a/$res.img" "$T/b/$res.img"
expect_exit 2 "recreate" ctl_on nodeA grow "$res"
[[ $ERR == *"$((32768 * MiB))"* ]] || fail "the error does not give the limit: $ERR"
both_sizes_are "$SIZE" || fail "a grow refused for the slots changed the data size"
check_before "after the refused grow"
pass "slots too small: refused with the limit"

# ---- 8. a secondary smaller than its primary is refused at the handshake -------------------
ctl_on nodeA create -m 48M -e 1M gs
ctl_on nodeB create -m 32M -e 1M gs
ctl_on nodeB role secondary gs
ctl_on nodeA role primary gs
refused_smaller() { log_has "gs: connection to the peer failed: refused by the secondary: data size or extent size differs.*the secondary is smaller" "$T/nodeA.log"; }
wait_until 30 "nodeA to log the smaller secondary's refusal" refused_smaller
ctl_on nodeA status gs | grep -q complete && fail "a pair with a smaller secondary is complete"
pass "a secondary smaller than its primary is refused with the reason"

finish_test grow
