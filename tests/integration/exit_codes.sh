#!/usr/bin/env bash
# hastd's and hastctl's exit statuses are FreeBSD's (sysexits; hastd(8) and
# hastctl(8), EXIT STATUS), one class at a time, each with its one line on
# stderr:
#   hastd   64 usage, 72 configuration unreadable, 78 configuration wrong
#           (and a relative -c without a full path), 71 an address it cannot
#           listen on, 75 another hastd (its pid file, or its control
#           socket), also from a daemonizing hastd whose child fails;
#   hastctl 64 usage, 72/78 configuration, 71 hastd not reachable, 69 no
#           answer, 70 hastd refuses the request as a whole, 74 writing the
#           metadata fails, 1 (a resource's error number) for a name hastd
#           does not know; create/dump's 65/66/75 are in create_dump.sh.
# Usage: exit_codes.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

write_standalone_config ec
ctl create -m 16M ec
cat > "$T/broken.conf" <<CONF
resource ec {
  local $T/ec.img
  replication sometimes
  on nodeA { remote none }
}
CONF
mkdir "$T/dir.conf"

# --- hastd ---------------------------------------------------------------------------------
expect_exit 64 "unknown option '--bogus'" "$HASTD" --bogus
expect_exit 64 "needs a value" "$HASTD" -c
expect_exit 72 "cannot read the configuration" "$HASTD" -F -c "$T/nosuch.conf" -n nodeA
expect_exit 72 "it is a directory" "$HASTD" -F -c "$T/dir.conf" -n nodeA
expect_exit 78 "$T/broken.conf:3: replication" "$HASTD" -F -c "$T/broken.conf" -n nodeA
expect_exit 78 "$T/broken.conf:3: replication" "$HASTD" -c "$T/broken.conf" -n nodeA --check-config
expect_exit 78 "cannot obtain the full path of nosuch.conf" \
  bash -c "cd '$T' && exec '$HASTD' -F -c nosuch.conf -n nodeA"
pass "hastd: usage 64, unreadable configuration 72, wrong configuration 78"

# A control socket that cannot be made (its directory is a file): EX_OSERR,
# in the foreground and from a daemonizing hastd (its child's status).
touch "$T/not-a-dir"
sed "s|^control .*|control uds://$T/not-a-dir/ctl.sock|; s|^pidfile .*|pidfile $T/badctl.pid|" \
  "$T/hast.conf" > "$T/badctl.conf"
expect_exit 71 "$T/not-a-dir/ctl.sock" "$HASTD" -F -c "$T/badctl.conf" -n nodeA
expect_exit 71 "$T/not-a-dir/ctl.sock" "$HASTD" -c "$T/badctl.conf" -n nodeA
[[ ! -e $T/badctl.pid ]] || fail "a daemon that failed to start left its pid file"
pass "hastd: a control socket that cannot be made: 71, foreground and daemonized"

# Another hastd: its pid file (75), its control socket (75), also when the
# daemonized child is the one that finds out.
on_exit stop_daemon
"$HASTD" -c "$T/hast.conf" -n nodeA > "$T/daemon.out" 2>&1 || fail "daemon start: $(cat "$T/daemon.out")"
DAEMON_PID=$(cat "$T/hastd.pid")
expect_exit 75 "already running" "$HASTD" -c "$T/hast.conf" -n nodeA
expect_exit 75 "another hastd is serving the control socket" "$HASTD" -F -c "$T/hast.conf" -n nodeA
# It stops before its resources start: no export, provider or /dev/hast of the
# running hastd's is touched.
! grep -qE "NBD export|nbd [^ ]+: |role changed|in use by another process" "$T/expect.err" \
  || fail "the refused hastd started its resources: $ERR"
expect_exit 75 "another hastd is serving the control socket" \
  "$HASTD" -c "$T/hast.conf" -n nodeA -P "$T/second.pid"
kill -0 "$DAEMON_PID" || fail "the running hastd died from the refused starts"
pass "hastd: another hastd (pid file, control socket, daemonized child): 75, resources untouched"

# --- hastctl -------------------------------------------------------------------------------
expect_exit 64 "unknown command 'frobnicate'" ctl frobnicate
expect_exit 64 "role: unknown role 'boss'" ctl role boss ec
expect_exit 64 "role: expected" ctl role primary
expect_exit 64 "unknown option --bogus" ctl status --bogus
expect_exit 64 "option -c requires a value" "$HASTCTL" status -c
expect_exit 72 "cannot read the configuration" "$HASTCTL" -c "$T/nosuch.conf" -n nodeA status
expect_exit 72 "it is a directory" "$HASTCTL" -c "$T/dir.conf" -n nodeA status
expect_exit 78 "$T/broken.conf:3: replication" "$HASTCTL" -c "$T/broken.conf" -n nodeA status
expect_exit 78 "$T/broken.conf:3: replication" "$HASTCTL" -c "$T/broken.conf" -n nodeA dump
pass "hastctl: usage 64, unreadable configuration 72, wrong configuration 78"

expect_exit 1 "ghost: Received error 1 from hastd: unknown resource 'ghost'" ctl role primary ghost
rc=0
ctl status ghost > "$T/ghost.out" || rc=$?
[[ $rc -eq 1 ]] && grep -q $'^ghost\tERR1$' "$T/ghost.out" || fail "status ghost: exit $rc: $(cat "$T/ghost.out")"
pass "hastctl: a name hastd does not know: its error number, 1"

kill -TERM "$DAEMON_PID"
wait_pid_gone "$DAEMON_PID" 60
DAEMON_PID=""
expect_exit 71 "hastd is not running" ctl status
expect_exit 71 "hastd is not running" ctl role primary ec
pass "hastctl: no hastd on the control socket: 71"

# A stand-in control socket for what hastd cannot be made to do here: drop
# the request without an answer (69), refuse it as a whole (70).
# stand_in MODE: serves $T/fake/ctl.sock until the test ends.
mkdir -p "$T/fake"
printf 'control uds://%s/fake/ctl.sock\n' "$T" > "$T/fake/hast.conf"
stand_in() {
  rm -f "$T/fake/ctl.sock"
  python3 - "$T/fake/ctl.sock" "$1" <<'PY' &
import socket, struct, sys
path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(4)
while True:
    c, _ = s.accept()
    n = struct.unpack('<I', c.recv(4, socket.MSG_WAITALL))[0]
    c.recv(n, socket.MSG_WAITALL)
    if mode == 'refuse':
        body = b'{"error": "the supervisor did not answer"}'
        c.sendall(struct.pack('<I', len(body)) + body)
    c.close()
PY
  STARTED_PIDS+=("$!")
  STAND_IN=$!
  wait_until 10 "the stand-in control socket" test -S "$T/fake/ctl.sock"
}
fake() { "$HASTCTL" -c "$T/fake/hast.conf" -n nodeA "$@"; }
stand_in drop
expect_exit 69 "no reply from hastd" fake status
expect_exit 69 "no reply from hastd" fake role primary x
kill "$STAND_IN"
stand_in refuse
expect_exit 70 "the supervisor did not answer" fake status
expect_exit 70 "the supervisor did not answer" fake role init x
pass "hastctl: a request without an answer 69, refused as a whole 70"

# Writing the metadata fails (the file size limit stops the writes): 74.
truncate -s 16M "$T/ec.img"
expect_exit 74 "" bash -c "trap '' XFSZ; ulimit -f 2; exec '$HASTCTL' -c '$T/hast.conf' -n nodeA create ec"
pass "hastctl create: writing the metadata fails: 74 ($ERR)"
