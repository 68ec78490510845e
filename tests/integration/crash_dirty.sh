#!/usr/bin/env bash
# Crashes: hastd killed with SIGKILL while fio writes all over the export.
# The metadata on the provider stays valid (hastctl dump reads it, checksums
# and all), the extents being written are dirty on disk, and after a restart
# the resource becomes primary again and still counts them as dirty.
# Three crashes in a row leave valid metadata every time.
# Usage: crash_dirty.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

res=crash
extent=$((1 << 20))
write_standalone_config "$res"
# A remote that is away (nothing listens there): the dirty extents a crash
# leaves are what the next resync must cover. (A standalone resource has no
# one to sync with and starts clean after a crash.)
sed -i "s|remote none|remote tcp://127.0.0.1:$(free_port)|" "$T/hast.conf"
ctl create -k 4 -e 1M -m 96M "$res"
ctl dump --json "$res" > "$T/dump.json"
[[ $(json_get "$T/dump.json" "j['resources'][0]['keepdirty']") -eq 4 ]] || fail "create -k 4"
[[ $(json_get "$T/dump.json" "j['resources'][0]['extentsize']") -eq $extent ]] || fail "create -e 1M"

# writes_done: the daemon's write counter for the resource.
writes_done() { list_field "$res" "r['counters']['writes']"; }
writes_at_least() { [[ $(writes_done) -ge $1 ]]; }

# crash_during_writes N: primary, fio random writes over the whole export in
# the background, SIGKILL to hastd once N writes went through, fio stopped.
crash_during_writes() {
  local n=$1
  start_hastd
  ctl role primary "$res"
  # Runs until it is stopped: the kill comes in the middle of it.
  fio_bg crash --ioengine=nbd --uri="$(nbd_uri "$res")" --rw=randwrite --bs=4k \
    --iodepth=16 --time_based --runtime=600
  local fio_pid=$FIO_PID
  wait_until 60 "fio to make $n writes" writes_at_least "$n"
  kill -0 "$fio_pid" 2>/dev/null || fail "fio ended before the crash: $(cat "$T/fio-crash.txt")"
  kill -KILL "$HASTD_PID"
  wait "$HASTD_PID" 2>/dev/null || true
  # fio sees its connection drop and ends with an error; it must not hang.
  local i
  for ((i = 0; i < 100; i++)); do kill -0 "$fio_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$fio_pid" 2>/dev/null || true
  wait "$fio_pid" 2>/dev/null || true
}

# metadata_valid WHAT: hastctl dump reads the metadata (so its checksum is
# right) and the JSON holds what it must.
metadata_valid() {
  ctl dump --json "$res" > "$T/dump.json" 2> "$T/dump.err" \
    || fail "$1: hastctl dump fails: $(cat "$T/dump.err")"
  python3 - "$T/dump.json" "$extent" "${2:-primary}" <<'PY' || fail "$1: dump --json content"
import json, sys
r = json.load(open(sys.argv[1]))["resources"][0]
assert "error" not in r, r
assert r["name"] == "crash" and r["extentsize"] == int(sys.argv[2]) and r["keepdirty"] == 4, r
assert r["datasize"] > 0 and r["localoff"] > 0, r
assert r["prevrole"] in sys.argv[3].split(","), r
extents = (r["datasize"] + r["extentsize"] - 1) // r["extentsize"]
assert r["bitmap_bytes"] == (extents + 7) // 8, r
assert 0 <= r["dirty_extents"] <= extents, r
PY
}

# --- one crash, looked at closely ------------------------------------------------------
crash_during_writes 3000
# The dead daemon's control socket is still there; nobody answers on it.
rc=0
ctl status > /dev/null 2> "$T/status.err" || rc=$?
[[ $rc -eq 71 ]] && grep -q "hastd is not running" "$T/status.err" \
  || fail "status after kill -9 (rc $rc): $(cat "$T/status.err")"
metadata_valid "after kill -9"
dirty_extents=$(json_get "$T/dump.json" "j['resources'][0]['dirty_extents']")
[[ $dirty_extents -ge 1 ]] || fail "after kill -9 during writes no extent is dirty on disk"
pass "kill -9 during writes: metadata valid, $dirty_extents extent(s) dirty on disk"

start_hastd
ctl role primary "$res" || fail "role primary after the crash"
ctl status "$res" | grep -q "^$res[[:space:]]*degraded[[:space:]]*primary" || fail "status after the crash: $(ctl status "$res")"
dirty_bytes=$(list_field "$res" "r['dirty_bytes']")
[[ $dirty_bytes -ge $extent ]] || fail "after the restart only $dirty_bytes bytes are dirty"
[[ $dirty_bytes -ge $((dirty_extents * extent - extent)) ]] \
  || fail "after the restart $dirty_bytes bytes dirty, the metadata had $dirty_extents extents"
# The export still works after the crash.
head -c $((4 << 20)) /dev/urandom > "$T/rand4"
nbdcopy "$T/rand4" "$(nbd_uri "$res")" || fail "nbdcopy after the crash"
nbdcopy "$(nbd_uri "$res")" "$T/back" || fail "nbdcopy read after the crash"
cmp -s -n $((4 << 20)) "$T/rand4" "$T/back" || fail "data written after the crash reads back wrong"
rm -f "$T/back"
stop_hastd
metadata_valid "after a clean stop that followed a crash" primary,init
pass "restart after the crash: primary again, $dirty_bytes dirty bytes, I/O works"

# --- three more crashes in a row ----------------------------------------------------------
for round in 1 2 3; do
  crash_during_writes 1000
  metadata_valid "crash $round"
  [[ $(json_get "$T/dump.json" "j['resources'][0]['dirty_extents']") -ge 1 ]] \
    || fail "crash $round: no dirty extent on disk"
  pass "crash $round of 3: metadata valid, $(json_get "$T/dump.json" "j['resources'][0]['dirty_extents']") dirty extent(s)"
done
start_hastd
ctl role primary "$res" || fail "role primary after three crashes"
stop_hastd
metadata_valid "after three crashes and a clean stop" primary,init
echo "PASS: crash_dirty"
