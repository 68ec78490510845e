#!/usr/bin/env bash
# Two builds of hast side by side on one machine, in alternating rounds:
# a memsync pair on 127.0.0.1 (device off), fio 4k randwrite at QD32 and
# QD1 for RUNTIME seconds each on the primary's export. Prints IOPS and the
# median completion latency per build and round; read ratios, not figures
# (the machine's noise moves single runs by ±10 %).
#   bench/ab_pair.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS]
# e.g. git worktree add /var/tmp/old <commit> && cmake -S /var/tmp/old -B /var/tmp/old/build &&
#      cmake --build /var/tmp/old/build --target hastd hastctl && bench/ab_pair.sh /var/tmp/old/build build
set -u
OLD=$1 NEW=$2 ROUNDS=${3:-2} RUNTIME=${RUNTIME:-8}
T=$(mktemp -d /var/tmp/hast-ab.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() {
  local B=$1 label=$2 pa pb
  rm -rf "$T/a" "$T/b"; mkdir -p "$T/a" "$T/b"
  local PA PB; PA=$(free_port); PB=$(free_port)
  cat > "$T/hast.conf" <<CONF
on nodeA {
  control uds://$T/a/ctl.sock
  listen tcp://127.0.0.1:$PA
}
on nodeB {
  control uds://$T/b/ctl.sock
  listen tcp://127.0.0.1:$PB
}
resource ab {
  device off
  on nodeA {
    local $T/a/ab.img
    remote tcp://127.0.0.1:$PB
    nbd uds://$T/a/ab.nbd
  }
  on nodeB {
    local $T/b/ab.img
    remote tcp://127.0.0.1:$PA
    nbd uds://$T/b/ab.nbd
  }
}
CONF
  for n in A B; do "$B/hastctl" -c "$T/hast.conf" -n node$n create -m 256M ab || exit 1; done
  "$B/hastd" -F -c "$T/hast.conf" -n nodeA > "$T/a.log" 2>&1 & pa=$!; pids+=("$pa")
  "$B/hastd" -F -c "$T/hast.conf" -n nodeB > "$T/b.log" 2>&1 & pb=$!; pids+=("$pb")
  sleep 1
  "$B/hastctl" -c "$T/hast.conf" -n nodeB role secondary ab
  "$B/hastctl" -c "$T/hast.conf" -n nodeA role primary ab
  for _ in $(seq 100); do
    "$B/hastctl" -c "$T/hast.conf" -n nodeA status ab | grep -q complete && break
    sleep 0.1
  done
  for qd in 32 1; do
    fio --name=w --ioengine=nbd --uri="nbd+unix:///ab?socket=$T/a/ab.nbd" --rw=randwrite --bs=4k \
      --iodepth=$qd --size=200M --time_based --runtime="$RUNTIME" --output-format=json \
      --output="$T/fio.json" >/dev/null 2>&1
    python3 - "$T/fio.json" "$label" "$qd" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
w = json.loads(t[t.index("{"):])["jobs"][0]["write"]
print(f"{sys.argv[2]:4} QD{sys.argv[3]:<3} {int(w['iops']):6d} IOPS  p50 {w['clat_ns']['percentile']['50.000000'] / 1000:.0f} us")
PY
  done
  kill "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null
}
for _ in $(seq "$ROUNDS"); do
  run "$OLD" old
  run "$NEW" new
done
