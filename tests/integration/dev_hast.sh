#!/usr/bin/env bash
# /dev/hast/<name> made and removed by hastd on role changes (`device on`,
# the default), as FreeBSD's hastd does, with no `hastctl attach`:
#  - role primary makes /dev/hast/<name> (the `name` option, not the
#    resource name); mkfs.ext4, mount, write a file;
#  - role secondary is refused (exit 16, EBUSY, naming the mount point) while it is
#    mounted; after umount, role init removes device, loop device, FUSE
#    mount and nbdfuse;
#  - role -f init while mounted proceeds: the link goes at once, the mount
#    stays (the kernel cannot take it away) but its I/O fails, and the loop
#    device and nbdfuse go once it is unmounted;
#  - SIGTERM to a primary hastd removes the device;
#  - a device that cannot be made (no nbdfuse in hastd's PATH) does not stop
#    role primary: the export serves, and list/status/log say why.
# Usage: dev_hast.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

# Names of our own: /dev/hast and /run/hast/attach are the machine's.
res=dh$$
dev=dhdev$$
link=/dev/hast/$dev
state=/run/hast/attach/$dev/state.json
# No `device` line: on is the default.
cat > "$T/hast.conf" <<CONF
control uds://$T/ctl.sock
pidfile $T/hastd.pid
resource $res {
  name $dev
  local $T/$res.img
  nbd uds://$T/$res.nbd
  on nodeA {
    remote none
  }
}
CONF
ctl create -m 64M "$res"
mkdir -p "$T/mnt" "$T/bin"

OWN_DIRS=()
for d in /run/hast/attach /run/hast /dev/hast; do [[ -e $d ]] || OWN_DIRS+=("$d"); done
# Whatever is left, in order: our mount, then the device (by its record).
undo_all() {
  if mountpoint -q "$T/mnt"; then umount "$T/mnt" 2>/dev/null || umount -l "$T/mnt"; fi
  if [[ -f $state ]]; then
    local loop mp pid
    loop=$(json_get "$state" "j.get('device','')")
    mp=$(json_get "$state" "j.get('mountpoint','')")
    pid=$(json_get "$state" "j.get('pid',-1)")
    [[ -n $loop ]] && losetup -d "$loop" 2>/dev/null
    [[ -n $mp ]] && { fusermount3 -u "$mp" 2>/dev/null || fusermount3 -u -z "$mp" 2>/dev/null; }
    [[ $pid -gt 0 ]] && grep -q nbdfuse "/proc/$pid/cmdline" 2>/dev/null && kill "$pid"
    rm -f "${state%/*}"/{state.json,nbdfuse.pid,nbdfuse.log}
    rmdir "${state%/*}/fuse" "${state%/*}" 2>/dev/null
  fi
  [[ -L $link ]] && rm -f "$link"
  for d in "${OWN_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
  true
}
on_exit undo_all

# device_made: waits for the link (the daemon makes it off its actor
# threads), then records loop device, FUSE mount and nbdfuse in LOOP, FUSE_MP
# and FUSE_PID.
device_made() {
  wait_until 20 "$link to appear" test -b "$link"
  [[ -f $state ]] || fail "no record in $state"
  LOOP=$(json_get "$state" "j['device']")
  FUSE_MP=$(json_get "$state" "j.get('mountpoint','')")
  FUSE_PID=$(json_get "$state" "j.get('pid',-1)")
  [[ $(readlink "$link") == "$LOOP" ]] || fail "$link points to $(readlink "$link"), not $LOOP"
}

loop_free() { [[ -z $(losetup -n -O BACK-FILE "$1" 2>/dev/null) ]]; }

# device_gone: link, record, loop binding, FUSE mount and nbdfuse are gone.
device_gone() {
  wait_until 20 "$link to go" test ! -e "$link" -a ! -L "$link"
  wait_until 10 "the record to go" test ! -e "$state"
  wait_until 10 "$LOOP to be unbound" loop_free "$LOOP"
  if [[ -n $FUSE_MP ]]; then
    ! grep -q " $FUSE_MP " /proc/mounts || fail "the FUSE mount $FUSE_MP is still there"
    wait_pid_gone "$FUSE_PID" 10
  fi
}

start_hastd

