#!/usr/bin/env bash
# Two builds of hast side by side on one machine, in alternating rounds:
# a memsync pair on 127.0.0.1 (device off), or a standalone node with
# SHAPE=standalone, fio 4k randwrite at QD32 and QD1 for RUNTIME seconds
# each on the (primary's) export. Prints per build and round: IOPS, the
# median completion latency, and hastd's CPU time and context switches per
# write (all threads; both nodes of a pair added up, and the primary's
# alone). Read ratios, not figures (the machine's noise moves single runs
# by ±10 %).
#   [SHAPE=standalone] [RUNTIME=8] [SIZE=200M] bench/ab_pair.sh OLD_BUILD_DIR NEW_BUILD_DIR [ROUNDS]
# WORKLOADS (default "4k:32 4k:1") lists block size:queue depth pairs; 4k
# is random writes, r4k random reads, any other size sequential writes
# (e.g. "1M:8"), whose line also gives MiB/s.
# With VARIANTS, NEW_BUILD_DIR runs once per variant in each round instead
# (OLD_BUILD_DIR is ignored): "label=line|line;label=..." gives each variant
# the resource lines it adds, KEY standing for a key file made here, e.g.
#   VARIANTS='none=;on=secret KEY;off=secret KEY|encryption off' bench/ab_pair.sh - build 3
# e.g. git worktree add /var/tmp/old <commit> && cmake -S /var/tmp/old -B /var/tmp/old/build &&
#      cmake --build /var/tmp/old/build --target hastd hastctl && bench/ab_pair.sh /var/tmp/old/build build
set -u
OLD=$1 NEW=$2 ROUNDS=${3:-2} RUNTIME=${RUNTIME:-8} SHAPE=${SHAPE:-pair} SIZE=${SIZE:-200M}
T=$(mktemp -d /var/tmp/hast-ab.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
# free_ports N: N different TCP ports on 127.0.0.1 that nothing listens on
# (probed at once, so the kernel cannot hand out one of them twice).
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# CPU ticks and context switches (voluntary + involuntary) of every thread
# of the given processes, summed: "ticks switches".
counters() {
  local ticks=0 sw=0 p t
  for p in "$@"; do
    read -r -a st < <(sed 's/^.*) //' "/proc/$p/stat")
    ticks=$((ticks + st[11] + st[12]))
    for t in /proc/"$p"/task/*/status; do
      sw=$((sw + $(awk '/ctxt_switches/ {s += $2} END {print s}' "$t" 2>/dev/null || echo 0)))
    done
  done
  echo "$ticks $sw"
}

run() {
  local B=$1 label=$2 extra=${3:-} pa pb="" nodes=A
  rm -rf "$T/a" "$T/b"; mkdir -p "$T/a" "$T/b"
  local PA PB; read -r PA PB < <(free_ports 2)
  if [ "$SHAPE" = standalone ]; then
    cat > "$T/hast.conf" <<CONF
on nodeA {
  control uds://$T/a/ctl.sock
  listen tcp://127.0.0.1:$PA
}
resource ab {
  device off
  on nodeA {
    local $T/a/ab.img
    remote none
    nbd uds://$T/a/ab.nbd
  }
}
CONF
  else
    nodes="A B"
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
$(printf '%s' "$extra" | tr '|' '\n' | sed "s|KEY|$T/key|; s|^|  |")
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
  fi
  for n in $nodes; do "$B/hastctl" -c "$T/hast.conf" -n node$n create -m 256M ab || exit 1; done
  "$B/hastd" -F -c "$T/hast.conf" -n nodeA > "$T/a.log" 2>&1 & pa=$!; pids+=("$pa")
  if [ "$SHAPE" != standalone ]; then
    "$B/hastd" -F -c "$T/hast.conf" -n nodeB > "$T/b.log" 2>&1 & pb=$!; pids+=("$pb")
  fi
  sleep 1
  [ -n "$pb" ] && "$B/hastctl" -c "$T/hast.conf" -n nodeB role secondary ab
  "$B/hastctl" -c "$T/hast.conf" -n nodeA role primary ab
  for _ in $(seq 100); do
    "$B/hastctl" -c "$T/hast.conf" -n nodeA status ab | grep -q complete && break
    sleep 0.1
  done
  for wl in ${WORKLOADS:-4k:32 4k:1}; do
    local before_all before_a after_all after_a bs=${wl%%:*} qd=${wl##*:} rw=randwrite
    local what=$bs
    case $bs in 4k) ;; r4k) rw=randread bs=4k ;; *) rw=write ;; esac
    before_all=$(counters $pa $pb); before_a=$(counters $pa)
    fio --name=w --ioengine=nbd --uri="nbd+unix:///ab?socket=$T/a/ab.nbd" --rw=$rw --bs="$bs" \
      --iodepth=$qd --size="$SIZE" --time_based --runtime="$RUNTIME" --output-format=json \
      --output="$T/fio.json" >/dev/null 2>&1
    after_all=$(counters $pa $pb); after_a=$(counters $pa)
    python3 - "$T/fio.json" "$label" "$qd" "$before_all" "$after_all" "$before_a" "$after_a" "$SHAPE" "$what" <<'PY'
import json, os, sys
t = open(sys.argv[1]).read()
job = json.loads(t[t.index("{"):])["jobs"][0]
w = job["write"] if job["write"]["total_ios"] > 0 else job["read"]
ios = max(1, w["total_ios"])
hz = os.sysconf("SC_CLK_TCK")
b, a, ba, aa = (list(map(int, s.split())) for s in sys.argv[4:8])
cpu = (a[0] - b[0]) / hz / ios * 1e6
sw = (a[1] - b[1]) / ios
cpu_a = (aa[0] - ba[0]) / hz / ios * 1e6
sw_a = (aa[1] - ba[1]) / ios
both = "" if sys.argv[8] == "standalone" else f"  (primary {cpu_a:.0f} us, {sw_a:.1f} sw)"
size = "" if sys.argv[9] == "4k" else f" {sys.argv[9]} {w['bw_bytes'] / 2**20:7.1f} MiB/s"
print(f"{sys.argv[2]:4}{size} QD{sys.argv[3]:<3} {int(w['iops']):6d} IOPS  p50 {w['clat_ns']['percentile']['50.000000'] / 1000:.0f} us"
      f"  hastd {cpu:.0f} us CPU, {sw:.1f} switches per write{both}")
PY
  done
  kill $pa $pb; wait $pa $pb 2>/dev/null
}
head -c 32 /dev/urandom | base64 > "$T/key"
chmod 600 "$T/key"
for _ in $(seq "$ROUNDS"); do
  if [ -n "${VARIANTS:-}" ]; then
    IFS=';' read -r -a variants <<< "$VARIANTS"
    for v in "${variants[@]}"; do
      run "$NEW" "${v%%=*}" "${v#*=}"
    done
  else
    run "$OLD" old
    run "$NEW" new
  fi
done
