# Three hastd for failover auto (sourced after common.bash): data nodes
# nodeA and nodeB, and nodeW, the witness. Every link crosses its own
# relay.py so that a test can cut one node off:
#   A->B  nodeA's `remote`     B->A  nodeB's `remote`
#   A->W  nodeA's `witness`    B->W  nodeB's `witness`
# All on 127.0.0.1. LIB must name tests/integration/lib.

# start_relay NAME TARGET_PORT: a relay, its listen port in
# $T/relay-NAME.port. Not run in a command substitution: its pid must reach
# this shell's STARTED_PIDS, which the cleanup kills.
start_relay() {
  local name=$1 target=$2
  python3 "$LIB/relay.py" --route "0:$target" --control "$T/relay-$name.ctl" \
    --log "$T/relay-$name.log" >"$T/relay-$name.port" 2>>"$T/relay-$name.log" &
  STARTED_PIDS+=("$!")
  for _ in $(seq 50); do
    [[ -s $T/relay-$name.port ]] && break
    sleep 0.1
  done
}
relay_port() { head -1 "$T/relay-$1.port"; }

# relay NAME pass|cut|blackhole
relay() {
  python3 -c "import sys; sys.path.insert(0, '$LIB'); from relay import control; print(control('$T/relay-$1.ctl', '$2'))" >/dev/null \
    || fail "relay $1: $2 failed"
}

# isolate NODE / reconnect NODE: every link of a data node, both
# directions, as a partition does it: bytes stop (a black hole, no reset),
# every relay within milliseconds, the witness's first. (Were the peer link
# to break visibly while the witness is still reachable, the primary would
# rightly go on alone and tell the witness, and the other node would then
# not be eligible.)
links_of() {
  case $1 in
    nodeA) echo "A-W A-B B-A" ;;
    nodeB) echo "B-W A-B B-A" ;;
  esac
}
relays() {
  local mode=$1 r socks=""
  shift
  for r in "$@"; do socks+="'$T/relay-$r.ctl',"; done
  python3 -c "import sys; sys.path.insert(0, '$LIB'); from relay import control
for s in [$socks]: control(s, '$mode')" || fail "relays $*: $mode failed"
}
# shellcheck disable=SC2046  # one word per relay
isolate() { relays blackhole $(links_of "$1"); }
# shellcheck disable=SC2046
reconnect() { relays pass $(links_of "$1"); }

# write_failover_config RES [timeout]: the configuration, relays started.
write_failover_config() {
  local res=$1 timeout=${2:-2}
  PORT_A=$(free_port)
  PORT_B=$(free_port)
  PORT_W=$(free_port)
  mkdir -p "$T/a" "$T/b" "$T/w"
  local ab ba aw bw
  start_relay A-B "$PORT_B"
  start_relay B-A "$PORT_A"
  start_relay A-W "$PORT_W"
  start_relay B-W "$PORT_W"
  ab=$(relay_port A-B) ba=$(relay_port B-A) aw=$(relay_port A-W) bw=$(relay_port B-W)
  head -c 32 /dev/urandom | base64 >"$T/key"
  chmod 600 "$T/key"
  # One hook per data node, naming it: hooks get a clean environment, not
  # the one hastd was started with.
  local node
  for node in nodeA nodeB; do
    cat >"$T/events-$node.sh" <<HOOK
#!/bin/sh
echo "\$(date +%s.%N) $node \$*" >>"$T/events.log"
HOOK
    chmod +x "$T/events-$node.sh"
  done
  cat >"$T/hast.conf" <<CONF
on nodeA {
  control uds://$T/a/ctl.sock
  pidfile $T/a/hastd.pid
  listen tcp://127.0.0.1:$PORT_A
}
on nodeB {
  control uds://$T/b/ctl.sock
  pidfile $T/b/hastd.pid
  listen tcp://127.0.0.1:$PORT_B
}
on nodeW {
  control uds://$T/w/ctl.sock
  pidfile $T/w/hastd.pid
  listen tcp://127.0.0.1:$PORT_W
}
resource $res {
  replication memsync
  timeout $timeout
  failover auto
  secret $T/key
  device off
  on nodeA {
    exec $T/events-nodeA.sh
    local $T/a/$res.img
    remote tcp://127.0.0.1:$ab
    witness tcp://127.0.0.1:$aw
    nbd uds://$T/a/$res.nbd
  }
  on nodeB {
    exec $T/events-nodeB.sh
    local $T/b/$res.img
    remote tcp://127.0.0.1:$ba
    witness tcp://127.0.0.1:$bw
    nbd uds://$T/b/$res.nbd
  }
  on nodeW {
    role witness
    local $T/w/$res.witness
  }
}
CONF
}

