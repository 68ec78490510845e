#!/usr/bin/env bash
# Two real hastd on 127.0.0.1, one per mode: fio writes with verification
# through the primary's NBD export; afterwards the secondary's data region is
# byte-identical to the primary's. Also: a fresh pair needs no sync, and
# writes made while the secondary is away are resynced after it returns.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

run_mode() {
  local mode=$1 res=r$1
  write_pair_config "$res" "$mode" "  checksum crc32c
  compression lz4"
  start_pair "$res" -m 96M
  ctl_on nodeA list --json "$res" > "$T/list.json"
  [[ $(json_get "$T/list.json" "j['resources'][0]['connected']") == True ]] || fail "$mode: not connected"

  (cd "$T" && fio --name=verify --verify_state_save=0 --ioengine=nbd --uri="$(echo "nbd+unix:///$res?socket=$T/a/$res.nbd")" \
      --rw=randwrite --bs=4k --iodepth=16 --size=32M --verify=crc32c --verify_fatal=1 \
      --do_verify=1 --output="$T/fio-$mode.txt" >/dev/null 2>&1) \
    || { cat "$T/fio-$mode.txt" >&2; fail "$mode: fio verify failed"; }
  grep -q "err= 0" "$T/fio-$mode.txt" || fail "$mode: fio reported errors"
  wait_status nodeA "$res" complete 60
  # The secondary has written what was acknowledged before it did (memsync, async).
  wait_until 30 "$mode: the secondary's done for every replicated write" secondary_caught_up "$res"
  stop_node nodeA
  stop_node nodeB
  same_regions "$res"
  pass "$mode: fio verified through NBD, secondary identical"
}

for mode in fullsync memsync async; do
  run_mode "$mode"
done

# Writes while the secondary is away are tracked and resynced.
res=away
write_pair_config "$res" memsync
start_pair "$res" -m 64M
stop_node nodeB
head -c 8M /dev/urandom > "$T/rand8"
nbdcopy "$T/rand8" "nbd+unix:///$res?socket=$T/a/$res.nbd"
wait_status nodeA "$res" degraded 10
ctl_on nodeA list --json "$res" > "$T/list.json"
dirty=$(json_get "$T/list.json" "j['resources'][0]['dirty_bytes']")
[[ $dirty -ge $((8 << 20)) ]] || fail "writes while disconnected left only $dirty dirty bytes"
start_node nodeB
ctl_on nodeB role secondary "$res"
wait_status nodeA "$res" complete 60
stop_node nodeA
stop_node nodeB
same_regions "$res"
pass "writes made while the secondary was away were resynced ($dirty dirty bytes)"
