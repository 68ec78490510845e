#!/usr/bin/env bash
# A resync on a direct pair (no relay), for profiling: two hastd on loopback,
# SIZE (default 1100M) of device, fully dirty (the secondary joins a primary
# that has been written alone), timed from `role secondary` to `complete`.
#   bench/resync_direct.sh [build dir]        PERF=<seconds>: perf record -a -g meanwhile
# Prints "resync took S s" and hastd's own "synchronization complete" line.
set -euo pipefail
B=${1:-$(dirname "$0")/../build}
B=$(cd "$B" && pwd)
D=$(mktemp -d /var/tmp/hast-resync.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
SIZE=${SIZE:-1100M}
PA=$((20000 + RANDOM % 1000)); PB=$((PA + 1))
cat > "$D/hast.conf" <<C
on nodeA {
  control uds://$D/a.ctl
  pidfile $D/a.pid
  listen tcp://127.0.0.1:$PA
}
on nodeB {
  control uds://$D/b.ctl
  pidfile $D/b.pid
  listen tcp://127.0.0.1:$PB
}
resource r {
  replication memsync
  on nodeA {
    local $D/a.img
    remote tcp://127.0.0.1:$PB
    nbd uds://$D/a.nbd
  }
  on nodeB {
    local $D/b.img
    remote tcp://127.0.0.1:$PA
    nbd uds://$D/b.nbd
  }
}
C
ctl() { "$B/hastctl" -c "$D/hast.conf" "$@"; }
for n in A B; do ctl -n node$n create -m "$SIZE" r; done
"$B/hastd" -F -c "$D/hast.conf" -n nodeA > "$D/a.log" 2>&1 & PIDS+=($!)
sleep 0.5
ctl -n nodeA role primary r
fio --name=w --ioengine=nbd --uri="nbd+unix:///r?socket=$D/a.nbd" --rw=write --bs=1M --iodepth=8 \
    --size=1024M --output=/dev/null
"$B/hastd" -F -c "$D/hast.conf" -n nodeB > "$D/b.log" 2>&1 & PIDS+=($!)
sleep 0.5
ctl -n nodeB role secondary r
if [[ -n ${PERF:-} ]]; then
  perf record -F 999 -g -a -o "${PERF_OUT:-perf.data}" -- sleep "$PERF" 2>/dev/null & PIDS+=($!)
fi
t0=$(date +%s.%N)
until ctl -n nodeA status r | grep -q complete; do sleep 0.05; done
t1=$(date +%s.%N)
echo "resync took $(python3 -c "print(f'{$t1 - $t0:.2f}')") s"
grep -h "synchronization complete" "$D/a.log"
