#!/usr/bin/env bash
# Split brain: both nodes written as primary while apart.
#   pair complete; stop B; A writes pattern PA at [0, 4M); stop A;
#   B alone, `role primary`, writes PB at [2M, 6M); start A, `role primary`;
#   `role secondary` on B -> A connects -> both report the split brain
#   (`split_brain` in `status --json`/`list --json`; the Status column keeps
#   FreeBSD's word, degraded), the exec hook reports
#   `split-brain RES` (once per detection, however often A retries), and no
#   data moves: each region still holds only what its node wrote;
#   `hastctl resync --discard-local` on B -> the next handshake resyncs from
#   A what either side changed -> complete on both, B's region equals A's
#   (PA at [0, 4M), zeros elsewhere -- B's own [4M, 6M) is undone too), and
#   the resync copied no more than the dirty extents both sides reported.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)

res=sb
write_pair_config "$res" memsync
# A hook per node: each appends its events to its own file.
for n in A B; do
  printf '#!/bin/sh\necho "$@" >> %s/events.%s\n' "$T" "$n" > "$T/hook$n.sh"
  chmod +x "$T/hook$n.sh"
  sed -i "0,/^on node$n {/s||on node$n {\n  exec $T/hook$n.sh|" "$T/hast.conf"
done
grep -q "exec $T/hookA.sh" "$T/hast.conf" && grep -q "exec $T/hookB.sh" "$T/hast.conf" \
  || fail "could not add the exec hooks to the configuration"

start_pair "$res"

M=$((1 << 20))
head -c $((4 * M)) /dev/urandom > "$T/pa"
head -c $((4 * M)) /dev/urandom > "$T/pb"

# nbd_put SOCKET OFFSET FILE: write FILE at OFFSET through the export, flush.
nbd_put() {
  python3 - "$LIB" "$1" "$res" "$2" "$3" <<'PY' || fail "writing through $1 failed"
import struct, sys
sys.path.insert(0, sys.argv[1])
import nbd_raw
sock, export, off, path = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
s = nbd_raw.handshake(sock, export)
size, err = nbd_raw.go(s, export)
if err:
    sys.exit("write refused: " + err)
data = open(path, 'rb').read()
step = 65536
for cookie, i in enumerate(range(0, len(data), step), 1):
    chunk = data[i:i + step]
    s.sendall(struct.pack('>IHHQQI', nbd_raw.REQ_MAGIC, 0, 1, cookie, off + i, len(chunk)) + chunk)
    error, _ = nbd_raw.reply(s)
    if error:
        sys.exit("write at %d failed: %d" % (off + i, error))
nbd_raw.request(s, 3, 0, 0, cookie=1 << 40)   # FLUSH
error, _ = nbd_raw.reply(s)
if error:
    sys.exit("flush failed: %d" % error)
nbd_raw.request(s, 2, 0, 0, cookie=(1 << 40) + 1)   # DISC
PY
}

# expect_region NODE DESCRIPTION [OFFSET FILE]...: NODE's data region holds the
# given files at those offsets and zeros everywhere else.
expect_region() {
  local node=$1 what=$2; shift 2
  region_of "$node" "$res" "$T/region-$node"
  python3 - "$T/region-$node" "$@" <<'PY' || fail "$node: $what"
import sys
region = open(sys.argv[1], 'rb').read()
want = bytearray(len(region))
args = sys.argv[2:]
for off, path in zip(args[::2], args[1::2]):
    data = open(path, 'rb').read()
    want[int(off):int(off) + len(data)] = data
if region != want:
    bad = [i for i in range(0, len(region), 1 << 20) if region[i:i + (1 << 20)] != want[i:i + (1 << 20)]]
    print("region differs from what was written in the MiB(s) %s" % bad[:16], file=sys.stderr)
    sys.exit(1)
PY
}

# 1. B away, A writes as primary.
stop_node nodeB
nbd_put "$T/a/$res.nbd" 0 "$T/pa"
stop_node nodeA
# 2. B alone becomes primary and writes.
start_node nodeB
ctl_on nodeB role primary "$res"
nbd_put "$T/b/$res.nbd" $((2 * M)) "$T/pb"
# 3. A comes back as primary too; then B steps down to secondary.
start_node nodeA
ctl_on nodeA role primary "$res"
expect_region nodeA "A's region is not what A wrote" 0 "$T/pa"
expect_region nodeB "B's region is not what B wrote" $((2 * M)) "$T/pb"
ctl_on nodeA dump --json "$res" > "$T/dumpA.json"
ctl_on nodeB dump --json "$res" > "$T/dumpB.json"
echo "  generations: A local/remote $(json_get "$T/dumpA.json" "'%d/%d' % (j['resources'][0]['localcnt'], j['resources'][0]['remotecnt'])"), B $(json_get "$T/dumpB.json" "'%d/%d' % (j['resources'][0]['localcnt'], j['resources'][0]['remotecnt'])")"
ctl_on nodeB role secondary "$res"

