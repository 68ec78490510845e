#!/usr/bin/env bash
# The install tree: `cmake --install` with prefix /usr and with the default
# prefix (/usr/local) into a scratch DESTDIR gives a hastd.service whose
# ExecStart names the hastd installed beside it, and which
# `systemd-analyze verify` accepts without a word; the /etc/hast.conf it
# installs starts no resource and parses, and so does its example with the
# '#' of the example lines removed, for both of its hosts.
# Usage: systemd_unit.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"

for prefix in /usr "" ; do
  root=$T/root${prefix//\//-}
  args=()
  [[ -n $prefix ]] && args=(--prefix "$prefix")
  DESTDIR=$root cmake --install "$BUILD" "${args[@]}" > "$T/install.out" 2>&1 \
    || fail "cmake --install ${args[*]} failed: $(tail -n 5 "$T/install.out")"
  want=${prefix:-/usr/local}
  unit=$root$want/lib/systemd/system/hastd.service
  [[ -f $unit ]] || fail "no unit at ${unit#$root}: $(grep -o '/[^ ]*hastd.service' "$T/install.out")"
  exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
  [[ $exec_start == "$want/sbin/hastd -F" ]] \
    || fail "prefix $want: ExecStart=$exec_start, not $want/sbin/hastd -F"
  [[ -x $root$want/sbin/hastd && -x $root$want/sbin/hastctl ]] \
    || fail "prefix $want: hastd or hastctl not installed in $want/sbin"
  # verify checks that ExecStart is executable, on this host's file system:
  # a copy of the unit names the hastd in the scratch tree (its path was
  # checked above). --man=no: the Documentation= pages are checked below,
  # in the scratch tree.
  mkdir -p "$T/verify"
  sed "s|^ExecStart=$want/sbin/hastd |ExecStart=$root$want/sbin/hastd |" "$unit" \
    > "$T/verify/hastd.service"
  verify=$(systemd-analyze verify --man=no "$T/verify/hastd.service" 2>&1) \
    || fail "systemd-analyze verify failed for prefix $want: $verify"
  [[ -z $verify ]] || fail "systemd-analyze verify warns for prefix $want: $verify"
  for page in man8/hastd.8.gz man8/hastctl.8.gz man5/hast.conf.5.gz; do
    [[ -s $root$want/share/man/$page ]] || fail "prefix $want: no $want/share/man/$page"
  done
  pass "prefix $want: unit at ${unit#$root}, ExecStart=$exec_start, systemd-analyze verify silent"
done

# How exposed the sandbox leaves hastd (for the log; not an assertion).
systemd-analyze security --offline=true "$T/verify/hastd.service" 2>/dev/null | tail -n 1 || true

conf=$T/root-usr/etc/hast.conf
[[ -f $conf ]] || fail "no /etc/hast.conf installed"
"$T/root-usr/usr/sbin/hastd" -c "$conf" -n hasta --check-config > "$T/check.out" 2>&1 \
  || fail "the installed /etc/hast.conf does not parse: $(cat "$T/check.out")"
! grep -q "^resource" "$T/check.out" || fail "the installed /etc/hast.conf configures a resource"
sed -E 's/^#([^ ])/\1/' "$conf" > "$T/example.conf"
grep -q "^resource shared {" "$T/example.conf" || fail "the example has no resource 'shared' to uncomment"
for node in hasta hastb; do
  "$T/root-usr/usr/sbin/hastd" -c "$T/example.conf" -n "$node" --check-config > "$T/check.out" 2>&1 \
    || fail "the uncommented example does not parse for $node: $(cat "$T/check.out")"
  grep -qx "resource shared:" "$T/check.out" || fail "$node: no resource shared: $(cat "$T/check.out")"
done
pass "/etc/hast.conf: no resource as shipped; the uncommented example parses for hasta and hastb"

# An install keeps an /etc/hast.conf that is already there.
echo "# mine" > "$conf"
DESTDIR=$T/root-usr cmake --install "$BUILD" --prefix /usr > "$T/install.out" 2>&1 \
  || fail "second install failed: $(tail -n 5 "$T/install.out")"
[[ $(cat "$conf") == "# mine" ]] || fail "a second install replaced an existing /etc/hast.conf"
pass "a second install keeps an existing /etc/hast.conf"
