#!/usr/bin/env bash
# hastctl grow in role init (docs/METADATA.md, "Online growth", offline):
# the way back for the smaller node of an interrupted grow whose larger
# node became primary. Resource gof, memsync, created on 64 MiB files with
# 1 MiB extents and keepdirty 4; the files stand in for LVM volumes.
#   1. Failure modes in role init on nodeA, nothing changed: the provider
#      did not grow (exit 2, "did not grow"); the provider past the
#      ceiling (exit 2, the message gives the 32 GiB ceiling); `grow all`
#      passes over a resource in role init.
#   2. nodeA primary, nodeB secondary, 32 MiB of random data written.
#   3. The interrupted grow: both files to 96 MiB, nodeA's metadata writes
#      fail (hastd_faults) so nodeB grows and nodeA does not; nodeA is
#      killed -9 there.
#   4. nodeB becomes primary (the failover) and takes writes in the old
#      and the new space; nodeA restarts and, as secondary, is refused as
#      the smaller one.
#   5. On nodeA: role init, `hastctl grow` grows it offline (the answer
#      says so, dump shows the new size and the new extents dirty), role
#      secondary: the pair connects, the resync copies the new space and
#      the extents dirty on either side, not the whole resource, and both
#      data regions end up byte-identical; verify finds 0.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

MiB=$((1 << 20))
GiB=$((1 << 30))
res=gof
[[ -x $BUILD/hastd_faults ]] || fail "$BUILD/hastd_faults is not built"
: > "$T/faults"
printf '#!/bin/sh\nexec "%s" --faults "%s" "$@"\n' "$BUILD/hastd_faults" "$T/faults" > "$T/hastd-faulty"
chmod +x "$T/hastd-faulty"
HASTD=$T/hastd-faulty
write_pair_config "$res" memsync
ctl_on nodeA create -m 64M -e 1M -k 4 "$res"
ctl_on nodeB create -m 64M -e 1M -k 4 "$res"
start_node nodeA
start_node nodeB
OLD=$((64 * MiB - 16384))
NEW=$((96 * MiB - 16384))

# md_of NODE EXPR: a field of NODE's `dump --json` (read-only, any role).
md_of() {
  ctl_on "$1" dump --json "$res" > "$T/md-$1.json"
  json_get "$T/md-$1.json" "j['resources'][0]['$2']"
}
datasize() {
  ctl_on "$1" list --json "$res" > "$T/ds-$1.json"
  json_get "$T/ds-$1.json" "j['resources'][0]['datasize']"
}
set_faults() {
  printf '%s\n' "$1" > "$T/faults.new"
  mv "$T/faults.new" "$T/faults"
}

# ---- 1. failure modes in role init --------------------------------------------------------
expect_exit 2 "did not grow" ctl_on nodeA grow "$res"
plain_message "$ERR"
truncate -s 40G "$T/a/$res.img"
expect_exit 2 "recreate" ctl_on nodeA grow "$res"
[[ $ERR == *"$((32 * GiB))"* ]] || fail "the refusal does not give the ceiling: $ERR"
truncate -s 64M "$T/a/$res.img"
out=$(ctl_on nodeA grow all 2>&1) || fail "grow all with the resource in init: $out"
[[ $out == *"in role init here; passed over"* ]] || fail "grow all printed: $out"
[[ $(md_of nodeA datasize) -eq $OLD ]] || fail "a refused offline grow changed the metadata"
pass "offline grow: a provider that did not grow and one past the ceiling are refused"

# ---- 2. the pair and its data -------------------------------------------------------------
ctl_on nodeB role secondary "$res"
ctl_on nodeA role primary "$res"
wait_status nodeA "$res" complete 30
head -c $((32 * MiB)) /dev/urandom > "$T/data"
nbdcopy "$T/data" "$(nbd_uri_of nodeA "$res")" || fail "nbdcopy to nodeA"
pass "32 MiB written through nodeA"

# ---- 3. the interrupted grow ----------------------------------------------------------------
# hastd_faults looks at its rules at most every 50 ms: until nodeA's
# metadata writes fail, a grow goes through, and the files grow again.
set_faults "write $T/a/$res.img 0 16384"
size=64
tries=0
while :; do
  size=$((size + 32))
  truncate -s "${size}M" "$T/a/$res.img" "$T/b/$res.img"
  OLD=$(datasize nodeA)
  out=$(ctl_on nodeA grow "$res" 2>&1) || break
  ((++tries < 50)) || fail "nodeA's metadata writes never failed: $out"
