#!/usr/bin/env bash
# A test killed by SIGKILL (as ctest's timeout kills it) runs no trap and
# leaves its directory, its processes and its mounts behind; lib/reap.bash
# (ctest's cleanup fixture, and every test's start) removes them all.
#   - a victim script (common.bash) starts a pair (two hastd), a plain
#     child, a child in a session of its own, and mounts a tmpfs in its
#     directory; it is killed with SIGKILL;
#   - then its directory and all those processes are still there;
#   - the reaper (as the fixture runs it) leaves none of them: every
#     process gone, nothing mounted under the directory, the directory
#     removed;
#   - it leaves alone a running test's directory and processes (this
#     test's own), and a directory without .owner;
#   - a directory whose .owner names a live pid with another start time
#     (the pid was reused) is dead and reaped, and that live process is
#     not touched.
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
source "$(dirname "$0")/lib/checks.bash"
LIB=$(cd "$(dirname "$0")/lib" && pwd)
[[ $(id -u) -eq 0 ]] || skip "the victim mounts a tmpfs, which needs root"

cat > "$T/victim.sh" <<'VICTIM'
BUILD=$1
source "$2/common.bash"
write_pair_config rk memsync
start_pair rk -m 16M
sleep infinity &
setsid sleep infinity &
mkdir "$T/mnt"
mount -t tmpfs none "$T/mnt"
echo "$T" > "$3.tmp"
mv "$3.tmp" "$3"
wait
VICTIM
bash "$T/victim.sh" "$BUILD" "$LIB" "$T/victim-dir" > "$T/victim.log" 2>&1 &
victim=$!
STARTED_PIDS+=("$victim")
victim_up() { [[ -s $T/victim-dir ]] || ! kill -0 "$victim" 2>/dev/null; }
wait_until 120 "the victim's pair to be up" victim_up
[[ -s $T/victim-dir ]] || fail "the victim script failed: $(cat "$T/victim.log")"
vdir=$(cat "$T/victim-dir")
# If this test fails half-way, its own cleanup still reaps the victim.
on_exit "[[ -d $vdir ]] && reap_dir $vdir >/dev/null"

kill -KILL "$victim"
wait "$victim" 2>/dev/null || true

# What the killed script left: its directory, its processes and its mount.
procs=$(marked_processes "$vdir")
hastds=0
while read -r pid start; do
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == hastd ]] && hastds=$((hastds + 1))
done <<< "$procs"
nprocs=$(grep -c . <<< "$procs" || true)
[[ -d $vdir && $hastds -eq 2 && $nprocs -ge 4 ]] \
  || fail "the killed victim did not leave what this test reaps (dir $([[ -d $vdir ]] && echo yes || echo no), $hastds hastd, $nprocs processes)"
grep -q " $vdir/mnt " /proc/self/mountinfo || fail "the victim's tmpfs is not mounted"
pass "SIGKILL of a test left its directory, 2 hastd, $((nprocs - 2)) other processes and a mount"

# A running test (this one) and a directory without .owner are not reaped.
sleep infinity &
mine=$!
STARTED_PIDS+=("$mine")
noowner=$(mktemp -d /tmp/hast-test.XXXXXX)
on_exit "rm -rf $noowner"
# A directory whose .owner names a live process (this test's sleep) with
# another start time: the pid was reused, so its test is dead.
reused=$(mktemp -d /tmp/hast-test.XXXXXX)
on_exit "rm -rf $reused"
echo "$mine 1" > "$reused/.owner"

bash "$LIB/reap.bash" --dir "$T" > "$T/reap-live.out" 2>&1 || fail "the reaper failed: $(cat "$T/reap-live.out")"
bash "$LIB/reap.bash" --dir "$noowner" >> "$T/reap-live.out" 2>&1 || fail "the reaper failed"
[[ -d $T && -f $T/.owner && -d $noowner ]] || fail "the reaper removed a live test's directory or one without .owner"
kill -0 "$mine" 2>/dev/null || fail "the reaper killed a running test's process"
[[ ! -s $T/reap-live.out ]] || fail "the reaper acted on a live directory: $(cat "$T/reap-live.out")"

bash "$LIB/reap.bash" --dir "$reused" > "$T/reap-reused.out" 2>&1 || fail "the reaper failed"
[[ ! -d $reused ]] || fail "a directory whose owner pid was reused was not reaped"
kill -0 "$mine" 2>/dev/null || fail "the reaper killed the live process that reused the owner's pid"
pass "a running test, a directory without .owner and a live reused pid are left alone"

# The fixture's run: every dead /tmp/hast-test.* (the victim's among them).
bash "$LIB/reap.bash" > "$T/reap.out" 2>&1 || fail "the reaper failed: $(cat "$T/reap.out")"
cat "$T/reap.out"
grep -q "reap: $vdir removed" "$T/reap.out" || fail "the reaper did not report $vdir"
[[ ! -e $vdir ]] || fail "the victim's directory is still there"
left=""
while read -r pid start; do
  [[ $(proc_starttime "$pid" 2>/dev/null) == "$start" ]] && left+=" $pid($(cat "/proc/$pid/comm" 2>/dev/null))"
done <<< "$procs"
[[ -z $left ]] || fail "processes of the killed test survived the reaper:$left"
[[ -z $(marked_processes "$vdir") ]] || fail "processes marked with $vdir remain"
! grep -q " $vdir/" /proc/self/mountinfo || fail "a mount under $vdir remains"
kill -0 "$mine" 2>/dev/null || fail "the reaper killed a running test's process"
pass "the reaper stopped all $nprocs processes, unmounted the tmpfs and removed the directory"
