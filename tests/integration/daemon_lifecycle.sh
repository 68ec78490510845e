#!/usr/bin/env bash
# hastd's life: SIGTERM while a client writes ends it with status 0 and valid
# metadata; --check-config; daemon mode with its pid file, and a second hastd
# on the same pid file refused; SIGHUP adds a resource, and a broken
# configuration is refused on SIGHUP while the daemon keeps the old one;
# `role primary all` on a node with no resources answers at once.
# Usage: daemon_lifecycle.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

res=life
write_standalone_config "$res"
cp "$T/hast.conf" "$T/good.conf"
ctl create -m 64M "$res"

# --- --check-config ----------------------------------------------------------------------
"$HASTD" -c "$T/hast.conf" -n nodeA --check-config > "$T/check.out" 2> "$T/check.err" \
  || fail "--check-config on a good file exited non-zero: $(cat "$T/check.err")"
for want in "node: nodeA" "control: uds://$T/ctl.sock" "pidfile: $T/hastd.pid" "resource $res:" \
            "  local: $T/$res.img" "  remote: none" "  replication: memsync" "  checksum: none" \
            "  compression: hole" "  timeout: 20" "  metaflush: on" "  nbd: uds://$T/$res.nbd"; do
  grep -qxF -- "$want" "$T/check.out" || fail "--check-config output lacks '$want': $(cat "$T/check.out")"
done
[[ ! -e $T/ctl.sock && ! -e $T/hastd.pid ]] || fail "--check-config started something"
cat > "$T/broken.conf" <<CONF
control uds://$T/ctl.sock
resource $res {
  local $T/$res.img
  replication sometimes
  on nodeA { remote none }
}
CONF
rc=0
"$HASTD" -c "$T/broken.conf" -n nodeA --check-config > "$T/check.out" 2> "$T/check.err" || rc=$?
[[ $rc -eq 78 ]] || fail "--check-config on a broken file exited $rc, not 78 (EX_CONFIG)"
grep -q "^hastd: $T/broken.conf:4: replication" "$T/check.err" \
  || fail "--check-config does not name file:line: $(cat "$T/check.err")"
[[ $(wc -l < "$T/check.err") -eq 1 ]] || fail "--check-config error is not one line: $(cat "$T/check.err")"
pass "--check-config: effective settings, exit 0; broken file: $(cat "$T/check.err"), exit 78"

# --- --io-engine: the disk engine asked for ----------------------------------------------------
expect_exit 64 "--io-engine takes 'uring' or 'threads', not 'aio'" \
  "$HASTD" -F -c "$T/hast.conf" -n nodeA --io-engine aio
expect_exit 64 "option --io-engine needs a value" "$HASTD" -F -c "$T/hast.conf" -n nodeA --io-engine

# --- SIGTERM while a client writes -----------------------------------------------------
start_hastd
ctl role primary "$res"
fio_bg writer --ioengine=nbd --uri="$(nbd_uri "$res")" --rw=randwrite --bs=64k \
  --iodepth=8 --time_based --runtime=600
writer=$FIO_PID
writes_at_least() { [[ $(list_field "$res" "r['counters']['writes']") -ge $1 ]]; }
wait_until 60 "the client to write" writes_at_least 500
kill -0 "$writer" 2>/dev/null || fail "fio ended early: $(cat "$T/fio-writer.txt")"
stop_hastd   # SIGTERM; fails unless the exit status is 0
log_has "SIGTERM: shutting down" || fail "the log does not mention SIGTERM"
for ((i = 0; i < 100; i++)); do kill -0 "$writer" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$writer" 2>/dev/null || true
wait "$writer" 2>/dev/null || true
ctl dump --json "$res" > "$T/dump.json" || fail "metadata not valid after SIGTERM"
[[ ! -e $T/ctl.sock ]] || fail "the control socket is left behind after SIGTERM"
[[ ! -e $T/$res.nbd ]] || fail "the NBD socket is left behind after SIGTERM"
pass "SIGTERM while a client writes: exit 0, metadata valid, sockets removed"

# --- daemon mode and the pid file -----------------------------------------------------------
on_exit stop_daemon
rc=0
"$HASTD" -c "$T/hast.conf" -n nodeA > "$T/daemon.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || fail "hastd in daemon mode exited $rc: $(cat "$T/daemon.out")"
[[ -s $T/hastd.pid ]] || fail "daemon mode wrote no pid file"
DAEMON_PID=$(cat "$T/hastd.pid")
[[ $DAEMON_PID =~ ^[0-9]+$ ]] || fail "the pid file holds '$DAEMON_PID'"
kill -0 "$DAEMON_PID" 2>/dev/null || fail "no process $DAEMON_PID from the pid file"
[[ $(readlink "/proc/$DAEMON_PID/exe") == "$(readlink -f "$HASTD")" ]] \
  || fail "pid $DAEMON_PID is not hastd: $(readlink "/proc/$DAEMON_PID/exe")"
ctl status "$res" | grep -q "^$res[[:space:]]*-[[:space:]]*init" || fail "status against the daemon: $(ctl status 2>&1)"
ctl role primary "$res" || fail "role primary against the daemon"
nbdinfo --size "$(nbd_uri "$res")" > /dev/null || fail "nbdinfo against the daemon"
pass "daemon mode: pid file holds $DAEMON_PID, hastctl and NBD work"

