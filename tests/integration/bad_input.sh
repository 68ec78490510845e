#!/usr/bin/env bash
# Malformed input on both sockets the daemon serves. NBD: a request with bad
# magic and garbage client flags end the connection, a read past the end
# gets EINVAL and the connection goes on. Control socket: random bytes, an
# oversized length prefix, a frame that is not JSON, JSON without "command",
# an unknown command. After each the daemon still runs, `hastctl status` and
# a fresh nbdinfo work, and the daemon's log names what was wrong. A TCP
# control address is refused with file, line and the reason.
# Usage: bad_input.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"
NBD_RAW="$(dirname "$0")/lib/nbd_raw.py"

res=bad
write_standalone_config "$res"
ctl create -m 64M "$res"
start_hastd
ctl role primary "$res"
URI=$(nbd_uri "$res")
ctl dump --json "$res" > "$T/dump.json"
datasize=$(json_get "$T/dump.json" "j['resources'][0]['datasize']")

# still_fine WHAT: the daemon runs, answers status, and serves a new NBD client.
still_fine() {
  daemon_alive
  ctl status "$res" | grep -q "^$res[[:space:]]*complete[[:space:]]*primary" \
    || fail "after $1: status is $(ctl status "$res" 2>&1)"
  local size
  size=$(nbdinfo --size "$URI") || fail "after $1: nbdinfo cannot connect"
  [[ $size -eq $datasize ]] || fail "after $1: nbdinfo says $size bytes"
}

# expect_log WHAT PATTERN: the daemon log names the reason (waits for the line).
expect_log() {
  wait_until 10 "the log to mention '$2' after $1" log_has "$2"
}

# --- NBD ---------------------------------------------------------------------------------
out=$(python3 "$NBD_RAW" "$T/$res.nbd" "$res" badmagic)
[[ $out == closed ]] || fail "bad request magic: the connection is $out"
expect_log "bad request magic" "bad request magic 0xdeadbeef"
still_fine "a request with bad magic"
pass "NBD request with bad magic: connection closed, logged"

out=$(python3 "$NBD_RAW" "$T/$res.nbd" "$res" garbage)
[[ $out == closed ]] || fail "garbage client flags: the connection is $out"
expect_log "garbage client flags" "unknown client flags 0xffffffff"
still_fine "garbage client flags"
pass "NBD garbage client flags: connection closed, logged"

out=$(python3 "$NBD_RAW" "$T/$res.nbd" "$res" pastend)
want=$'error 22\nthen read ok'
[[ $out == "$want" ]] || fail "read past the end: expected EINVAL then a good read, got: $out"
still_fine "a read past the end"
pass "NBD read past the end: EINVAL, then the same connection reads fine"

# --- control socket ---------------------------------------------------------------------
# control_send MODE: one connection to the control socket; prints the reply
# (or "closed" when the daemon hangs up without one).
control_send() {
  python3 - "$T/ctl.sock" "$1" <<'PY'
import json, os, socket, struct, sys
path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(path)
def frame(body):
    return struct.pack("<I", len(body)) + body
if mode == "random":
    # A length prefix over the limit, whatever the random bytes say after it
    # (a random prefix under the limit would only make the daemon wait).
    s.sendall(b"\xa7\x3f\x9c\xe1" + os.urandom(4096))
    s.shutdown(socket.SHUT_WR)
elif mode == "short":
    # Random bytes with a small length prefix, then the client hangs up.
    s.sendall(struct.pack("<I", 4000) + os.urandom(100))
    s.shutdown(socket.SHUT_WR)
elif mode == "oversized":
    s.sendall(struct.pack("<I", (1 << 20) + 1) + b"{}")
elif mode == "notjson":
    s.sendall(frame(b"\x00\xffthis is {not json"))
elif mode == "nocommand":
    s.sendall(frame(json.dumps({"resources": ["all"]}).encode()))
elif mode == "badtype":
    s.sendall(frame(json.dumps({"command": "status", "resources": "all"}).encode()))
elif mode == "unknown":
    s.sendall(frame(json.dumps({"command": "frobnicate", "resources": []}).encode()))
hdr = b""
try:
    while len(hdr) < 4:
        chunk = s.recv(4 - len(hdr))
        if not chunk:
            break
        hdr += chunk
except ConnectionResetError:
    hdr = b""
if len(hdr) < 4:
    print("closed")
    sys.exit(0)
(n,) = struct.unpack("<I", hdr)
body = b""
while len(body) < n:
    chunk = s.recv(n - len(body))
    if not chunk:
        break
    body += chunk
print(body.decode(errors="replace"))
PY
}

