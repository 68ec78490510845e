#!/usr/bin/env bash
# The manual pages (docs/man) are clean mdoc and document what the programs
# have today: mandoc -T lint -W warning says nothing about any of them;
# hastctl(8) has an entry for every command hastctl runs, with an item for
# each option its usage line gives, and one for every event of the event
# stream; hastd(8) one for every option of hastd's usage; hast.conf(5) one
# for every option keyword the configuration parser accepts and every event
# of the exec hook.
# The lists come from the programs and the code at test time, so a command,
# option or event added without a manual entry fails here.
# mandoc is a declared dependency: without it the test fails, it does not skip.
# Usage: man_pages.sh <build-dir>
BUILD=$1
source "$(dirname "$0")/lib/common.bash"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
MAN=$SRC/docs/man

command -v mandoc >/dev/null || fail "mandoc is not installed (apt-get install mandoc)"

# --- lint --------------------------------------------------------------------------------
for page in hastd.8 hastctl.8 hast.conf.5; do
  [[ -f $MAN/$page ]] || fail "$MAN/$page is missing"
  rc=0
  out=$(mandoc -T lint -W warning "$MAN/$page" 2>&1) || rc=$?
  [[ $rc -eq 0 && -z $out ]] || fail "mandoc -T lint -W warning $page (exit $rc):"$'\n'"$out"
done
pass "mandoc lint is clean on all three pages"

# render PAGE: the page as plain text, one long line per paragraph, no overstrike.
render() { mandoc -T ascii -O width=1000 "$MAN/$1" | sed 's/.\x08//g'; }
# section TEXT NAME: the lines of section NAME (from its heading to the next).
section() { awk -v name="$2" '/^[A-Z]/ { inside = ($0 == name) } inside' <<<"$1"; }
# entry TEXT WORD: the tagged entry for WORD at the first list level (five
# columns in), up to the next entry of that level.
entry() {
  awk -v word="$2" '
    /^     [^ ]/ { split(substr($0, 6), f, /[ \t,]/); inside = (f[1] == word) }
    inside' <<<"$1"
}
oneline() { xargs <<<"$1"; }
has_entry() { [[ -n $(entry "$1" "$2") ]]; }

hastctl_page=$(render hastctl.8)
hastd_page=$(render hastd.8)
conf_page=$(render hast.conf.5)

# --- hastctl commands --------------------------------------------------------------------
# The commands are the words hastctl dispatches on (its table in cli/hastctl.cpp)
# and the words its usage shows (`hastctl -h`); both must agree, and every one
# needs an entry in COMMANDS with an item for each option of its usage line.
usage=$("$HASTCTL" -h)
usage_commands=$(awk '$1 == "hastctl" && $2 ~ /^[a-z]/ { print $2 }' <<<"$usage" | sort -u)
table_commands=$(grep -oE '\{"[a-z-]+", hast::cli::run_' "$SRC/cli/hastctl.cpp" \
                   | sed -E 's/\{"([a-z-]+)".*/\1/' | sort -u)
grep -qx create <<<"$usage_commands" || fail "no commands found in 'hastctl -h': $usage"
grep -qx create <<<"$table_commands" || fail "no command table found in cli/hastctl.cpp"
[[ $usage_commands == "$table_commands" ]] \
  || fail "hastctl's usage lists [$(oneline "$usage_commands")] but it runs [$(oneline "$table_commands")]"
commands_section=$(section "$hastctl_page" COMMANDS)
for cmd in $usage_commands; do
  text=$(entry "$commands_section" "$cmd")
  [[ -n $text ]] || fail "hastctl.8 has no COMMANDS entry for '$cmd'"
  line=$(grep -E "^ +hastctl $cmd( |$)" <<<"$usage")
  for opt in $(grep -oE '\[--?[a-z][a-z-]*|\| --?[a-z][a-z-]*|^ *hastctl [a-z]+ --?[a-z][a-z-]*' <<<"$line" \
                 | grep -oE -- '--?[a-z][a-z-]*$'); do
    tail -n +2 <<<"$text" | grep -qE -- "^ +$opt([ ,]|\$)" \
      || fail "hastctl.8: the entry for '$cmd' has no item for its option $opt"
  done
  grep -qE "^ +hastctl $cmd( |$)" <<<"$(section "$hastctl_page" SYNOPSIS)" \
    || fail "hastctl.8: '$cmd' is not in the SYNOPSIS"
