# Shared helpers for the integration tests. Source it after setting
#   BUILD=<build dir>
# Every test makes its own temp dir, starts only its own processes, and the
# EXIT trap kills exactly those (by pid), detaches what it attached and
# removes the temp dir, on success and on failure.
set -euo pipefail

HASTD="$BUILD/hastd"
HASTCTL="$BUILD/hastctl"
# A test killed by SIGKILL (ctest's timeout) runs no trap: lib/reap.bash
# finds its directory by .owner and its processes by HAST_TEST_DIR, here
# at the start of every test and in ctest's cleanup fixture.
source "$(dirname "${BASH_SOURCE[0]}")/reap.bash"
reap_dead_tests
T=$(mktemp -d /tmp/hast-test.XXXXXX)
echo "$$ $(proc_starttime $$)" > "$T/.owner"
export HAST_TEST_DIR=$T
STARTED_PIDS=()
CLEANUPS=()

# Sanitizer builds (scripts/sanitize.sh): every process this test starts
# writes its sanitizer reports to $T/sanitizer.<pid>, and cleanup fails the
# test when one holds a report, whatever the process's exit status was
# (a daemon killed by the trap, a hastctl expected to fail). Other builds
# ignore these variables.
for var in ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS; do
  export "$var=${!var:+${!var}:}log_path=$T/sanitizer"
done

# sanitizer_reports: prints every sanitizer report file; true if any holds one.
sanitizer_reports() {
  local f found=1
  for f in "$T"/sanitizer.*; do
    [[ -f $f ]] || continue
    grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|WARNING: ThreadSanitizer|runtime error:' "$f" \
      || continue
    echo "---- sanitizer report $f:" >&2
    head -n 80 "$f" >&2
    found=0
  done
  return $found
}

# A test that cannot run here exits SKIP_RC (ctest's SKIP_RETURN_CODE, see
# tests/CMakeLists.txt): ctest shows it as skipped, and cleanup says so
# instead of reporting a failure.
SKIP_RC=77
skip() { echo "SKIP: $*"; exit "$SKIP_RC"; }

