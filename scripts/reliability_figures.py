#!/usr/bin/env python3
"""Renders the chaos figures of docs/RELIABILITY.md from the suite's summary.

tests/integration/long_chaos.sh writes a JSON summary (CHAOS_SUMMARY); the
one the document quotes is kept as docs/chaos-summary.json. This script puts
its figures between the markers

    <!-- chaos-figures:begin -->  ...  <!-- chaos-figures:end -->

so that nobody types them. Usage:

    scripts/reliability_figures.py [--summary FILE] [--doc FILE]   # rewrite
    scripts/reliability_figures.py --check                          # differ: exit 1

After a new run: copy its summary over docs/chaos-summary.json, run the
script, and commit both. ctest runs `--check` (docs.reliability_figures).
"""
import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN = "<!-- chaos-figures:begin -->"
END = "<!-- chaos-figures:end -->"


def seconds(stats):
    return f"{stats['median']:.2f} / {stats['p90']:.2f} / {stats['max']:.2f} s"


def render(summary):
    lines = [
        BEGIN,
        f"Seeds {summary['first_seed']}–{summary['first_seed'] + summary['trials'] - 1}: "
        f"{summary['passed']} of {summary['trials']} trials passed"
        + (f" (failed seeds: {', '.join(map(str, summary['failed_seeds']))})"
           if summary["failed_seeds"] else "")
        + f", {summary['wedges']} wedged daemons, {summary['elapsed_s'] / 60:.0f} min "
        f"(`timeout {summary['timeout_s']}`).",
        "",
        "| mode | trials | passed | acknowledged writes checked | lost | failovers "
        "| checked right after a failover | lost there (total / max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("fullsync", "memsync", "async"):
        m = summary["modes"].get(name)
        if not m:
            continue
        lost = str(m["lost"]) + (f" (max {m['lost_max']} in one trial)" if m["lost"] else "")
        lines.append(
            f"| {name} | {m['trials']} | {m['passed']} | {m['acked_checked']} | {lost} "
            f"| {m['failovers']} | {m['acked_checked_at_failover']} "
            f"| {m['lost_at_failover']} / {m['lost_at_failover_max']} |")
    lines += [
        "",
        "Time from healing a fault (or from the kill) to `complete` again, per fault "
        "(median / p90 / max; 0 when the pair was already `complete` at the heal):",
        "",
        "| fault | injected | to complete |",
        "|---|---:|---:|",
    ]
    for name, fault in sorted(summary["faults"].items()):
        stats = fault.get("to_complete_s")
        lines.append(f"| {name} | {fault['count']} | {seconds(stats) if stats else '-'} |")
    loss = summary.get("async_loss")
    if loss:
        lines += [
            "",
            f"async: {loss['lost_at_failover_total_blocks']} blocks lost over "
            f"{loss['failovers']} failovers (at most {loss['lost_at_failover_max_bytes']} bytes "
            f"in one), inside its bound of {loss['queue_bound_bytes'] // (1 << 20)} MiB sent "
            "and not yet written.",
        ]
    lines.append(END)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", default=str(ROOT / "docs" / "chaos-summary.json"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "RELIABILITY.md"))
    ap.add_argument("--check", action="store_true", help="exit 1 if the document differs")
    args = ap.parse_args()
    summary = json.loads(pathlib.Path(args.summary).read_text())
    doc_path = pathlib.Path(args.doc)
    doc = doc_path.read_text()
    if doc.count(BEGIN) != 1 or doc.count(END) != 1:
        sys.exit(f"{doc_path}: expected one {BEGIN} and one {END}")
    head, rest = doc.split(BEGIN)
    _, tail = rest.split(END)
    fresh = head + render(summary) + tail
    if args.check:
        if fresh != doc:
            sys.exit(f"{doc_path}: the chaos figures differ from {args.summary}; "
                     "run scripts/reliability_figures.py")
        return
    doc_path.write_text(fresh)


if __name__ == "__main__":
    main()
