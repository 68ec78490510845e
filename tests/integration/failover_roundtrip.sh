#!/usr/bin/env bash
# Failover and back with a real file system (needs root: attach, mount, loop).
#   A primary, B secondary, complete. On A: hastctl attach, mkfs.ext4, mount,
#   write files, umount, detach. kill -9 A; `role primary` on B; on B:
#   attach, mount, the files are intact, write more, umount, detach.
#   Restart A, `role secondary` on A: B resyncs A, copying no more than the
#   extents both sides report dirty before the sync (not the whole disk).
#   Stop both; e2fsck -fn on B's data region is clean, B's data region
#   mounted read-only through a loop device (--offset/--sizelimit) holds
#   every file written on both sides of the failover, and A's region equals
#   B's.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"

if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP: failover_roundtrip needs root (attach, mount, losetup)"
  exit 77
fi

# Our own name: attach state lives in /run/hast/attach/<res> and /dev/hast/<res>.
res=fo$$
state_dir=/run/hast/attach/$res
write_pair_config "$res" memsync
mkdir -p "$T/mnt" "$T/ro"

MOUNTED=()
RO_LOOP=""
OWN_DIRS=()
for d in /run/hast/attach /run/hast /dev/hast; do [[ -e $d ]] || OWN_DIRS+=("$d"); done
# Undo whatever is still there: mounts, the read-only loop, an attach.
undo_all() {
  for m in "${MOUNTED[@]}"; do mountpoint -q "$m" && umount "$m"; done
  [[ -n $RO_LOOP ]] && losetup -d "$RO_LOOP" 2>/dev/null
  if [[ -f $state_dir/state.json ]]; then
    ctl_on nodeB detach "$res" 2>/dev/null || ctl_on nodeA detach "$res" 2>/dev/null
    if [[ -f $state_dir/state.json ]]; then
      local dev mp pid
      dev=$(json_get "$state_dir/state.json" "j.get('device','')")
      mp=$(json_get "$state_dir/state.json" "j.get('mountpoint','')")
      pid=$(json_get "$state_dir/state.json" "j.get('pid',-1)")
      if [[ $(json_get "$state_dir/state.json" "j.get('method','')") == nbd-client ]]; then
        [[ -n $dev ]] && nbd-client -d "$dev" 2>/dev/null
      else
        [[ -n $dev ]] && losetup -d "$dev" 2>/dev/null
        [[ -n $mp ]] && fusermount3 -u "$mp" 2>/dev/null
        [[ $pid -gt 0 ]] && kill "$pid" 2>/dev/null
      fi
      rm -rf "$state_dir"
    fi
  fi
  [[ -L /dev/hast/$res ]] && rm -f "/dev/hast/$res"
  for d in "${OWN_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
  true
}
on_exit undo_all

# attach_mount NODE: attach the resource on NODE and mount it on $T/mnt.
attach_mount() {
  ctl_on "$1" attach "$res" > "$T/attach.out" || fail "$1: attach failed"
  [[ -b /dev/hast/$res ]] || fail "$1: /dev/hast/$res is not a block device"
  echo "  $1: $(cat "$T/attach.out") ($(json_get "$state_dir/state.json" "j['method']"))"
}
mount_it() {
  mount "/dev/hast/$res" "$T/mnt" || fail "mount /dev/hast/$res"
  MOUNTED+=("$T/mnt")
}
umount_detach() {
  umount "$T/mnt"
  MOUNTED=()
  ctl_on "$1" detach "$res" || fail "$1: detach failed"
  [[ ! -e $state_dir && ! -e /dev/hast/$res ]] || fail "$1: detach left $state_dir or /dev/hast/$res"
}
# checksums DIR: sha256 of every file under DIR (but lost+found).
checksums() {
  (cd "$1" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 sha256sum)
}

start_pair "$res" -m 256M -e 1M -k 8

# --- on A ------------------------------------------------------------------------------------
attach_mount nodeA
mkfs.ext4 -q -F -L failover "/dev/hast/$res" || fail "mkfs.ext4 on nodeA's /dev/hast/$res"
mount_it
mkdir "$T/mnt/from-a"
for i in 1 2 3 4 5 6; do head -c $((i * 900 * 1024 + 17)) /dev/urandom > "$T/mnt/from-a/f$i"; done
seq 1 200000 > "$T/mnt/from-a/numbers.txt"
checksums "$T/mnt" > "$T/sums-a"
[[ $(wc -l < "$T/sums-a") -eq 7 ]] || fail "expected 7 files on A: $(cat "$T/sums-a")"
umount_detach nodeA
pass "nodeA: attach, mkfs.ext4, 7 files written, umount, detach"

