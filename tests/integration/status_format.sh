#!/usr/bin/env bash
# `hastctl status` and `hastctl list` print FreeBSD's formats byte for byte
# (sbin/hastctl/hastctl.c control_status(), control_list()), hast's own list
# fields after FreeBSD's, resources in configuration-file order (zeta, alpha,
# beta: not sorted), and `status` with no resources prints nothing, not even
# the header.
#
# Usage: status_format.sh <build-dir>
BUILD=${1:?usage: status_format.sh <build-dir>}
source "$(dirname "$0")/lib/common.bash"

PORT_A=$(free_port)
PORT_B=$(free_port)
mkdir -p "$T/a" "$T/b"
# zeta: a pair, primary on A and secondary on B (complete once in sync);
# alpha: role init on both, another provider name; beta: primary on A with
# B left in init (degraded), with a source address.
section() { # section RES NODE DIR REMOTE [extra lines]
  printf '  on %s {\n    local %s/%s/%s.img\n    remote %s\n    nbd uds://%s/%s/%s.nbd\n%s  }\n' \
    "$2" "$T" "$3" "$1" "$4" "$T" "$3" "$1" "${5:-}"
}
{
  cat <<CONF
on nodeA {
  control uds://$T/a/ctl.sock
  pidfile $T/a/hastd.pid
  listen tcp://127.0.0.1:$PORT_A
}
on nodeB {
  control uds://$T/b/ctl.sock
  pidfile $T/b/hastd.pid
  listen tcp://127.0.0.1:$PORT_B
}
CONF
  for res in zeta alpha beta; do
    echo "resource $res {"
    echo "  timeout 5"
    echo "  device off"
    [[ $res == alpha ]] && echo "  name alphadisk"
    [[ $res == beta ]] && echo "  replication fullsync" && echo "  checksum crc32"
    section $res nodeA a "tcp://127.0.0.1:$PORT_B" "$([[ $res == beta ]] && echo "    source tcp://127.0.0.1")"
    section $res nodeB b "tcp://127.0.0.1:$PORT_A"
    echo "}"
  done
} > "$T/hast.conf"

json_stdin() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

for node in nodeA nodeB; do
  ctl_on $node create -m 4M all || fail "create on $node"
done
run_pair zeta
ctl_on nodeA role primary beta || fail "role primary beta on nodeA"
wait_status nodeB zeta complete 60

# ---- status: FreeBSD's control_status() printfs, one row per resource ----
row() { printf '%s\t' "$1"; printf '%-9s' "$2"; printf '%-15s' "$3"; printf '%s\t' "$4"; printf '%s\n' "$5"; }
{
  printf 'Name\tStatus\t Role\t\tComponents\n'
  row zeta complete primary "$T/a/zeta.img" "tcp://127.0.0.1:$PORT_B"
  row alpha - init "$T/a/alpha.img" "tcp://127.0.0.1:$PORT_B"
  row beta degraded primary "$T/a/beta.img" "tcp://127.0.0.1:$PORT_B"
} > "$T/status.want"
ctl_on nodeA status > "$T/status.got" || fail "hastctl status on nodeA"
diff -u "$T/status.want" "$T/status.got" || fail "status on nodeA differs from FreeBSD's format (above)"
{
  printf 'Name\tStatus\t Role\t\tComponents\n'
  row zeta complete secondary "$T/b/zeta.img" "tcp://127.0.0.1:$PORT_A"
} > "$T/status-b.want"
ctl_on nodeB status zeta > "$T/status-b.got" || fail "hastctl status zeta on nodeB"
diff -u "$T/status-b.want" "$T/status-b.got" || fail "status zeta on nodeB differs (above)"
pass "status prints FreeBSD's header and rows, in configuration-file order"

# ---- no resources: status prints nothing ----
mkdir -p "$T/empty"
cat > "$T/empty/hast.conf" <<CONF
control uds://$T/empty/ctl.sock
pidfile $T/empty/hastd.pid
listen tcp://127.0.0.1:$(free_port)
CONF
"$HASTD" -F -c "$T/empty/hast.conf" -n nodeA >>"$T/empty.log" 2>&1 &
STARTED_PIDS+=("$!")
empty() { "$HASTCTL" -c "$T/empty/hast.conf" -n nodeA "$@"; }
for _ in $(seq 100); do empty status >/dev/null 2>&1 && break; sleep 0.1; done
empty status > "$T/empty.got" || fail "hastctl status with no resources failed"
[[ ! -s $T/empty.got ]] || fail "status with no resources printed: $(cat -A "$T/empty.got")"
empty list > "$T/empty-list.got" || fail "hastctl list with no resources failed"
[[ ! -s $T/empty-list.got ]] || fail "list with no resources printed: $(cat -A "$T/empty-list.got")"
pass "status and list with no resources print nothing"