done
NEW=$((size * MiB - 16384))
[[ $out == *"secondary has grown"* ]] || fail "the grow failed for another reason: $out"
[[ $(datasize nodeB) -eq $NEW ]] || fail "nodeB did not grow to $NEW"
kill9_node nodeA
set_faults ""
pass "interrupted grow: nodeB at $NEW bytes, nodeA killed at $OLD"

# ---- 4. failover to the larger node; the smaller one is refused ------------------------------
ctl_on nodeB role primary "$res"
URI_B=$(nbd_uri_of nodeB "$res")
# While apart, nodeB writes 1 MiB in the old space and 1 MiB in the new.
fio_bg apart --ioengine=nbd --uri="$URI_B" --rw=write --bs=64k --offset=$((8 * MiB)) --size=1M
wait "$FIO_PID" || fail "fio in the old space on nodeB"
fio_bg apart2 --ioengine=nbd --uri="$URI_B" --rw=write --bs=64k --offset=$((NEW - 2 * MiB)) \
  --size=1M
wait "$FIO_PID" || fail "fio in the new space on nodeB"
start_node nodeA
[[ $(md_of nodeA datasize) -eq $OLD ]] || fail "nodeA came back with $(md_of nodeA datasize) bytes"
ctl_on nodeA role secondary "$res"
refused_smaller() {
  log_has "$res: connection to the peer failed: refused by the secondary: .*the secondary is smaller" \
    "$T/nodeB.log"
}
wait_until 30 "nodeB to log the smaller secondary's refusal" refused_smaller
expect_exit 22 "primary" ctl_on nodeA grow "$res"
pass "after the failover nodeA is refused as the smaller secondary"

# ---- 5. the offline grow --------------------------------------------------------------------
ctl_on nodeA role init "$res"
out=$(ctl_on nodeA grow "$res" 2>&1) || fail "offline grow on nodeA: $out"
echo "$out"
[[ $out == "$res: grown offline (role init) from $OLD to $NEW bytes"* ]] \
  || fail "the offline grow printed: $out"
[[ $out == *"marked for the resync"* ]] || fail "the answer does not say the new space is synced: $out"
log_has "$res: grown offline \(role init\) from $OLD to $NEW" "$T/nodeA.log" \
  || fail "nodeA's log lacks the offline grow"
[[ $(md_of nodeA datasize) -eq $NEW ]] || fail "nodeA's metadata: $(md_of nodeA datasize)"
new_extents=$(((NEW + MiB - 1) / MiB - OLD / MiB))
[[ $(md_of nodeA dirty_extents) -ge $new_extents ]] \
  || fail "nodeA marks $(md_of nodeA dirty_extents) extents dirty, not the $new_extents new ones"
syncs=$(grep -c "synchronization started" "$T/nodeB.log" || true)
ctl_on nodeA role secondary "$res"
wait_status nodeB "$res" complete 60
started() { [[ $(grep -c "synchronization started" "$T/nodeB.log" || true) -gt $syncs ]]; }
wait_until 10 "nodeB to log its resync" started
line=$(grep "synchronization started" "$T/nodeB.log" | tail -n 1)
echo "nodeB: $line"
bytes=$(sed -E 's/.*synchronization started: ([0-9]+) bytes.*/\1/' <<<"$line")
# The new space, the 2 MiB nodeB wrote while apart and the extents nodeA's
# activemap still held dirty when it was killed. Those are at most the 32 MiB
# it wrote (keepdirty bounds what stays dirty once writes are done, not what
# a batch in flight marks, and nodeA's metadata writes were failing): never
# the whole resource, and never the old space that nobody wrote.
[[ $bytes -ge $((NEW - OLD)) ]] || fail "the resync copies $bytes bytes, less than the new space"
[[ $bytes -le $((NEW - OLD + 32 * MiB + 2 * MiB)) ]] \
  || fail "the resync copies $bytes bytes: more than the new space and the extents written"
same_regions "$res"
out=$(ctl_on nodeB verify "$res" 2>&1) || fail "hastctl verify: $out"
verify_ended() {
  ctl_on nodeB list --json "$res" > "$T/ve.json"
  [[ $(json_get "$T/ve.json" "j['resources'][0]['verify']['active']") == False ]]
}
wait_until 120 "the verify to end" verify_ended
[[ $(json_get "$T/ve.json" "j['resources'][0]['verify']['differing_blocks']") -eq 0 ]] \
  || fail "verify found differences: $(cat "$T/ve.json")"
pass "grown offline, rejoined as secondary; only the new space and the dirty extents were synced"
