#!/usr/bin/env bash
# Prometheus /metrics (`metrics tcp://ADDRESS:PORT`), scraped from a live
# primary with a secondary attached:
#   - `promtool check metrics` accepts every scrape, including one taken
#     while a client writes;
#   - counters move with I/O: writes and their bytes, reads and their bytes,
#     the latency histograms of client requests and of the secondary's
#     acknowledgements, activemap writes; gauges follow the state (role,
#     connected, dirty bytes once the secondary is gone);
#   - only /metrics is served; without the option nothing listens;
#   - a bad value is a configuration error naming file, line and option; an
#     address in use stops the start with a clear error (no half-started
#     daemon).
# Usage: metrics.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"
command -v promtool >/dev/null || fail "promtool (Debian package prometheus) is not installed"

res=mx
write_pair_config "$res" memsync
MPORT=$(free_port)
sed -i "0,/^on nodeA {/s||on nodeA {\n  metrics tcp://127.0.0.1:$MPORT|" "$T/hast.conf"
grep -q "metrics tcp://127.0.0.1:$MPORT" "$T/hast.conf" || fail "could not add the metrics option"
start_pair "$res"

URL="http://127.0.0.1:$MPORT/metrics"
# scrape OUT: one scrape, checked by promtool.
scrape() {
  curl -sf --max-time 10 "$URL" > "$1" || fail "GET $URL failed"
  promtool check metrics < "$1" > "$1.lint" 2>&1 || fail "promtool check metrics: $(cat "$1.lint")"
}
# value FILE SERIES: the sample of one series (exact name and labels).
value() { awk -v s="$2" '$1 == s { print $2 }' "$1"; }

scrape "$T/m0"
[[ $(value "$T/m0" "hast_role{resource=\"$res\",role=\"primary\"}") == 1 ]] || fail "role primary: $(grep hast_role "$T/m0")"
[[ $(value "$T/m0" "hast_connected{resource=\"$res\"}") == 1 ]] || fail "connected: $(grep hast_connected "$T/m0")"
grep -q '^hast_build_info{version="' "$T/m0" || fail "no hast_build_info"
pass "a scrape passes promtool check metrics; role primary, connected"

M=$((1 << 20))
head -c $((32 * M)) /dev/urandom > "$T/data"
# A writer that runs for a while, scraped meanwhile.
fio --name=w --ioengine=nbd --uri="$(nbd_uri_of nodeA "$res")" --rw=randwrite --bs=4k \
    --iodepth=8 --size=32M --time_based --runtime=4 --output="$T/fio.out" >/dev/null 2>&1 &
FIO_PID=$!
STARTED_PIDS+=("$FIO_PID")
# writes_scraped: a scrape (in $T/m1) that counts some of fio's writes.
writes_scraped() {
  curl -sf --max-time 10 "$URL" > "$T/m1" || return 1
  awk -v s="hast_request_duration_seconds_bucket{resource=\"$res\",op=\"write\",le=\"+Inf\"}" \
    '$1 == s && $2 > 0 { found = 1 } END { exit !found }' "$T/m1"
}
wait_until 30 "a scrape that counts writes" writes_scraped
promtool check metrics < "$T/m1" > "$T/m1.lint" 2>&1 || fail "promtool check metrics: $(cat "$T/m1.lint")"
wait "$FIO_PID" || fail "fio: $(cat "$T/fio.out")"
grep -q "^hast_request_duration_seconds_bucket{resource=\"$res\",op=\"write\",le=\"+Inf\"}" "$T/m1" \
  || fail "no write histogram in the scrape during I/O"
pass "a scrape during random 4 KiB writes passes promtool check metrics"

