#!/usr/bin/env bash
# /dev/hast/<name> grows in place with the resource (docs/METADATA.md,
# "Online growth"): nothing is unmounted, detached or made again.
#  1. A memsync pair (nodeA primary, `device on`: hastd makes the device) on
#     64 MiB provider files; ext4 made on /dev/hast/<name> and mounted, files
#     written, fio writing and verifying a file in it all along.
#  2. Both files grow to 128 MiB; `hastctl grow` says the device grew, and
#     at once `blockdev --getsize64 /dev/hast/<name>` gives the new size, the
#     same loop device as before. `resize2fs` grows the mounted file system
#     (online; where the environment refuses an online resize, which needs
#     CAP_SYS_RESOURCE, it is unmounted for resize2fs on the same device, and
#     the test says so); df shows the larger size, a 60 MiB file that the old
#     one had no room for is written, fio is still running (no I/O error)
#     and its verify passes, every file's sha256 checks out, the resync of the
#     new space completes, `hastctl verify` finds 0 differing blocks, and,
#     with both nodes stopped, the two data regions are byte-identical.
#  3. `hastctl attach` on a standalone resource with `device off`: the
#     attached, mounted device grows in place as well.
#  4. Failure mode: a device whose record has no size limit (as an older
#     hast made them) cannot grow; the grow itself is done (the new data
#     size), its reply and the log say the device did not grow and why, the
#     device keeps its size, and `hastctl detach` still takes it apart.
# Needs root, nbdfuse, mkfs.ext4, resize2fs and fio; reports a skip (77)
# otherwise.
# Usage: grow_dev_hast.sh <build-dir>
BUILD=$1
HAST_DEVICE=on
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

if [[ $(id -u) -ne 0 ]]; then skip "needs root (loop devices, mount)"; fi
for tool in nbdfuse mkfs.ext4 resize2fs e2fsck losetup fio; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done
[[ -e /dev/fuse ]] || skip "no /dev/fuse"

MiB=$((1 << 20))
# Names of our own: /dev/hast and /run/hast/attach are the machine's.
res=gdh$$
sres=gds$$
mkdir -p "$T/mnt"
OWN_DIRS=()
for d in /run/hast/attach /run/hast /dev/hast; do [[ -e $d ]] || OWN_DIRS+=("$d"); done
FIO_PID=""
# Whatever is left, in order: fio, our mount, then each device by its record.
undo_all() {
  [[ -n $FIO_PID ]] && kill "$FIO_PID" 2>/dev/null && wait "$FIO_PID" 2>/dev/null
  if mountpoint -q "$T/mnt"; then umount "$T/mnt" 2>/dev/null || umount -l "$T/mnt"; fi
  local name state loop mp pid
  for name in "$res" "$sres"; do
    state=/run/hast/attach/$name/state.json
    if [[ -f $state ]]; then
      loop=$(json_get "$state" "j.get('device','')")
      mp=$(json_get "$state" "j.get('mountpoint','')")
      pid=$(json_get "$state" "j.get('pid',-1)")
      [[ -n $loop ]] && losetup -d "$loop" 2>/dev/null
      [[ -n $mp ]] && { fusermount3 -u "$mp" 2>/dev/null || fusermount3 -u -z "$mp" 2>/dev/null; }
      [[ $pid -gt 0 ]] && grep -q nbdfuse "/proc/$pid/cmdline" 2>/dev/null && kill "$pid"
      rm -f "${state%/*}"/{state.json,nbdfuse.pid,nbdfuse.log}
      rmdir "${state%/*}/fuse" "${state%/*}" 2>/dev/null
    fi
    [[ -L /dev/hast/$name ]] && rm -f "/dev/hast/$name"
  done
  for d in "${OWN_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
  true
}
on_exit undo_all

fs_bytes() { df -B1 --output=size "$T/mnt" | tail -n 1 | tr -d ' '; }
dev_bytes() { blockdev --getsize64 "/dev/hast/$1"; }

# grow_fs NAME: resize2fs on the mounted /dev/hast/NAME; unmounted (fio
# stopped first, as it writes there) where an online resize is refused.
grow_fs() {
  local name=$1
  if resize2fs "/dev/hast/$name" > "$T/resize2fs.out" 2>&1; then
    pass "resize2fs grew the mounted file system on /dev/hast/$name online"
    return 0
  fi
  grep -q "Permission denied" "$T/resize2fs.out" || fail "resize2fs: $(cat "$T/resize2fs.out")"
  echo "report: online resize2fs is not permitted here (no CAP_SYS_RESOURCE); resizing" \
       "unmounted, on the same device"
  stop_fio
  umount "$T/mnt" || fail "umount before resize2fs"
  e2fsck -f -y "/dev/hast/$name" > "$T/e2fsck.out" 2>&1 \
    || fail "e2fsck before resize2fs: $(cat "$T/e2fsck.out")"
  resize2fs "/dev/hast/$name" > "$T/resize2fs.out" 2>&1 || fail "resize2fs: $(cat "$T/resize2fs.out")"
  mount "/dev/hast/$name" "$T/mnt" || fail "mount after resize2fs"
}

