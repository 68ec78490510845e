#!/usr/bin/env bash
# hastctl create and dump on real files: the happy path, the JSON document,
# and every error a user can hit, each of which must exit with FreeBSD's
# sysexits status for it (64 usage, 65 data, 66 provider, 75 in use) and one
# clear line on stderr. The same on a block device: create_dump_block_device.sh.
# Usage: create_dump.sh <build-dir>
set -euo pipefail

build=${1:?usage: create_dump.sh <build-dir>}
hastctl="$build/hastctl"
[[ -x $hastctl ]] || { echo "FAIL: $hastctl not built" >&2; exit 1; }

dir=$(mktemp -d)
cleanup() {
  rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

cfg="$dir/hast.conf"
cat >"$cfg" <<CONF
resource res {
  device off
  on nodeA {
    local $dir/res.img
    remote tcp://127.0.0.1:18458
  }
  on nodeB {
    local $dir/res-b.img
    remote tcp://127.0.0.1:18457
  }
}
resource fresh {
  device off
  local $dir/fresh.img
  on nodeA { remote none }
}
resource missing {
  device off
  local $dir/missing.img
  on nodeA { remote none }
}
CONF

ctl() { "$hastctl" -c "$cfg" -n nodeA "$@"; }

# expect_error RC WANT CMD...: CMD must fail with exit status RC and exactly
# one stderr line starting "hastctl: " and containing WANT.
expect_error() {
  local want_rc=$1 want=$2; shift 2
  local out err rc=0
  out=$("$@" 2>"$dir/stderr") || rc=$?
  err=$(cat "$dir/stderr")
  [[ $rc -eq $want_rc ]] || fail "'$*' exited $rc, expected $want_rc (stderr: $err)"
  [[ $(printf '%s\n' "$err" | wc -l) -eq 1 ]] || fail "'$*' printed more than one error line: $err"
  [[ $err == hastctl:* ]] || fail "'$*' error does not start with 'hastctl:': $err"
  [[ $err == *"$want"* ]] || fail "'$*' error lacks '$want': $err"
  echo "ok: $* -> $err"
}

# --- create on a new sparse file, dump it --------------------------------------
ctl create -m 64M res || fail "create -m 64M res"
[[ -f $dir/res.img ]] || fail "create -m did not create the file"
[[ $(stat -c %s "$dir/res.img") -eq $((64 << 20)) ]] || fail "file is not 64 MiB"
(( $(stat -c %b "$dir/res.img") * 512 < (1 << 20) )) || fail "file is not sparse"

ctl dump res >"$dir/dump.txt" || fail "dump res"
grep -q '^resource: res$' "$dir/dump.txt" || fail "dump text lacks the resource line"
grep -q '^    extentsize: 2097152 (2.0MB)$' "$dir/dump.txt" || fail "dump text extentsize"
grep -q '^    prevrole: init$' "$dir/dump.txt" || fail "dump text prevrole"

# Global options after the command word, as FreeBSD parses them.
"$hastctl" dump --json res -c "$cfg" -n nodeA >"$dir/dump.json" || fail "dump --json res"
python3 - "$dir/dump.json" <<'PY' || fail "dump --json content"
import json, sys
doc = json.load(open(sys.argv[1]))
res = doc["resources"]
assert len(res) == 1, res
r = res[0]
assert r["name"] == "res", r
assert r["datasize"] == 64 * 2**20 - 16384, r
assert r["extentsize"] == 2097152, r
assert r["keepdirty"] == 64, r
assert r["localoff"] == 16384, r
assert r["resuid"] != 0, r
assert r["localcnt"] == 0 and r["remotecnt"] == 0, r
assert r["prevrole"] == "init", r
assert r["dirty_extents"] == 0, r
PY
resuid1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["resources"][0]["resuid"])' "$dir/dump.json")
echo "ok: create + dump --json (resuid $resuid1)"

# Re-create with other parameters: a new resuid, the new extent size.
ctl create -e 64K -k 16 res || fail "re-create res"
ctl --json dump res >"$dir/dump2.json"
python3 - "$dir/dump2.json" "$resuid1" <<'PY' || fail "re-create content"
import json, sys
r = json.load(open(sys.argv[1]))["resources"][0]
assert r["extentsize"] == 65536 and r["keepdirty"] == 16, r
assert r["resuid"] not in (0, int(sys.argv[2])), r
PY
echo "ok: re-create changes resuid and extent size"

