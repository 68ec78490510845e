#!/usr/bin/env bash
# hastd under a service manager (systemd Type=notify): a stand-in for
# systemd's notification socket records what hastd sends. READY=1 comes
# only once the control socket answers (the listener runs `hastctl status`
# the moment READY arrives: it must succeed at the first try), from hastd's
# own pid, with a STATUS= line; SIGHUP gives RELOADING=1 then READY=1 with
# the new count; SIGTERM gives STOPPING=1 and exit 0; a daemonizing hastd
# (no -F) notifies from the child and names it with MAINPID=; a start that
# fails (peer port in use, unusable control socket path) sends no READY=1,
# says why in STATUS= and exits non-zero.
# Usage: sd_notify.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LISTENER="$(dirname "$0")/lib/notify_listener.py"

declare -A LISTENER_PID
# stop_listener NAME: the listener records what is queued on its socket and
# exits; then $T/NAME.jsonl holds every notification sent before the call.
stop_listener() {
  kill -TERM "${LISTENER_PID[$1]}"
  wait "${LISTENER_PID[$1]}" || fail "the notification listener $1 exited $?"
}

# start_listener NAME [COMMAND...]: the notification socket $T/NAME.sock,
# recording into $T/NAME.jsonl; exports NOTIFY_SOCKET for what starts next.
start_listener() {
  local name=$1
  shift
  python3 "$LISTENER" "$T/$name.sock" "$T/$name.jsonl" "$@" &
  LISTENER_PID[$name]=$!
  STARTED_PIDS+=("$!")
  for _ in $(seq 100); do [[ -S $T/$name.sock ]] && break; sleep 0.05; done
  [[ -S $T/$name.sock ]] || fail "the notification listener did not start"
  export NOTIFY_SOCKET="$T/$name.sock"
}

# notes NAME PYEXPR: evaluates PYEXPR over `n`, the list of notifications.
notes() {
  python3 -c "import json,sys; n=[json.loads(l) for l in open('$T/$1.jsonl')]; print($2)"
}

# wait_note NAME KEY=VALUE [COUNT]: until COUNT notifications (1) hold it.
wait_note() {
  local name=$1 kv=$2 count=${3:-1}
  local pattern="\"${kv%%=*}\": \"${kv#*=}\""  # as json.dumps writes it
  for _ in $(seq 200); do
    [[ $(grep -cF -- "$pattern" "$T/$name.jsonl" 2>/dev/null) -ge $count ]] && return 0
    sleep 0.05
  done
  fail "no $kv (x$count) from hastd within 10 s; got: $(cat "$T/$name.jsonl" 2>/dev/null)"
}

# --- foreground (-F, as the unit runs it): READY, reload, stop ------------------------------
res=notified
write_standalone_config "$res"
ctl create -m 16M "$res"
start_listener fg "$HASTCTL" -c "$T/hast.conf" -n nodeA status
"$HASTD" -F -c "$T/hast.conf" -n nodeA >>"$T/hastd.log" 2>&1 &
HASTD_PID=$!
STARTED_PIDS+=("$HASTD_PID")
wait_note fg READY=1
[[ $(notes fg "[r for r in n if r['fields'].get('READY') == '1'][0]['command_rc']") == 0 ]] \
  || fail "READY=1 came before the control socket answered: hastctl status failed at once"
[[ $(notes fg "n[0]['fields'].get('READY')") == 1 ]] \
  || fail "hastd notified something before READY=1: $(cat "$T/fg.jsonl")"
[[ $(notes fg "n[0]['pid']") == "$HASTD_PID" ]] \
  || fail "READY=1 came from pid $(notes fg "n[0]['pid']"), not hastd ($HASTD_PID)"
[[ $(notes fg "n[0]['fields'].get('STATUS')") == "serving 1 resource(s) on node nodeA" ]] \
  || fail "READY=1 without the expected STATUS=: $(head -n1 "$T/fg.jsonl")"
[[ $(notes fg "'MAINPID' in n[0]['fields']") == False ]] \
  || fail "a foreground hastd sent MAINPID= (it is the main process already)"
pass "READY=1 from hastd ($HASTD_PID) once hastctl status answers; STATUS=$(notes fg "n[0]['fields']['STATUS']")"

