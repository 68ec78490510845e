#!/usr/bin/env bash
# SIGHUP with settings that need a resource restart (`name`, `local`, `nbd`,
# `device`): as FreeBSD's hastd_reload(), a resource that is not primary
# goes to init and starts again with the new settings in the role it had.
# nodeB (secondary) gets a new `nbd` and a new `local` (a link to its
# provider); each time it comes back secondary, the pair is complete again,
# the role hooks say `secondary init` then `init secondary`, and the data the
# primary wrote is on nodeB's provider. A resource in init stays in init.
# The primary's own change of `nbd` is refused (logged), as before.
# Usage: reload_restart.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"

res=rr
# nodeB's hook records its events.
cat > "$T/hook-B.sh" <<HOOK
#!/bin/sh
echo "\$*" >> "$T/hook-B.log"
HOOK
chmod +x "$T/hook-B.sh"
write_pair_config "$res" memsync
sed -i "0,/^on nodeB {/s||on nodeB {\n  exec $T/hook-B.sh|" "$T/hast.conf"
grep -q "exec $T/hook-B.sh" "$T/hast.conf" || fail "could not add nodeB's hook"
cat >> "$T/hast.conf" <<CONF
resource idle {
  device off
  on nodeA {
    local $T/a/idle.img
    remote none
    nbd uds://$T/a/idle.nbd
  }
  on nodeB {
    local $T/b/idle.img
    remote none
    nbd uds://$T/b/idle.nbd
  }
}
CONF
ctl_on nodeB create -m 16M idle
start_pair "$res"

# role_on NODE RES: the role `status --json` reports.
role_on() {
  ctl_on "$1" status --json "$2" > "$T/role.json"
  json_get "$T/role.json" "j['resources'][0]['role']"
}
# role_is NODE RES ROLE / local_is NODE RES PATH: a check that wait_until
# runs again each time (a "$(...)" argument would be read once, at the call).
role_is() { [[ $(role_on "$1" "$2") == "$3" ]]; }
local_is() {
  ctl_on "$1" list --json "$2" > "$T/local.json"
  [[ $(json_get "$T/local.json" "j['resources'][0]['local']") == "$3" ]]
}
# nbd_on NODE RES: the `nbd` address `list --json` reports.
nbd_on() {
  ctl_on "$1" list --json "$2" > "$T/nbd.json"
  json_get "$T/nbd.json" "j['resources'][0]['nbd']"
}
# hook_lines OLD NEW: how many `role rr OLD NEW` hooks nodeB ran.
hook_lines() {
  local n
  n=$(grep -c "^role $res $1 $2\$" "$T/hook-B.log" 2>/dev/null) || true
  echo "${n:-0}"
}

# Something on the pair, to find on nodeB's next provider.
head -c 1M /dev/urandom > "$T/data"
nbdcopy "$T/data" "$(nbd_uri_of nodeA "$res")" || fail "nbdcopy to nodeA's export"
wait_status nodeA "$res" complete 30

# --- nodeB's nbd changes: restarted, back to secondary ------------------------------------
down=$(hook_lines secondary init)
up=$(hook_lines init secondary)
pid_b=${NODE_PID[nodeB]}
sed -i "/^  on nodeB {/,/^  }/ s|nbd uds://$T/b/$res.nbd|nbd uds://$T/b/$res-2.nbd|" "$T/hast.conf"
grep -q "nbd uds://$T/b/$res-2.nbd" "$T/hast.conf" || fail "could not change nodeB's nbd"
kill -HUP "$pid_b"
wait_until 30 "nodeB to log the restart in role secondary" \
  log_has "reload: resource $res restarted with its new settings; returning to role secondary" "$T/nodeB.log"
wait_until 30 "nodeB's $res to be secondary again" role_is nodeB "$res" secondary
[[ $(nbd_on nodeB "$res") == "uds://$T/b/$res-2.nbd" ]] || fail "nodeB does not use the new nbd: $(nbd_on nodeB "$res")"
wait_status nodeA "$res" complete 60
hooks_after() { (($(hook_lines secondary init) > down && $(hook_lines init secondary) > up)); }
wait_until 20 "the role hooks of the restart" hooks_after
kill -0 "$pid_b" || fail "nodeB's hastd is gone"
[[ $(role_on nodeB idle) == init ]] || fail "resource idle left init: $(role_on nodeB idle)"
pass "SIGHUP with a new nbd on the secondary: restarted, secondary again, pair complete; hooks ran"

# --- nodeB's local changes: the same, through another path -------------------------------
# A link to the same provider: a new `local` to hastd, and the old resource's
# lock on the file must be gone before the new one takes it.
ln -s "$T/b/$res.img" "$T/b/$res-2.img"
sed -i "/^  on nodeB {/,/^  }/ s|local $T/b/$res.img|local $T/b/$res-2.img|" "$T/hast.conf"
grep -q "local $T/b/$res-2.img" "$T/hast.conf" || fail "could not change nodeB's local"
kill -HUP "$pid_b"
wait_until 30 "nodeB to use the new provider" local_is nodeB "$res" "$T/b/$res-2.img"
wait_until 30 "nodeB's $res to be secondary on the new provider" role_is nodeB "$res" secondary
wait_status nodeA "$res" complete 60
ctl_on nodeB list --json "$res" > "$T/b.json"
[[ $(json_get "$T/b.json" "j['resources'][0]['local']") == "$T/b/$res-2.img" ]] \
  || fail "nodeB does not run on the new provider"
stop_node nodeA
stop_node nodeB
region_of nodeA "$res" "$T/region-a"
ctl_on nodeB dump --json "$res" > "$T/dump-b.json"
copy_region "$T/b/$res-2.img" "$T/dump-b.json" "$T/region-b"
cmp -s "$T/region-a" "$T/region-b" || fail "nodeB's provider does not hold the primary's data"
pass "SIGHUP with a new local on the secondary: restarted on it, secondary again, same data"

# --- the primary keeps its settings --------------------------------------------------------
start_node nodeA
start_node nodeB
ctl_on nodeB role secondary "$res"
ctl_on nodeA role primary "$res"
wait_status nodeA "$res" complete 30
sed -i "/^  on nodeA {/,/^  }/ s|nbd uds://$T/a/$res.nbd|nbd uds://$T/a/$res-2.nbd|" "$T/hast.conf"
kill -HUP "${NODE_PID[nodeA]}"
wait_until 20 "nodeA to refuse the restart of its primary" \
  log_has "reload: resource $res is primary; changes to name, local, nbd or device need" "$T/nodeA.log"
[[ $(role_on nodeA "$res") == primary ]] || fail "nodeA left primary"
[[ $(nbd_on nodeA "$res") == "uds://$T/a/$res.nbd" ]] || fail "nodeA's primary took the new nbd"
pass "SIGHUP with a new nbd on the primary: refused, logged, still primary on the old export"
stop_node nodeA
stop_node nodeB
