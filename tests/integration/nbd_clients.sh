#!/usr/bin/env bash
# Real NBD clients against a standalone primary: nbdinfo sees the right size
# and capabilities, nbdcopy round-trips data, qemu-img writes a qcow2 image's
# contents through the export and compares them, and fio verifies random
# writes over two connections at once (multi-conn).
# Usage: nbd_clients.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

res=nbdc
write_standalone_config "$res"
ctl create -m 160M "$res"
start_hastd
ctl role primary "$res"
URI=$(nbd_uri "$res")

# --- nbdinfo: size and capabilities --------------------------------------------------
ctl dump --json "$res" > "$T/dump.json"
datasize=$(json_get "$T/dump.json" "j['resources'][0]['datasize']")
nbdinfo --json "$URI" > "$T/info.json" || fail "nbdinfo --json failed"
python3 - "$T/info.json" "$datasize" <<'PY' || fail "nbdinfo reports the wrong size or capabilities"
import json, sys
info = json.load(open(sys.argv[1]))
exports = info["exports"]
assert len(exports) == 1, exports
e = exports[0]
assert e["export-size"] == int(sys.argv[2]), (e["export-size"], sys.argv[2])
for cap in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"):
    assert e.get(cap) is True, (cap, e.get(cap))
assert e.get("is_read_only") is False, e
PY
pass "nbdinfo: export size $datasize equals the datasize, flush/fua/trim/zero/multi-conn offered"

# --- nbdcopy: 64 MiB in and out ----------------------------------------------------------
head -c $((64 << 20)) /dev/urandom > "$T/rand64"
nbdcopy "$T/rand64" "$URI" || fail "nbdcopy into the export failed"
# The whole export back into a file: its first 64 MiB are the data.
nbdcopy "$URI" "$T/whole.raw" || fail "nbdcopy of the whole export failed"
[[ $(stat -c %s "$T/whole.raw") -eq $datasize ]] || fail "whole export copy has the wrong size"
cmp -s -n $((64 << 20)) "$T/rand64" "$T/whole.raw" || fail "whole export copy differs"
rm -f "$T/whole.raw"
pass "nbdcopy: 64 MiB of random data written and read back identical"

# --- qemu-img / qemu-io --------------------------------------------------------------
# The qcow2 image has exactly the export's size, so that compare needs no -s.
# Its unallocated parts are zero: convert must overwrite the random data
# nbdcopy left there (write-zeroes or plain writes, whatever qemu picks).
qemu-img create -q -f qcow2 "$T/img.qcow2" "$datasize" || fail "qemu-img create"
qemu-io -f qcow2 \
  -c 'write -P 0xab 0 4M' \
  -c 'write -P 0x5c 40M 3M' \
  -c 'write -P 0x11 100M 64k' \
  -c "write -P 0xee $((datasize - 4096)) 4096" \
  "$T/img.qcow2" > "$T/qemu-io.txt" || fail "qemu-io could not write the pattern"
qemu-img convert -n -O raw "$T/img.qcow2" "$URI" || fail "qemu-img convert into the export failed"
qemu-img compare -f qcow2 -F raw "$T/img.qcow2" "$URI" > "$T/compare.txt" \
  || fail "qemu-img compare: $(cat "$T/compare.txt")"
grep -q "Images are identical" "$T/compare.txt" || fail "qemu-img compare: $(cat "$T/compare.txt")"
# The pattern, read through the export with qemu-io.
qemu-io -f raw -c 'read -P 0x5c 40M 3M' -c "read -P 0xee $((datasize - 4096)) 4096" \
  -c 'read -P 0 20M 1M' "$URI" > "$T/qemu-read.txt" || fail "qemu-io read-back failed"
! grep -qi "pattern verification failed" "$T/qemu-read.txt" \
  || fail "qemu-io read-back: $(cat "$T/qemu-read.txt")"
# A change behind qemu-img's back must be seen by compare (it really compares).
qemu-io -f raw -c 'write -P 0x77 120M 4k' "$URI" > /dev/null || fail "qemu-io write to the export"
rc=0
qemu-img compare -f qcow2 -F raw "$T/img.qcow2" "$URI" > "$T/compare.txt" 2>&1 || rc=$?
[[ $rc -eq 1 ]] || fail "qemu-img compare did not notice a changed block (rc $rc)"
rm -f "$T/img.qcow2"
pass "qemu-img: qcow2 converted into the export and compared equal"

# --- fio: two connections, verified ----------------------------------------------------
half=$(( datasize / 2 / (1 << 20) * (1 << 20) ))
# (In $T, and without a verify state file: fio would leave one in its cwd.)
(cd "$T" && fio --name=multi --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=32 \
    --numjobs=2 --offset_increment="$half" --size="$half" \
    --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
    --output="$T/fio.txt" > /dev/null 2>&1) || { cat "$T/fio.txt" >&2; fail "fio verify failed"; }
[[ $(grep -c "err= 0" "$T/fio.txt") -eq 2 ]] || { cat "$T/fio.txt" >&2; fail "fio: not two jobs without errors"; }
! grep -Eqi "verify: bad|bad magic|crc32c: verify failed" "$T/fio.txt" || fail "fio reported verify errors"
ctl list --json "$res" > "$T/list.json"
writes=$(json_get "$T/list.json" "j['resources'][0]['counters']['writes']")
(( writes >= 2 * half / 4096 )) || fail "the daemon counted only $writes writes"
ctl status "$res" | grep -q "^$res[[:space:]]*complete[[:space:]]*primary" || fail "status after fio: $(ctl status "$res")"
pass "fio: 2 jobs x $((half >> 20)) MiB random 4k writes at iodepth 32, crc32c verified ($writes writes)"

stop_hastd
ctl dump --json "$res" > /dev/null || fail "metadata not valid after the clean stop"
echo "PASS: nbd_clients"