# stop_fio: fio must still be running (an I/O error ends it); stopped by pid.
stop_fio() {
  [[ -n $FIO_PID ]] || return 0
  kill -0 "$FIO_PID" 2>/dev/null || fail "fio ended during the grow: $(cat "$T/fio-load.txt")"
  kill -INT "$FIO_PID"
  local rc=0
  wait "$FIO_PID" || rc=$?
  FIO_PID=""
  grep -q "verify: bad\|crc32c: verify failed\|err=[ ]*[1-9]" "$T/fio-load.txt" \
    && fail "fio reported an error: $(cat "$T/fio-load.txt")"
  pass "fio wrote through the grow without an error (stopped by SIGINT, exit $rc)"
}

# ---- 1. a mounted, busy file system on a memsync pair ------------------------------------
write_pair_config "$res" memsync
start_pair "$res"
wait_until 20 "/dev/hast/$res to appear" test -b "/dev/hast/$res"
state=/run/hast/attach/$res/state.json
LOOP=$(json_get "$state" "j['device']")
datasize() {
  ctl_on "$1" list --json "$2" > "$T/ds.json"
  json_get "$T/ds.json" "j['resources'][0]['datasize']"
}
OLD=$(datasize nodeA "$res")
[[ $(dev_bytes "$res") -eq $OLD ]] || fail "/dev/hast/$res has $(dev_bytes "$res") bytes, not $OLD"
mkfs.ext4 -q -F "/dev/hast/$res" || fail "mkfs.ext4 on /dev/hast/$res"
mount "/dev/hast/$res" "$T/mnt" || fail "mount /dev/hast/$res"
for i in 1 2 3; do head -c $((i * 3 * MiB + 77)) /dev/urandom > "$T/mnt/file$i"; done
before_fs=$(fs_bytes)
fio_bg load --directory="$T/mnt" --filename=load --size=8M --rw=randwrite --bs=4k \
  --ioengine=psync --fsync=32 --verify=crc32c --verify_backlog=256 --time_based --runtime=600
wait_until 20 "fio to start writing" test -s "$T/mnt/load"
pass "ext4 on /dev/hast/$res ($OLD bytes, $LOOP), 3 files, fio writing"

# ---- 2. grow, then resize2fs, without unmounting -----------------------------------------
truncate -s 128M "$T/a/$res.img"
truncate -s 128M "$T/b/$res.img"
NEW=$((128 * MiB - 16384))
out=$(ctl_on nodeA grow "$res" 2>&1) || fail "hastctl grow: $out"
[[ $out == "$res: grown from $OLD to $NEW bytes"* ]] || fail "hastctl grow printed: $out"
[[ $out == *"/dev/hast/$res ($LOOP) has $NEW bytes"* ]] \
  || fail "hastctl grow does not say the device grew: $out"
[[ $(dev_bytes "$res") -eq $NEW ]] \
  || fail "/dev/hast/$res has $(dev_bytes "$res") bytes after the grow, not $NEW"
[[ $(readlink "/dev/hast/$res") == "$LOOP" ]] || fail "/dev/hast/$res was made again"
[[ $(json_get "$state" "j['sizelimit']") -eq $NEW ]] || fail "the record keeps the old size"
pass "/dev/hast/$res shows $NEW bytes at once, still $LOOP, mounted and written"

grow_fs "$res"
after_fs=$(fs_bytes)
[[ $after_fs -gt $((before_fs + 50 * MiB)) ]] \
  || fail "the file system did not grow: $before_fs -> $after_fs bytes"
head -c $((60 * MiB)) /dev/urandom > "$T/mnt/after" \
  || fail "the grown file system does not take 60 MiB more (the old one had less free)"
(cd "$T/mnt" && sha256sum file1 file2 file3 after) > "$T/sums"
stop_fio
sync -f "$T/mnt/after"
umount "$T/mnt" || fail "umount"
mount "/dev/hast/$res" "$T/mnt" || fail "mount again"
(cd "$T/mnt" && sha256sum -c --quiet "$T/sums") || fail "files changed across the grow"
umount "$T/mnt"
pass "file system $before_fs -> $after_fs bytes; files before and after intact"

