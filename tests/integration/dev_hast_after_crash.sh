#!/usr/bin/env bash
# Nothing of /dev/hast/<name> outlives a hastd killed -9, and a new hastd
# clears what is left at its start, before any role change:
#  - role primary makes /dev/hast/<name> (nbdfuse + FUSE mount + loop
#    device); kill -9 hastd: its nbdfuse ends with it (it gets SIGTERM from
#    the kernel, PR_SET_PDEATHSIG), by the pid it had;
#  - a new hastd, started with no role change, removes the link, unbinds
#    the loop device and removes the record; role primary makes the device
#    again and it reads back what is written through it;
#  - the same when nbdfuse was killed -9 too (a stale FUSE mount, "transport
#    endpoint is not connected", which only the start-up clean-up removes).
# Skipped (exit 77) without root, nbdfuse/FUSE or loop devices, and where
# the kernel's nbd module would be used instead of nbdfuse.
# Usage: dev_hast_after_crash.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

[[ $(id -u) -eq 0 ]] || { echo "SKIP: /dev/hast/<name> needs root"; exit 77; }
for tool in nbdfuse fusermount3 losetup; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
[[ -e /dev/fuse ]] || { echo "SKIP: no /dev/fuse"; exit 77; }
[[ -e /dev/loop-control ]] || { echo "SKIP: no loop devices"; exit 77; }
if [[ -e /sys/block/nbd0 ]] && command -v nbd-client >/dev/null; then
  echo "SKIP: the kernel's nbd module is loaded: hastd would use nbd-client, not nbdfuse"
  exit 77
fi

# Names of our own: /dev/hast and /run/hast/attach are the machine's.
res=dc$$
dev=dcdev$$
link=/dev/hast/$dev
state=/run/hast/attach/$dev/state.json
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

OWN_DIRS=()
for d in /run/hast/attach /run/hast /dev/hast; do [[ -e $d ]] || OWN_DIRS+=("$d"); done
LOOP="" BACKING="" FUSE_MP="" FUSE_PID=""
# loop_bound_to LOOP DEV:INO: the loop device is bound to that file, by
# device and inode as hastd checks (once the FUSE mount is detached its path
# no longer says whose file it is); a binding the kernel cannot describe
# (ENOTCONN: the file is on a dead FUSE mount) counts as bound, as in hastd.
loop_bound_to() {
  [[ -n $1 && -n $2 ]] || return 1
  python3 - "$1" "$2" <<'PY'
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
info = bytearray(232)  # struct loop_info64
try:
    fcntl.ioctl(fd, 0x4C05, info)  # LOOP_GET_STATUS64
except OSError as e:
    sys.exit(1 if e.errno == 6 else 0)  # ENXIO: not bound
dev, ino = struct.unpack_from("QQ", info)
sys.exit(0 if f"{dev}:{ino}" == sys.argv[2] else 1)
PY
}
# Whatever is left, by the record or by what device_made saw.
undo_all() {
  local loop=$LOOP backing=$BACKING mp=$FUSE_MP pid=$FUSE_PID
  if [[ -f $state ]]; then
    loop=$(json_get "$state" "j.get('device','')")
    backing=$(json_get "$state" "'%s:%s' % (j.get('backing_dev',''), j.get('backing_ino',''))")
    mp=$(json_get "$state" "j.get('mountpoint','')")
    pid=$(json_get "$state" "j.get('pid',-1)")
  fi
  loop_bound_to "$loop" "$backing" && losetup -d "$loop"
  [[ -n $pid && $pid -gt 0 ]] && grep -q nbdfuse "/proc/$pid/cmdline" 2>/dev/null && kill "$pid"
  [[ -n $mp ]] && grep -q " $mp " /proc/mounts && { fusermount3 -u "$mp" || fusermount3 -u -z "$mp"; }
  rm -f "${state%/*}"/{state.json,nbdfuse.pid,nbdfuse.log}
  rmdir "${state%/*}/fuse" "${state%/*}" 2>/dev/null
  [[ -L $link ]] && rm -f "$link"
  for d in "${OWN_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
  true
}
on_exit undo_all