expect_exit 75 "already running" "$HASTD" -c "$T/hast.conf" -n nodeA
[[ $ERR == *"$DAEMON_PID"* ]] || fail "the refusal does not name the running pid: $ERR"
expect_exit 75 "already running" "$HASTD" -F -c "$T/hast.conf" -n nodeA -P "$T/hastd.pid"
[[ $(cat "$T/hastd.pid") == "$DAEMON_PID" ]] || fail "the refused start changed the pid file"
kill -0 "$DAEMON_PID" 2>/dev/null || fail "the running daemon died from the refused starts"
ctl status "$res" | grep -q "^$res[[:space:]]*complete[[:space:]]*primary" || fail "status after the refused starts"
pass "a second hastd on the same pid file (daemonizing, or -F -P) refuses: already running"

kill -TERM "$DAEMON_PID"
wait_pid_gone "$DAEMON_PID" 60
DAEMON_PID=""
[[ ! -e $T/hastd.pid ]] || fail "the pid file is left behind after the daemon stopped"
ctl dump --json "$res" > /dev/null || fail "metadata not valid after the daemon stopped"
rc=0
ctl status > /dev/null 2> "$T/status.err" || rc=$?
[[ $rc -eq 71 ]] && grep -q "hastd is not running" "$T/status.err" || fail "status after stop (exit $rc): $(cat "$T/status.err")"
pass "daemon stopped by the pid from its pid file; pid file removed"

# --- SIGHUP ------------------------------------------------------------------------------
start_hastd -P "$T/hup.pid"
[[ $(cat "$T/hup.pid") == "$HASTD_PID" ]] || fail "-F -P wrote $(cat "$T/hup.pid"), not $HASTD_PID"
cat >> "$T/hast.conf" <<CONF
resource added {
  device off
  local $T/added.img
  nbd uds://$T/added.nbd
  on nodeA { remote none }
}
CONF
cp "$T/hast.conf" "$T/good.conf"
kill -HUP "$HASTD_PID"
wait_until 30 "the added resource to appear in hastctl list" ctl list added
[[ $(list_field added "r['role']") == init ]] || fail "the added resource is not in init"
ctl list > "$T/list.txt"
grep -q "^$res:" "$T/list.txt" && grep -q "^added:" "$T/list.txt" || fail "list after SIGHUP: $(cat "$T/list.txt")"
pass "SIGHUP with an added resource: it appears in hastctl list, role init"

cat >> "$T/hast.conf" <<CONF
resource broken {
  device off
  local $T/broken.img
  checksum maybe
}
CONF
kill -HUP "$HASTD_PID"
wait_until 30 "the log to say the reload was refused" log_has "reload refused"
log_has "reload refused.*hast.conf:[0-9]+: checksum" || fail "the refusal does not name file:line: $(grep 'reload refused' "$T/hastd.log")"
daemon_alive
cp "$T/good.conf" "$T/hast.conf"
ctl list > "$T/list.txt" || fail "hastctl list after the refused reload"
grep -q "^$res:" "$T/list.txt" && grep -q "^added:" "$T/list.txt" || fail "list after the refused reload: $(cat "$T/list.txt")"
! grep -q "^broken:" "$T/list.txt" || fail "the broken resource was taken"
pass "SIGHUP with a broken configuration: refused and logged, the daemon keeps the old one"

stop_hastd
[[ ! -e $T/hup.pid ]] || fail "-P pid file left behind"

# --- a second hastd without a pid file ------------------------------------------------------
# Nothing locks it out but the control socket, which the first one serves:
# it must refuse, and leave the first one's sockets alone.
start_hastd
ctl role primary "$res"
expect_exit 75 "another hastd is serving the control socket" "$HASTD" -F -c "$T/hast.conf" -n nodeA
daemon_alive
[[ -S $T/ctl.sock ]] || soft_fail "the refused second hastd removed the first one's control socket"
[[ -S $T/$res.nbd ]] || soft_fail "the refused second hastd removed the first one's NBD socket"
ctl status "$res" 2>/dev/null | grep -q "^$res[[:space:]]*complete[[:space:]]*primary" \
  || soft_fail "the first hastd no longer answers after a second one was refused"
nbdinfo --size "$(nbd_uri "$res")" > /dev/null || fail "the first hastd's export is gone"
stop_hastd
pass "a second hastd without a pid file: refused"

# --- a node with no resources ------------------------------------------------------------
# `role primary all` has nothing to do and says so at once.
cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
pidfile $T/hastd.pid
CONF
start_hastd
started=$(date +%s%N)
rc=0
timeout 10 "$HASTCTL" -c "$T/hast.conf" -n nodeA role primary all > "$T/all.out" 2>&1 || rc=$?
took_ms=$(( ($(date +%s%N) - started) / 1000000 ))
[[ $rc -eq 0 ]] || fail "role primary all with no resources exited $rc: $(cat "$T/all.out")"
[[ $took_ms -lt 2500 ]] || fail "role primary all with no resources took ${took_ms} ms"
daemon_alive
stop_hastd
pass "role primary all on a node with no resources: exit 0 in ${took_ms} ms"
finish_test daemon_lifecycle
