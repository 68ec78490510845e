#!/usr/bin/env bash
# hastctl create and dump on a block device (a loop device over a 32 MiB
# file): -m larger than the device is refused, -m smaller and no -m both
# create, and dump reports the device's whole size as the data region.
# Needs root and a free loop device: without them it is skipped (exit 77),
# not passed. create_dump.sh covers files.
# Usage: create_dump_block_device.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"

[[ $(id -u) -eq 0 ]] || { echo "SKIP: making a loop device needs root"; exit 77; }
[[ -e /dev/loop-control ]] || { echo "SKIP: no loop devices (/dev/loop-control)"; exit 77; }

truncate -s 32M "$T/loop.img"
loopdev=$(losetup -f --show "$T/loop.img" 2>"$T/losetup.err") \
  || { echo "SKIP: no free loop device: $(cat "$T/losetup.err")"; exit 77; }
on_exit "losetup -d $loopdev"

cat >"$T/hast.conf" <<CONF
resource blk {
  device off
  local $loopdev
  on nodeA { remote none }
}
CONF

expect_error() {
  local want_rc=$1 want=$2; shift 2
  local rc=0 err
  "$@" 2>"$T/stderr" >/dev/null || rc=$?
  err=$(cat "$T/stderr")
  [[ $rc -eq $want_rc ]] || fail "'$*' exited $rc, expected $want_rc (stderr: $err)"
  [[ $(printf '%s\n' "$err" | wc -l) -eq 1 && $err == hastctl:*"$want"* ]] \
    || fail "'$*': expected one line 'hastctl: ...$want...', got: $err"
  pass "$* -> $err"
}

# EX_DATAERR, as FreeBSD's hastctl for a mediasize the provider cannot hold.
expect_error 65 "larger than the provider" ctl create -m 64M blk
ctl create -m 16M -e 64K blk || fail "create on a block device with -m"
ctl create blk || fail "create on a block device"
ctl dump --json blk >"$T/blk.json" || fail "dump --json on a block device"
json_get "$T/blk.json" "j['resources'][0]['datasize']" > "$T/datasize"
[[ $(cat "$T/datasize") -eq $((32 * 2**20 - 16384)) ]] \
  || fail "datasize on a 32 MiB block device is $(cat "$T/datasize"), expected $((32 * 2**20 - 16384))"
pass "create and dump on block device $loopdev"
echo "PASS: create_dump_block_device"