# ---- answers hastd cannot be made to give here, from a stand-in daemon ----
# A control socket that answers every request with the same status reply:
# a sync running, a per-resource error, a split brain, a failing local disk.
mkdir -p "$T/fake"
cat > "$T/fake/hast.conf" <<CONF
control uds://$T/fake/ctl.sock
pidfile $T/fake/hastd.pid
CONF
cat > "$T/fake/reply.json" <<'JSON'
{"resources": [
 {"name": "zeta", "role": "primary", "status": "syncing", "local": "/dev/sdb", "remote": "tcp://127.0.0.1:7771",
  "sync": {"active": true, "direction": "primary->secondary", "done_bytes": 1048576, "total_bytes": 4194304,
           "bytes_per_second": 1048576}},
 {"name": "alpha", "error": 16, "status": "-", "last_error": "the resource is restarting"},
 {"name": "beta", "role": "secondary", "status": "split-brain", "local": "/dev/sdc", "remote": "tcp://127.0.0.1:7772",
  "split_brain": true},
 {"name": "gamma", "provider_name": "gammadisk", "role": "primary", "status": "degraded", "connected": true,
  "local": "/dev/sdd", "remote": "tcp://127.0.0.1:7773", "replication": "async", "checksum": "sha256",
  "compression": "lzf", "datasize": 1099511627776, "extent_size": 1048576, "keepdirty": 8,
  "dirty_bytes": 10188, "workerpid": 4242, "nbd": "tcp://127.0.0.1:7774", "nbd_connections": 2,
  "queues": {"local": 1, "send": 2, "recv": 3, "done": 4, "idle": 5}, "local_failing": true,
  "device": "", "device_error": "no nbd kernel module and no nbdfuse",
  "counters": {"reads": 11, "writes": 12, "deletes": 13, "flushes": 14, "activemap_updates": 15,
               "read_errors": 0, "write_errors": 7, "delete_errors": 1, "flush_errors": 2}}
]}
JSON
python3 - "$T/fake/ctl.sock" "$T/fake/reply.json" <<'PY' &
import os, socket, struct, sys
path, reply = sys.argv[1], open(sys.argv[2], 'rb').read()
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(4)
while True:
    c, _ = s.accept()
    n = struct.unpack('<I', c.recv(4, socket.MSG_WAITALL))[0]
    c.recv(n, socket.MSG_WAITALL)
    c.sendall(struct.pack('<I', len(reply)) + reply)
    c.close()
PY
STARTED_PIDS+=("$!")
for _ in $(seq 50); do [[ -S $T/fake/ctl.sock ]] && break; sleep 0.1; done
fake() { "$HASTCTL" -c "$T/fake/hast.conf" -n nodeA "$@"; }
{
  printf 'Name\tStatus\t Role\t\tComponents\n'
  row zeta degraded primary /dev/sdb tcp://127.0.0.1:7771
  printf 'alpha\tERR16\n'
  row beta degraded secondary /dev/sdc tcp://127.0.0.1:7772
  row gamma degraded primary /dev/sdd tcp://127.0.0.1:7773
} > "$T/fake-status.want"
rc=0
fake status > "$T/fake-status.got" || rc=$?
diff -u "$T/fake-status.want" "$T/fake-status.got" || fail "status of the stand-in's reply differs (above)"
[[ $rc -eq 16 ]] || fail "status with a resource in error exited $rc, not its error number 16"
pass "status: only complete, degraded or -; ERR<n> rows; exit status the first error"

cat > "$T/fake-list.want" <<'LIST'
alpha:
  error: 16
  reason: the resource is restarting
gamma:
  role: primary
  provname: gammadisk
  localpath: /dev/sdd
  extentsize: 1048576 (1.0MB)
  keepdirty: 8
  remoteaddr: tcp://127.0.0.1:7773
  replication: async
  status: degraded
  workerpid: 4242
  dirty: 10188 (9.9KB)
  statistics:
    reads: 11
    writes: 12
    deletes: 13
    flushes: 14
    activemap updates: 15
    local errors: read: 0, write: 7, delete: 1, flush: 2
    queues: local: 1, send: 2, recv: 3, done: 4, idle: 5
  checksum: sha256
  compression: lzf
  connected: yes
  split brain: no
  datasize: 1099511627776 (1.0TB)
  nbd: tcp://127.0.0.1:7774 (2 client(s))
  device: none (no nbd kernel module and no nbdfuse)
  local disk: failing (7 write errors); writes complete on the secondary
  synchronization: idle
  verify: none
