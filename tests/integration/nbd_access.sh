#!/usr/bin/env bash
# Who may use a TCP NBD export, through a real hastd: a client whose address
# `nbd-allow` does not name is closed and logged, the daemon goes on, and a
# reload that names it lets it in without a restart; a connection over the
# export's cap of 16 is closed while the 16 are served, and once they go the
# export serves again.
# Usage: nbd_access.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"

res=acc
port=$(free_port)
write_config() {  # write_config ALLOW
  cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
pidfile $T/hastd.pid
resource $res {
$(device_line)
  local $T/$res.img
  nbd tcp://127.0.0.1:$port
  nbd-allow $1
  on nodeA {
    remote none
  }
}
CONF
}
# 192.0.2.1 is TEST-NET-1: no client here has it.
write_config 192.0.2.1
"$HASTD" -F -c "$T/hast.conf" -n nodeA --check-config | grep -q "nbd-allow: 192.0.2.1" \
  || fail "--check-config does not show nbd-allow"
ctl create -m 64M "$res"
start_hastd
ctl role primary "$res"
URI="nbd://127.0.0.1:$port"

# --- an address that is not in the list ----------------------------------------------
! nbdinfo "$URI" > "$T/info.txt" 2>&1 || fail "a client not in nbd-allow was served"
for _ in $(seq 50); do grep -q "refused: 127.0.0.1 is not in nbd-allow" "$T/hastd.log" && break; sleep 0.1; done
grep -q "nbd $res: .*refused: 127.0.0.1 is not in nbd-allow" "$T/hastd.log" \
  || fail "the refusal is not logged: $(tail -5 "$T/hastd.log")"
kill -0 "$HASTD_PID" || fail "hastd exited"
ctl status "$res" | grep -q primary || fail "hastd stopped serving: $(ctl status "$res")"
pass "a client outside nbd-allow is closed and logged; hastd keeps serving"

# --- a reload names it ---------------------------------------------------------------------
write_config "192.0.2.1,127.0.0.0/8"
kill -HUP "$HASTD_PID"
for _ in $(seq 50); do grep -q "configuration reloaded" "$T/hastd.log" && break; sleep 0.1; done
grep -q "configuration reloaded: updated $res" "$T/hastd.log" || fail "reload: $(tail -5 "$T/hastd.log")"
nbdinfo "$URI" > "$T/info.txt" 2>&1 || fail "a client named by the reloaded nbd-allow was refused: $(cat "$T/info.txt")"
ctl status "$res" | grep -q primary || fail "the reload restarted the resource"
pass "a reload that adds the client's prefix lets it in, without a restart"

# --- the connection cap --------------------------------------------------------------------
python3 - "$port" <<'PY' || fail "the connection cap"
import socket, sys, time
port = int(sys.argv[1])
def open_one():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s
def greeted(s):
    data = b""
    while len(data) < 8:
        chunk = s.recv(8 - len(data))
        if not chunk:
            return False
        data += chunk
    return data == b"NBDMAGIC"
held = [open_one() for _ in range(16)]
assert all(greeted(s) for s in held), "one of 16 connections was not greeted"
extra = open_one()
try:
    assert not greeted(extra), "a 17th connection was served"
except ConnectionResetError:
    pass
extra.close()
for s in held:
    s.close()
time.sleep(0.5)
again = open_one()
assert greeted(again), "no connection is served after the 16 closed"
again.close()
PY
grep -q "refused: 16 connections are open" "$T/hastd.log" || fail "the cap refusal is not logged"
nbdinfo "$URI" > /dev/null 2>&1 || fail "nbdinfo after the cap"
pass "the 17th connection is closed while 16 are open; the export serves again after"

stop_hastd
echo "PASS: nbd_access"
