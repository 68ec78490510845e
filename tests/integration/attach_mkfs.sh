#!/usr/bin/env bash
# hastctl attach/detach with a real file system: attach the primary's export
# as /dev/hast/<res>, mkfs.ext4, mount, write files, umount, detach (and check
# that nothing is left behind), then check the file system straight on the
# provider's data region: e2fsck is clean and the files are intact.
# Also the refusals: attach when not primary, detach when not attached; and
# left-overs of a killed nbdfuse (cleared by the next attach unless mounted)
# and `detach -f` of a mounted device.
# The resource has `device off` (common.bash): attach is the only maker.
# Usage: attach_mkfs.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

# A name of our own: attach state lives in /run/hast/attach/<res> and
# /dev/hast/<res>, shared by the whole machine.
res=att$$
state_dir=/run/hast/attach/$res
write_standalone_config "$res"
ctl create -m 96M "$res"
start_hastd
mkdir -p "$T/mnt" "$T/ro"

MOUNTED=()
RO_LOOP=""
# The shared directories attach makes go again if this test made them.
OWN_DIRS=()
for d in /run/hast/attach /run/hast /dev/hast; do [[ -e $d ]] || OWN_DIRS+=("$d"); done
# Undo whatever is still there, in order: mounts, read-only loop, attach.
undo_all() {
  for m in "${MOUNTED[@]}"; do mountpoint -q "$m" && umount "$m"; done
  [[ -n $RO_LOOP ]] && losetup -d "$RO_LOOP" 2>/dev/null
  if [[ -f $state_dir/state.json ]]; then
    ctl detach "$res" 2>/dev/null
    if [[ -f $state_dir/state.json ]]; then
      # detach failed: take it apart by hand, by what attach recorded.
      local dev mp pid
      dev=$(json_get "$state_dir/state.json" "j.get('device','')")
      mp=$(json_get "$state_dir/state.json" "j.get('mountpoint','')")
      pid=$(json_get "$state_dir/state.json" "j.get('pid',-1)")
      [[ -n $dev ]] && losetup -d "$dev" 2>/dev/null
      [[ -n $mp ]] && fusermount3 -u "$mp" 2>/dev/null
      [[ $pid -gt 0 ]] && kill "$pid" 2>/dev/null
      rm -rf "$state_dir"
    fi
  fi
  [[ -L /dev/hast/$res ]] && rm -f "/dev/hast/$res"
  for d in "${OWN_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
  true
}
on_exit undo_all

# --- refusals ----------------------------------------------------------------------
expect_fail "not primary" ctl attach "$res"
[[ $(wc -l < "$T/expect.err") -eq 1 ]] || fail "attach in init: more than one line: $ERR"
[[ ! -e $state_dir && ! -e /dev/hast/$res ]] || fail "a refused attach left state behind"
expect_fail "not attached" ctl detach "$res"
[[ $(wc -l < "$T/expect.err") -eq 1 ]] || fail "detach: more than one line: $ERR"
expect_fail "unknown resource" ctl attach nosuch$$

# --- attach, mkfs, files --------------------------------------------------------------
ctl role primary "$res"
ctl attach "$res" > "$T/attach.out" || fail "attach failed"
[[ -b /dev/hast/$res ]] || fail "/dev/hast/$res is not a block device"
[[ -f $state_dir/state.json ]] || fail "attach recorded no state"
device=$(json_get "$state_dir/state.json" "j['device']")
method=$(json_get "$state_dir/state.json" "j['method']")
grep -q "/dev/hast/$res -> $device" "$T/attach.out" || fail "attach output: $(cat "$T/attach.out")"
if [[ $method == nbdfuse ]]; then
  fuse_mp=$(json_get "$state_dir/state.json" "j['mountpoint']")
  fuse_pid=$(json_get "$state_dir/state.json" "j['pid']")
  grep -q " $fuse_mp " /proc/mounts || fail "the nbdfuse mount $fuse_mp is not mounted"
  kill -0 "$fuse_pid" 2>/dev/null || fail "nbdfuse (pid $fuse_pid) does not run"
fi
ctl list --json "$res" > "$T/list.json"
[[ $(json_get "$T/list.json" "j['resources'][0]['nbd_connections']") -eq 1 ]] \
  || fail "the attached device does not hold exactly one NBD connection"
expect_fail "already attached" ctl attach "$res"
size=$(blockdev --getsize64 "/dev/hast/$res")
ctl dump --json "$res" > "$T/dump.json"
datasize=$(json_get "$T/dump.json" "j['resources'][0]['datasize']")
[[ $size -eq $datasize ]] || fail "/dev/hast/$res has $size bytes, the export $datasize"
pass "attach ($method): /dev/hast/$res -> $device, $size bytes"

mkfs.ext4 -q -F -L hasttest "/dev/hast/$res" || fail "mkfs.ext4 on /dev/hast/$res"
mount "/dev/hast/$res" "$T/mnt" || fail "mount /dev/hast/$res"
MOUNTED+=("$T/mnt")
for i in 1 2 3 4 5; do
  head -c $((i * 700 * 1024 + 123)) /dev/urandom > "$T/mnt/file$i"
done
mkdir "$T/mnt/dir"
seq 1 100000 > "$T/mnt/dir/numbers.txt"
# Detach while the file system is mounted: refused, nothing torn down.
expect_fail "mounted on $T/mnt" ctl detach "$res"
[[ $(wc -l < "$T/expect.err") -eq 1 ]] || fail "detach of a mounted device: more than one line: $ERR"
[[ -b /dev/hast/$res && -f $state_dir/state.json ]] || fail "the refused detach removed the device"
[[ $(losetup -n -O BACK-FILE "$device") == *disk* ]] || fail "the refused detach unbound $device"
if [[ $method == nbdfuse ]]; then
  kill -0 "$fuse_pid" 2>/dev/null || fail "the refused detach stopped nbdfuse"