LIST
rc=0
fake list > "$T/fake-list.raw" || rc=$?
[[ $rc -eq 16 ]] || fail "list with a resource in error exited $rc, not its error number 16"
awk '/^alpha:$/ || /^gamma:$/ { p = 1 } /^(zeta|beta):$/ { p = 0 } p' "$T/fake-list.raw" > "$T/fake-list.got"
diff -u "$T/fake-list.want" "$T/fake-list.got" || fail "list of the stand-in's reply differs (above)"
grep -q '^  status: degraded$' <(sed -n '/^zeta:$/,/^alpha:$/p' "$T/fake-list.raw") \
  || fail "list shows a status other than degraded for a syncing resource"
grep -qE '^  synchronization: primary->secondary 25\.0% ' "$T/fake-list.raw" \
  || fail "list lost the synchronization line"
grep -q '^  split brain: yes$' "$T/fake-list.raw" || fail "list does not say split brain: yes"
pass "list: an error as FreeBSD's '  error: N' (and why), every field of a full reply in place"

# ---- list: FreeBSD's control_list() block, then hast's fields ----
# What varies by run is replaced: worker pids by PID, activemap update
# counts (metadata rounds of role changes and connects) by N.
datasize=$(ctl_on nodeA dump --json zeta | json_stdin "j['resources'][0]['datasize']")
[[ $datasize == 4177920 ]] || fail "a 4 MiB provider has datasize $datasize, not 4177920"
# beta's line saying why it is not connected appears after its first attempt.
for _ in $(seq 100); do
  ctl_on nodeA list beta | grep -q '^  error: ' && break
  sleep 0.1
done
list_block() { # list_block RES ROLE PROVNAME STATUS CHECKSUM CONNECTED REPLICATION [SOURCE [ERROR]]
  local res=$1
  echo "$res:"
  echo "  role: $2"
  echo "  provname: $3"
  echo "  localpath: $T/a/$res.img"
  # As FreeBSD's: a resource in init has no worker, its sizes print as 0.
  if [[ $2 == init ]]; then
    echo "  extentsize: 0 (0B)"
    echo "  keepdirty: 0"
  else
    echo "  extentsize: 2097152 (2.0MB)"
    echo "  keepdirty: 64"
  fi
  echo "  remoteaddr: tcp://127.0.0.1:$PORT_B"
  [[ -n ${8:-} ]] && echo "  sourceaddr: $8"
  echo "  replication: $7"
  if [[ $2 != init ]]; then
    echo "  status: $4"
    echo "  workerpid: PID"
  fi
  echo "  dirty: 0 (0B)"
  echo "  statistics:"
  echo "    reads: 0"
  echo "    writes: 0"
  echo "    deletes: 0"
  echo "    flushes: 0"
  echo "    activemap updates: N"
  echo "    local errors: read: 0, write: 0, delete: 0, flush: 0"
  echo "    queues: local: 0, send: 0, recv: 0, done: 0, idle: 0"
  echo "  checksum: $5"
  echo "  compression: hole"
  echo "  connected: $6"
  echo "  split brain: no"
  if [[ $2 == init ]]; then
    echo "  datasize: 0 (0B)"
  else
    echo "  datasize: 4177920 (4.0MB)"
  fi
  echo "  nbd: uds://$T/a/$res.nbd (0 client(s))"
  echo "  device: none"
  echo "  local disk: ok"
  echo "  synchronization: idle"
  echo "  verify: none"
  [[ -n ${9:-} ]] && echo "  error: $9"
  return 0
}
{
  list_block zeta primary zeta complete none yes memsync
  list_block alpha init alphadisk - none no memsync
  list_block beta primary beta degraded crc32 no fullsync tcp://127.0.0.1 \
    "refused by the secondary: the remote node acts as init for the resource and not as secondary"
} > "$T/list.want"
ctl_on nodeA list > "$T/list.raw" || fail "hastctl list on nodeA"
sed -E -e 's/^  workerpid: [1-9][0-9]*$/  workerpid: PID/' \
  -e 's/^    activemap updates: [0-9]+$/    activemap updates: N/' "$T/list.raw" > "$T/list.got"
diff -u "$T/list.want" "$T/list.got" || fail "list on nodeA differs from the expected text (above)"
pass "list prints FreeBSD's fields in its order and units, hast's after them"

echo "PASS: status_format"
