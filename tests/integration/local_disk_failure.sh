#!/usr/bin/env bash
# A primary whose local disk fails (hastd_faults: the rules in $T/faults make
# nodeA's provider fail chosen operations; tests/fault/fault_env.hpp).
#   With writes to the data region failing, on a memsync and on a fullsync
#   pair: client writes still succeed (the secondary holds them), the
#   resource is `degraded`, `list` counts local write errors, `status --json`
#   says local_failing, the `local-error` event fires once, and reads of the
#   written data return it (from the secondary). Once the disk works again a
#   role cycle rebuilds the local copy: both data regions are byte-identical
#   and hold what the client wrote.
#   With reads of the data region failing: client reads return the right
#   data (from the secondary) and `list` counts the local read errors.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
[[ -x $BUILD/hastd_faults ]] || fail "$BUILD/hastd_faults is not built"
command -v qemu-io >/dev/null || fail "qemu-io is not installed (qemu-utils)"

res=ld
# nodeA runs hastd_faults (start_node runs "$HASTD"); nodeB runs hastd.
cat > "$T/hastd-faulty" <<EOF
#!/bin/sh
exec "$BUILD/hastd_faults" --faults "$T/faults" "\$@"
EOF
chmod +x "$T/hastd-faulty"
cat > "$T/hook.sh" <<EOF
#!/bin/sh
echo "\$*" >> "$T/events"
EOF
chmod +x "$T/hook.sh"

# set_faults TEXT: new rules, renamed over the old file so that no reader
# sees half of it; hastd_faults looks at the file every 50 ms.
set_faults() {
  printf '%s\n' "$1" > "$T/faults.new"
  mv "$T/faults.new" "$T/faults"
  # Not a wait for a condition: the fault layer rereads the file on the first
  # I/O more than 50 ms after its last look, so after 0.3 s the next I/O the
  # test makes runs under the new rules.
  sleep 0.3
}

# client ARGS...: qemu-io commands on nodeA's export; any failure fails the test.
client() {
  qemu-io -f raw "$@" "$(nbd_uri_of nodeA "$res")" > "$T/qemu-io.out" 2>&1 \
    || fail "qemu-io $*: $(cat "$T/qemu-io.out")"
  ! grep -qiE "failed|error" "$T/qemu-io.out" || fail "qemu-io $*: $(cat "$T/qemu-io.out")"
}

# local_errors KIND: nodeA's count of local KIND (read, write) errors.
local_errors() {
  ctl_on nodeA list "$res" | sed -n "s/.*local errors:.* $1: \([0-9]*\).*/\1/p"
}

# local_error_events: how many times the local-error hook ran for the resource.
local_error_events() { grep -c "^local-error $res\$" "$T/events" 2>/dev/null || true; }

# on_provider OFFSET LENGTH BYTE: nodeA's provider holds BYTE all over the
# data region's [OFFSET, OFFSET + LENGTH).
on_provider() {
  python3 - "$T/a/$res.img" "$((localoff + $1))" "$2" "$3" <<'PY'
import sys
with open(sys.argv[1], 'rb') as f:
    f.seek(int(sys.argv[2]))
    sys.exit(0 if f.read(int(sys.argv[3])) == bytes([int(sys.argv[4], 0)]) * int(sys.argv[3]) else 1)
PY
}

# The client's writes: byte, offset in the data region, length.
WRITES=("0x5a $((1 << 20)) 262144" "0xa5 $(((8 << 20) + 4096)) 65536" "0x3c $((40 << 20)) 1048576")

# fresh_pair MODE: fresh providers, nodeA (hastd_faults) primary and nodeB
# secondary, in sync.
fresh_pair() {
  write_pair_config "$res" "$1" "  exec $T/hook.sh"
  rm -f "$T/a/$res.img" "$T/b/$res.img" "$T/events"
  set_faults ""
  PAIR_HASTD_A=$T/hastd-faulty start_pair "$res" -m 64M
  ctl_on nodeA dump --json "$res" > "$T/dump.json"
  localoff=$(json_get "$T/dump.json" "j['resources'][0]['localoff']")
  datasize=$(json_get "$T/dump.json" "j['resources'][0]['datasize']")
}

