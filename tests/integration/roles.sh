#!/usr/bin/env bash
# Roles on a single node: the export refuses clients unless primary, role
# changes and how status/list show them, a connected client blocks leaving
# primary unless -f (which disconnects it), an uncreated provider cannot
# become primary (and the daemon survives that), and status without a daemon.
# Usage: roles.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"
NBD_RAW="$(dirname "$0")/lib/nbd_raw.py"

cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
resource rr {
  device off
  local $T/rr.img
  nbd uds://$T/rr.nbd
  on nodeA { remote none }
}
resource uncreated {
  device off
  local $T/uncreated.img
  nbd uds://$T/uncreated.nbd
  on nodeA { remote none }
}
CONF
ctl create -m 64M rr
truncate -s 64M "$T/uncreated.img"
start_hastd

# status_row RES: the resource's row of `hastctl status`, fields split by blanks.
status_row() { ctl status "$1" | awk -v r="$1" '$1 == r { print $1, $2, $3, $4, $5 }'; }

# --- init ------------------------------------------------------------------------------
out=$(python3 "$NBD_RAW" "$T/rr.nbd" rr go)
[[ $out == error:*"not primary"* ]] || fail "NBD GO in init: expected a 'not primary' refusal, got: $out"
pass "init: the export refuses: $out"

ctl status > "$T/status.txt"
head -n 1 "$T/status.txt" | grep -q $'^Name\tStatus\t Role\t\tComponents$' || fail "status header: $(head -n 1 "$T/status.txt")"
[[ $(grep -c . "$T/status.txt") -eq 3 ]] || fail "status: expected a header and two rows: $(cat "$T/status.txt")"
[[ $(status_row rr) == "rr - init $T/rr.img none" ]] || fail "status row in init: $(status_row rr)"
ctl status --json > "$T/status.json"
python3 - "$T/status.json" <<'PY' || fail "status --json in init"
import json, sys
res = {r["name"]: r for r in json.load(open(sys.argv[1]))["resources"]}
assert set(res) == {"rr", "uncreated"}, res.keys()
for r in res.values():
    assert r["role"] == "init" and r["status"] == "-", r
PY
pass "init: status and status --json show role init, status -"

# --- primary -----------------------------------------------------------------------------
ctl role primary rr || fail "role primary rr"
[[ $(status_row rr) == "rr complete primary $T/rr.img none" ]] || fail "status row as primary: $(status_row rr)"
ctl --json status rr > "$T/status.json"
python3 - "$T/status.json" "$T/rr.img" <<'PY' || fail "status --json as primary"
import json, sys
rs = json.load(open(sys.argv[1]))["resources"]
assert len(rs) == 1, rs
r = rs[0]
assert r["name"] == "rr" and r["role"] == "primary" and r["status"] == "complete", r
assert r["local"] == sys.argv[2] and r["remote"] == "none", r
# The fields SPEC.md shows.
for key in ("connected", "replication", "dirty_bytes", "sync", "counters"):
    assert key in r, key
assert r["replication"] == "memsync" and r["dirty_bytes"] == 0, r
for key in ("active", "done_bytes", "total_bytes", "bytes_per_second"):
    assert key in r["sync"], key
PY
ctl list --json rr > "$T/list.json"
python3 - "$T/list.json" <<'PY' || fail "list --json as primary"
import json, sys
r = json.load(open(sys.argv[1]))["resources"][0]
assert r["role"] == "primary" and r["status"] == "complete", r
assert r["datasize"] > 0 and r["extent_size"] == 2 * 2**20 and r["keepdirty"] == 64, r
assert r["dirty_bytes"] == 0, r
assert r["sync"]["active"] is False, r
for key in ("reads", "writes", "deletes", "flushes", "activemap_updates"):
    assert key in r["counters"], key
PY
ctl list rr > "$T/list.txt"
grep -q '^  role: primary$' "$T/list.txt" || fail "list text lacks 'role: primary': $(cat "$T/list.txt")"
grep -q '^  status: complete$' "$T/list.txt" || fail "list text lacks 'status: complete'"
out=$(python3 "$NBD_RAW" "$T/rr.nbd" rr go)
[[ $out == "ok "* ]] || fail "NBD GO as primary: $out"
pass "primary: status, status --json, list, list --json agree; the export accepts ($out)"

