#!/usr/bin/env bash
# failover auto: a primary whose lease ran out answers no read from its own
# copy (docs/FAILOVER.md, "The read gate"). Three hastd as in
# witness_failover.sh (lib/witness.bash, timeout 2 s), with
# `lease-lost suspend`: a cut-off primary then stays primary, holding its
# I/O, until the witness answers again.
#
# nodeA is primary and block 0 holds 0xa1. A client reads block 0 on nodeA
# over and over. nodeA is cut off from everything (a black hole); nodeB is
# promoted by the witness and a client writes 0xb2 to block 0 there, which
# nodeB acknowledges at time T_ACK. Then a new client on nodeA asks for block
# 0 once more; nodeA is reconnected, learns that nodeB holds the lease and
# steps down. Asserted:
#  - before the cut, nodeA's reads returned 0xa1 (the reader works);
#  - no read on nodeA issued after T_ACK returned 0xa1 (it returned an
#    error, or nothing);
#  - the read asked after T_ACK got no data while nodeA was cut off (it
#    waits, or fails), and none at all from nodeA's old copy.
#
# LEASE_LOST=io-error (lease_io_error_reads.sh runs this script so): the
# default `lease-lost io-error`, under which the cut-off primary fails what
# waits at the read gate with EIO and steps down to secondary, dropping its
# NBD clients (docs/FAILOVER.md, "lease-lost io-error"). Asserted instead
# of the suspend part:
#  - nodeA steps down to secondary while still cut off, and its lease is
#    reported lost (or it is no longer primary) before nodeB is promoted;
#  - no read issued after nodeA was seen without its lease, nor after
#    T_ACK, returned 0xa1;
#  - the reads that waited at the gate failed with EIO: every error a read
#    issued after the cut got is EIO, but for the last answer before the
#    step-down closed the connection, which may be ESHUTDOWN (a read that
#    arrived while nodeA drained). Whether a read waited at the gate at all
#    depends on the timing (the step-down follows the lease's end at once):
#    the test says which happened;
#  - the reader's connection was dropped, and a new connection to nodeA
#    gets no data.
BUILD=$1
LEASE_LOST=${LEASE_LOST:-suspend}
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)
source "$LIB/witness.bash"
source "$LIB/checks.bash"

RES=gate
TIMEOUT=2

# reader.py SOCKET EXPORT LOG [once]: reads block 0 until the connection
# goes (or once), one line per event, flushed at once:
#   issued <monotonic>
#   answered <monotonic> <error> <first byte>
#   closed <monotonic> <why>
cat > "$T/reader.py" <<'PY'
import os, sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ["LIB"])
import nbd_raw

path, export, log = sys.argv[1], sys.argv[2], sys.argv[3]
once = len(sys.argv) > 4
out = open(log, "a", buffering=1)
try:
    s = nbd_raw.handshake(path, export)
    size, err = nbd_raw.go(s, export)
    if err:
        out.write("closed %.6f refused %s\n" % (time.monotonic(), err.replace("\n", " ")))
        sys.exit(0)
    s.settimeout(None)
    cookie = 0
    while True:
        cookie += 1
        out.write("issued %.6f\n" % time.monotonic())
        nbd_raw.request(s, 0, 0, 4096, cookie=cookie)
        error, got = nbd_raw.reply(s)
        data = nbd_raw.recv_exact(s, 4096) if error == 0 else b"\0"
        out.write("answered %.6f %d %d\n" % (time.monotonic(), error, data[0]))
        if once:
            break
        time.sleep(0.01)
except (OSError, EOFError, AssertionError) as e:
    out.write("closed %.6f %s\n" % (time.monotonic(), str(e).replace("\n", " ")))
PY
export LIB

# write_block NODE BYTE: writes BYTE over block 0 on NODE's export, retrying
# until the export takes it; prints the monotonic time of the acknowledgement.
write_block() {
  local dir
  dir=$([[ $1 == nodeA ]] && echo a || echo b)
  python3 - "$T/$dir/$RES.nbd" "$RES" "$2" <<'PY'
import os, sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ["LIB"])
import nbd_raw
path, export, byte = sys.argv[1], sys.argv[2], int(sys.argv[3], 0)
for _ in range(300):
    try:
        s = nbd_raw.handshake(path, export)
        size, err = nbd_raw.go(s, export)
        if err:
            raise OSError(err)
        s.settimeout(30)
        nbd_raw.request(s, 1, 0, 4096, cookie=9, flags=1)  # WRITE, FUA
        s.sendall(bytes([byte]) * 4096)
        error, got = nbd_raw.reply(s)
        if error == 0:
            print("%.6f" % time.monotonic())
            sys.exit(0)
    except (OSError, EOFError, AssertionError):
        pass
    time.sleep(0.1)