out=$(control_send random)
[[ $out == closed ]] || fail "random bytes on the control socket: got a reply: $out"
expect_log "random bytes" "control: closing connection: frame of [0-9]+ bytes exceeds the limit"
still_fine "random bytes on the control socket"
pass "control: random bytes: connection closed, logged"

out=$(control_send short)
[[ $out == closed ]] || fail "a truncated frame: got a reply: $out"
expect_log "a truncated frame" "control: closing connection: connection closed"
still_fine "a truncated frame on the control socket"
pass "control: truncated frame: connection closed, logged"

lines_before=$(grep -c "exceeds the limit" "$T/hastd.log")
out=$(control_send oversized)
[[ $out == closed ]] || fail "an oversized frame: got a reply: $out"
more_limit_lines() { (($(grep -c "exceeds the limit" "$T/hastd.log") > lines_before)); }
wait_until 10 "a second 'exceeds the limit' line" more_limit_lines
log_has "frame of $(((1 << 20) + 1)) bytes exceeds the limit of $((1 << 20))" \
  || fail "the log does not name the oversized frame's length"
still_fine "an oversized frame"
pass "control: length prefix over 1 MiB: connection closed, logged"

out=$(control_send notjson)
[[ $out == closed ]] || fail "a frame that is not JSON: got a reply: $out"
expect_log "a frame that is not JSON" "control: closing connection: request is not JSON"
still_fine "a frame that is not JSON"
pass "control: invalid JSON: connection closed, logged"

out=$(control_send nocommand)
[[ $out == closed ]] || fail "JSON without a command: got a reply: $out"
expect_log "JSON without a command" 'control: closing connection: request has no "command"'
still_fine "JSON without a command"
pass "control: JSON without \"command\": connection closed, logged"

out=$(control_send badtype)
[[ $out == *'"error"'*'\"resources\" must be an array'* ]] || fail "\"resources\" of the wrong type: reply $out"
soft_log_has "\"resources\" of the wrong type" '"resources" must be an array'
still_fine "\"resources\" of the wrong type"
pass "control: \"resources\" not an array: error reply $out"

out=$(control_send unknown)
[[ $out == *'"error"'*"unknown command 'frobnicate'"* ]] || fail "unknown command: reply $out"
soft_log_has "an unknown command" "unknown command 'frobnicate'"
still_fine "an unknown command"
pass "control: unknown command: error reply $out"

expect_fail "unknown command 'frobnicate'" ctl frobnicate
stop_hastd

# --- a TCP control address ---------------------------------------------------------------
# Refused by --check-config, by hastd's start and by hastctl, naming
# file:line and `control`, with the reason.
sed "s|^control uds://$T/ctl.sock|control tcp://127.0.0.1:$(free_port)|" "$T/hast.conf" > "$T/tcpctl.conf"
grep -q "^control tcp://" "$T/tcpctl.conf" || fail "could not write the TCP control address"
for cmd in "$HASTD -c $T/tcpctl.conf -n nodeA --check-config" "$HASTD -F -c $T/tcpctl.conf -n nodeA" \
           "$HASTCTL -c $T/tcpctl.conf -n nodeA status"; do
  # shellcheck disable=SC2086  # the command is split into its words on purpose
  expect_fail "$T/tcpctl.conf:1: control: expected uds:///path" $cmd
  [[ $ERR == *"must be a Unix socket readable by root only (mode 0600)"*"change roles"* ]] \
    || fail "'$cmd' does not say why: $ERR"
done
[[ ! -e $T/ctl.sock ]] || fail "a refused start left a control socket"
pass "control tcp://: refused by --check-config, hastd and hastctl with file:line and the reason"
finish_test bad_input
