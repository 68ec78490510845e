# Shared helpers for the integration tests. Source it after setting
#   BUILD=<build dir>
# Every test makes its own temp dir, starts only its own processes, and the
# EXIT trap kills exactly those (by pid), detaches what it attached and
# removes the temp dir, on success and on failure.
set -euo pipefail

HASTD="$BUILD/hastd"
HASTCTL="$BUILD/hastctl"
T=$(mktemp -d /tmp/hast-test.XXXXXX)
STARTED_PIDS=()
CLEANUPS=()

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
  if [[ $rc -ne 0 ]]; then
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

# write_standalone_config NAME [SIZE]: one resource with remote none.
write_standalone_config() {
  local res=$1
  cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
pidfile $T/hastd.pid
resource $res {
  local $T/$res.img
  nbd uds://$T/$res.nbd
  on nodeA {
    remote none
  }
}
CONF
}

ctl() { "$HASTCTL" -c "$T/hast.conf" -n nodeA "$@"; }

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
  local off size
  off=$(json_get "$T/dump.json" "j['resources'][0]['data_offset']")
  size=$(json_get "$T/dump.json" "j['resources'][0]['datasize']")
  python3 - "$T/$res.img" "$out" "$off" "$size" <<'PY'
import sys
src, dst, off, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(src, 'rb') as f, open(dst, 'wb') as g:
    f.seek(off)
    left = size
    while left:
        b = f.read(min(left, 1 << 20))
        if not b: break
        g.write(b); left -= len(b)
PY
}