# device_made: waits for the link, then records loop device, FUSE mount
# and nbdfuse's pid in LOOP, FUSE_MP and FUSE_PID.
device_made() {
  wait_until 20 "$link to appear" test -b "$link"
  LOOP=$(json_get "$state" "j['device']")
  FUSE_MP=$(json_get "$state" "j['mountpoint']")
  FUSE_PID=$(json_get "$state" "j['pid']")
  BACKING=$(json_get "$state" "'%s:%s' % (j['backing_dev'], j['backing_ino'])")
  loop_bound_to "$LOOP" "$BACKING" || fail "$LOOP is not bound to nbdfuse's file ($BACKING)"
  [[ $(readlink "$link") == "$LOOP" ]] || fail "$link points to $(readlink "$link"), not $LOOP"
  grep -q nbdfuse "/proc/$FUSE_PID/cmdline" || fail "pid $FUSE_PID is not nbdfuse"
}

# The device reads back what is written through it.
device_works() {
  head -c 1M /dev/urandom > "$T/in"
  dd if="$T/in" of="$link" bs=64k oflag=direct status=none || fail "write through $link"
  dd if="$link" of="$T/out" bs=64k count=16 iflag=direct status=none || fail "read through $link"
  cmp -s "$T/in" "$T/out" || fail "$link returned other data"
}

loop_free() { ! loop_bound_to "$LOOP" "$BACKING"; }
fuse_unmounted() { ! grep -q " $FUSE_MP " /proc/mounts; }

kill9_hastd() {
  kill -KILL "$HASTD_PID"
  wait "$HASTD_PID" 2>/dev/null || true
}

# Everything the earlier device left is gone, with no role change.
cleared_at_start() {
  wait_until 30 "the new hastd to remove $link" test ! -e "$link" -a ! -L "$link"
  wait_until 10 "the record to go" test ! -e "$state"
  wait_until 10 "$LOOP to be unbound" loop_free
  wait_until 10 "the FUSE mount $FUSE_MP to go" fuse_unmounted
  [[ $(ctl status "$res") == *init* ]] || fail "the clean-up changed the role: $(ctl status "$res")"
}

# --- kill -9 hastd: nbdfuse ends with it ------------------------------------------------------
start_hastd
ctl role primary "$res"
device_made
device_works
pass "role primary made $link -> $LOOP (nbdfuse pid $FUSE_PID)"
kill9_hastd
wait_pid_gone "$FUSE_PID" 20
pass "kill -9 hastd: nbdfuse (pid $FUSE_PID) ended with it"
# Left for the start-up clean-up: the link, the record and the loop device.
[[ -L $link && -f $state ]] && loop_bound_to "$LOOP" "$BACKING" \
  || fail "the link, the record or $LOOP's binding is gone: the start-up clean-up would not be tested"

start_hastd
cleared_at_start
log_has "took apart what an earlier run left" || fail "the log does not say what the start-up cleared"
pass "a new hastd removed the stale $link, unbound $LOOP and removed the record at start"
ctl role primary "$res"
device_made
device_works
pass "role primary made $link again, and it works"

# --- kill -9 nbdfuse and hastd: a stale FUSE mount too -----------------------------------------
old_pid=$FUSE_PID
kill -KILL "$FUSE_PID"
# nbdfuse is hastd's child: it is a zombie until hastd is gone too.
kill9_hastd
wait_pid_gone "$FUSE_PID" 10
grep -q " $FUSE_MP " /proc/mounts || fail "killing nbdfuse -9 left no stale FUSE mount to clear"
start_hastd
cleared_at_start
pass "after kill -9 of nbdfuse (pid $old_pid) and hastd, a new hastd removed the stale FUSE mount, $LOOP and $link"
ctl role primary "$res"
device_made
device_works
ctl role init "$res"
wait_until 20 "$link to go" test ! -e "$link" -a ! -L "$link"
wait_pid_gone "$FUSE_PID" 10
stop_hastd
echo "PASS: dev_hast_after_crash"