sys.exit("the export never took the write")
PY
}

# answers_after LOG TIME: "error byte" of every answer in LOG to a read
# issued after TIME (a read issued before may legitimately return the old
# block: it was concurrent with the write).
answers_after() {
  [[ -f $1 ]] || return 0
  awk -v t="$2" '$1 == "issued" { at = $2 } $1 == "answered" && at > t { print $3, $4 }' "$1"
}

# io_error_part: after the cut, under lease-lost io-error (see the top).
io_error_part() {
  local t_lost="" role lease i
  # The moment nodeA is seen without its lease: status says lost, or it is
  # no longer primary (it stepped down at once).
  for ((i = 0; i < 300; i++)); do
    role=$(role_of nodeA "$RES")
    lease=$(json_field nodeA "$RES" lease || true)
    if [[ $role != primary || $lease == lost ]]; then t_lost=$(now); break; fi
    sleep 0.1
  done
  [[ -n $t_lost ]] || fail "nodeA, cut off, still holds its lease after 30 s: $(ctl_on nodeA list "$RES")"
  echo "  nodeA seen without its lease (role $role, lease $lease) $(python3 -c "print('%.1f' % ($t_lost - $t_cut))") s after the cut began"
  wait_role nodeA "$RES" secondary 30
  pass "nodeA, cut off, stepped down to secondary (lease-lost io-error)"

  wait_role nodeB "$RES" primary 30
  t_ack=$(write_block nodeB 0xb2)
  echo "  nodeB acknowledged 0xb2 at $t_ack"
  # The reader's connection ends with the step-down (NBD clients dropped).
  wait_until 30 "nodeA to drop the reader's connection" grep -q "^closed" "$T/reads.log"
  python3 "$T/reader.py" "$T/a/$RES.nbd" "$RES" "$T/probe.log" once &
  probe=$!
  STARTED_PIDS+=("$probe")
  wait_until 30 "the probe read on nodeA to end" test ! -d "/proc/$probe"
  wait "$probe" || true

  echo "  the reader's last lines: $(tail -n 4 "$T/reads.log" | tr '\n' ';')"
  echo "  the probe: $(tr '\n' ';' < "$T/probe.log")"
  local stale_lost stale_ack eio
  stale_lost=$(answers_after "$T/reads.log" "$t_lost" | grep -c "^0 161$" || true)
  stale_ack=$(answers_after "$T/reads.log" "$t_ack" | grep -c "^0 161$" || true)
  eio=$(answers_after "$T/reads.log" "$t_cut" | grep -c "^5 " || true)
  [[ $stale_lost -eq 0 ]] \
    || fail "nodeA answered $stale_lost read(s) issued after it was seen without its lease with 0xa1"
  [[ $stale_ack -eq 0 ]] || fail "nodeA answered $stale_ack read(s) issued after nodeB had acknowledged 0xb2 with 0xa1"
  ! answers_after "$T/probe.log" 0 | grep -q "^0 " || fail "the probe on nodeA got data: $(cat "$T/probe.log")"
  pass "no read on the cut-off nodeA returned data after its lease ran out"
  # Every read issued after the cut that got an error got EIO (held at the
  # gate, then refused), except the answer given as the export closed at
  # the step-down: ESHUTDOWN, the last answer before the connection ended
  # (a read that arrived while nodeA drained; docs/DESIGN.md "Shutdown").
  local errors other
  errors=$(awk -v t="$t_cut" '$1 == "issued" { at = $2 } $1 == "answered" && at > t && $3 != 0 { print $3 }' "$T/reads.log")
  other=$(awk -v t="$t_cut" '$1 == "issued" { at = $2 } $1 == "answered" && at > t && $3 != 0 { n++; e[n] = $3 }
          END { for (i = 1; i <= n; i++) if (e[i] != 5 && !(i == n && e[i] == 108)) print e[i] }' "$T/reads.log")
  [[ -z $other ]] || fail "reads after the cut failed with errors other than EIO: $(echo $other) ($(tail -n 6 "$T/reads.log" | tr '\n' ';'))"
  if [[ $eio -ge 1 ]]; then
    pass "$eio read(s) issued after the cut failed with EIO, then nodeA dropped the connection"
  else
    echo "report: no read waited at the gate in this run (errors after the cut: $(echo ${errors:-none})); the step-down followed the lease's end at once and closed the connection"
    pass "the reads after the cut got no data: the step-down closed the connection"
  fi

  reconnect nodeA
  wait_role nodeA "$RES" secondary 30
  stop_writer "$reader"
}

write_failover_config "$RES" "$TIMEOUT"
sed -i "s/^  failover auto\$/  failover auto\n  lease-lost $LEASE_LOST/" "$T/hast.conf"
grep -q "lease-lost $LEASE_LOST" "$T/hast.conf" || fail "could not set lease-lost $LEASE_LOST"
truncate -s 32M "$T/a/$RES.img" "$T/b/$RES.img"
ctl_on nodeA create "$RES" >/dev/null
ctl_on nodeB create "$RES" >/dev/null
start_node nodeW
start_data_node nodeA
start_data_node nodeB
wait_role nodeA "$RES" secondary 15
wait_role nodeB "$RES" secondary 15
ctl_on nodeA role primary "$RES"
wait_status nodeA "$RES" complete 30
write_block nodeA 0xa1 >/dev/null
wait_witness_in_sync "$RES"
pass "nodeA is primary, block 0 holds 0xa1, the witness knows nodeB in sync"

python3 "$T/reader.py" "$T/a/$RES.nbd" "$RES" "$T/reads.log" &
reader=$!
STARTED_PIDS+=("$reader")
for _ in $(seq 100); do
  [[ $(answers_after "$T/reads.log" 0 | grep -c "^0 161$") -ge 20 ]] && break
  sleep 0.1
done
[[ $(answers_after "$T/reads.log" 0 | grep -c "^0 161$") -ge 20 ]] \
  || fail "nodeA's reads do not return 0xa1: $(tail -3 "$T/reads.log")"
pass "nodeA's reads return 0xa1"

t_cut=$(now)
isolate nodeA
if [[ $LEASE_LOST == io-error ]]; then
  io_error_part
  exit 0
fi
wait_role nodeB "$RES" primary 30
t_ack=$(write_block nodeB 0xb2)
echo "  nodeB acknowledged 0xb2 at $t_ack"
[[ $(role_of nodeA "$RES") == primary ]] || fail "nodeA stepped down: lease-lost suspend was not tested"

# A read asked after nodeB's acknowledgement, on a new connection.
python3 "$T/reader.py" "$T/a/$RES.nbd" "$RES" "$T/probe.log" once &
probe=$!
STARTED_PIDS+=("$probe")
for _ in $(seq 100); do
  grep -q "^issued\|^closed" "$T/probe.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "^issued" "$T/probe.log" || fail "the read after the failover was not sent: $(cat "$T/probe.log")"
# Give nodeA every chance to answer from its copy: wait until it has answered
# or until its status shows that it holds no lease.
for _ in $(seq 100); do
  grep -q "^answered" "$T/probe.log" && break
  [[ $(json_field nodeA "$RES" lease) == lost ]] && break
  sleep 0.1
done
[[ $(json_field nodeA "$RES" lease) == lost ]] || grep -q "^answered" "$T/probe.log" \
  || fail "nodeA neither answered nor reported its lease lost: $(ctl_on nodeA list "$RES")"
# A probe still unanswered is held at the read gate, and status says so.
probe_is_held() {
  grep -q "^answered" "$T/probe.log" || [[ $(json_field nodeA "$RES" lease_waiting_reads) -ge 1 ]]
}
wait_until 10 "nodeA's status to show the held probe read" probe_is_held
grep -q "^answered" "$T/probe.log" \
  || pass "nodeA's status shows $(json_field nodeA "$RES" lease_waiting_reads) read(s) waiting for the lease"
# An error is a fine answer (a read sent to the unreachable secondary times
# out); data is not, nodeA cannot have nodeB's.
probe_before_reconnect=$(awk '$1 == "answered" && $3 == 0' "$T/probe.log")
reconnect nodeA
wait_role nodeA "$RES" secondary 30
wait "$probe" || true
stop_writer "$reader"

stale=$(answers_after "$T/reads.log" "$t_ack" | grep -c "^0 161$" || true)
late=$(answers_after "$T/reads.log" "$t_ack" | wc -l)
echo "  the reader: $late answer(s) to reads after nodeB's acknowledgement, $stale of them 0xa1"
echo "  the probe: $(tr '\n' ';' < "$T/probe.log")"
[[ -z $probe_before_reconnect ]] \
  || fail "nodeA answered a read asked after nodeB's write, cut off from the witness: $probe_before_reconnect"
[[ $stale -eq 0 ]] || fail "nodeA answered $stale read(s) issued after nodeB had acknowledged 0xb2 with 0xa1"
! answers_after "$T/probe.log" 0 | grep -q "^0 161$" || fail "the probe read 0xa1 on nodeA"
pass "no read on the cut-off nodeA returned the block nodeB had overwritten"
