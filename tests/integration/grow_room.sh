#!/usr/bin/env bash
# Room to grow (docs/METADATA.md, "Room to grow"): `hastctl create -M
# maxsize` sizes the metadata slots for a later data size, and `hastctl
# grow` then goes past what the slots of a create without room describe.
# One resource with no remote (grm), created on a sparse 64 MiB file with
# 1 MiB extents, so the sizes stay small on disk:
#   1. Bad -M values: not a size (exit 64), smaller than the media (65),
#      more than slots a read finds describe (64 GiB with 4 KiB extents:
#      exit 65, the message gives the 32 GiB that fit); nothing created.
#   2. Without -M the slots describe 32 GiB (dump shows maxsize); the
#      provider at 40 GiB is refused with that ceiling, nothing changed.
#   3. Recreated with -M 64G: localoff 24576 (12 KiB slots), dump and
#      dump --json show maxsize 64 GiB; data written through the export.
#   4. The file at 40 GiB (sparse): `hastctl grow` grows to it, past the
#      32 GiB of step 2, the data written before is intact, the new end
#      reads and writes, and the metadata reads back after a restart.
#   5. The file at 65 GiB: refused, the message gives the 64 GiB ceiling
#      and says to recreate with more room; nothing changed.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

MiB=$((1 << 20))
GiB=$((1 << 30))
res=grm
write_standalone_config "$res"
IMG=$T/$res.img

# dump_field EXPR: a field of `hastctl dump --json`.
dump_field() {
  ctl dump --json "$res" > "$T/dump.json"
  json_get "$T/dump.json" "j['resources'][0]['$1']"
}

# ---- 1. bad -M ---------------------------------------------------------------------------
expect_exit 64 "invalid maximum size" ctl create -m 64M -e 1M -M lots "$res"
expect_exit 65 "smaller than the media" ctl create -m 64M -e 1M -M 32M "$res"
expect_exit 65 "larger extent size" ctl create -m 64M -e 4K -M 64G "$res"
[[ $ERR == *"34359738368"* ]] || fail "the refusal does not give the largest maximum size: $ERR"
expect_exit 65 "not created" ctl dump "$res"
pass "bad -M values are refused; nothing created"

# ---- 2. no -M: 32 GiB ----------------------------------------------------------------------
ctl create -m 64M -e 1M "$res"
[[ $(dump_field localoff) -eq 16384 ]] || fail "localoff without -M: $(dump_field localoff)"
[[ $(dump_field maxsize) -eq $((32 * GiB)) ]] || fail "maxsize without -M: $(dump_field maxsize)"
ctl dump "$res" | grep -qx "    maxsize: $((32 * GiB)) (32GB)" || fail "dump: $(ctl dump "$res")"
start_hastd
ctl role primary "$res"
OLD=$((64 * MiB - 16384))
truncate -s 40G "$IMG"
expect_exit 2 "recreate" ctl grow "$res"
[[ $ERR == *"$((32 * GiB))"* ]] || fail "the refusal does not give the 32 GiB ceiling: $ERR"
[[ $(list_field "$res" "r['datasize']") -eq $OLD ]] || fail "a refused grow changed the size"
stop_hastd
pass "without -M the slots describe 32 GiB, and a grow past it is refused"

# ---- 3. -M 64G ---------------------------------------------------------------------------
truncate -s 64M "$IMG"
ctl create -m 64M -e 1M -M 64G "$res"
[[ $(dump_field localoff) -eq 24576 ]] || fail "localoff with -M 64G: $(dump_field localoff)"
[[ $(dump_field maxsize) -eq $((64 * GiB)) ]] || fail "maxsize with -M 64G: $(dump_field maxsize)"
ctl dump "$res" | grep -qx "    maxsize: $((64 * GiB)) (64GB)" || fail "dump: $(ctl dump "$res")"
OLD=$((64 * MiB - 24576))
[[ $(dump_field datasize) -eq $OLD ]] || fail "datasize with -M 64G: $(dump_field datasize)"
start_hastd
ctl role primary "$res"
URI=$(nbd_uri "$res")
head -c $((16 * MiB)) /dev/urandom > "$T/before"
nbdcopy "$T/before" "$URI" || fail "nbdcopy of the data before the grow"
pass "created with room for 64 GiB: slots of 12 KiB"

# ---- 4. past the old ceiling -----------------------------------------------------------------
truncate -s 40G "$IMG"
NEW=$((40 * GiB - 24576))
out=$(ctl grow "$res" 2>&1) || fail "hastctl grow to 40 GiB: $out"
[[ $out == "$res: grown from $OLD to $NEW bytes"* ]] || fail "hastctl grow printed: $out"
[[ $(list_field "$res" "r['datasize']") -eq $NEW ]] || fail "list after the grow"
[[ $(nbdinfo --size "$URI") -eq $NEW ]] || fail "a new NBD connection sees $(nbdinfo --size "$URI")"
# region_head: the first 16 MiB of the data area, read from the provider.
dd if="$IMG" of="$T/now" bs=4096 skip=$((24576 / 4096)) count=$((16 * MiB / 4096)) status=none
cmp "$T/before" "$T/now" || fail "the data written before the grow changed"
# The last MiB of the new space, written and read back through the export.
fio_bg tail --ioengine=nbd --uri="$URI" --rw=write --bs=64k --offset=$((NEW - MiB)) --size=1M \
  --verify=crc32c --do_verify=1 --verify_fatal=1
wait "$FIO_PID" || fail "fio at the new end: $(cat "$T/fio-tail.txt")"
stop_hastd
[[ $(dump_field datasize) -eq $NEW ]] || fail "the metadata does not read back the new size"
[[ $(dump_field localoff) -eq 24576 ]] || fail "the data offset moved"
pass "grown to 40 GiB, past the 32 GiB of slots without room; data intact, new end usable"

# ---- 5. past the room ------------------------------------------------------------------------
start_hastd
ctl role primary "$res"
truncate -s 65G "$IMG"
expect_exit 2 "recreate" ctl grow "$res"
[[ $ERR == *"$((64 * GiB))"* ]] || fail "the refusal does not give the 64 GiB ceiling: $ERR"
[[ $ERR == *"-M"* ]] || fail "the refusal does not say how to get more room: $ERR"
plain_message "$ERR"
[[ $(list_field "$res" "r['datasize']") -eq $NEW ]] || fail "a refused grow changed the size"
stop_hastd
[[ $(dump_field datasize) -eq $NEW ]] || fail "a refused grow changed the metadata"
pass "a grow past the room is refused with the ceiling; nothing changed"
