#!/usr/bin/env bash
# The `exec` event hook. A hook script appends "<pid> $@" to a file (the pid
# orders the events as the daemon started them, whatever order the hook
# processes finish in).
#   Part 1, `exec` in each node's global `on <node> { }` section:
#     roles (role RES init secondary / init primary), connect on both nodes;
#     the secondary stops -> disconnect; writes on the primary; it returns ->
#     connect, syncstart, syncdone on the primary, in that order; a fresh pair
#     syncs nothing (no syncstart before the first outage); the secondary is
#     killed during a bigger resync -> disconnect and syncintr (or syncdone,
#     when the resync won the race, reported); role RES primary init.
#   Part 2, `exec` at the top of the file (global) and in one resource's
#     section: that resource's events go to its own program, the other
#     resource's to the global one.
#   Part 3, how hooks run: each in its own process at once, so a slow hook
#     (3 s on the first event) does not delay the next event's hook; hooks
#     start in event order; every exit status is logged; a hook still
#     running when hastd stops is not killed and finishes after hastd exited.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)

make_hook() {  # make_hook NAME: $T/hook-NAME.sh appends to $T/events.NAME
  printf '#!/bin/sh\necho "$$ $*" >> %s/events.%s\n' "$T" "$1" > "$T/hook-$1.sh"
  chmod +x "$T/hook-$1.sh"
}