# --- role primary makes /dev/hast/<name> ---------------------------------------------------
ctl role primary "$res"
device_made
[[ ! -e /dev/hast/$res ]] || fail "/dev/hast/$res exists: the device must be named by 'name'"
[[ $(list_field "$res" "r.get('device','')") == *"$link"* ]] || fail "list --json has no device"
ctl list "$res" | grep -q "device: .*$link" || fail "list has no 'device:' line naming $link"
[[ $(list_field "$res" "r['nbd_connections']") -eq 1 ]] || fail "the device holds other than 1 connection"
pass "role primary made $link -> $LOOP"

mkfs.ext4 -q -F "$link" || fail "mkfs.ext4 on $link"
mount "$link" "$T/mnt" || fail "mount $link"
echo "written through $link" > "$T/mnt/file"
sync -f "$T/mnt/file"

# --- leaving primary while mounted -----------------------------------------------------------
expect_exit 16 "$T/mnt" ctl role secondary "$res"
[[ $(wc -l < "$T/expect.err") -eq 1 ]] || fail "the refusal is more than one line: $ERR"
ctl status "$res" | grep -q primary || fail "the refused demotion changed the role"
[[ -b $link ]] && mountpoint -q "$T/mnt" || fail "the refused demotion touched the device"
grep -q "written through" "$T/mnt/file" || fail "the file is gone"
pass "role secondary refused while $link is mounted on $T/mnt"

umount "$T/mnt"
ctl role init all || fail "role init all after umount"
device_gone
pass "role init all removed $link, $LOOP, the FUSE mount and nbdfuse"

# --- role -f init while mounted ---------------------------------------------------------------
ctl role primary "$res"
device_made
mount "$link" "$T/mnt" || fail "mount $link again"
grep -q "written through" "$T/mnt/file" || fail "the file did not survive init/primary"
ctl role -f init "$res" || fail "role -f init while mounted"
wait_until 20 "$link to go" test ! -e "$link" -a ! -L "$link"
mountpoint -q "$T/mnt" || fail "the forced role change unmounted $T/mnt"
# The export is gone: writing back to it fails.
if dd if=/dev/zero of="$T/mnt/after" bs=64k count=4 conv=fsync 2>/dev/null; then
  fail "a write to the file system of a removed device succeeded"
fi
umount "$T/mnt" 2>/dev/null || umount -l "$T/mnt"
device_gone
pass "role -f init: link gone at once; the mount kept failing I/O until umount, then loop and nbdfuse went"

# --- SIGTERM as primary -----------------------------------------------------------------------
ctl role primary "$res"
device_made
stop_hastd
device_gone
pass "hastd stopped (SIGTERM) as primary removed $link"

# --- a device that cannot be made -----------------------------------------------------------
# hastd's PATH has the tools the device needs, but no nbdfuse (and no
# nbd-client).
for tool in losetup fusermount3; do ln -s "$(command -v "$tool")" "$T/bin/$tool"; done
PATH=$T/bin "$HASTD" -F -c "$T/hast.conf" -n nodeA >>"$T/hastd.log" 2>&1 &
HASTD_PID=$!
STARTED_PIDS+=("$HASTD_PID")
wait_until 10 "hastd to answer" ctl status
ctl role primary "$res" || fail "role primary failed for want of a device"
says_why() { [[ -n $(list_field "$res" "r.get('device_error','')") ]]; }
wait_until 20 "list --json to say why there is no device" says_why
why=$(list_field "$res" "r['device_error']")
[[ $why == *nbdfuse* ]] || fail "device_error does not name nbdfuse: $why"
ctl status --json "$res" > "$T/status.json"
[[ $(json_get "$T/status.json" "j['resources'][0].get('device_error','')") == "$why" ]] \
  || fail "status --json lacks device_error: $(cat "$T/status.json")"
ctl list "$res" | grep -q "device: .*nbdfuse" || fail "list has no 'device:' line saying why"
log_has "nbdfuse" || fail "the log does not say why there is no device"
[[ ! -e $link && ! -e $state ]] || fail "a failed device left $link or its record behind"
size=$(nbdinfo --size "$(nbd_uri "$res")") || fail "nbdinfo on the export"
head -c 4M /dev/urandom > "$T/in"
nbdcopy "$T/in" "$(nbd_uri "$res")" && nbdcopy "$(nbd_uri "$res")" "$T/out" \
  || fail "nbdcopy to and from the export"
cmp -s -n $((4 << 20)) "$T/in" "$T/out" || fail "the export returned other data"
pass "no nbdfuse: role primary still works, the export serves $size bytes, list/status/log say: $why"
ctl role init "$res"
stop_hastd
echo "PASS: dev_hast"