# failing_writes MODE: the write part, then the rebuild by a role cycle.
failing_writes() {
  local mode=$1 w byte off len
  fresh_pair "$mode"
  set_faults "write $T/a/$res.img $localoff $datasize"
  for w in "${WRITES[@]}"; do
    read -r byte off len <<< "$w"
    client -c "write -P $byte $off $len"
  done
  pass "$mode: client writes succeed while nodeA's disk fails them"
  for w in "${WRITES[@]}"; do
    read -r byte off len <<< "$w"
    ! on_provider "$off" "$len" "$byte" || fail "$mode: the fault did not hold: nodeA's disk has the write"
  done

  ctl_on nodeA status "$res" | grep -q "^$res[[:space:]]*degraded" \
    || fail "$mode: nodeA is not degraded: $(ctl_on nodeA status "$res")"
  local errors
  errors=$(local_errors write)
  [[ ${errors:-0} -gt 0 ]] || fail "$mode: no local write errors counted: $(ctl_on nodeA list "$res")"
  ctl_on nodeA status --json "$res" > "$T/status.json"
  [[ $(json_get "$T/status.json" "j['resources'][0].get('local_failing')") == True ]] \
    || fail "$mode: status --json lacks \"local_failing\": true"
  pass "$mode: nodeA is degraded, counts $errors local write errors and says local_failing"

  # Hooks run asynchronously: wait for the first, then give a second one time.
  for _ in $(seq 50); do [[ $(local_error_events) -ge 1 ]] && break; sleep 0.1; done
  # The purpose of this wait: time for a second event that must not come.
  sleep 1
  [[ $(local_error_events) -eq 1 ]] \
    || fail "$mode: the local-error event ran $(local_error_events) times, not once: $(tr '\n' ';' < "$T/events" 2>/dev/null)"
  pass "$mode: the local-error event fired once for ${#WRITES[@]} failed writes"

  for w in "${WRITES[@]}"; do
    read -r byte off len <<< "$w"
    client -c "read -P $byte $off $len"
  done
  pass "$mode: reads of the written data return it (from the secondary)"

  set_faults ""
  ctl_on nodeA role init "$res"
  ctl_on nodeA role primary "$res"
  wait_status nodeA "$res" complete 30
  same_regions "$res"
  python3 - "$T/expected" "$datasize" "${WRITES[@]}" <<'PY'
import sys
with open(sys.argv[1], 'wb') as f:
    f.truncate(int(sys.argv[2]))
    for w in sys.argv[3:]:
        byte, off, length = w.split()
        f.seek(int(off))
        f.write(bytes([int(byte, 0)]) * int(length))
PY
  region_of nodeA "$res" "$T/region"
  cmp -s "$T/region" "$T/expected" || fail "$mode: the data regions do not hold what the client wrote"
  rm -f "$T/region" "$T/expected"
  pass "$mode: after a role cycle both data regions are identical and hold the client's writes"
}

failing_writes memsync

# Reads of the data region fail on nodeA: the secondary serves them.
before=$(local_errors read)
set_faults "read $T/a/$res.img $localoff $datasize"
client -c "read -P 0x5a $((1 << 20)) 262144" -c "read -P 0 $((20 << 20)) 65536"
after=$(local_errors read)
[[ ${after:-0} -gt ${before:-0} ]] \
  || fail "local read errors did not grow ($before, then $after): $(ctl_on nodeA list "$res")"
pass "with reads failing on nodeA, client reads return the right data; $((after - before)) local read errors counted"
set_faults ""
stop_node nodeA
stop_node nodeB

failing_writes fullsync
stop_node nodeA
stop_node nodeB