# --- a connected client blocks leaving primary, -f disconnects it -----------------------
nbd_session_start s1 rr
held=$SESSION_PID
wait_until 10 "the daemon to count the client" nbd_clients_are rr 1
expect_exit 16 "client" ctl role secondary rr
[[ $ERR == *"-f"* ]] || fail "the refusal does not mention -f: $ERR"
[[ $(wc -l < "$T/expect.err") -eq 1 ]] || fail "the refusal is more than one line: $ERR"
[[ $ERR == "hastctl: rr: "* ]] || fail "the refusal does not start with 'hastctl: rr: ': $ERR"
plain_message "$ERR"
[[ $(status_row rr) == "rr complete primary"* ]] || fail "the refused role change changed the role: $(status_row rr)"
nbd_session_read s1 || fail "the held client cannot read after the refused role change: $(cat "$T/s1/read-failed")"
[[ ! -e $T/s1/closed ]] || fail "the held client was disconnected by a refused role change"
pass "role secondary with a client connected: refused ($ERR), the client still reads"

ctl role -f secondary rr || fail "role -f secondary rr"
wait_until 20 "the held client to be disconnected" test -e "$T/s1/closed"
wait_pid_gone "$held" 10
[[ $(status_row rr) == "rr degraded secondary"* || $(status_row rr) == "rr complete secondary"* ]] \
  || fail "status row as secondary: $(status_row rr)"
[[ $(list_field rr "r['role']") == secondary ]] || fail "list --json does not say secondary"
out=$(python3 "$NBD_RAW" "$T/rr.nbd" rr go)
[[ $out == error:*"not primary"* ]] || fail "NBD GO as secondary: $out"
pass "role -f secondary: accepted, the held client was disconnected, the export refuses"

# --- an uncreated provider cannot become primary -------------------------------------------
expect_exit 22 "not created" ctl role primary uncreated
[[ $(wc -l < "$T/expect.err") -eq 1 ]] || fail "more than one error line: $ERR"
[[ $ERR == "hastctl: uncreated: "* ]] || fail "the error does not start with 'hastctl: uncreated: ': $ERR"
[[ $ERR == *"$T/uncreated.img"* ]] || fail "the error does not name the provider: $ERR"
plain_message "$ERR"
[[ $(grep -o "$T/uncreated.img" <<< "$ERR" | wc -l) -eq 1 ]] || soft_fail "the error names the provider more than once: $ERR"
daemon_alive
ctl status > /dev/null || fail "status after the failed role change"
[[ $(status_row uncreated) == "uncreated - init"* ]] || fail "uncreated is not in init: $(status_row uncreated)"
python3 "$NBD_RAW" "$T/rr.nbd" rr go > /dev/null
pass "role primary on an uncreated provider: refused ($ERR), the daemon stays up"

# --- role init all -----------------------------------------------------------------------
ctl role primary rr
ctl role init all || fail "role init all"
ctl status --json > "$T/status.json"
python3 - "$T/status.json" <<'PY' || fail "status after role init all"
import json, sys
for r in json.load(open(sys.argv[1]))["resources"]:
    assert r["role"] == "init" and r["status"] == "-", r
PY
ctl dump --json rr > "$T/dump.json" || fail "dump after role init"
pass "role init all: every resource in init"

# --- no daemon ---------------------------------------------------------------------------
stop_hastd
rc=0
ctl status > "$T/nod.out" 2> "$T/nod.err" || rc=$?
[[ $rc -eq 71 ]] || fail "status without a daemon exited $rc, not 71 (EX_OSERR)"
[[ $(wc -l < "$T/nod.err") -eq 1 ]] || fail "status without a daemon: not one line: $(cat "$T/nod.err")"
grep -q "hastd is not running" "$T/nod.err" || fail "status without a daemon: $(cat "$T/nod.err")"
[[ ! -s $T/nod.out ]] || fail "status without a daemon printed to stdout: $(cat "$T/nod.out")"
pass "status without a daemon: $(cat "$T/nod.err")"
finish_test roles
