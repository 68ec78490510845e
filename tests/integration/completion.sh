#!/usr/bin/env bash
# Bash completion for hastctl (scripts/completion/hastctl), driven as bash
# drives it: COMP_WORDS/COMP_CWORD set, _hastctl called, COMPREPLY read.
# After `hastctl ` it offers every command hastctl runs; after `role -` the
# role options; after `role ` the roles; after a command, `all` and the
# resource names of the configuration given with -c (hast.conf and TOML,
# before or after the command word); with a missing configuration no names
# and no error output.
# Usage: completion.sh <build-dir>
BUILD=$1
export LC_ALL=C
source "$(dirname "$0")/lib/common.bash"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
COMPLETION=$SRC/scripts/completion/hastctl

# complete WORD...: the completions of the last word, sorted, on one line;
# whatever the completion printed goes to $T/complete.err. Runs in a fresh
# bash so that nothing of this test's shell leaks into it.
complete_words() {
  bash --norc --noprofile -c '
    source "$1" || exit 1
    shift
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE="$*"
    _hastctl
    printf "%s\n" "${COMPREPLY[@]}" | sort | xargs
  ' complete "$COMPLETION" "$@" 2>"$T/complete.err"
}
# expect "WORDS" "COMPLETIONS": the completions of WORDS (last word "" for an
# empty one) are exactly COMPLETIONS (sorted), with nothing on stderr.
expect() {
  local words=$1 want=$2 got
  eval "got=\$(complete_words $words)"
  [[ $got == "$want" ]] || fail "completing '$words': got [$got], expected [$want]"
  [[ ! -s $T/complete.err ]] || fail "completing '$words' printed: $(cat "$T/complete.err")"
  pass "completing '$words' gives [$want]"
}

cat > "$T/hast.conf" <<'CONF'
# resource commented_out {
control uds:///tmp/unused.sock
resource alpha {
  local /dev/null
  on nodeA {
    remote none
  }
}
resource
  beta {
  local /dev/zero
}
resource gamma{
  local /dev/null
}
CONF
cat > "$T/hast.toml" <<'CONF'
control = "uds:///tmp/unused.sock"
[resource.one]
local = "/dev/null"
[resource.one.on.nodeA]
remote = "none"
[resource."two.dots"]
local = "/dev/zero"
[resource.three.on.nodeB]
local = "/dev/null"
[on.nodeA]
CONF

# The commands are the ones hastctl's usage shows.
commands=$("$HASTCTL" -h | awk '$1 == "hastctl" && $2 ~ /^[a-z]/ { print $2 }' | sort | xargs)
[[ $commands == *create* ]] || fail "no commands in 'hastctl -h'"
expect "hastctl ''" "$commands"
expect "hastctl re" "resync"
expect "hastctl -" "--help --json -c -d -h -n"
expect "hastctl role -" "--force -f"
expect "hastctl role ''" "init primary secondary"
expect "hastctl verify --" "--repair --stop"
expect "hastctl grow --" "--assume-clean"
expect "hastctl events -" "--json --now"
expect "hastctl -c $T/hast.conf role primary ''" "all alpha beta gamma"
expect "hastctl role secondary -c $T/hast.conf ''" "all alpha beta gamma"
expect "hastctl -c $T/hast.conf status b" "beta"
expect "hastctl -c$T/hast.toml list ''" "all one three two.dots"
expect "hastctl -c $T/hast.toml attach ''" "one three two.dots"
expect "hastctl -c $T/hast.toml attach one ''" ""
expect "hastctl -c $T/missing.conf attach ''" ""
expect "hastctl -c $T/missing.conf status ''" "all"
expect "hastctl -c $T/hast.co" "$T/hast.conf"