# --- failover ----------------------------------------------------------------------------------
kill9_node nodeA
ctl_on nodeB role primary "$res"
attach_mount nodeB
mount_it
(cd "$T/mnt" && sha256sum --quiet -c "$T/sums-a") || fail "nodeB: A's files are not intact after the failover"
mkdir "$T/mnt/from-b"
for i in 1 2 3; do head -c $((i * 1300 * 1024 + 5)) /dev/urandom > "$T/mnt/from-b/g$i"; done
echo "appended on B" >> "$T/mnt/from-a/numbers.txt"
rm "$T/mnt/from-a/f2"
checksums "$T/mnt" > "$T/sums-all"
[[ $(wc -l < "$T/sums-all") -eq 9 ]] || fail "expected 9 files on B: $(cat "$T/sums-all")"
umount_detach nodeB
pass "nodeB (promoted): A's files intact, 3 files written, 1 changed, 1 removed"

# --- A returns as secondary ------------------------------------------------------------------
start_node nodeA
ctl_on nodeA dump --json "$res" > "$T/dumpA.json"
ctl_on nodeB dump --json "$res" > "$T/dumpB.json"
ctl_on nodeB list --json "$res" > "$T/listB.json"
dirtyA=$(json_get "$T/dumpA.json" "j['resources'][0]['dirty_bytes']")
dirtyB_disk=$(json_get "$T/dumpB.json" "j['resources'][0]['dirty_bytes']")
dirtyB=$(json_get "$T/listB.json" "j['resources'][0]['dirty_bytes']")
(( dirtyB_disk > dirtyB )) && dirtyB=$dirtyB_disk
before=$(json_get "$T/listB.json" "j['resources'][0].get('synced_bytes', -1)")
[[ $before -ge 0 ]] || fail "list --json has no synced_bytes"
datasize=$(json_get "$T/dumpB.json" "j['resources'][0]['datasize']")
ctl_on nodeA role secondary "$res"
wait_status nodeB "$res" complete 120
wait_status nodeA "$res" complete 60
ctl_on nodeB list --json "$res" > "$T/listB2.json"
after=$(json_get "$T/listB2.json" "j['resources'][0]['synced_bytes']")
copied=$((after - before))
echo "  dirty before the sync: A $dirtyA, B $dirtyB bytes; the sync copied $copied of $datasize bytes"
[[ $copied -gt 0 ]] || fail "the failback copied nothing, though B changed files"
[[ $copied -le $((dirtyA + dirtyB)) ]] || fail "the failback copied $copied bytes, more than the $((dirtyA + dirtyB)) dirty bytes"
[[ $copied -lt $datasize ]] || fail "the failback copied the whole disk ($copied bytes)"
pass "A rejoined as secondary; the sync copied only the changed extents ($copied bytes)"

# --- the file system on B's provider, and A's copy -------------------------------------------
localoff=$(json_get "$T/dumpB.json" "j['resources'][0]['localoff']")
stop_node nodeB
stop_node nodeA
region_of nodeB "$res" "$T/region-b.img"
e2fsck -fn "$T/region-b.img" > "$T/fsck.txt" 2>&1 || { cat "$T/fsck.txt" >&2; fail "e2fsck -fn on B's data region found problems"; }
rm -f "$T/region-b.img"
pass "e2fsck -fn on B's data region is clean"

RO_LOOP=$(losetup --find --show --read-only --offset "$localoff" --sizelimit "$datasize" "$T/b/$res.img") \
  || fail "losetup of B's data region"
mount -o ro "$RO_LOOP" "$T/ro" || fail "read-only mount of B's data region"
MOUNTED+=("$T/ro")
(cd "$T/ro" && sha256sum --quiet -c "$T/sums-all") || fail "files differ on B's data region"
[[ ! -e $T/ro/from-a/f2 ]] || fail "the file removed on B is back"
umount "$T/ro"
MOUNTED=()
losetup -d "$RO_LOOP"
RO_LOOP=""
pass "B's data region, mounted read-only, has the files of both sides intact"

same_regions "$res"
pass "A's data region equals B's"
