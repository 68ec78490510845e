#!/usr/bin/env bash
# The main job: a two-node hast pair on loopback with file-backed providers.
# Node A is primary, node B secondary; A's /dev/hast/demo (made by role primary) gets
# an ext4 file system, a file is written and read back, and both nodes show
# `complete`. Needs root (loop device and FUSE mount). Everything it starts
# is stopped at the end unless --keep is given.
#
#   scripts/demo.sh [--keep] [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
if [[ ${1:-} == --keep ]]; then keep=1; shift; fi
build=$(realpath "${1:-build}")
hastd="$build/hastd"
hastctl="$build/hastctl"
state=/var/tmp/hast-demo
res=demo

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# free_ports N: N different TCP ports on 127.0.0.1 that nothing listens on
# (probed at once, so the kernel cannot hand out one of them twice).
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

cleanup() {
  set +e
  if [[ $keep -eq 1 ]]; then
    echo "Left running (--keep). Stop with: $hastctl -c $state/hast.conf -n nodeA detach $res; kill \$(cat $state/a/hastd.pid) \$(cat $state/b/hastd.pid)"
    return
  fi
  mountpoint -q "$state/mnt" && umount "$state/mnt"
  "$hastctl" -c "$state/hast.conf" -n nodeA detach "$res" 2>/dev/null
  for n in a b; do
    [[ -f $state/$n/hastd.pid ]] && kill "$(cat "$state/$n/hastd.pid")" 2>/dev/null
  done
  sleep 1
  rm -rf "$state"
}
trap cleanup EXIT

[[ -x $hastd && -x $hastctl ]] || { echo "build hast first: scripts/bootstrap.sh" >&2; exit 1; }
for n in a b; do
  [[ -f $state/$n/hastd.pid ]] && kill "$(cat "$state/$n/hastd.pid")" 2>/dev/null || true
done
rm -rf "$state"
mkdir -p "$state/a" "$state/b" "$state/mnt"
read -r pa pb < <(free_ports 2)

say "One configuration for both nodes ($state/hast.conf); -n picks the node"
cat > "$state/hast.conf" <<CONF
# FreeBSD hast.conf syntax. Two nodes on one machine: each has its own
# control socket, pid file and listen port.
on nodeA {
  control uds://$state/a/ctl.sock
  pidfile $state/a/hastd.pid
  listen tcp://127.0.0.1:$pa
}
on nodeB {
  control uds://$state/b/ctl.sock
  pidfile $state/b/hastd.pid
  listen tcp://127.0.0.1:$pb
}
resource $res {
  replication memsync
  on nodeA {
    local $state/a/$res.img
    remote tcp://127.0.0.1:$pb
    nbd uds://$state/a/$res.nbd
  }
  on nodeB {
    local $state/b/$res.img
    remote tcp://127.0.0.1:$pa
    nbd uds://$state/b/$res.nbd
  }
}
CONF
cat "$state/hast.conf"

A() { echo "+ hastctl -n nodeA $*" >&2; "$hastctl" -c "$state/hast.conf" -n nodeA "$@"; }
B() { echo "+ hastctl -n nodeB $*" >&2; "$hastctl" -c "$state/hast.conf" -n nodeB "$@"; }

say "Create the metadata on both providers (256 MiB sparse files)"
A create -m 256M "$res"
B create -m 256M "$res"
A dump "$res"

say "Start both daemons"
"$hastd" -c "$state/hast.conf" -n nodeA
"$hastd" -c "$state/hast.conf" -n nodeB
echo "hastd nodeA pid $(cat "$state/a/hastd.pid"), nodeB pid $(cat "$state/b/hastd.pid")"

say "Roles: B secondary, A primary"
B role secondary "$res"
A role primary "$res"
for _ in $(seq 100); do
  A status "$res" 2>/dev/null | grep -q complete && break
  sleep 0.2
done
A status
B status

say "A's /dev/hast/$res (made by 'role primary', as on FreeBSD), with ext4 on it"
for _ in $(seq 100); do [[ -b /dev/hast/$res ]] && break; sleep 0.1; done
A list "$res" | grep "^  device:"
mkfs.ext4 -q -F /dev/hast/$res
mount /dev/hast/$res "$state/mnt"
echo "written through hast at $(date)" > "$state/mnt/hello.txt"
dd if=/dev/urandom of="$state/mnt/random.bin" bs=1M count=16 status=none
sync
echo "read back: $(cat "$state/mnt/hello.txt")"
sha256sum "$state/mnt/random.bin"
umount "$state/mnt"

say "Both nodes after the writes"
for _ in $(seq 100); do
  A status "$res" | grep -q complete && break
  sleep 0.2
done
A status
B status
A list "$res"

say "Stop the primary, then the secondary, and compare their data regions byte for byte"
# The primary first: it drains and waits for the secondary's last "done".
for n in a b; do
  kill "$(cat "$state/$n/hastd.pid")"
  for _ in $(seq 100); do [[ -e $state/$n/hastd.pid ]] || break; sleep 0.1; done
done
region() {
  "$hastctl" -c "$state/hast.conf" -n "$1" dump --json "$res" | python3 -c '
import json, sys, hashlib
md = json.load(sys.stdin)["resources"][0]
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    f.seek(md["localoff"]); left = md["datasize"]
    while left:
        b = f.read(min(left, 1 << 20)); h.update(b); left -= len(b)
print(h.hexdigest())' "$2"
}
sa=$(region nodeA "$state/a/$res.img")
sb=$(region nodeB "$state/b/$res.img")
echo "nodeA data sha256 $sa"
echo "nodeB data sha256 $sb"
[[ $sa == "$sb" ]] && echo "identical: the secondary holds every byte the primary wrote" || { echo "MISMATCH"; exit 1; }