done
for opt in $(head -n 1 <<<"$usage" | grep -oE '\[--?[a-z][a-z-]*' | tr -d '['); do
  has_entry "$(section "$hastctl_page" DESCRIPTION)" "$opt" \
    || fail "hastctl.8: no entry for the global option $opt"
done
pass "hastctl.8 documents every command ($(oneline "$usage_commands")) and its options"

# --- events ------------------------------------------------------------------------------
# Every event a resource emits goes through event() (exec hook and event stream)
# or announce() (event stream only), called as `event(self, "name", ...)` in
# actors/*.cpp (actors/resource.hpp); `hastctl events` adds `exists`. An event
# made another way would escape this list; the names found are checked to
# include `role` so that a change of spelling cannot make the list empty.
hook_events=$(grep -ohE '\bevent\(self, "[a-z0-9_-]+"' "$SRC"/actors/*.cpp | sed -E 's/.*"(.*)"/\1/' | sort -u)
stream_events=$( { echo "$hook_events"
                   grep -ohE '\bannounce\(self, "[a-z0-9_-]+"' "$SRC"/actors/*.cpp | sed -E 's/.*"(.*)"/\1/'
                   grep -ohE 'event_record\{"[a-z0-9_-]+"' "$SRC/cli/common/events_command.cpp" \
                     | sed -E 's/.*"(.*)"/\1/'; } | sort -u)
grep -qx role <<<"$hook_events" || fail "no event(self, \"role\" ...) found in actors/*.cpp"
grep -qx exists <<<"$stream_events" || fail "no exists event found in cli/common/events_command.cpp"
for ev in $stream_events; do
  has_entry "$(section "$hastctl_page" EVENTS)" "$ev" || fail "hastctl.8: EVENTS has no entry for '$ev'"
done
for ev in $hook_events; do
  has_entry "$(section "$conf_page" EVENTS)" "$ev" || fail "hast.conf.5: EVENTS has no entry for '$ev'"
done
pass "events documented: hook [$(oneline "$hook_events")], stream adds [$(comm -13 <(echo "$hook_events") <(echo "$stream_events") | xargs)]"

# --- hastd options -----------------------------------------------------------------------
hastd_usage=$("$HASTD" -h)
hastd_options=$(grep -oE '\[--?[A-Za-z][a-z-]*' <<<"$hastd_usage" | tr -d '[' | sort -u)
grep -qx -- -F <<<"$hastd_options" || fail "no options found in 'hastd -h': $hastd_usage"
for opt in $hastd_options; do
  has_entry "$(section "$hastd_page" DESCRIPTION)" "$opt" || fail "hastd.8: no entry for the option $opt"
  grep -qFw -- "$opt" <<<"$(section "$hastd_page" SYNOPSIS)" || fail "hastd.8: $opt is not in the SYNOPSIS"
done
pass "hastd.8 documents every option ($(oneline "$hastd_options"))"

# --- hast.conf options -------------------------------------------------------------------
# The keywords come from the parser itself: an unknown option is answered with
# "expected one of <every option it knows>", built from the one table that
# decides what the parser accepts (config/config.cpp). docs/CONFIG.md's table
# is prose that can lag behind the code, and grepping the C++ table would
# depend on its layout; the error message is what users see and is tested.
cat > "$T/bogus.conf" <<CONF
no_such_option_for_the_list x
CONF
rc=0
msg=$("$HASTD" --check-config -c "$T/bogus.conf" -n nodeA 2>&1) || rc=$?
[[ $rc -eq 78 ]] || fail "hastd --check-config accepted an unknown option (exit $rc, not 78): $msg"
keywords=$(sed -nE "s/.*expected one of (.*), or a 'resource' or 'on' section.*/\1/p" <<<"$msg" | tr -d ',')
grep -qw control <<<"$keywords" || fail "cannot read the option list from: $msg"
options_section=$(section "$conf_page" OPTIONS)
for kw in $keywords; do
  has_entry "$options_section" "$kw" || fail "hast.conf.5: OPTIONS has no entry for '$kw'"
done
pass "hast.conf.5 documents every option ($(oneline "$keywords"))"
