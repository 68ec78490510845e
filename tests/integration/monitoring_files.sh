#!/usr/bin/env bash
# scripts/monitoring holds what an operator loads into Prometheus and Grafana:
# the alert rules load (promtool check rules) and pass their unit tests
# (promtool test rules), every rule has a `for`, a severity and annotations
# that name `hastctl status`, the dashboard is JSON with its data source,
# resource and instance variables and queries that parse as PromQL, and every
# hast_* metric the rules and the dashboard use is one hastd serves
# (base/metrics.cpp), so renaming a metric fails here.
#
# Usage: monitoring_files.sh <build-dir>   (the build dir is not used)
BUILD=${1:?usage: monitoring_files.sh <build-dir>}
source "$(dirname "$0")/lib/common.bash"

SRC=$(cd "$(dirname "$0")/../.." && pwd)
MON=$SRC/scripts/monitoring
RULES=$MON/hast-alerts.yml
DASHBOARD=$MON/grafana-hast.json
METRICS_SOURCE=$SRC/base/metrics.cpp

command -v promtool >/dev/null || fail "promtool is not installed (apt-get install prometheus)"
python3 -c 'import yaml' 2>/dev/null || fail "python3-yaml is not installed (apt-get install python3-yaml)"
[[ -f $METRICS_SOURCE ]] || fail "$METRICS_SOURCE is missing"

# 1. The rules load.
promtool check rules "$RULES" > "$T/check.out" 2>&1 || { cat "$T/check.out" >&2; fail "promtool check rules"; }
grep -q SUCCESS "$T/check.out" || { cat "$T/check.out" >&2; fail "promtool check rules did not say SUCCESS"; }
pass "promtool check rules: $(grep SUCCESS "$T/check.out" | sed 's/^ *//')"

# 2. Their unit tests pass (rule_files are relative to the test file).
promtool test rules "$MON/hast-alerts.test.yml" > "$T/test.out" 2>&1 \
  || { cat "$T/test.out" >&2; fail "promtool test rules"; }
pass "promtool test rules"

# 3. Every alert an operator expects is there, each with a `for`, a severity
# and annotations that say where to look; and each one has a unit test.
python3 - "$RULES" "$MON/hast-alerts.test.yml" <<'PY' || fail "alert rules are incomplete (above)"
import sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
tests = yaml.safe_load(open(sys.argv[2]))["tests"]
tested = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
expected = """HastSplitBrain HastPrimaryDisconnected HastDirtyNotSyncing HastSyncStalled
  HastLocalDiskErrors HastLocalDiskFailing HastRemoteErrors HastReplicationSlow
  HastWriteLatencyHigh HastNoPrimary HastTwoPrimaries HastWitnessDown HastDown""".split()
problems = []
alerts = {r["alert"]: r for r in rules if "alert" in r}
for name in expected:
    if name not in alerts:
        problems.append(f"{name}: missing")
for name, r in alerts.items():
    if "for" not in r:
        problems.append(f"{name}: no `for`")
    if r.get("labels", {}).get("severity") not in ("critical", "warning"):
        problems.append(f"{name}: severity is not critical or warning")
    notes = r.get("annotations", {})
    if not notes.get("summary"):
        problems.append(f"{name}: no summary")
    if "hastctl status" not in notes.get("description", ""):
        problems.append(f"{name}: the description does not name `hastctl status`")
    if name not in tested:
        problems.append(f"{name}: no unit test in which it fires")
for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
pass "all alerts present, each with for, severity, hastctl status in the description, and a test"

# 4. The dashboard is JSON with its variables, and every query parses:
# they go through promtool as recording rules, Grafana's variables replaced.
python3 -m json.tool "$DASHBOARD" > /dev/null || fail "$DASHBOARD is not valid JSON"
python3 - "$DASHBOARD" "$T/dashboard-queries.yml" <<'PY' || fail "dashboard is incomplete (above)"
import json, sys
d = json.load(open(sys.argv[1]))
problems = []
variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
ds = variables.get("DS_PROMETHEUS")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    problems.append("no variable DS_PROMETHEUS of type datasource (prometheus)")
for name, query in (("resource", "label_values(hast_role, resource)"), ("instance", "label_values(")):
    v = variables.get(name)
    text = json.dumps(v.get("query")) if v else ""
    if not v or v.get("type") != "query" or query not in text:
        problems.append(f"no query variable {name} ({query}...)")
    elif v.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        problems.append(f"variable {name}: data source is not ${{DS_PROMETHEUS}}")
exprs = []
for p in d.get("panels", []):
    if p.get("type") == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        problems.append(f"panel {p.get('title')}: data source is not ${{DS_PROMETHEUS}}")
    for t in p.get("targets", []):
        exprs.append(t["expr"])
        if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problems.append(f"panel {p.get('title')}: a query's data source is not ${{DS_PROMETHEUS}}")
        if '$resource' not in t["expr"] or '$instance' not in t["expr"]:
            problems.append(f"panel {p.get('title')}: a query ignores $resource or $instance")
if len(exprs) < 12:
    problems.append(f"only {len(exprs)} queries")
for p in problems:
    print(p, file=sys.stderr)
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "1m").replace("$resource", ".*").replace("$instance", ".*")
        out.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}\n")
sys.exit(1 if problems else 0)
PY
promtool check rules "$T/dashboard-queries.yml" > "$T/dash.out" 2>&1 \
  || { cat "$T/dash.out" >&2; fail "a dashboard query is not valid PromQL"; }
pass "dashboard: valid JSON, variables DS_PROMETHEUS, resource, instance; $(grep -c 'record:' "$T/dashboard-queries.yml") queries parse"

# 5. Every hast_* metric used is served by hastd (histogram series by their base name).
used=$(cat "$RULES" "$MON/hast-alerts.test.yml" "$DASHBOARD" | grep -oE 'hast_[a-z_]+' \
         | sed -E 's/_(bucket|sum|count)$//' | sort -u)
[[ -n $used ]] || fail "no hast_* metric found in the rules or the dashboard"
unknown=()
for name in $used; do
  grep -qF "\"$name\"" "$METRICS_SOURCE" || unknown+=("$name")
done
((${#unknown[@]} == 0)) || fail "not served by hastd (base/metrics.cpp): ${unknown[*]}"
pass "$(wc -w <<< "$used") metric names, all served by hastd"