cleanup() {
  local rc=$?
  set +e
  for ((i=${#CLEANUPS[@]}-1; i>=0; i--)); do eval "${CLEANUPS[$i]}"; done
  for pid in "${STARTED_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if sanitizer_reports; then
    echo "FAIL: a sanitizer reported an error (above)" >&2
    # A pass or a skip with a report is a failure.
    [[ $rc -ne 0 && $rc -ne $SKIP_RC ]] || rc=1
  fi
  if [[ $rc -eq $SKIP_RC ]]; then
    echo "---- test skipped (exit $SKIP_RC, the reason is above)" >&2
  elif [[ $rc -ne 0 ]]; then
    echo "---- test failed (rc=$rc); daemon logs:" >&2
    for log in "$T"/*.log; do [[ -f $log ]] && { echo "== $log" >&2; tail -n 40 "$log" >&2; }; done
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

on_exit() { CLEANUPS+=("$1"); }

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# HAST_DEVICE: the `device` setting the config helpers give each resource.
# Off unless a test asks for /dev/hast/<name> (HAST_DEVICE=on before
# sourcing, or device_line's argument): a device is a loop device, a FUSE
# mount and an nbdfuse process shared with the whole machine, which only
# the tests about it should make.
HAST_DEVICE=${HAST_DEVICE:-off}
# device_line [on|off]: the resource line the helpers write.
device_line() { echo "  device ${1:-$HAST_DEVICE}"; }

# write_standalone_config NAME [SIZE]: one resource with remote none.
write_standalone_config() {
  local res=$1
  cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
pidfile $T/hastd.pid
resource $res {
$(device_line)
  local $T/$res.img
  nbd uds://$T/$res.nbd
  on nodeA {
    remote none
  }
}
CONF
}

ctl() { "$HASTCTL" -c "$T/hast.conf" -n nodeA "$@"; }

# A daemonized hastd (started without -F) is not our child: a test that
# starts one sets DAEMON_PID from its pid file and registers
# `on_exit stop_daemon`, which stops it (TERM, then KILL after 10 s).
DAEMON_PID=""
stop_daemon() {
  [[ -n $DAEMON_PID ]] || return 0
  kill -TERM "$DAEMON_PID" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$DAEMON_PID" 2>/dev/null
}

# start_hastd [extra args]: foreground daemon with logs in $T/hastd.log.
start_hastd() {
  "$HASTD" -F -c "$T/hast.conf" -n nodeA "$@" >>"$T/hastd.log" 2>&1 &
  HASTD_PID=$!
  STARTED_PIDS+=("$HASTD_PID")
  for _ in $(seq 100); do
    ctl status >/dev/null 2>&1 && return 0
    kill -0 "$HASTD_PID" 2>/dev/null || fail "hastd exited during start-up"
    sleep 0.1
  done
  fail "hastd did not answer on its control socket"
}

stop_hastd() {
  kill -TERM "$HASTD_PID"
  local rc=0
  wait "$HASTD_PID" || rc=$?
  [[ $rc -eq 0 ]] || fail "hastd exited with status $rc after SIGTERM"
}

nbd_uri() { echo "nbd+unix:///$1?socket=$T/$1.nbd"; }

# json_get FILE EXPR: evaluates a python expression on the parsed JSON `j`.
json_get() { python3 -c "import json,sys; j=json.load(open('$1')); print($2)"; }

# data_region RES OUT: copies the provider's data region to OUT.
data_region() {
  local res=$1 out=$2
  ctl dump --json "$res" > "$T/dump.json"
  copy_region "$T/$res.img" "$T/dump.json" "$out"
}

# copy_region IMAGE DUMP_JSON OUT: the data region described by a
# `hastctl dump --json` document, copied out of IMAGE.
copy_region() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
src, dump, dst = sys.argv[1], sys.argv[2], sys.argv[3]
md = json.load(open(dump))["resources"][0]
with open(src, 'rb') as f, open(dst, 'wb') as g:
    f.seek(md["localoff"])
    left = md["datasize"]
    while left:
        b = f.read(min(left, 1 << 20))
        if not b: break
        g.write(b); left -= len(b)
PY
}

# ---- two nodes on loopback ---------------------------------------------------------------

# free_port: a TCP port on 127.0.0.1 that nothing listens on now and that
# this test was not given before: the kernel's choice for a port of 0 can
# come back a few calls later once the probing socket is closed (two daemons
# of one test were once handed the same port), so the ports given are kept
# in $T/ports_given and a repeat is drawn again.
free_port() {
  python3 - "$T/ports_given" <<'PY'
import socket, sys
path = sys.argv[1]
try:
    given = set(open(path).read().split())
except FileNotFoundError:
    given = set()
held = []
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)  # held until the end: the kernel cannot offer it again
    port = str(s.getsockname()[1])
    if port not in given:
        break
with open(path, "a") as f:
    f.write(port + "\n")
print(port)
PY
}

# write_pair_config RES MODE [extra resource lines]: nodeA and nodeB on
# 127.0.0.1 with their own ports, control sockets and providers.
write_pair_config() {
  local res=$1 mode=$2 extra=${3:-}
  PORT_A=$(free_port)
  PORT_B=$(free_port)
  mkdir -p "$T/a" "$T/b"
  cat > "$T/hast.conf" <<CONF
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
resource $res {
  replication $mode
  timeout 5
$(device_line)
$extra
  on nodeA {
    local $T/a/$res.img
    remote tcp://127.0.0.1:$PORT_B
    nbd uds://$T/a/$res.nbd
  }
  on nodeB {
    local $T/b/$res.img
    remote tcp://127.0.0.1:$PORT_A
    nbd uds://$T/b/$res.nbd
  }
}
CONF
}

ctl_on() { local node=$1; shift; "$HASTCTL" -c "$T/hast.conf" -n "$node" "$@"; }

declare -A NODE_PID
# Extra hastd arguments for start_node, e.g. HASTD_ARGS="--io-engine threads".
# Empty by default; word-split on purpose (one string, several arguments).
HASTD_ARGS=${HASTD_ARGS:-}
# start_node nodeA|nodeB: foreground daemon, logs in $T/<node>.log.
start_node() {
  local node=$1
  # shellcheck disable=SC2086  # HASTD_ARGS is split into arguments on purpose
  "$HASTD" -F $HASTD_ARGS -c "$T/hast.conf" -n "$node" >>"$T/$node.log" 2>&1 &
  NODE_PID[$node]=$!
  STARTED_PIDS+=("$!")
  for _ in $(seq 100); do
    ctl_on "$node" status >/dev/null 2>&1 && return 0
    kill -0 "${NODE_PID[$node]}" 2>/dev/null || fail "hastd $node exited during start-up"
    sleep 0.1
  done
  fail "hastd $node did not answer on its control socket"
}

stop_node() {
  local node=$1 rc=0
  kill -TERM "${NODE_PID[$node]}"
  wait "${NODE_PID[$node]}" || rc=$?
  [[ $rc -eq 0 ]] || fail "hastd $node exited with status $rc after SIGTERM"
}

kill9_node() {
  kill -KILL "${NODE_PID[$1]}" 2>/dev/null || true
  wait "${NODE_PID[$1]}" 2>/dev/null || true
}

# wait_status NODE RES WORD [seconds]: until `status` shows WORD for RES.
wait_status() {
  local node=$1 res=$2 word=$3 secs=${4:-60}
  for _ in $(seq $((secs * 10))); do
    ctl_on "$node" status "$res" 2>/dev/null | grep -q "^$res[[:space:]]*$word" && return 0
    sleep 0.1
  done
  ctl_on "$node" list "$res" >&2 || true
  fail "$node: $res did not reach '$word' within ${secs}s"
}

# start_pair RES [CREATE ARGS...]: metadata on both nodes (`hastctl create`
# with CREATE ARGS, by default -m 64M -e 1M), then run_pair RES.
# RES may name several resources in one word ("r1 r2"): each is created
# with the same CREATE ARGS and brought up.
start_pair() {
  local res=$1; shift
  create_pair "$res" "$@"
  run_pair "$res"
}

# create_pair RES [CREATE ARGS...]: the create part of start_pair, for a
# test that changes a provider before the daemons start.
create_pair() {
  local res=$1; shift
  local args=("$@") r node
  [[ ${#args[@]} -gt 0 ]] || args=(-m 64M -e 1M)
  for r in $res; do
    for node in nodeA nodeB; do ctl_on "$node" create "${args[@]}" "$r"; done
  done
}

# run_pair RES: both daemons started (nodeB first: the secondary-to-be
# listens before anything else takes ports), nodeB secondary, nodeA
# primary, until every resource of RES is complete (60 s at most).
# Knobs, set for the one call (PAIR_HASTD_A=... start_pair ...):
#   PAIR_HASTD_A         the program nodeA runs instead of $HASTD (e.g. a
#                        hastd_faults wrapper)
#   PAIR_HASTD_B         the same for nodeB
#   PAIR_BEFORE_PRIMARY  a command run once nodeB is secondary, before
#                        nodeA becomes primary (nodeA is up, role init)
run_pair() {
  local res=$1 r
  HASTD=${PAIR_HASTD_B:-$HASTD} start_node nodeB
  HASTD=${PAIR_HASTD_A:-$HASTD} start_node nodeA
  # shellcheck disable=SC2086  # RES is a list of names on purpose
  ctl_on nodeB role secondary $res
  [[ -z ${PAIR_BEFORE_PRIMARY:-} ]] || eval "$PAIR_BEFORE_PRIMARY"
  # shellcheck disable=SC2086
  ctl_on nodeA role primary $res
  for r in $res; do wait_status nodeA "$r" complete 60; done
}

# secondary_caught_up RES: nodeA (the primary) has the secondary's `done`
# for every write it replicated (`list --json` queues.recv is 0: a write
# leaves that queue only once written on both nodes), so the secondary has
# written what memsync acknowledged on receipt and async before sending.
# Poll it: wait_until 30 "..." secondary_caught_up RES (lib/checks.bash).
secondary_caught_up() {
  ctl_on nodeA list --json "$1" > "$T/.recv.json" || return 1
  [[ $(json_get "$T/.recv.json" "j['resources'][0]['queues']['recv']") -eq 0 ]]
}

# region_of NODE RES OUT: the data region of NODE's provider.
region_of() {
  local node=$1 res=$2 out=$3 dir
  dir=$([[ $node == nodeA ]] && echo a || echo b)
  ctl_on "$node" dump --json "$res" > "$T/dump-$node.json"
  copy_region "$T/$dir/$res.img" "$T/dump-$node.json" "$out"
}

# same_regions RES: both providers' data regions are byte-identical.
same_regions() {
  local res=$1
  region_of nodeA "$res" "$T/region-a"
  region_of nodeB "$res" "$T/region-b"
  cmp -s "$T/region-a" "$T/region-b" || fail "data regions of nodeA and nodeB differ"
  rm -f "$T/region-a" "$T/region-b"
}

# nbd_uri_of NODE RES: the export of RES on NODE.
nbd_uri_of() {
  local dir
  dir=$([[ $1 == nodeA ]] && echo a || echo b)
  echo "nbd+unix:///$2?socket=$T/$dir/$2.nbd"
}
