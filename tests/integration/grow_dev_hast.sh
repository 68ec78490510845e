#!/usr/bin/env bash
# hastctl grow with a mounted file system on /dev/hast/<res> (docs/METADATA.md,
# "Online growth"): a resource with no remote on a 64 MiB provider file,
# attached (hastctl attach: nbdfuse and a loop device), ext4 made and mounted,
# files written; the file grows to 128 MiB and `hastctl grow` runs while the
# file system is mounted and written to. The export's new connections see the
# new size; the attached device keeps the old one (nbdfuse reads the size
# when it connects): the file system is unmounted, the device made again
# (detach, attach), mounted, and `resize2fs` grows it (online; unmounted
# where the environment refuses an online resize): `df` shows the larger size, the files are intact and new files fill the new space.
# Needs root, nbdfuse and mkfs.ext4; reports a skip (77) otherwise.
# Usage: grow_dev_hast.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

if [[ $(id -u) -ne 0 ]]; then echo "SKIP: needs root (loop devices, mount)"; exit 77; fi
for tool in nbdfuse mkfs.ext4 resize2fs losetup; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
[[ -e /dev/fuse ]] || { echo "SKIP: no /dev/fuse"; exit 77; }

MiB=$((1 << 20))
res=grw$$
state_dir=/run/hast/attach/$res
write_standalone_config "$res"
ctl create -m 64M -e 1M "$res"
start_hastd
mkdir -p "$T/mnt"

MOUNTED=()
OWN_DIRS=()
for d in /run/hast/attach /run/hast /dev/hast; do [[ -e $d ]] || OWN_DIRS+=("$d"); done
undo_all() {
  for m in "${MOUNTED[@]}"; do mountpoint -q "$m" && umount "$m"; done
  if [[ -f $state_dir/state.json ]]; then
    ctl detach "$res" 2>/dev/null
    if [[ -f $state_dir/state.json ]]; then
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

datasize() {
  ctl list --json "$res" > "$T/ds.json"
  json_get "$T/ds.json" "j['resources'][0]['datasize']"
}
# fs_bytes: the mounted file system's size in bytes (df).
fs_bytes() { df -B1 --output=size "$T/mnt" | tail -n 1 | tr -d ' '; }

ctl role primary "$res"
ctl attach "$res" > "$T/attach.out" || fail "attach failed: $(cat "$T/attach.out")"
OLD=$(datasize)
[[ $(blockdev --getsize64 "/dev/hast/$res") -eq $OLD ]] || fail "/dev/hast/$res is not $OLD bytes"
mkfs.ext4 -q -F "/dev/hast/$res" || fail "mkfs.ext4 on /dev/hast/$res"
mount "/dev/hast/$res" "$T/mnt" || fail "mount /dev/hast/$res"
MOUNTED+=("$T/mnt")
for i in 1 2 3; do head -c $((i * 3 * MiB + 77)) /dev/urandom > "$T/mnt/file$i"; done
before_fs=$(fs_bytes)
pass "ext4 on /dev/hast/$res ($OLD bytes), 3 files"

# ---- grow while mounted and written ------------------------------------------------------
truncate -s 128M "$T/$res.img"
NEW=$((128 * MiB - 16384))
head -c $((5 * MiB)) /dev/urandom > "$T/mnt/during" &
writer=$!
out=$(ctl grow "$res" 2>&1) || fail "hastctl grow: $out"
wait "$writer" || fail "writing to the mounted file system during the grow failed"
[[ $out == "$res: grown from $OLD to $NEW bytes"* && $out == *"no secondary"* ]] \
  || fail "hastctl grow printed: $out"
[[ $(datasize) -eq $NEW ]] || fail "list shows $(datasize) bytes after the grow"
[[ $(nbdinfo --size "$(nbd_uri "$res")") -eq $NEW ]] || fail "a new NBD connection sees the old size"
[[ $(blockdev --getsize64 "/dev/hast/$res") -eq $OLD ]] \
  || echo "report: /dev/hast/$res already shows $(blockdev --getsize64 "/dev/hast/$res") bytes"
(cd "$T/mnt" && sha256sum file1 file2 file3 during) > "$T/sums"
sync -f "$T/mnt/file1"
pass "grown to $NEW bytes while mounted and written"

# ---- the device made again, resize2fs ---------------------------------------------------
umount "$T/mnt"
MOUNTED=()
ctl detach "$res" || fail "detach failed"
ctl attach "$res" > "$T/attach2.out" || fail "attach after the grow failed: $(cat "$T/attach2.out")"
[[ $(blockdev --getsize64 "/dev/hast/$res") -eq $NEW ]] \
  || fail "/dev/hast/$res made again has $(blockdev --getsize64 "/dev/hast/$res") bytes, not $NEW"
mount "/dev/hast/$res" "$T/mnt" || fail "mount after the grow"
MOUNTED+=("$T/mnt")
# Online (mounted) resize needs CAP_SYS_RESOURCE, which a container may
# lack; then the file system is resized unmounted, as the report says.
if ! resize2fs "/dev/hast/$res" > "$T/resize2fs.out" 2>&1; then
  grep -q "Permission denied" "$T/resize2fs.out" || fail "resize2fs: $(cat "$T/resize2fs.out")"
  echo "report: online resize2fs is not permitted here; resizing unmounted"
  umount "$T/mnt"
  MOUNTED=()
  e2fsck -f -y "/dev/hast/$res" > "$T/e2fsck.out" 2>&1 || fail "e2fsck before resize2fs: $(cat "$T/e2fsck.out")"
  resize2fs "/dev/hast/$res" > "$T/resize2fs.out" 2>&1 || fail "resize2fs: $(cat "$T/resize2fs.out")"
  mount "/dev/hast/$res" "$T/mnt" || fail "mount after resize2fs"
  MOUNTED+=("$T/mnt")
fi
after_fs=$(fs_bytes)
[[ $after_fs -gt $((before_fs + 50 * MiB)) ]] \
  || fail "the file system did not grow: $before_fs -> $after_fs bytes"
(cd "$T/mnt" && sha256sum -c --quiet "$T/sums") || fail "files changed across the grow"
head -c $((60 * MiB)) /dev/urandom > "$T/mnt/big" || fail "the grown file system does not take 60 MiB more (the old one had less free)"
sync -f "$T/mnt/big"
umount "$T/mnt"
MOUNTED=()
ctl detach "$res" || fail "final detach failed"
pass "resize2fs after the device was made again: $before_fs -> $after_fs bytes, files intact"

finish_test grow_dev_hast