# events NAME: the hook lines of NAME, ordered by the pid of the hook process
# (spawn order; a pid wrap-around is undone), without the pid.
events() {
  python3 - "$T/events.$1" <<'PY'
import sys
try:
    lines = [l.rstrip('\n').split(' ', 1) for l in open(sys.argv[1]) if l.strip()]
except FileNotFoundError:
    lines = []
pid_max = int(open('/proc/sys/kernel/pid_max').read())
pids = [int(p) for p, _ in lines]
if pids and max(pids) - min(pids) > pid_max // 2:       # wrapped: low pids are the later ones
    key = lambda e: int(e[0]) + (pid_max if int(e[0]) < pid_max // 2 else 0)
else:
    key = lambda e: int(e[0])
out = ''.join(text + '\n' for _, text in sorted(lines, key=key))
try:
    sys.stdout.write(out)
    sys.stdout.flush()
except BrokenPipeError:   # a reader such as grep -q that stopped early
    import os
    os._exit(0)
PY
}

# wait_event NAME LINE [N]: until NAME's events hold LINE at least N times.
wait_event() {
  local name=$1 line=$2 n=${3:-1}
  for _ in $(seq 300); do
    [[ $(events "$name" | grep -cxF -- "$line" || true) -ge $n ]] && return 0
    sleep 0.1
  done
  echo "events of $name:" >&2; events "$name" >&2
  fail "$name: the hook did not get '$line' (x$n)"
}

# in_order NAME LINE...: the LINEs occur in NAME's events as a subsequence.
in_order() {
  local name=$1; shift
  events "$name" > "$T/ev.$name"
  python3 - "$T/ev.$name" "$@" <<'PY' || { echo "events of $name:" >&2; cat "$T/ev.$name" >&2; fail "$name: events not in the order: $*"; }
import sys
ev = [l.rstrip('\n') for l in open(sys.argv[1])]
want = sys.argv[2:]
i = 0
for e in ev:
    if i < len(want) and e == want[i]:
        i += 1
sys.exit(0 if i == len(want) else 1)
PY
}

# nbd_fill SOCKET RES MIB: write MIB MiB of random data at offset 0.
nbd_fill() {
  head -c $(($3 << 20)) /dev/urandom > "$T/fill"
  nbdcopy "$T/fill" "nbd+unix:///$2?socket=$1"
  rm -f "$T/fill"
}

# ---- Part 1 -----------------------------------------------------------------------------
res=hk
write_pair_config "$res" memsync
make_hook A
make_hook B
for n in A B; do
  sed -i "0,/^on node$n {/s||on node$n {\n  exec $T/hook-$n.sh|" "$T/hast.conf"
done
grep -q "exec $T/hook-A.sh" "$T/hast.conf" && grep -q "exec $T/hook-B.sh" "$T/hast.conf" \
  || fail "could not add the exec hooks to the configuration"
# nodeB's hook reports its role change before nodeA becomes primary.
PAIR_BEFORE_PRIMARY='wait_event B "role $res init secondary"' start_pair "$res" -m 128M -e 1M
wait_event A "role $res init primary"
wait_event A "connect $res"
wait_event B "connect $res"
pass "role and connect events on both nodes"

stop_node nodeB
wait_event A "disconnect $res"
in_order A "role $res init primary" "connect $res" "disconnect $res"
if events A | grep -qx "syncstart $res"; then
  fail "a fresh pair ran a sync (syncstart before the first outage): $(events A | tr '\n' ';')"
fi
pass "disconnect when the secondary stops; a fresh pair needs no sync"

nbd_fill "$T/a/$res.nbd" "$res" 4
start_node nodeB
ctl_on nodeB role secondary "$res"
wait_status nodeA "$res" complete 60
wait_event A "syncdone $res"
in_order A "role $res init primary" "connect $res" "disconnect $res" \
  "connect $res" "syncstart $res" "syncdone $res"
in_order B "role $res init secondary" "connect $res" "role $res init secondary" "connect $res"
pass "reconnect: connect, syncstart, syncdone in that order"

# A resync cut short: the secondary dies while it runs.
stop_node nodeB
wait_event A "disconnect $res" 2
nbd_fill "$T/a/$res.nbd" "$res" 96
start_node nodeB
ctl_on nodeB role secondary "$res"
seen_active=no
for _ in $(seq 600); do
  ctl_on nodeA list --json "$res" > "$T/l.json" 2>/dev/null || continue
  if [[ $(json_get "$T/l.json" "j['resources'][0]['sync']['active']") == True ]]; then
    seen_active=yes
    kill9_node nodeB
    break
  fi
  [[ $(json_get "$T/l.json" "j['resources'][0]['status']") == complete ]] && break
  sleep 0.05
done
if [[ $seen_active == yes ]]; then
  wait_event A "disconnect $res" 3
  wait_event A "syncstart $res" 2
  for _ in $(seq 300); do
    events A | grep -qx "syncintr $res" && break
    [[ $(events A | grep -cx "syncdone $res" || true) -ge 2 ]] && break
    sleep 0.1
  done
  if events A | grep -qx "syncintr $res"; then
    in_order A "connect $res" "syncstart $res" "syncdone $res" "disconnect $res" \
      "connect $res" "syncstart $res" "syncintr $res"
    pass "syncintr when the secondary died during the resync"
  elif [[ $(events A | grep -cx "syncdone $res" || true) -ge 2 ]]; then
    echo "report: the resync finished before the kill reached nodeB; syncintr not checked"
  else
    events A >&2
    fail "the secondary died during a resync, but nodeA ran neither syncintr nor syncdone"
  fi
  start_node nodeB
  ctl_on nodeB role secondary "$res"
else
  echo "report: the 96 MiB resync finished before it was seen active; syncintr not checked"
fi
wait_status nodeA "$res" complete 90

ctl_on nodeA role init "$res"
wait_event A "role $res primary init"
ctl_on nodeB role init "$res"
wait_event B "role $res secondary init"
stop_node nodeA
stop_node nodeB
echo "  nodeA events: $(events A | tr '\n' ';')"
echo "  nodeB events: $(events B | tr '\n' ';')"
pass "role changes report old and new roles"

# ---- Part 2: global and per-resource `exec` --------------------------------------------
make_hook G
make_hook R
write_pair_config r1 memsync "  exec $T/hook-R.sh"
# A second resource without an exec of its own, and the global exec line.
sed -i "1i exec $T/hook-G.sh" "$T/hast.conf"
cat >> "$T/hast.conf" <<CONF
resource r2 {
  device off
  replication memsync
  timeout 5
  on nodeA {
    local $T/a/r2.img
    remote tcp://127.0.0.1:$PORT_B
    nbd uds://$T/a/r2.nbd
  }
  on nodeB {
    local $T/b/r2.img
    remote tcp://127.0.0.1:$PORT_A
    nbd uds://$T/b/r2.nbd
  }
}
CONF
start_pair "r1 r2" -m 16M
wait_event R "role r1 init primary"
wait_event R "role r1 init secondary"
wait_event R "connect r1" 2
wait_event G "role r2 init primary"
wait_event G "role r2 init secondary"
wait_event G "connect r2" 2
events R | grep -q " r2" && fail "r2's events went to r1's exec program: $(events R | tr '\n' ';')"
events G | grep -q " r1" && fail "r1's events went to the global exec program: $(events G | tr '\n' ';')"
stop_node nodeA
stop_node nodeB
pass "per-resource exec overrides the global one; the global one serves the rest"

# hastd drains its hooks before it exits: the role change of the shutdown
# itself on the primary reaches the hook (stop_node waits for the process
# to end).
for pair in "R r1" "G r2"; do
  set -- $pair
  events "$1" | grep -qx "role $2 primary init" \
    || fail "the shutdown's role change of $2 did not run its hook: $(events "$1" | tr '\n' ';')"
done
pass "hooks queued by the shutdown run before hastd exits"

# ---- Part 3: hooks run at once, in their own processes, and are never killed ------------
res=slow
write_standalone_config "$res"
# Every call logs its start ("<pid> <args>", ordered by pid as above) and its
# end in done.S (file order: the order the hooks finished). The first
# "role init primary" takes 3 s; "role primary init" exits 3 while hastd runs
# and takes 5 s once $T/stopping exists (the shutdown's own role change).
cat > "$T/hook-S.sh" <<HOOK
#!/bin/sh
echo "\$\$ \$*" >> $T/events.S
case "\$*" in
  "role $res init primary")
    if mkdir $T/first.S 2>/dev/null; then sleep 3; fi ;;
  "role $res primary init")
    if [ -e $T/stopping ]; then sleep 5; echo "late \$*" >> $T/done.S; exit 0; fi
    echo "done \$*" >> $T/done.S
    exit 3 ;;