fi
echo "written after the refused detach" > "$T/mnt/dir/after.txt"
(cd "$T/mnt" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 sha256sum) > "$T/sums"
[[ $(wc -l < "$T/sums") -eq 7 ]] || fail "expected 7 files, got: $(cat "$T/sums")"
sync -f "$T/mnt/file1"
umount "$T/mnt"
MOUNTED=()
pass "mkfs.ext4, mount, 7 files written (detach refused while mounted), umount"

# --- detach leaves nothing behind ----------------------------------------------------------
ctl detach "$res" || fail "detach failed"
[[ ! -e /dev/hast/$res && ! -L /dev/hast/$res ]] || fail "/dev/hast/$res still exists after detach"
[[ ! -e $state_dir ]] || fail "$state_dir still exists after detach"
if [[ $method == nbdfuse ]]; then
  ! grep -q " $fuse_mp " /proc/mounts || fail "the nbdfuse mount is still mounted"
  wait_pid_gone "$fuse_pid" 10
  ! losetup -a | grep -q "$fuse_mp" || fail "a loop device still uses $fuse_mp: $(losetup -a)"
fi
if [[ $(losetup -n -O BACK-FILE "$device" 2>/dev/null) != "" ]]; then
  fail "$device is still bound to $(losetup -n -O BACK-FILE "$device")"
fi
wait_until 10 "the NBD client to go away" nbd_clients_are "$res" 0
pass "detach: device, loop, fuse mount and /dev/hast/$res gone"

# --- the file system, straight from the provider ------------------------------------------
ctl role init "$res"
data_region "$res" "$T/region.img"
e2fsck -fn "$T/region.img" > "$T/fsck.txt" 2>&1 || { cat "$T/fsck.txt" >&2; fail "e2fsck -fn found problems"; }
rm -f "$T/region.img"
pass "e2fsck -fn on the data region is clean"

ctl dump --json "$res" > "$T/dump.json"
localoff=$(json_get "$T/dump.json" "j['resources'][0]['localoff']")
RO_LOOP=$(losetup --find --show --read-only --offset "$localoff" --sizelimit "$datasize" "$T/$res.img") \
  || fail "losetup of the data region"
mount -o ro "$RO_LOOP" "$T/ro" || fail "read-only mount of the data region"
MOUNTED+=("$T/ro")
(cd "$T/ro" && sha256sum --quiet -c "$T/sums") || fail "checksums differ on the data region"
umount "$T/ro"
MOUNTED=()
losetup -d "$RO_LOOP"
RO_LOOP=""
pass "the data region, mounted read-only through a loop device, has every file intact"

# --- left-overs of a killed nbdfuse, detach -f ------------------------------------------------
if [[ $method == nbdfuse ]]; then
  ctl role primary "$res"
  ctl attach "$res" >/dev/null || fail "attach again"
  old_pid=$(json_get "$state_dir/state.json" "j['pid']")
  mount -o ro "/dev/hast/$res" "$T/mnt" || fail "read-only mount"
  MOUNTED+=("$T/mnt")
  kill -9 "$old_pid"
  wait_pid_gone "$old_pid" 10
  # The dead device is still mounted: the next attach must not pull it away.
  expect_fail "mounted on $T/mnt" ctl attach "$res"
  [[ -f $state_dir/state.json ]] || fail "the refused attach dropped the record of the mounted device"
  umount "$T/mnt"
  MOUNTED=()
  ctl attach "$res" >/dev/null || fail "attach over the left-overs of a killed nbdfuse"
  new_pid=$(json_get "$state_dir/state.json" "j['pid']")
  [[ $new_pid != "$old_pid" ]] && kill -0 "$new_pid" || fail "attach did not start a new nbdfuse"
  [[ $(grep -c " $fuse_mp " /proc/mounts) -eq 1 ]] || fail "the stale FUSE mount is still there"
  [[ $(losetup -j "$fuse_mp/disk" | wc -l) -eq 1 ]] || fail "loop devices on $fuse_mp: $(losetup -a)"
  pass "a killed nbdfuse: attach refused while mounted, then cleared the left-overs and attached anew"

  mount "/dev/hast/$res" "$T/mnt" || fail "mount after re-attach"
  MOUNTED+=("$T/mnt")
  device=$(json_get "$state_dir/state.json" "j['device']")
  ctl detach -f "$res" 2> "$T/detach.err" || fail "detach -f: $(cat "$T/detach.err")"
  grep -q "mounted on $T/mnt" "$T/detach.err" || fail "detach -f did not say it was mounted: $(cat "$T/detach.err")"
  [[ ! -L /dev/hast/$res && ! -e $state_dir ]] || fail "detach -f left the link or the record"
  # The export still serves (role primary): the file system keeps working.
  (cd "$T/mnt" && sha256sum --quiet -c "$T/sums") || fail "files unreadable after detach -f"
  umount "$T/mnt"
  MOUNTED=()
  loop_cleared() { [[ -z $(losetup -n -O BACK-FILE "$device" 2>/dev/null) ]]; }
  wait_until 10 "$device to clear itself" loop_cleared
  wait_pid_gone "$new_pid" 10
  ! grep -q " $fuse_mp " /proc/mounts || fail "the FUSE mount outlived the umount"
  pass "detach -f of a mounted device: link gone at once, loop and nbdfuse gone after umount"
  ctl role init "$res"
fi

stop_hastd
echo "PASS: attach_mkfs"