wait_status nodeA "$res" complete 60
out=$(ctl_on nodeA verify "$res" 2>&1) || fail "hastctl verify: $out"
verify_ended() {
  ctl_on nodeA list --json "$res" > "$T/ve.json"
  [[ $(json_get "$T/ve.json" "j['resources'][0]['verify']['active']") == False ]]
}
wait_until 120 "the verify of $res to end" verify_ended
[[ $(json_get "$T/ve.json" "j['resources'][0]['verify']['outcome']") == complete ]] \
  || fail "verify did not complete: $(cat "$T/ve.json")"
[[ $(json_get "$T/ve.json" "j['resources'][0]['verify']['differing_blocks']") -eq 0 ]] \
  || fail "verify found differences: $(cat "$T/ve.json")"
ctl_on nodeA role init "$res" || fail "role init (removes the device)"
wait_until 20 "/dev/hast/$res to go" test ! -e "/dev/hast/$res" -a ! -L "/dev/hast/$res"
stop_node nodeA
stop_node nodeB
same_regions "$res"
pass "resync complete, verify 0 differing blocks, both data regions identical"

# ---- 3. a device `hastctl attach` made ---------------------------------------------------
cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
pidfile $T/hastd.pid
resource $sres {
  device off
  local $T/$sres.img
  nbd uds://$T/$sres.nbd
  on nodeA {
    remote none
  }
}
CONF
ctl create -m 64M -e 1M "$sres"
start_hastd
ctl role primary "$sres"
ctl attach "$sres" > "$T/attach.out" || fail "attach failed: $(cat "$T/attach.out")"
sstate=/run/hast/attach/$sres/state.json
SLOOP=$(json_get "$sstate" "j['device']")
SOLD=$(datasize nodeA "$sres")
mkfs.ext4 -q -F "/dev/hast/$sres" || fail "mkfs.ext4 on /dev/hast/$sres"
mount "/dev/hast/$sres" "$T/mnt" || fail "mount /dev/hast/$sres"
head -c $((5 * MiB)) /dev/urandom > "$T/mnt/s1"
truncate -s 96M "$T/$sres.img"
SNEW=$((96 * MiB - 16384))
out=$(ctl grow "$sres" 2>&1) || fail "hastctl grow: $out"
[[ $out == *"grown from $SOLD to $SNEW bytes"*"/dev/hast/$sres ($SLOOP) has $SNEW bytes"* ]] \
  || fail "hastctl grow printed: $out"
[[ $(dev_bytes "$sres") -eq $SNEW ]] || fail "the attached device has $(dev_bytes "$sres") bytes"
pass "the attached, mounted /dev/hast/$sres grew in place to $SNEW bytes"

# ---- 4. a device that cannot grow: the grow is done and says so --------------------------
python3 - "$sstate" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
del j["sizelimit"]
json.dump(j, open(sys.argv[1], "w"))
PY
truncate -s 112M "$T/$sres.img"
SNEWER=$((112 * MiB - 16384))
out=$(ctl grow "$sres" 2>&1) || fail "hastctl grow failed although only the device could not grow: $out"
[[ $out == *"grown from $SNEW to $SNEWER bytes"* ]] || fail "hastctl grow printed: $out"
[[ $out == *"the device did not grow: /dev/hast/$sres ($SLOOP) was made without room to grow"* ]] \
  || fail "the reply does not say the device did not grow: $out"
log_has "did not grow: .*without room to grow" || fail "the log does not say the device did not grow"
[[ $(datasize nodeA "$sres") -eq $SNEWER ]] || fail "the grow was not done"
[[ $(dev_bytes "$sres") -eq $SNEW ]] || fail "the device changed size: $(dev_bytes "$sres")"
(cd "$T/mnt" && sha256sum s1) > "$T/ssum"
umount "$T/mnt"
ctl detach "$sres" || fail "detach of a device without a size limit"
[[ ! -e $sstate && ! -L /dev/hast/$sres ]] || fail "detach left the record or the link"
[[ -z $(losetup -n -O BACK-FILE "$SLOOP" 2>/dev/null) ]] || fail "detach left $SLOOP bound"
ctl attach "$sres" > "$T/attach2.out" || fail "attach again: $(cat "$T/attach2.out")"
[[ $(dev_bytes "$sres") -eq $SNEWER ]] || fail "made again, the device has $(dev_bytes "$sres") bytes"
mount "/dev/hast/$sres" "$T/mnt" || fail "mount after attach"
(cd "$T/mnt" && sha256sum -c --quiet "$T/ssum") || fail "s1 changed"
umount "$T/mnt"
ctl detach "$sres" || fail "final detach"
pass "a device without a size limit: grow done, reply and log say why the device did not grow"

finish_test grow_dev_hast
