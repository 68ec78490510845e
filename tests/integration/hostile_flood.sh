#!/usr/bin/env bash
# Nothing before proof (docs/SECURITY.md, "Peer and witness links"): a flood
# of connections and 64 MiB header claims against the secondary's peer port
# (lib/attacker.py flood) keeps hastd's peak RSS within a stated bound, and
# the pair still reaches `complete` while a flood from an address nobody
# configured goes on.
#  - from 127.0.0.1, which no `remote` names: every connection is closed at
#    accept, before anything is read;
#  - from 127.0.0.3, nodeB's configured `remote` (an attacker sharing or
#    spoofing the peer's address): a header claiming 64 MiB closes the
#    connection before its payload is read, and at most 8 idle connections
#    stay pending (the per-address cap).
# The bound: peak RSS (VmHWM) grows by less than 48 MiB over the daemon's
# RSS before the flood. Before these caps, every accepted connection got a
# 256 KiB zero-filled buffer and each claim a 64 MiB one that the attacker
# could fill.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)
PY=/usr/bin/python3
$PY -c 'import cryptography' 2>/dev/null || { echo "SKIP: python3-cryptography is missing"; exit 77; }
# grep reads all of ip's output (no -q): under pipefail an early exit of
# grep can fail ip with SIGPIPE and skip the test on a machine that has it.
ip addr show lo 2>/dev/null | grep "127.0.0.1/8" >/dev/null || { echo "SKIP: 127.0.0.0/8 is not on lo"; exit 77; }

res=fl
printf 'a flood must not help the attacker\n' > "$T/key"
chmod 600 "$T/key"
write_pair_config "$res" memsync "  secret $T/key"
# nodeA connects from 127.0.0.3, which nodeB's `remote` names.
sed -i "0,/remote tcp:\/\/127.0.0.1:$PORT_A/s//remote tcp:\/\/127.0.0.3:$PORT_A/" "$T/hast.conf"
sed -i "0,/    remote tcp:\/\/127.0.0.1:$PORT_B/s//    remote tcp:\/\/127.0.0.1:$PORT_B\n    source 127.0.0.3/" "$T/hast.conf"
grep -q "source 127.0.0.3" "$T/hast.conf" || fail "could not write the source address"
# The floods run once both daemons listen (start_pair starts them first):
# their thousands of connections take ephemeral ports, which a port chosen
# for a node could be among. nodeB is secondary, nodeA still init.
floods() {
  rss_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
  base=$(rss_kib "${NODE_PID[nodeB]}" VmRSS)

  # 1. 64 MiB claims and idle connections from the configured address.
  $PY "$LIB/attacker.py" flood "$PORT_B" --source 127.0.0.3 --claims 24 --junk $((4 << 20)) \
    --idle 40 --hold 1 > "$T/flood-remote.json" || fail "the attacker failed"
  cat "$T/flood-remote.json"
  claims_closed=$(json_get "$T/flood-remote.json" "j['claims_closed']")
  idle_open=$(json_get "$T/flood-remote.json" "j['idle_open']")
  [[ $claims_closed -eq 24 ]] || fail "only $claims_closed of 24 connections claiming 64 MiB were closed"
  [[ $idle_open -le 8 ]] || fail "$idle_open idle connections from one address stayed pending (cap 8)"
  grep -q "before authentication (limit 4096)" "$T/nodeB.log" || fail "the claims were not refused by size"
  grep -q "too many connections waiting to authenticate" "$T/nodeB.log" \
    || fail "the per-address cap was not applied"
  pass "claims of 64 MiB are closed at the header; at most 8 pending connections per address"

  # 2. The primary comes up while a stranger floods from an address nobody
  # configured: once nodeB refuses the stranger's first connection. The last
  # 50 idle connections must be closed within 5 s of the flood's end (refused
  # at accept; a loaded nodeB may reach the last of its backlog late), well
  # before the 10 s a pending connection gets to authenticate.
  $PY "$LIB/attacker.py" flood "$PORT_B" --source 127.0.0.1 --claims 20 --junk $((1 << 20)) \
    --idle 50 --duration 20 --settle 5 > "$T/flood-stranger.json" &
  flooder=$!
  STARTED_PIDS+=("$flooder")
  wait_until 20 "nodeB to refuse the stranger's flood" \
    grep -q "not an address of any configured remote" "$T/nodeB.log"
}
PAIR_BEFORE_PRIMARY=floods start_pair "$res" -m 64M -e 1M
wait "$flooder" || fail "the stranger's flood failed"
cat "$T/flood-stranger.json"
[[ $(json_get "$T/flood-stranger.json" "j['idle_open']") -eq 0 ]] \
  || fail "connections from an address no remote names were kept"
pass "the pair reaches complete during a flood from an unconfigured address"

peak=$(rss_kib "${NODE_PID[nodeB]}" VmHWM)
grew=$(((peak - base) / 1024))
echo "  nodeB RSS before the flood $((base / 1024)) MiB, peak $((peak / 1024)) MiB (+$grew MiB)"
[[ $grew -lt 48 ]] || fail "nodeB's peak RSS grew by $grew MiB during the flood (bound 48 MiB)"
pass "nodeB's peak RSS grew by $grew MiB (bound 48 MiB)"

# The link works: data written on the primary reaches the secondary.
head -c 4M /dev/urandom > "$T/data"
nbdcopy "$T/data" "$(nbd_uri_of nodeA "$res")"
wait_status nodeA "$res" complete 30
stop_node nodeA
stop_node nodeB
same_regions "$res"
pass "after the flood the pair replicates and both data regions are identical"
