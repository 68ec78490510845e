#!/usr/bin/env bash
# A request that names a resource hastd does not know, among known ones:
# as in FreeBSD, that one name gets its own error (hastctl: a status row
# `ERR1`, a list entry `error: 1`, for role the warning "Received error 1
# from hastd"), every other name is acted on, and hastctl exits with the
# first resource's error number (1: no such resource, FreeBSD's
# EHAST_NOENTRY).
# Usage: partial_requests.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
resource ra {
  device off
  local $T/ra.img
  nbd uds://$T/ra.nbd
  on nodeA { remote none }
}
resource rb {
  device off
  local $T/rb.img
  nbd uds://$T/rb.nbd
  on nodeA { remote none }
}
CONF
ctl create -m 16M ra
ctl create -m 16M rb
start_hastd

# role_of RES: the role `status --json` reports for RES.
role_of() {
  ctl status --json "$1" > "$T/role.json"
  json_get "$T/role.json" "j['resources'][0]['role']"
}

# --- role ----------------------------------------------------------------------------------
expect_exit 1 "hastctl: nosuch: Received error 1 from hastd: unknown resource 'nosuch'" \
  ctl role primary nosuch ra
[[ $(wc -l < "$T/expect.err") -eq 1 ]] || fail "role primary nosuch ra: more than one error line: $ERR"
[[ $(role_of ra) == primary ]] || fail "role primary nosuch ra: ra is $(role_of ra), not primary"
[[ $(role_of rb) == init ]] || fail "role primary nosuch ra: rb, not named, changed to $(role_of rb)"
pass "role primary nosuch ra: ra became primary, nosuch reported alone, exit 1"

expect_exit 1 "unknown resource 'other'" ctl role init ra other rb
[[ $(role_of ra) == init ]] || fail "role init ra other rb: ra is $(role_of ra)"
pass "role init ra other rb: ra went to init, exit 1"

expect_exit 1 "unknown resource 'nosuch'" ctl role secondary nosuch
pass "role with only an unknown name: exit 1"

# --- status --------------------------------------------------------------------------------
ctl role primary rb
rc=0
ctl status ra nosuch rb > "$T/status.out" 2> "$T/status.err" || rc=$?
[[ $rc -eq 1 ]] || fail "status ra nosuch rb exited $rc, not 1: $(cat "$T/status.err")"
{
  printf 'Name\tStatus\t Role\t\tComponents\n'
  printf 'ra\t%-9s%-15s%s\tnone\n' - init "$T/ra.img"
  printf 'nosuch\tERR1\n'
  printf 'rb\t%-9s%-15s%s\tnone\n' complete primary "$T/rb.img"
} > "$T/status.want"
diff -u "$T/status.want" "$T/status.out" || fail "status ra nosuch rb (above)"
[[ ! -s $T/status.err ]] || fail "status printed on stderr: $(cat "$T/status.err")"
pass "status ra nosuch rb: FreeBSD's rows, ERR1 for nosuch, exit 1"

# --json exits 0 once hastd answered; each entry carries its error.
ctl status --json nosuch ra > "$T/status.json" || fail "status --json nosuch ra failed"
python3 - "$T/status.json" <<'PY' || fail "status --json nosuch ra: $(cat "$T/status.json")"
import json, sys
rs = json.load(open(sys.argv[1]))["resources"]
assert [r["name"] for r in rs] == ["nosuch", "ra"], rs
assert rs[0]["error"] == 1 and "unknown resource 'nosuch'" in rs[0]["last_error"], rs[0]
assert rs[1]["error"] == 0 and rs[1]["role"] == "init", rs[1]
PY
pass "status --json nosuch ra: an error entry for nosuch, ra's status"

# --- list ----------------------------------------------------------------------------------
rc=0
ctl list nosuch rb > "$T/list.out" || rc=$?
[[ $rc -eq 1 ]] || fail "list nosuch rb exited $rc, not 1"
head -n 3 "$T/list.out" > "$T/list.head"
printf "nosuch:\n  error: 1\n  reason: unknown resource 'nosuch'\n" | diff -u - "$T/list.head" \
  || fail "list nosuch rb: the entry for nosuch (above)"
grep -q '^rb:$' "$T/list.out" && grep -q '^  role: primary$' "$T/list.out" \
  || fail "list nosuch rb: no entry for rb: $(cat "$T/list.out")"
pass "list nosuch rb: 'error: 1' for nosuch, rb's entry, exit 1"

ctl status ra rb > /dev/null || fail "status of known resources only does not exit 0"
daemon_alive
stop_hastd
pass "partial requests"
