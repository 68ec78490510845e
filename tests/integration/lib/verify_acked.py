#!/usr/bin/env python3
"""Checks that every write acked_writer.py logged as acknowledged is there.

  verify_acked.py (--socket SOCK --export NAME | --file PATH [--offset N])
                  --ack-log FILE [--ack-log FILE...] [--issued-log FILE...]
                  [--report N]

Reads, for every block offset in the ack logs, the block written with the
highest acknowledged sequence (sequences must grow across logs: give later
writer runs a larger --seq-base) and classifies what it finds:
  ok       exactly that write;
  newer    a later write to the same block that was issued but whose ack
           never arrived (allowed: it was in flight at the crash);
  stale    an older write to that block: an acknowledged write was lost;
  missing  no block of ours there (zeros or foreign data);
  corrupt  our header, but the pattern does not match it;
  misplaced our block, but written for another offset.
Reads go through the NBD export (--socket) or straight from a file holding
the data region (--file, data starting at --offset).

Prints one line "verify: acked=N ok=N newer=N lost=N (stale=N missing=N
corrupt=N misplaced=N)" plus up to --report examples; exit 0 when nothing
was lost, 1 when something was, 2 when it could not read.
"""
import argparse
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd_raw  # noqa: E402
from acked_writer import BLOCK, parse_block  # noqa: E402


def read_log(path):
    """(seed, [(offset, seq)]) of a log; a torn last line is ignored."""
    seed = None
    entries = []
    with open(path) as f:
        for line in f:
            if line.startswith("# seed "):
                seed = int(line.split()[2])
                continue
            parts = line.split()
            if len(parts) != 2 or not line.endswith("\n"):
                continue
            entries.append((int(parts[0]), int(parts[1])))
    if seed is None:
        raise ValueError("%s has no '# seed' line" % path)
    return seed, entries


class NbdReader:
    def __init__(self, sock, export):
        self.s = nbd_raw.handshake(sock, export)
        size, err = nbd_raw.go(self.s, export)
        if err:
            raise OSError("server refused the export: %s" % err)
        self.s.settimeout(120)

    def read_many(self, offsets, depth=16):
        out = {}
        pending = {}
        todo = list(offsets)
        cookie = 0
        while todo or pending:
            while todo and len(pending) < depth:
                off = todo.pop()
                cookie += 1
                nbd_raw.request(self.s, 0, off, BLOCK, cookie=cookie)
                pending[cookie] = off
            error, got = nbd_raw.reply(self.s)
            off = pending.pop(got)
            if error != 0:
                raise OSError("READ at %d failed with error %d" % (off, error))
            out[off] = nbd_raw.recv_exact(self.s, BLOCK)
        return out

    def close(self):
        try:
            nbd_raw.request(self.s, 2, 0, 0, cookie=0)
        except OSError:
            pass


class FileReader:
    def __init__(self, path, offset):
        self.f = open(path, "rb")
        self.offset = offset

    def read_many(self, offsets):
        out = {}
        for off in offsets:
            self.f.seek(self.offset + off)
            out[off] = self.f.read(BLOCK)
        return out

    def close(self):
        self.f.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket")
    ap.add_argument("--export")
    ap.add_argument("--file")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--ack-log", action="append", required=True)
    ap.add_argument("--issued-log", action="append", default=[])
    ap.add_argument("--report", type=int, default=10)
    a = ap.parse_args()

    expected = {}  # offset -> (seq, seed)
    for path in a.ack_log:
        seed, entries = read_log(path)
        for off, seq in entries:
            if off not in expected or seq > expected[off][0]:
                expected[off] = (seq, seed)
    issued = set()  # (offset, seq, seed)
    for path in a.issued_log:
        seed, entries = read_log(path)
        issued.update((off, seq, seed) for off, seq in entries)

    try:
        if a.file:
            reader = FileReader(a.file, a.offset)
        else:
            reader = NbdReader(a.socket, a.export)
        data = reader.read_many(sorted(expected))
        reader.close()
    except (OSError, EOFError, AssertionError, struct.error) as e:
        print("verify: cannot read the blocks: %s" % e)
        return 2

    counts = {k: 0 for k in ("ok", "newer", "stale", "missing", "corrupt", "misplaced")}
    examples = []
    for off in sorted(expected):
        want_seq, want_seed = expected[off]
        got = parse_block(data[off])
        if got is None:
            kind, what = "missing", "no block of ours" if any(data[off]) else "zeros"
        else:
            seed, block, seq, intact = got
            what = "seed %d block %d seq %d" % (seed, block, seq)
            if not intact:
                kind = "corrupt"
            elif block * BLOCK != off:
                kind = "misplaced"
            elif seq == want_seq and seed == want_seed:
                kind = "ok"
            elif seq > want_seq and (off, seq, seed) in issued:
                kind = "newer"
            elif seq < want_seq:
                kind = "stale"
            else:
                kind = "missing"
        counts[kind] += 1
        if kind not in ("ok", "newer") and len(examples) < a.report:
            examples.append("  offset %d: acked seq %d (seed %d), found %s [%s]"
                            % (off, want_seq, want_seed, what, kind))
    lost = counts["stale"] + counts["missing"] + counts["corrupt"] + counts["misplaced"]
    print("verify: acked=%d ok=%d newer=%d lost=%d (stale=%d missing=%d corrupt=%d misplaced=%d)"
          % (len(expected), counts["ok"], counts["newer"], lost, counts["stale"],
             counts["missing"], counts["corrupt"], counts["misplaced"]))
    for line in examples:
        print(line)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
