#!/usr/bin/env bash
# What SIGHUP applies besides resources. The peer listen set: nodeB moves its
# `listen` to a new port; the old port is closed, the new one accepts, and
# nodeA, sent SIGHUP with its `remote` on the new port, reconnects there
# without a role change or a restart; a
# listen address that cannot be opened (nodeA's own port) is refused, logged,
# and the running set stays. The pid file: a daemonized hastd moves it to a
# changed `pidfile` (new file with its pid, old one gone); a -F -P hastd keeps
# its -P file. The control socket: a changed `control` moves it at once (the
# new socket answers, the old one is gone), as FreeBSD's hastd does; a new
# address another hastd serves refuses the whole reload, the old socket stays.
# Usage: reload.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

# accepts PORT: something accepts TCP connections on 127.0.0.1:PORT.
accepts() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
s.close()
PY
}

# unchanged_reloads N: nodeB logged at least N reloads that changed no listen or pidfile.
unchanged_reloads() { [[ $(grep -c "reload: listen and pidfile unchanged" "$T/nodeB.log") -ge $1 ]]; }

# ---- the peer listen set ------------------------------------------------------------------
res=rl
write_pair_config "$res" memsync
start_pair "$res" -m 16M
accepts "$PORT_B" || fail "nodeB does not listen on its port $PORT_B"

OLD_B=$PORT_B
NEW_B=$(free_port)
# nodeB's listen line and nodeA's remote for nodeB both move to the new port.
sed -i "s/127\.0\.0\.1:$OLD_B\$/127.0.0.1:$NEW_B/" "$T/hast.conf"
grep -q "listen tcp://127.0.0.1:$NEW_B" "$T/hast.conf" && grep -q "remote tcp://127.0.0.1:$NEW_B" "$T/hast.conf" \
  || fail "could not move nodeB's port in the configuration"
kill -HUP "${NODE_PID[nodeB]}"
wait_until 20 "nodeB to log the applied listen change" \
  log_has "reload: listen \+tcp://127\.0\.0\.1:$NEW_B, -tcp://127\.0\.0\.1:$OLD_B\$" "$T/nodeB.log"
accepts "$NEW_B" || fail "nodeB does not listen on the new port $NEW_B after SIGHUP"
accepts "$OLD_B" && fail "nodeB still listens on the old port $OLD_B after SIGHUP"
pass "SIGHUP: nodeB listens on the new port $NEW_B, not on the old $OLD_B; logged"

# nodeA, still primary, takes its new `remote` by SIGHUP alone: the link
# reconnects (no role change, no restart) and the pair is complete again.
pid_a=${NODE_PID[nodeA]}
kill -HUP "$pid_a"
wait_until 20 "nodeA to log the reconnect" \
  log_has "reconnecting the link with the new settings" "$T/nodeA.log"
wait_status nodeA "$res" complete 30
ctl_on nodeA list --json "$res" > "$T/a.json"
[[ $(json_get "$T/a.json" "j['resources'][0]['role']") == primary ]] || fail "nodeA left primary"
[[ $(json_get "$T/a.json" "j['resources'][0]['remote']") == "tcp://127.0.0.1:$NEW_B" ]] \
  || fail "nodeA's status does not show the new remote"
[[ ${NODE_PID[nodeA]} == "$pid_a" ]] && kill -0 "$pid_a" || fail "nodeA was restarted"
grep -q "updated $res (reconnecting: remote)" "$T/nodeA.log" \
  || fail "nodeA's reload summary does not say it reconnects for 'remote'"
pass "SIGHUP on nodeA: the new remote applies by reconnecting the link, still primary"

# A listen address that cannot be opened: nodeA's port, which nodeA holds.
sed -i "s|listen tcp://127.0.0.1:$NEW_B\$|listen tcp://127.0.0.1:$PORT_A|" "$T/hast.conf"
kill -HUP "${NODE_PID[nodeB]}"
wait_until 20 "nodeB to log why the listen set stays" \
  log_has "reload: the peer listen addresses stay tcp://127\.0\.0\.1:$NEW_B: .*127\.0\.0\.1:$PORT_A" "$T/nodeB.log"
accepts "$NEW_B" || fail "nodeB closed its listen port $NEW_B although the new address could not be opened"
kill -0 "${NODE_PID[nodeB]}" || fail "nodeB died on a listen address it cannot open"
ctl_on nodeB status "$res" > /dev/null || fail "nodeB no longer answers after the refused listen change"
unchanged_reloads 1 || fail "the refused listen change is not logged as 'unchanged'"
pass "SIGHUP with a listen address that cannot be opened: logged, the old set stays"
sed -i "s|listen tcp://127.0.0.1:$PORT_A\$|listen tcp://127.0.0.1:$NEW_B|" "$T/hast.conf"