# start_failover_cluster RES TIMEOUT [SIZE]: the configuration, providers
# of SIZE (default 64M) created on both data nodes, the three hastd
# started, both data nodes secondary by themselves. No primary yet: the
# first one is set by hand.
start_failover_cluster() {
  local res=$1 timeout=$2 size=${3:-64M}
  write_failover_config "$res" "$timeout"
  truncate -s "$size" "$T/a/$res.img" "$T/b/$res.img"
  ctl_on nodeA create "$res" >/dev/null
  ctl_on nodeB create "$res" >/dev/null
  start_node nodeW
  start_data_node nodeA
  start_data_node nodeB
  wait_role nodeA "$res" secondary 15
  wait_role nodeB "$res" secondary 15
}

# start_data_node NODE: as start_node (its hook, events-NODE.sh, names it).
start_data_node() { start_node "$1"; }

# role_of NODE RES: primary, secondary, init (or "?" when it does not answer).
role_of() {
  ctl_on "$1" status --json "$2" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["role"])' 2>/dev/null \
    || echo "?"
}

# json_field NODE RES FIELD
json_field() {
  ctl_on "$1" status --json "$2" 2>/dev/null \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['resources'][0]['$3'])" 2>/dev/null
}

wait_role() {
  local node=$1 res=$2 want=$3 secs=${4:-30}
  for _ in $(seq $((secs * 10))); do
    [[ $(role_of "$node" "$res") == "$want" ]] && return 0
    sleep 0.1
  done
  ctl_on "$node" list "$res" >&2 || true
  fail "$node: $res did not become $want within ${secs}s"
}

# wait_witness_in_sync RES: the witness's record says the holder's secondary
# holds every acknowledged write (so a failover may happen).
wait_witness_in_sync() {
  for _ in $(seq 300); do
    ctl_on nodeW list "$1" 2>/dev/null | grep -q "reports its secondary in sync" && return 0
    sleep 0.1
  done
  ctl_on nodeW list "$1" >&2 || true
  fail "the witness never heard that the secondary of $1 is in sync"
}

now() { python3 -c 'import time; print("%.6f" % time.monotonic())'; }

# start_writer NODE RES TAG FIRST_BLOCK: acked_writer on NODE's export until
# stopped, logs $T/TAG.{ack,issued,times,out}; sets WRITER_PID.
start_writer() {
  local node=$1 res=$2 tag=$3 first=$4 dir
  dir=$([[ $node == nodeA ]] && echo a || echo b)
  python3 "$LIB/acked_writer.py" --socket "$T/$dir/$res.nbd" --export "$res" \
    --seed "$((RANDOM + 1))" --ack-log "$T/$tag.ack" --issued-log "$T/$tag.issued" \
    --time-log "$T/$tag.times" --depth 4 --first-block "$first" --span-blocks 2048 \
    >"$T/$tag.out" 2>&1 &
  WRITER_PID=$!
  STARTED_PIDS+=("$WRITER_PID")
}

# start_follower NODE RES TAG FIRST_BLOCK: a writer that keeps trying NODE's
# export (refused while NODE is not primary) and writes once it opens;
# sets FOLLOWER_PID. Its attempts go to $T/TAG.out.
start_follower() {
  local node=$1 res=$2 tag=$3 first=$4 dir
  dir=$([[ $node == nodeA ]] && echo a || echo b)
  (
    trap 'kill -TERM $child 2>/dev/null; wait $child; exit 0' TERM
    while :; do
      python3 "$LIB/acked_writer.py" --socket "$T/$dir/$res.nbd" --export "$res" \
        --seed "$((RANDOM + 1))" --ack-log "$T/$tag.ack" --issued-log "$T/$tag.issued" \
        --time-log "$T/$tag.times" --depth 4 --first-block "$first" --span-blocks 2048 \
        >>"$T/$tag.out" 2>&1 &
      child=$!
      wait $child && exit 0
      [[ -s $T/$tag.times ]] && exit 0  # it wrote, then the connection went
      sleep 0.1
    done
  ) &
  FOLLOWER_PID=$!
  STARTED_PIDS+=("$FOLLOWER_PID")
}

stop_writer() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

acks_in() { [[ -f $1 ]] && grep -c . "$1" || echo 0; }

# wait_acks TAG N [secs]
wait_acks() {
  local tag=$1 n=$2 secs=${3:-30}
  for _ in $(seq $((secs * 10))); do
    [[ $(acks_in "$T/$tag.times") -ge $n ]] && return 0
    sleep 0.1
  done
  cat "$T/$tag.out" >&2 || true
  fail "$tag: fewer than $n acknowledged writes within ${secs}s"
}

# verify_on NODE RES TAG...: every acknowledged write of the TAG writers
# reads back from NODE's export.
verify_on() {
  local node=$1 res=$2 dir args=() tag
  shift 2
  dir=$([[ $node == nodeA ]] && echo a || echo b)
  for tag in "$@"; do
    [[ -f $T/$tag.ack ]] || continue
    args+=(--ack-log "$T/$tag.ack" --issued-log "$T/$tag.issued")
  done
  python3 "$LIB/verify_acked.py" --socket "$T/$dir/$res.nbd" --export "$res" "${args[@]}" \
    >"$T/verify.out" 2>&1 || { cat "$T/verify.out" >&2; fail "acknowledged writes lost on $node"; }
  sed 's/^/  /' "$T/verify.out" | head -3
}
