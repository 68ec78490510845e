#!/usr/bin/env python3
"""Checks that two nodes never both completed writes at the same time.

  two_primaries_check.py --before LOG [--before LOG...] --after LOG [--after LOG...]
                         [--fault T]

Each LOG is an acked_writer.py --time-log ("BLOCK SEQ T", T from
time.monotonic() on this host when the reply arrived). --before logs are
the writers of the node that was primary before the fault, --after those of
the node that took over. Every completion on the old primary must come
before the first completion on the new one: no instant has both nodes
completing writes. With --fault (a time.monotonic() value), the failover
time, first completion after the fault minus the fault, is printed.
Exit 0 when the order holds, 1 when it does not, 2 on unusable input.
"""
import argparse
import sys


def times(paths):
    out = []
    for path in paths:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and line.endswith("\n"):
                    out.append(float(parts[2]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", action="append", required=True)
    ap.add_argument("--after", action="append", required=True)
    ap.add_argument("--fault", type=float)
    a = ap.parse_args()
    before, after = times(a.before), times(a.after)
    if not after:
        print("check: the new primary completed no write")
        return 2
    last_old, first_new = max(before, default=float("-inf")), min(after)
    overlap = [t for t in before if t >= first_new]
    text = "check: old primary %d completions, last at %.3f; new primary %d, first at %.3f" % (
        len(before), last_old, len(after), first_new)
    if a.fault is not None:
        text += "; failover time %.2f s; the old primary's last completion %.2f s after the fault" % (
            first_new - a.fault, last_old - a.fault)
    print(text)
    if overlap:
        print("check: FAIL: %d completion(s) on the old primary at or after the new primary's "
              "first (gap %.3f s)" % (len(overlap), last_old - first_new))
        return 1
    print("check: ok, gap between the nodes' completions %.3f s" % (first_new - last_old))
    return 0


if __name__ == "__main__":
    sys.exit(main())
