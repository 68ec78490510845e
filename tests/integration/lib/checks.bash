# More helpers for the integration tests; source after common.bash.
#   wait_until SECS DESCRIPTION CMD...   poll CMD (every 0.1 s) until it
#                                        succeeds; fail after SECS seconds
#   expect_fail WANT CMD...              CMD fails (exit 1..125, not a
#                                        crash), its stderr has WANT;
#                                        the stderr is left in $ERR
#   expect_exit RC WANT CMD...           the same with exit status RC
#   daemon_alive                         hastd ($HASTD_PID) still runs
#   wait_pid_gone PID [SECS]             a pid that is not our child exits
#   log_has PATTERN [FILE]               grep -E in the daemon log
#   nbd_session_start NAME RES           an nbd_session.py connection, its
#                                        control directory $T/NAME
#   nbd_session_read NAME                one READ on that connection
#   fio_bg NAME ARGS...                  fio in the background ($FIO_PID)
#   nbd_clients_are RES N                the daemon counts N NBD clients
#   list_field RES EXPR                  a field of `list --json`
#   soft_fail WHY / finish_test NAME     failures that let the test go on,
#                                        reported (and failed) at the end
#   plain_message TEXT                   no actor-system error rendering
#   soft_log_has WHAT PATTERN [SECS]     the log gets PATTERN (soft check)

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The command runs again on every try; a "$(...)" in its arguments is
# expanded once, at the call, so a changing value needs a function.
wait_until() {
  local secs=$1 what=$2; shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "timed out after ${secs}s waiting for: $what"
}

# The exit statuses are FreeBSD's (sysexits, or a resource's error
# number; hastctl(8) and hastd(8), EXIT STATUS): expect_exit checks one,
# expect_fail any failure that is not a crash or a signal.
expect_fail() {
  local want=$1; shift
  local rc=0
  "$@" >"$T/expect.out" 2>"$T/expect.err" || rc=$?
  ERR=$(cat "$T/expect.err")
  [[ $rc -ge 1 && $rc -le 125 ]] || fail "'$*' exited $rc, expected a failure (stderr: $ERR)"
  [[ $ERR == *"$want"* ]] || fail "'$*': stderr lacks '$want': $ERR"
  echo "ok: '$*' failed as expected (exit $rc): $ERR"
}

expect_exit() {
  local want_rc=$1 want=$2; shift 2
  local rc=0
  "$@" >"$T/expect.out" 2>"$T/expect.err" || rc=$?
  ERR=$(cat "$T/expect.err")
  [[ $rc -eq $want_rc ]] || fail "'$*' exited $rc, expected $want_rc (stderr: $ERR)"
  [[ $ERR == *"$want"* ]] || fail "'$*': stderr lacks '$want': $ERR"
  echo "ok: '$*' exited $rc as expected: $ERR"
}

daemon_alive() {
  kill -0 "$HASTD_PID" 2>/dev/null || fail "hastd (pid $HASTD_PID) is gone"
}

wait_pid_gone() {
  local pid=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  fail "pid $pid still runs after ${secs}s"
}

# log_has PATTERN [FILE]: grep -E in the daemon log.
log_has() { grep -Eq -- "$1" "${2:-$T/hastd.log}"; }

# nbd_session_start NAME RES [SOCKET]: a steerable NBD connection (see
# nbd_session.py); SESSION_PID is its pid, $T/NAME its directory.
nbd_session_start() {
  local name=$1 res=$2 sock=${3:-$T/$2.nbd}
  mkdir -p "$T/$name"
  python3 "$LIB_DIR/nbd_session.py" "$sock" "$res" "$T/$name" >"$T/$name.out" 2>&1 &
  SESSION_PID=$!
  STARTED_PIDS+=("$SESSION_PID")
  wait_until 20 "NBD session $name to open" \
    test -e "$T/$name/ready" -o -e "$T/$name/refused" -o ! -d "/proc/$SESSION_PID"
  [[ -e $T/$name/ready ]] || fail "NBD session $name did not open: $(cat "$T/$name/refused" "$T/$name.out" 2>/dev/null)"
}

# nbd_session_read NAME: one READ on the open session; true when it worked.
nbd_session_read() {
  local d=$T/$1
  rm -f "$d/read-ok" "$d/read-failed"
  touch "$d/read"
  wait_until 20 "a READ on session $1" test -e "$d/read-ok" -o -e "$d/read-failed"
  [[ -e $d/read-ok ]]
}

fio_bg() {
  local name=$1; shift
  # In $T: fio may leave state files in its working directory.
  (cd "$T" && exec fio --name="$name" --output="$T/fio-$name.txt" --verify_state_save=0 "$@" \
     >/dev/null 2>&1) &
  FIO_PID=$!
  STARTED_PIDS+=("$FIO_PID")
}

# nbd_clients_are RES N: the daemon counts N NBD connections on RES.
nbd_clients_are() {
  ctl list --json "$1" > "$T/.clients.json" || return 1
  [[ $(json_get "$T/.clients.json" "j['resources'][0]['nbd_connections']") -eq $2 ]]
}

# list_field RES EXPR: a field of `list --json` for RES (EXPR on r).
list_field() {
  ctl list --json "$1" > "$T/.list.json" || return 1
  python3 -c "import json; r=json.load(open('$T/.list.json'))['resources'][0]; print($2)"
}

# soft_fail WHY: a failure that does not stop the test (so that the checks
# after it still run); finish_test reports them all and fails.
SOFT_FAILURES=()
soft_fail() {
  echo "FAIL (continuing): $*" >&2
  SOFT_FAILURES+=("$*")
}

# finish_test NAME: PASS, or FAIL listing every soft failure.
finish_test() {
  if [[ ${#SOFT_FAILURES[@]} -gt 0 ]]; then
    local f
    for f in "${SOFT_FAILURES[@]}"; do echo "FAIL: $f" >&2; done
    fail "$1: ${#SOFT_FAILURES[@]} check(s) failed"
  fi
  echo "PASS: $1"
}

# plain_message TEXT: an error line as users should see it, not an actor
# system's rendering of an error value (no '("...")' wrapping).
plain_message() {
  [[ $1 != *'("'* && $1 != *'")'* ]] || soft_fail "error message is not plain text: $1"
}

# soft_log_has WHAT PATTERN [SECS]: the daemon log gets a line matching
# PATTERN (grep -E) within SECS seconds; a soft failure otherwise.
soft_log_has() {
  local what=$1 pattern=$2 secs=${3:-5} i
  for ((i = 0; i < secs * 10; i++)); do
    log_has "$pattern" && return 0
    sleep 0.1
  done
  soft_fail "the daemon log does not mention '$pattern' after $what"
}
