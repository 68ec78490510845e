#!/usr/bin/env bash
# metaflush off: activemap updates are written without the fdatasync that
# follows them with metaflush on (docs/GENERATIONS.md says what that trades:
# a power failure may leave a just-written extent unmarked). What it keeps:
# after a process crash (the page cache survives) the metadata is valid and
# the extents that were being written are still marked dirty; and `list`
# shows the option in force.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

res=mf
write_standalone_config "$res"
sed -i "s|^  local |  metaflush off\n  local |" "$T/hast.conf"
grep -q "metaflush off" "$T/hast.conf" || fail "could not set metaflush off"
"$HASTD" --check-config -c "$T/hast.conf" -n nodeA | grep -q "metaflush: off" \
  || fail "--check-config does not show metaflush off"
ctl create -k 2 -e 1M -m 64M "$res"
start_hastd
ctl role primary "$res"
fio_bg mf --ioengine=nbd --uri="$(nbd_uri "$res")" --rw=randwrite --bs=4k --iodepth=16 \
  --time_based --runtime=600
fio_pid=$FIO_PID
writes_at_least() { [[ $(list_field "$res" "r['counters']['writes']") -ge $1 ]]; }
wait_until 60 "2000 writes" writes_at_least 2000
updates=$(list_field "$res" "r['counters']['activemap_updates']")
[[ $updates -gt 0 ]] || fail "no activemap updates were counted"
kill -KILL "$HASTD_PID"
wait "$HASTD_PID" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$fio_pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$fio_pid" 2>/dev/null || true
wait "$fio_pid" 2>/dev/null || true
ctl dump --json "$res" > "$T/dump.json" || fail "metadata unreadable after a crash with metaflush off"
dirty=$(json_get "$T/dump.json" "j['resources'][0]['dirty_extents']")
[[ $dirty -ge 1 ]] || fail "no extent marked dirty after a crash during writes"
start_hastd
ctl role primary "$res"
ctl list --json "$res" > "$T/l.json"
[[ $(json_get "$T/l.json" "j['resources'][0]['role']") == primary ]] || fail "role primary after restart"
pass "metaflush off: $updates activemap updates without flushes; after kill -9 the metadata is valid and $dirty extents are dirty"
stop_hastd