# The Status column keeps FreeBSD's words (degraded); the split brain is
# its own field in --json and its own line in `list`.
wait_split_brain() {
  local node=$1
  for _ in $(seq 600); do
    ctl_on "$node" status --json "$res" > "$T/sb-status-$node.json" 2>/dev/null \
      && [[ $(json_get "$T/sb-status-$node.json" "j['resources'][0]['split_brain']") == True ]] \
      && return 0
    sleep 0.1
  done
  ctl_on "$node" list "$res" >&2 || true
  fail "$node: no split brain reported within 60 s"
}
wait_split_brain nodeA
wait_split_brain nodeB
for node in nodeA nodeB; do
  ctl_on "$node" status "$res" | grep -q "^$res[[:space:]]degraded " \
    || fail "$node: status does not show 'degraded' during the split brain"
  ctl_on "$node" list --json "$res" > "$T/sb-list-$node.json"
  [[ $(json_get "$T/sb-list-$node.json" "j['resources'][0]['split_brain']") == True ]] \
    || fail "$node: list --json does not say split_brain"
  [[ $(json_get "$T/sb-list-$node.json" "j['resources'][0]['status']") == degraded ]] \
    || fail "$node: list --json status is not degraded"
  synced=$(json_get "$T/sb-list-$node.json" "j['resources'][0].get('synced_bytes', 0)")
  [[ $synced -eq 0 ]] || fail "$node: $synced bytes were synced during the split brain"
done
pass "both nodes report the split brain (status degraded, split_brain in --json)"

# A retries the connection meanwhile: the hook must still fire once per node
# at most. Wait until B has refused A at least twice more (its log says so at
# every attempt), if the log shows it.
attempts() { grep -ci "split.brain" "$T/nodeB.log" || true; }
first=$(attempts)
for _ in $(seq 300); do
  [[ $(attempts) -ge $((first + 2)) ]] && break
  sleep 0.1
done
echo "  split-brain log lines on nodeB: $first at detection, $(attempts) later"
expect_region nodeA "data moved during the split brain (A)" 0 "$T/pa"
expect_region nodeB "data moved during the split brain (B)" $((2 * M)) "$T/pb"
pass "no data moved: each region holds only what its node wrote"
sbA=$(grep -c "^split-brain $res\$" "$T/events.A" 2>/dev/null || true)
sbB=$(grep -c "^split-brain $res\$" "$T/events.B" 2>/dev/null || true)
echo "  split-brain hook events: nodeA ${sbA:-0}, nodeB ${sbB:-0}"
[[ $(( ${sbA:-0} + ${sbB:-0} )) -ge 1 ]] || fail "no node ran the exec hook with 'split-brain $res'"
[[ ${sbA:-0} -le 1 && ${sbB:-0} -le 1 ]] || fail "the split-brain hook fired more than once per node (A ${sbA:-0}, B ${sbB:-0})"
pass "split-brain hook fired once per detection"

# 4. B gives up its changes.
dirtyA=$(json_get "$T/sb-list-nodeA.json" "j['resources'][0]['dirty_bytes']")
dirtyB=$(json_get "$T/sb-list-nodeB.json" "j['resources'][0]['dirty_bytes']")
ctl_on nodeA dump --json "$res" > "$T/dumpA.json"
ctl_on nodeB dump --json "$res" > "$T/dumpB.json"
diskA=$(json_get "$T/dumpA.json" "j['resources'][0]['dirty_bytes']")
diskB=$(json_get "$T/dumpB.json" "j['resources'][0]['dirty_bytes']")
bound=$(( (dirtyA > diskA ? dirtyA : diskA) + (dirtyB > diskB ? dirtyB : diskB) ))
datasize=$(json_get "$T/dumpA.json" "j['resources'][0]['datasize']")
ctl_on nodeB resync --discard-local "$res"
wait_status nodeA "$res" complete 90
wait_status nodeB "$res" complete 60
ctl_on nodeA list --json "$res" > "$T/after-A.json"
ctl_on nodeB list --json "$res" > "$T/after-B.json"
copiedA=$(json_get "$T/after-A.json" "j['resources'][0].get('synced_bytes', -1)")
copiedB=$(json_get "$T/after-B.json" "j['resources'][0].get('synced_bytes', -1)")
[[ $copiedA -ge 0 ]] || fail "list --json has no synced_bytes"
copied=$(( copiedA > copiedB ? copiedA : copiedB ))
echo "  resync copied $copied bytes; dirty before: A $dirtyA (disk $diskA), B $dirtyB (disk $diskB)"
[[ $copied -gt 0 ]] || fail "the resync after --discard-local copied nothing"
[[ $copied -le $bound ]] || fail "the resync copied $copied bytes, more than the $bound dirty bytes of both sides"
[[ $copied -lt $datasize ]] || fail "the resync copied the whole disk"

# 5. Final state: B equals A, both hold exactly A's writes.
ctl_on nodeA dump --json "$res" > "$T/dumpA.json"
stop_node nodeA
stop_node nodeB
expect_region nodeA "A's region changed by the resync" 0 "$T/pa"
same_regions "$res"
pass "after resync --discard-local on B: complete, B's region equals A's, $copied bytes copied"
