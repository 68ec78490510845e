#!/usr/bin/env bash
# hastctl events: the stream a script waits on instead of polling.
#   - a subscriber on nodeA first gets an `exists` line per resource and
#     `exists -`, then, in the order they happen: role init->primary,
#     connect, (B stops) disconnect with its reason, (A writes, B returns)
#     connect, syncstart, sync progress, syncdone, role primary->secondary;
#     the text form (time event resource key=value) and --json agree;
#   - a filter on a resource name passes only that resource's events;
#   - `--now` prints the state and exits; an unknown resource is refused;
#   - a subscriber that hangs up is dropped and logged, a malformed events
#     request closes only its connection; the daemon keeps serving.
# Usage: events.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

res=ev
# A slow resync (4 MiB/s for 12 MiB dirty) so that progress lines appear.
write_pair_config "$res" memsync "  syncrate 4M"
# A second resource on nodeA only, for the filter.
cat >> "$T/hast.conf" <<CONF
resource other {
$(device_line)
  on nodeA {
    local $T/a/other.img
    remote none
    nbd uds://$T/a/other.nbd
  }
  on nodeB {
    local $T/b/other.img
    remote none
    nbd uds://$T/b/other.nbd
  }
}
CONF
ctl_on nodeA create -m 16M other

# subscribe NAME [args]: `hastctl events` on nodeA in the background, its
# output in $T/NAME.out; returns once the snapshot ended (`exists -`).
declare -A SUB_PID
subscribe() {
  local name=$1; shift
  "$HASTCTL" -c "$T/hast.conf" -n nodeA events "$@" > "$T/$name.out" 2> "$T/$name.err" &
  SUB_PID[$name]=$!
  STARTED_PIDS+=("$!")
  for _ in $(seq 100); do
    grep -q 'exists -\|"resource":"-"' "$T/$name.out" 2>/dev/null && return 0
    kill -0 "${SUB_PID[$name]}" 2>/dev/null || fail "events $*: exited: $(cat "$T/$name.err")"
    sleep 0.1
  done
  fail "events $*: no snapshot within 10 s"
}
# The subscribers start while nodeA's resource is still in init (nodeB is
# secondary): start_pair runs this before it makes nodeA primary.
subscribers() {
  subscribe text
  subscribe json --json
  subscribe filtered other

  grep -qE "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z exists $res role=init connected=no status=- dirty=0$" \
    "$T/text.out" || fail "text snapshot: $(cat "$T/text.out")"
  grep -qE "exists other role=init" "$T/text.out" || fail "snapshot lacks 'other': $(cat "$T/text.out")"
  pass "the stream starts with the state: $(head -n 1 "$T/text.out" | cut -d' ' -f2-)"
}
PAIR_BEFORE_PRIMARY=subscribers start_pair "$res" -m 64M -e 1M
M=$((1 << 20))
stop_node nodeB
# A writes while B is away: 12 MiB to copy when it returns.
head -c $((12 * M)) /dev/urandom > "$T/data"
nbdcopy "$T/data" "$(nbd_uri_of nodeA "$res")" || fail "nbdcopy"
start_node nodeB
ctl_on nodeB role secondary "$res"
wait_status nodeA "$res" complete 60
ctl_on nodeA role secondary "$res"
ctl_on nodeA role primary other
# The last events have reached every subscriber.
last_events_in() {
  grep -q "role $res old=primary new=secondary" "$T/text.out" \
    && grep -q "role other old=init new=primary" "$T/text.out" \
    && grep -q '"event":"role","resource":"'"$res"'".*"new":"secondary"' "$T/json.out" \
    && grep -q '"event":"role","resource":"other".*"new":"primary"' "$T/json.out" \
    && grep -q "role other old=init new=primary" "$T/filtered.out"
}
wait_until 10 "the last role events in every subscriber's stream" last_events_in

# The events of `ev` in order, without time and snapshot.
events_of() { awk -v r="$res" '$3 == r && $2 != "exists" { $1 = ""; print substr($0, 2) }' "$1"; }
events_of "$T/text.out" > "$T/seq.txt"
cat "$T/seq.txt"
python3 - "$T/seq.txt" <<'PY' || fail "event order (above)"
import shlex, sys
lines = [shlex.split(l) for l in open(sys.argv[1])]
names = [l[0] for l in lines]
def fields(l): return dict(kv.split("=", 1) for kv in l[2:])
def index(name, start=0, **want):
    for i in range(start, len(lines)):
        if names[i] == name and all(fields(lines[i]).get(k) == v for k, v in want.items()):
            return i
    raise SystemExit(f"no {name} {want} after line {start + 1}: {names}")