# control_b PATH: nodeB's `control` line in the file names uds://PATH.
control_b() { sed -i "/^on nodeB {/,/^}/ s|^  control .*|  control uds://$1|" "$T/hast.conf"; }

# A changed control address moves the control socket while running.
control_b "$T/b/ctl2.sock"
kill -HUP "${NODE_PID[nodeB]}"
wait_until 20 "nodeB to log the moved control socket" \
  log_has "reload: control uds://$T/b/ctl\.sock -> uds://$T/b/ctl2\.sock\$" "$T/nodeB.log"
ctl_on nodeB status "$res" > /dev/null || fail "the new control socket does not answer after SIGHUP"
[[ ! -e $T/b/ctl.sock ]] || fail "the old control socket $T/b/ctl.sock is left behind"
control_b "$T/b/ctl.sock"
expect_exit 71 "hastd is not running" ctl_on nodeB status "$res"
pass "SIGHUP with a new control address: the socket moves (new one answers, old one gone)"

# A new control address that another hastd serves (nodeA's): the reload is
# refused as a whole, the control socket stays where it is.
control_b "$T/a/ctl.sock"
kill -HUP "${NODE_PID[nodeB]}"
wait_until 20 "nodeB to refuse the reload" \
  log_has "reload refused, keeping the running configuration: .*another hastd is serving the control socket $T/a/ctl\.sock" "$T/nodeB.log"
ctl_on nodeA status "$res" > "$T/a-status.out" \
  || fail "nodeA's control socket stopped answering after nodeB's refused reload"
grep -q "^$res[[:space:]]*complete primary" "$T/a-status.out" \
  || fail "nodeA's socket answers for someone else: $(cat "$T/a-status.out")"
control_b "$T/b/ctl2.sock"
ctl_on nodeB status "$res" > /dev/null || fail "nodeB's control socket stopped answering after the refused reload"
pass "SIGHUP with a control address another hastd serves: refused as a whole, the socket stays"
stop_node nodeA
stop_node nodeB

# ---- the pid file ---------------------------------------------------------------------
write_standalone_config pf
ctl create -m 16M pf
on_exit stop_daemon
"$HASTD" -c "$T/hast.conf" -n nodeA > "$T/daemon.out" 2>&1 || fail "daemon mode: $(cat "$T/daemon.out")"
DAEMON_PID=$(cat "$T/hastd.pid")
[[ $DAEMON_PID =~ ^[0-9]+$ ]] && kill -0 "$DAEMON_PID" || fail "no daemon from pid file: '$DAEMON_PID'"
sed -i "s|pidfile $T/hastd.pid|pidfile $T/moved.pid|" "$T/hast.conf"
kill -HUP "$DAEMON_PID"
moved() { [[ -s $T/moved.pid && ! -e $T/hastd.pid ]]; }
wait_until 20 "the pid file to move to $T/moved.pid" moved
[[ $(cat "$T/moved.pid") == "$DAEMON_PID" ]] || fail "the moved pid file holds $(cat "$T/moved.pid"), not $DAEMON_PID"
expect_fail "already running" "$HASTD" -c "$T/hast.conf" -n nodeA
[[ $ERR == *"$DAEMON_PID"* && $ERR == *"$T/moved.pid"* ]] || fail "the moved pid file is not locked: $ERR"
ctl status pf > /dev/null || fail "the daemon no longer answers after the pid file moved"
kill -TERM "$DAEMON_PID"
wait_pid_gone "$DAEMON_PID" 60
DAEMON_PID=""
[[ ! -e $T/moved.pid ]] || fail "the moved pid file is left behind after the daemon stopped"
pass "SIGHUP with a new pidfile: the daemon's pid file moves (locked, old one removed)"

start_hastd -P "$T/fixed.pid"
sed -i "s|pidfile $T/moved.pid|pidfile $T/other.pid|" "$T/hast.conf"
kill -HUP "$HASTD_PID"
wait_until 20 "the reload to be logged" log_has "reload: listen and pidfile unchanged"
[[ $(cat "$T/fixed.pid") == "$HASTD_PID" && ! -e $T/other.pid ]] \
  || fail "the -P pid file did not stay: $(ls "$T"/*.pid)"
stop_hastd
pass "SIGHUP with a new pidfile under -P: the -P file stays"