cat >> "$T/hast.conf" <<CONF
resource second {
$(device_line)
  local $T/second.img
  nbd uds://$T/second.nbd
  on nodeA {
    remote none
  }
}
CONF
ctl create -m 16M second
kill -HUP "$HASTD_PID"
wait_note fg READY=1 2
order=$(notes fg "' '.join('R' if r['fields'].get('RELOADING') == '1' else 'Y' if r['fields'].get('READY') == '1' else '?' for r in n)")
[[ $order == "Y R Y" ]] || fail "SIGHUP: expected READY, RELOADING, READY; got '$order'"
[[ $(notes fg "n[1]['fields'].get('MONOTONIC_USEC', '').isdigit()") == True ]] \
  || fail "RELOADING=1 without MONOTONIC_USEC: $(sed -n 2p "$T/fg.jsonl")"
[[ $(notes fg "n[2]['fields'].get('STATUS')") == "serving 2 resource(s) on node nodeA" ]] \
  || fail "READY=1 after the reload without the new count: $(sed -n 3p "$T/fg.jsonl")"
pass "SIGHUP: RELOADING=1 (MONOTONIC_USEC), then READY=1 with STATUS=$(notes fg "n[2]['fields']['STATUS']")"

kill -TERM "$HASTD_PID"
rc=0
wait "$HASTD_PID" || rc=$?
[[ $rc -eq 0 ]] || fail "hastd exited $rc after SIGTERM"
wait_note fg STOPPING=1
[[ $(notes fg "n[-1]['fields'].get('STOPPING')") == 1 && $(notes fg "len(n)") == 4 ]] \
  || fail "SIGTERM: expected STOPPING=1 last; got $(cat "$T/fg.jsonl")"
pass "SIGTERM: STOPPING=1, exit 0"

# --- daemon mode: the child notifies and names itself -----------------------------------------
start_listener bg
on_exit stop_daemon
rc=0
"$HASTD" -c "$T/hast.conf" -n nodeA > "$T/daemon.out" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || fail "hastd in daemon mode exited $rc: $(cat "$T/daemon.out")"
DAEMON_PID=$(cat "$T/hastd.pid")
wait_note bg READY=1
[[ $(notes bg "n[0]['fields'].get('MAINPID')") == "$DAEMON_PID" ]] \
  || fail "daemon mode: MAINPID=$(notes bg "n[0]['fields'].get('MAINPID')"), pid file says $DAEMON_PID"
[[ $(notes bg "n[0]['pid']") == "$DAEMON_PID" ]] \
  || fail "daemon mode: READY=1 came from pid $(notes bg "n[0]['pid']"), not the daemon $DAEMON_PID"
stop_daemon
DAEMON_PID=""
pass "daemon mode: READY=1 with MAINPID=$(notes bg "n[0]['fields']['MAINPID']") from the daemonized child"

# --- failed starts: no READY, STATUS= says why, non-zero exit ----------------------------------
# expect_failed_start NAME WHAT: hastd -F on $T/hast.conf must fail.
expect_failed_start() {
  local name=$1 what=$2 rc=0
  start_listener "$name"
  timeout 30 "$HASTD" -F -c "$T/hast.conf" -n nodeA >>"$T/$name.log" 2>&1 || rc=$?
  [[ $rc -ne 0 && $rc -ne 124 ]] || fail "$what: hastd exited $rc"
  # hastd has exited, so its last datagram is queued on the listener's socket.
  stop_listener "$name"
  [[ -f $T/$name.jsonl ]] || fail "$what: hastd sent nothing (no STATUS=)"
  [[ $(notes "$name" "any(r['fields'].get('READY') == '1' for r in n)") == False ]] \
    || fail "$what: READY=1 was sent: $(cat "$T/$name.jsonl")"
  local status
  status=$(notes "$name" "n[-1]['fields'].get('STATUS', '')")
  [[ -n $status ]] || fail "$what: no STATUS= line: $(cat "$T/$name.jsonl")"
  pass "$what: exit $rc, no READY=1, STATUS=$status"
}

busy=$(free_port)
python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',$busy)); s.listen(); time.sleep(120)" &
STARTED_PIDS+=("$!")
for _ in $(seq 50); do ss -ltn "sport = :$busy" | grep -q LISTEN && break; sleep 0.1; done
cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
listen tcp://127.0.0.1:$busy
resource $res {
$(device_line)
  local $T/$res.img
  on nodeA {
    remote tcp://127.0.0.1:$(free_port)
  }
}
CONF
expect_failed_start busy "peer port in use"

touch "$T/not-a-dir"
write_standalone_config "$res"
sed -i "s|^control .*|control uds://$T/not-a-dir/ctl.sock|" "$T/hast.conf"
expect_failed_start badctl "control socket under a regular file"
