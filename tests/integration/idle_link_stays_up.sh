#!/usr/bin/env bash
# An idle pair keeps its link when `timeout` is shorter than the keepalive
# default (5 s): with `timeout 3` and no writes for 10 s, neither node logs a
# disconnection and the primary stays complete throughout. (Before, the link
# was dropped as "no traffic for 3 s" and re-made every 5 s; the chaos suite's
# `timeout 3` found it.)
BUILD=$1
source "$(dirname "$0")/lib/common.bash"

res=idle
write_pair_config "$res" memsync
sed -i 's/^  timeout 5$/  timeout 3/' "$T/hast.conf"
grep -q '^  timeout 3$' "$T/hast.conf" || fail "could not set timeout 3 in the pair config"
start_pair "$res" -m 16M

for _ in $(seq 40); do
  ctl_on nodeA status "$res" | grep -q "^$res[[:space:]]*complete" \
    || fail "the idle pair left complete: $(ctl_on nodeA status "$res" | tail -1)"
  sleep 0.25
done
if grep -h -E "disconnected|no traffic" "$T/nodeA.log" "$T/nodeB.log" >&2; then
  fail "the idle link was dropped"
fi
pass "an idle pair with timeout 3 kept its link for 10 s"