esac
echo "done \$*" >> $T/done.S
HOOK
chmod +x "$T/hook-S.sh"
sed -i "1i exec $T/hook-S.sh" "$T/hast.conf"
ctl create -m 16M "$res"
start_hastd
ctl role primary "$res"   # first: the slow one
ctl role init "$res"      # its hook must not wait for the slow one
done_has() { grep -qxF -- "$1" "$T/done.S" 2>/dev/null; }
wait_until 10 "the second event's hook to finish" done_has "done role $res primary init"
done_has "done role $res init primary" \
  && fail "the second event's hook waited for the slow first one: $(tr '\n' ';' < "$T/done.S")"
wait_until 10 "the slow hook to finish" done_has "done role $res init primary"
pass "a slow hook does not delay the next event's hook: $(tr '\n' ';' < "$T/done.S")"

ctl role primary "$res"
wait_until 10 "the third event's hook" done_has "done role $res init primary"
wait_until 10 "the exit statuses in the log" log_has "hook $T/hook-S.sh role $res primary init \(pid [0-9]+\): exited with status 3"
log_has "hook $T/hook-S.sh role $res init primary \(pid [0-9]+\): exited 0 after [3-9]\.[0-9] s" \
  || fail "the slow hook's exit is not logged with its time: $(grep 'hook ' "$T/hastd.log" | tail -5)"
pass "every hook's exit status is logged (0, and 3)"

touch "$T/stopping"
stop_hastd
done_has "late role $res primary init" \
  && fail "hastd waited for the shutdown's 5 s hook instead of leaving it running"
log_has "hook $T/hook-S.sh role $res primary init \(pid [0-9]+\): still running as the daemon exits; left running" \
  || fail "the hook left running is not logged: $(grep 'hook ' "$T/hastd.log" | tail -3)"
wait_until 15 "the hook left running to finish after hastd exited" done_has "late role $res primary init"
pass "a hook running when hastd stops is left running (not killed), and finishes after hastd exited"
wait_event S "role $res primary init" 2
in_order S "role $res init primary" "role $res primary init" "role $res init primary" \
  "role $res primary init"
pass "hooks start in event order: $(events S | tr '\n' ';')"
