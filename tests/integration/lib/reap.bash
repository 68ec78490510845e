# Reaps what an integration test killed by SIGKILL (ctest's timeout) left:
# its /tmp/hast-test.* directory, the processes it started (hastd, nbdfuse,
# nbdkit, fio, helpers), the mounts under that directory and the loop
# devices backed by files in it.
#
# How a dead test is told apart from a running one: common.bash writes
# $T/.owner ("<pid> <start time>", the test script's shell, start time as
# field 22 of /proc/<pid>/stat) and exports HAST_TEST_DIR=$T, which every
# process the test starts inherits (daemonized hastd, its nbdfuse and hooks
# included). A directory is dead when no process has that pid with that
# start time, so a reused pid never keeps it alive or gets it reaped. Its
# processes are the ones whose environment (/proc/<pid>/environ, as they
# were started) holds HAST_TEST_DIR=<that directory>; each is signalled
# only while its start time is still the one seen when it was found.
# A directory without .owner (being made, or made by an older common.bash)
# is left alone.
#
# Sourced by common.bash (reap_dead_tests at every test's start) and run by
# ctest's cleanup fixture: bash tests/integration/lib/reap.bash [--dir DIR]
# (DIR: one directory to reap if dead; the default is every /tmp/hast-test.*).

# proc_starttime PID: field 22 of /proc/PID/stat (after the command's
# closing parenthesis, which may itself hold spaces); fails if PID is gone.
proc_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # Fields from 3 (state) on: the start time is the 20th of them.
  set -- $stat
  echo "${20}"
}

# test_dir_dead DIR: DIR has an .owner whose process is gone.
test_dir_dead() {
  local dir=$1 pid start now
  [[ -f $dir/.owner ]] || return 1
  read -r pid start < "$dir/.owner" 2>/dev/null || return 1
  [[ -n $pid && -n $start ]] || return 1
  now=$(proc_starttime "$pid") || return 0
  [[ $now != "$start" ]]
}

# marked_processes DIR: "<pid> <start time>" of every process whose
# environment holds HAST_TEST_DIR=DIR.
marked_processes() {
  local dir=$1 env pid start
  # One grep over every environ file (-z: NUL-separated entries, -x: the
  # whole entry); processes that end meanwhile are skipped.
  while read -r env; do
    pid=${env#/proc/}
    pid=${pid%/environ}
    [[ $pid != "$$" && $pid != "$BASHPID" ]] || continue
    start=$(proc_starttime "$pid") || continue
    echo "$pid $start"
  done < <(grep -lzx -- "HAST_TEST_DIR=$dir" /proc/[0-9]*/environ 2>/dev/null)
}

# signal_if_same SIG PID START: SIG to PID only while it is still the
# process that started at START.
signal_if_same() {
  [[ $(proc_starttime "$2" 2>/dev/null) == "$3" ]] && kill "-$1" "$2" 2>/dev/null
  return 0
}

# reap_dir DIR: kills DIR's processes (TERM, then KILL after 10 s),
# unmounts what is mounted under DIR, detaches loop devices backed by files
# in it, removes it. Prints what it did.
reap_dir() {
  local dir=$1 procs pid start i left mnt dev back
  procs=$(marked_processes "$dir")
  if [[ -n $procs ]]; then
    echo "reap: $dir: stopping $(echo "$procs" | cut -d' ' -f1 | xargs)"
    while read -r pid start; do signal_if_same TERM "$pid" "$start"; done <<< "$procs"
    for ((i = 0; i < 100; i++)); do
      left=0
      while read -r pid start; do
        [[ $(proc_starttime "$pid" 2>/dev/null) == "$start" ]] && left=1
      done <<< "$procs"
      [[ $left -eq 1 ]] || break
      sleep 0.1
    done
    while read -r pid start; do signal_if_same KILL "$pid" "$start"; done <<< "$procs"
    # Processes a hastd started while it was stopping (its hooks).
    procs=$(marked_processes "$dir")
    while read -r pid start; do
      [[ -n $pid ]] && signal_if_same KILL "$pid" "$start"
    done <<< "$procs"
  fi
  # Mounts under DIR, deepest first (mountinfo field 5 is the mount point,
  # with spaces as \040; test directories have none).
  while read -r mnt; do
    [[ -n $mnt ]] || continue
    echo "reap: $dir: unmounting $mnt"
    fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  if command -v losetup >/dev/null; then
    while read -r dev back; do
      [[ $back == "$dir"/* ]] || continue
      echo "reap: $dir: detaching $dev ($back)"
      losetup -d "$dev" 2>/dev/null || true
    done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null)
  fi
  rm -rf "$dir"
  echo "reap: $dir removed"
}

# reap_dead_tests [DIR...]: reap_dir for each dead test directory (default:
# every /tmp/hast-test.*).
reap_dead_tests() {
  local dir
  [[ $# -gt 0 ]] || set -- /tmp/hast-test.*
  for dir in "$@"; do
    [[ -d $dir ]] || continue
    test_dir_dead "$dir" && reap_dir "$dir"
  done
  return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -uo pipefail
  if [[ ${1:-} == --dir ]]; then
    reap_dead_tests "$2"
  else
    reap_dead_tests
  fi
fi