# --- errors ------------------------------------------------------------------
expect_error 66 "provider does not exist" ctl create missing
[[ ! -e $dir/missing.img ]] || fail "create without -m created the provider"
expect_error 65 "invalid extent size '3000'" ctl create -e 3000 -m 64M fresh
expect_error 65 "invalid extent size '12K'" ctl create -e 12K -m 64M fresh
expect_error 64 "invalid extent size 'big'" ctl create -e big -m 64M fresh
expect_error 64 "invalid media size" ctl create -m 12Q fresh
expect_error 64 "invalid keepdirty" ctl create -k none -m 64M fresh
expect_error 65 "no resource 'nosuch'" ctl create -m 64M nosuch
expect_error 65 "no resource 'nosuch'" ctl dump nosuch
expect_error 65 "too small" ctl create -m 1M fresh
expect_error 64 "no resource given" ctl create -m 64M
expect_error 64 "unknown command 'frobnicate'" ctl frobnicate
expect_error 64 "unknown option -z" ctl create -z res

# As FreeBSD's: a name that is not configured fails alone; the others are
# created (or dumped), and the exit status is the first failure's.
rm -f "$dir/fresh.img"
rc=0
ctl create -m 64M nosuch fresh 2>"$dir/partial.err" || rc=$?
[[ $rc -eq 65 ]] || fail "create nosuch fresh exited $rc, not 65: $(cat "$dir/partial.err")"
grep -q "no resource 'nosuch'" "$dir/partial.err" || fail "create nosuch fresh: $(cat "$dir/partial.err")"
rc=0
ctl dump fresh nosuch >"$dir/partial.out" 2>"$dir/partial.err" || rc=$?
[[ $rc -eq 65 ]] || fail "dump fresh nosuch exited $rc, not 65"
grep -q '^resource: fresh$' "$dir/partial.out" || fail "create nosuch fresh did not create fresh"
rm -f "$dir/fresh.img"
echo "ok: an unknown name among others: the others are created and dumped, exit 65"

# A never-created provider: a clear "not created", read-only (file untouched).
truncate -s 64M "$dir/fresh.img"
before=$(md5sum <"$dir/fresh.img")
expect_error 65 "not created" ctl dump fresh
[[ $(md5sum <"$dir/fresh.img") == "$before" ]] || fail "dump modified the provider"

# Corrupt both slots: "corrupt metadata", naming each slot.
ctl create -m 64M fresh
printf 'XX' | dd of="$dir/fresh.img" bs=1 seek=40 conv=notrunc status=none
printf 'XX' | dd of="$dir/fresh.img" bs=1 seek=$((8192 + 40)) conv=notrunc status=none
expect_error 65 "slot A: checksum mismatch" ctl dump fresh

# One slot corrupt: still readable.
ctl create -m 64M fresh
printf 'XX' | dd of="$dir/fresh.img" bs=1 seek=40 conv=notrunc status=none
ctl dump fresh >/dev/null || fail "dump with one good slot"

# Another resource's provider.
cat >"$dir/other.conf" <<CONF
resource impostor {
  device off
  local $dir/res.img
  on nodeA { remote none }
}
CONF
expect_error 65 "belongs to resource 'res'" "$hastctl" -c "$dir/other.conf" -n nodeA dump impostor

# dump all: blank line between resources; exit 66 because 'missing' has no provider.
rc=0
ctl dump >"$dir/all.txt" 2>"$dir/all.err" || rc=$?
[[ $rc -eq 66 ]] || fail "dump all with a missing provider exited $rc, not 66"
[[ $(grep -c '^resource: ' "$dir/all.txt") -eq 2 ]] || fail "dump all did not print both resources"
[[ $(grep -c '^$' "$dir/all.txt") -eq 1 ]] || fail "dump all: no single blank line between"
grep -q 'hastctl: dump missing: ' "$dir/all.err" || fail "dump all: no error for 'missing'"
echo "ok: dump all"

# The provider is locked by another process (hastd): create refuses.
if command -v flock >/dev/null; then
  # --no-fork: flock becomes the shell, then the sleep, so $locker is what holds the lock.
  flock --no-fork -n "$dir/res.img" sh -c "touch '$dir/locked'; exec sleep 60" &
  locker=$!
  for _ in $(seq 100); do [[ -e $dir/locked ]] && break; kill -0 "$locker" 2>/dev/null || break; sleep 0.1; done
  [[ -e $dir/locked ]] || fail "flock did not take the lock on the provider"
  expect_error 75 "in use" ctl create res
  kill "$locker" 2>/dev/null || true
  wait "$locker" 2>/dev/null || true
fi

echo "PASS: create_dump"