nbdcopy "$T/data" "$(nbd_uri_of nodeA "$res")" || fail "nbdcopy write"
nbdcopy "$(nbd_uri_of nodeA "$res")" "$T/back" || fail "nbdcopy read"
scrape "$T/m2"
python3 - "$T/m0" "$T/m2" "$res" <<'PY' || fail "counters did not move as expected"
import sys
def load(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip(): continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out
a, b, r = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
def d(series): return b.get(series, 0) - a.get(series, 0)
L = f'resource="{r}"'
checks = {
    "writes": d(f'hast_requests_total{{{L},op="write"}}') >= 256,
    "write bytes": d(f'hast_request_bytes_total{{{L},op="write"}}') >= 32 << 20,
    "reads": d(f'hast_requests_total{{{L},op="read"}}') >= 1,
    "read bytes": d(f'hast_request_bytes_total{{{L},op="read"}}') >= 32 << 20,
    "write latency count": d(f'hast_request_duration_seconds_count{{{L},op="write"}}') >= 256,
    "write latency sum": d(f'hast_request_duration_seconds_sum{{{L},op="write"}}') > 0,
    "read latency count": d(f'hast_request_duration_seconds_count{{{L},op="read"}}') >= 1,
    "ack latency count": d(f'hast_replication_ack_duration_seconds_count{{{L}}}') >= 256,
    "activemap writes": d(f'hast_activemap_writes_total{{{L}}}') >= 1,
    "no local errors": all(b[k] == 0 for k in b if k.startswith("hast_request_errors_total")),
}
# Buckets are cumulative and end at the count.
bk = sorted((float(k.split('le="')[1].rstrip('"}').replace("+Inf", "inf")), v)
            for k, v in b.items() if k.startswith(f'hast_request_duration_seconds_bucket{{{L},op="write"'))
checks["buckets cumulative"] = all(x[1] <= y[1] for x, y in zip(bk, bk[1:])) \
    and bk[-1][1] == b[f'hast_request_duration_seconds_count{{{L},op="write"}}']
bad = [k for k, ok in checks.items() if not ok]
for k in bad: print("not as expected:", k)
sys.exit(1 if bad else 0)
PY
pass "counters moved with I/O: requests, bytes, client and replication latency histograms, activemap writes"

# The secondary goes: the gauges follow.
stop_node nodeB
head -c $((2 * M)) /dev/urandom | nbdcopy - "$(nbd_uri_of nodeA "$res")" || fail "write while degraded"
scrape "$T/m3"
[[ $(value "$T/m3" "hast_connected{resource=\"$res\"}") == 0 ]] || fail "connected after stop: $(grep hast_connected "$T/m3")"
dirty=$(value "$T/m3" "hast_dirty_bytes{resource=\"$res\"}")
[[ $dirty -ge $((2 * M)) ]] || fail "dirty bytes while degraded: $dirty"
pass "without the secondary: connected 0, dirty bytes $dirty"

code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/")
[[ $code == 404 ]] || fail "GET / answered $code"
pass "only /metrics is served (GET / is 404)"
grep -q "metrics: serving" "$T/nodeB.log" && fail "nodeB has no metrics option but served them"
pass "off by default: nodeB serves no metrics"

# Failure modes.
cp "$T/hast.conf" "$T/bad.conf"
sed -i "s|metrics tcp://127.0.0.1:$MPORT|metrics 9930|" "$T/bad.conf"
if err=$("$HASTD" -c "$T/bad.conf" -n nodeA --check-config 2>&1); then fail "metrics 9930 accepted"; fi
line=$(grep -n "metrics 9930" "$T/bad.conf" | cut -d: -f1)
[[ $err == *"$T/bad.conf:$line"* && $err == *metrics* && $err == *"tcp://address:port"* ]] \
  || fail "bad metrics value: $err"
pass "a bad value names file, line and option: $err"

stop_node nodeA
# The address in use (a listener of this test holds it): hastd does not start.
HPORT=$(free_port)
python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("held", flush=True); time.sleep(60)' "$HPORT" > "$T/holder.out" &
HOLDER=$!
STARTED_PIDS+=("$HOLDER")
for _ in $(seq 50); do grep -q held "$T/holder.out" && break; sleep 0.1; done
sed "s|metrics tcp://127.0.0.1:$MPORT|metrics tcp://127.0.0.1:$HPORT|" "$T/hast.conf" > "$T/inuse.conf"
rc=0
timeout 20 "$HASTD" -F -c "$T/inuse.conf" -n nodeA > "$T/inuse.log" 2>&1 || rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] || fail "hastd with its metrics address in use: exit $rc"
grep -q "metrics: cannot listen on tcp://127.0.0.1:$HPORT" "$T/inuse.log" || fail "in use: $(tail -3 "$T/inuse.log")"
pass "metrics address in use: hastd exits $rc: $(grep -o 'metrics: cannot listen.*' "$T/inuse.log")"
kill "$HOLDER"