i = index("role", old="init", new="primary")
i = index("connect", i)
d = index("disconnect", i)
assert fields(lines[d]).get("reason"), lines[d]
c = index("connect", d)
s = index("syncstart", c, direction="primary->secondary")
assert int(fields(lines[s])["bytes"]) >= 12 << 20, lines[s]
p = index("sync", s)
f = fields(lines[p])
assert 0 < int(f["done"]) <= int(f["total"]) and float(f["percent"]) <= 100, lines[p]
e = index("syncdone", p)
assert int(fields(lines[e])["bytes"]) >= 12 << 20, lines[e]
index("role", e, old="primary", new="secondary")
PY
pass "role, connect, disconnect (with its reason), connect, syncstart, sync, syncdone, role: in order"

# --json carries the same events, with the same fields.
python3 - "$T/json.out" "$T/seq.txt" "$res" <<'PY' || fail "--json stream"
import json, sys
objs = [json.loads(l) for l in open(sys.argv[1])]
for o in objs:
    assert list(o)[:3] == ["time", "event", "resource"], o
mine = [o for o in objs if o["resource"] == sys.argv[3] and o["event"] != "exists"]
text = [l.split()[0] for l in open(sys.argv[2])]
assert [o["event"] for o in mine] == text, ([o["event"] for o in mine], text)
role = next(o for o in mine if o["event"] == "role")
assert role["old"] == "init" and role["new"] == "primary", role
PY
pass "--json: one object per line, the same events"

# The filtered subscriber saw only `other`.
awk '{ print $3 }' "$T/filtered.out" | sort -u | tr '\n' ' ' | grep -qx -- "- other " \
  || fail "filter: $(cat "$T/filtered.out")"
grep -q "role other old=init new=primary" "$T/filtered.out" || fail "filter lacks other's role"
pass "a name filter passes only that resource's events"

out=$(ctl_on nodeA events --now "$res") || fail "events --now"
[[ $(wc -l <<<"$out") -eq 2 && $out == *"exists $res role=secondary connected=no"* && $out == *"exists -" ]] \
  || fail "events --now: $out"
pass "--now: the state and exit"
if err=$(ctl_on nodeA events nosuch 2>&1); then fail "events on an unknown resource succeeded"; fi
[[ $err == *"unknown resource 'nosuch'"* ]] || fail "unknown resource: $err"
pass "an unknown resource is refused: $err"

# A subscriber that goes away is dropped; the daemon keeps serving.
kill "${SUB_PID[filtered]}"
for _ in $(seq 60); do
  grep -q "events: closing a subscriber" "$T/nodeA.log" && break
  sleep 0.1
done
grep -q "events: closing a subscriber: it hung up" "$T/nodeA.log" || fail "hang-up not logged"
pass "a subscriber that hung up is dropped: $(grep -m1 'closing a subscriber' "$T/nodeA.log" | sed 's/.*events: //')"

# A malformed events request closes only that connection.
python3 - "$T/a/ctl.sock" <<'PY' || fail "malformed events request"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)
body = json.dumps({"command": "events", "resources": 5}).encode()
s.sendall(struct.pack("<I", len(body)) + body)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk: break
    data += chunk
# The confirmation, then the close.
assert data[4:] == b'{"streaming":true}', data
PY
grep -q "closing an event stream: malformed request" "$T/nodeA.log" || fail "malformed request not logged"
ctl_on nodeA status "$res" > /dev/null || fail "daemon stopped answering"
pass "a malformed events request is closed and logged; the daemon serves on"

# The subscribers see the daemon go: hastctl events ends with an error.
stop_node nodeA
rc=0
wait "${SUB_PID[text]}" || rc=$?
[[ $rc -eq 69 ]] || fail "events exited $rc, not 69 (EX_UNAVAILABLE), when hastd stopped"
grep -q "the stream ended" "$T/text.err" || fail "events end: $(cat "$T/text.err")"
pass "when hastd stops, hastctl events says so and exits 69"
stop_node nodeB
