#!/usr/bin/env bash
# hastd -c with a relative path, as an rc script or a user in the
# configuration's directory starts it: the daemon changes directory to `/`,
# yet SIGHUP reads the file it was started with (the path is made absolute at
# the start, as FreeBSD's hastd does with realpath(3)). A resource added to
# the file and SIGHUP: status shows it. A relative path that does not exist
# exits 78 (EX_CONFIG, FreeBSD's "Unable to obtain full path").
# Usage: config_path.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

write_standalone_config one
ctl create -m 16M one
on_exit stop_daemon
(cd "$T" && exec "$HASTD" -c hast.conf -n nodeA) > "$T/daemon.out" 2>&1 \
  || fail "hastd -c hast.conf (daemonized, in $T): $(cat "$T/daemon.out")"
DAEMON_PID=$(cat "$T/hastd.pid")
[[ $DAEMON_PID =~ ^[0-9]+$ ]] && kill -0 "$DAEMON_PID" || fail "no daemon from the pid file: '$DAEMON_PID'"
[[ $(readlink "/proc/$DAEMON_PID/cwd") == / ]] || fail "the daemon did not change directory to /"
ctl status one > /dev/null || fail "the daemon does not answer"

cat >> "$T/hast.conf" <<CONF
resource two {
$(device_line)
  local $T/two.img
  nbd uds://$T/two.nbd
  on nodeA {
    remote none
  }
}
CONF
ctl create -m 16M two
kill -HUP "$DAEMON_PID"
wait_until 20 "SIGHUP to add resource two from the relative -c file" ctl status two
ctl status > "$T/status.out" || fail "status after the reload: $(cat "$T/status.out")"
grep -q "^two[[:space:]]*-  *init" "$T/status.out" || fail "resource two is not listed in init: $(cat "$T/status.out")"
grep -q "^one[[:space:]]" "$T/status.out" || fail "resource one is gone: $(cat "$T/status.out")"
pass "hastd -c hast.conf from $T, daemonized: SIGHUP read that file (resource two added)"

kill -TERM "$DAEMON_PID"
wait_pid_gone "$DAEMON_PID" 60
DAEMON_PID=""

expect_exit 78 "cannot obtain the full path of nosuch.conf" \
  bash -c "cd '$T' && exec '$HASTD' -F -c nosuch.conf -n nodeA"
pass "a relative -c that does not exist: exit 78, says why"
