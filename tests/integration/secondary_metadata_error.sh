#!/usr/bin/env bash
# A secondary that cannot write its activemap must not write the data either
# (the primary's rule too): a crash right after could leave a written extent
# that no map marks. The secondary's provider is an nbdkit `sh` plugin over a
# plain file, exposed as a file by nbdfuse; once a trigger file exists, every
# write below the data region (the metadata) fails with EIO.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
for tool in nbdkit nbdfuse fusermount3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/bootstrap.sh --all installs it)"
done

res=me
write_pair_config "$res" fullsync
create_pair "$res" -m 64M
ctl_on nodeB dump --json "$res" > "$T/dump.json"
data_offset=$(json_get "$T/dump.json" "j['resources'][0]['localoff']")

# nodeB's provider: the file hastctl created, behind nbdkit + nbdfuse.
mv "$T/b/$res.img" "$T/b/backing.img"
cat > "$T/plugin.sh" <<PLUGIN
#!/bin/bash
# nbdkit sh plugin: \$1 is the method; pread/pwrite get handle, count, offset.
f=$T/b/backing.img
case "\$1" in
  get_size) stat -c %s "\$f" ;;
  can_write|can_flush) exit 0 ;;
  pread) dd if="\$f" bs=64K iflag=skip_bytes,count_bytes skip="\$4" count="\$3" status=none ;;
  pwrite)
    if [ -e $T/fail-metadata ] && [ "\$4" -lt $data_offset ]; then
      cat > /dev/null
      echo "EIO metadata write refused by the test" >&2
      exit 1
    fi
    dd of="\$f" bs=64K iflag=fullblock,count_bytes oflag=seek_bytes conv=notrunc,fdatasync \
       seek="\$4" count="\$3" status=none ;;
  flush) exit 0 ;;
  *) exit 2 ;;
esac
PLUGIN
chmod +x "$T/plugin.sh"
nbdkit -f -U "$T/nbdkit.sock" sh "$T/plugin.sh" >"$T/nbdkit.log" 2>&1 &
STARTED_PIDS+=("$!")
for _ in $(seq 100); do [[ -S $T/nbdkit.sock ]] && break; sleep 0.1; done
mkdir -p "$T/b/fuse"
nbdfuse "$T/b/fuse/disk" "nbd+unix:///?socket=$T/nbdkit.sock" >"$T/nbdfuse.log" 2>&1 &
STARTED_PIDS+=("$!")
on_exit "fusermount3 -u $T/b/fuse 2>/dev/null || fusermount3 -u -z $T/b/fuse 2>/dev/null"
for _ in $(seq 100); do [[ -f $T/b/fuse/disk ]] && break; sleep 0.1; done
[[ -f $T/b/fuse/disk ]] || fail "nbdfuse did not expose the secondary's provider"
sed -i "s|local $T/b/$res.img|local $T/b/fuse/disk|" "$T/hast.conf"

run_pair "$res"
pass "a pair whose secondary writes through the faulty provider"

# From now on nodeB cannot write its metadata. A write to an extent nobody
# wrote yet needs nodeB's activemap on disk before nodeB may write the data.
touch "$T/fail-metadata"
offset=$((40 << 20))
# The outcome for the client is not the point here (the primary may fail
# the write or complete it and keep the extent dirty); nodeB's disk is.
qemu-io -f raw -c "write -P 0x5a $offset 64k" "nbd+unix:///$res?socket=$T/a/$res.nbd" \
  > "$T/qemu-io.out" 2>&1 || true
for _ in $(seq 100); do
  grep -q "cannot write metadata" "$T/nodeB.log" && break
  sleep 0.1
done
grep -q "cannot write metadata" "$T/nodeB.log" || fail "nodeB never tried (and failed) to write its activemap"
# The purpose of this wait: time for a data write that must not happen.
sleep 1
python3 - "$T/b/backing.img" "$((data_offset + offset))" <<'PY' \
  || fail "nodeB wrote the data although its activemap could not be written"
import sys
with open(sys.argv[1], 'rb') as f:
    f.seek(int(sys.argv[2]))
    here = f.read(65536)
sys.exit(1 if here == b'\x5a' * 65536 else 0)
PY
# The same check on the primary's file finds the write: the check can see it.
python3 - "$T/a/$res.img" "$((data_offset + offset))" <<'PY' \
  || fail "the primary's region lacks the write; qemu-io said: $(cat "$T/qemu-io.out")"
import sys
with open(sys.argv[1], 'rb') as f:
    f.seek(int(sys.argv[2]))
    here = f.read(65536)
sys.exit(0 if here == b'\x5a' * 65536 else 1)
PY
pass "a secondary that cannot write its activemap does not write the data"

# The daemons are still alive and answer.
ctl_on nodeA status "$res" >/dev/null || fail "nodeA does not answer"
ctl_on nodeB status "$res" >/dev/null || fail "nodeB does not answer"
rm -f "$T/fail-metadata"
stop_node nodeA
stop_node nodeB
pass "both nodes stop cleanly afterwards"
