#!/usr/bin/env bash
# A read the secondary serves sees every write the client completed before it
# (docs/DESIGN.md, "Reads"). nodeA (hastd_faults) is a memsync primary whose
# local reads of the data region fail, so every client read goes to nodeB.
# memsync answers a plain write (qemu-io -t writeback: no FUA, no flush)
# once nodeB has *received* it; nodeB may still be
# writing it (keepdirty 1: each write into another extent first waits there
# for a metadata round). The client writes a block and at once reads it back,
# a few hundred times over 64 extents, while a second client keeps writing
# other blocks of the same extents; every read must return what was just
# written. Then the reads went to nodeB (nodeA counts local read errors), and
# the second client's writes all succeeded.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
[[ -x $BUILD/hastd_faults ]] || fail "$BUILD/hastd_faults is not built"
command -v qemu-io >/dev/null || fail "qemu-io is not installed (qemu-utils)"

res=ro
PASSES=${PASSES:-5}
EXTENTS=64
cat > "$T/hastd-faulty" <<EOF
#!/bin/sh
exec "$BUILD/hastd_faults" --faults "$T/faults" "\$@"
EOF
chmod +x "$T/hastd-faulty"

# set_faults TEXT: new rules, renamed over the old file so that no reader
# sees half of it (hastd_faults looks at it every 50 ms; the test then polls
# until a read fails locally).
set_faults() {
  printf '%s\n' "$1" > "$T/faults.new"
  mv "$T/faults.new" "$T/faults"
}

local_errors() {
  ctl_on nodeA list "$res" | sed -n "s/.*local errors:.* read: \([0-9]*\).*/\1/p"
}

uri() { nbd_uri_of nodeA "$res"; }

write_pair_config "$res" memsync
mkdir -p "$T/a" "$T/b"
set_faults ""
PAIR_HASTD_A=$T/hastd-faulty start_pair "$res" -m 64M -e 1M -k 1
ctl_on nodeA dump --json "$res" > "$T/dump.json"
localoff=$(json_get "$T/dump.json" "j['resources'][0]['localoff']")
datasize=$(json_get "$T/dump.json" "j['resources'][0]['datasize']")

set_faults "read $T/a/$res.img $localoff $datasize"
before=$(local_errors)
for _ in $(seq 100); do
  qemu-io -f raw -c "read 0 4096" "$(uri)" >/dev/null 2>&1 || true
  [[ $(local_errors) -gt ${before:-0} ]] && break
  sleep 0.05
done
[[ $(local_errors) -gt ${before:-0} ]] || fail "nodeA's local reads do not fail: $(ctl_on nodeA list "$res")"
before=$(local_errors)
pass "nodeA's local reads fail; its client reads go to nodeB"

# The second client: 64 KiB in the second half of every extent, over and
# over, until $T/stop appears.
other=()
for e in $(seq 0 $((EXTENTS - 1))); do
  other+=(-c "write -P 0xee $((e * 1048576 + 524288)) 65536")
done
(
  while [[ ! -e $T/stop ]]; do
    qemu-io -f raw -t writeback "${other[@]}" "$(uri)" >> "$T/other.out" 2>&1 || echo "qemu-io failed" >> "$T/other.out"
  done
) &
other_pid=$!
STARTED_PIDS+=("$other_pid")

mismatches=0
pairs=0
for pass_no in $(seq 1 "$PASSES"); do
  cmds=()
  for e in $(seq 0 $((EXTENTS - 1))); do
    # A pattern of its own for every write of the test.
    pattern=$(( (pass_no * EXTENTS + e) % 251 + 1 ))
    off=$(( e * 1048576 + (pass_no % 8) * 4096 ))
    cmds+=(-c "write -P $pattern $off 4096" -c "read -P $pattern $off 4096")
    pairs=$((pairs + 1))
  done
  qemu-io -f raw -t writeback "${cmds[@]}" "$(uri)" > "$T/pass.out" 2>&1 || true
  if grep -iE "error|failed" "$T/pass.out" | grep -vq "Pattern verification failed"; then
    fail "pass $pass_no: a client request failed: $(head -5 "$T/pass.out")"
  fi
  n=$(grep -c "Pattern verification failed" "$T/pass.out" || true)
  mismatches=$((mismatches + n))
done
touch "$T/stop"
wait "$other_pid" || true
after=$(local_errors)
echo "  $pairs write-then-read pairs, $((after - before)) local read errors on nodeA"
[[ $((after - before)) -ge $pairs ]] \
  || fail "only $((after - before)) of $pairs reads failed locally: the test did not read through nodeB"
! grep -qiE "error|failed" "$T/other.out" || fail "the second client's writes failed: $(head -5 "$T/other.out")"
[[ $mismatches -eq 0 ]] \
  || fail "$mismatches of $pairs reads through the secondary returned older data than the write just completed"
pass "$pairs reads through the secondary each returned the write completed just before it"

stop_node nodeA
stop_node nodeB
