#!/usr/bin/env python3
"""Writes numbered 4 KiB blocks through an NBD export and logs each write
only once the server has acknowledged it.

  acked_writer.py --socket SOCK --export NAME --seed N --ack-log FILE
                  [--issued-log FILE] [--count N] [--depth 8]
                  [--span-blocks N] [--first-block N] [--seq-base N]
                  [--ready FILE] [--fua] [--time-log FILE]

Every block is 4096 bytes: a 32-byte header (magic, seed, block number,
sequence) and a pattern derived from those three (see block_bytes()), so
verify_acked.py can tell which write a block holds. Offsets are drawn from a
generator seeded with --seed over --span-blocks blocks starting at
--first-block; up to --depth writes are in flight, never two to the same
block at once (so "latest sequence per offset" is well defined).

Before a write is sent, "BLOCK SEQ" is appended to the issued log (if any);
after its successful reply it is appended to the ack log, which is flushed
and fsync'd before anything else happens. Both logs start with a
"# seed N" line. --time-log also records "BLOCK SEQ T" per acknowledged
write, T being time.monotonic() when the reply was read (one clock for
every writer on the host: a checker compares two nodes' completions).

Runs until --count writes were acknowledged (exit 0), SIGTERM/SIGINT (stops
issuing, waits for what is in flight, exit 0), the server closes the
connection or fails (exit 3: this is what a crash of the server looks
like), or an error reply (exit 4). A summary line is printed on stdout.
"""
import argparse
import os
import random
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd_raw  # noqa: E402

BLOCK = 4096
MAGIC = b"HASTACK1"
HEADER = struct.Struct(">8sQQQ")
CMD_WRITE = 1
CMD_DISC = 2
FLAG_FUA = 1


def block_bytes(seed, block, seq):
    """The content of write `seq` to `block` under `seed`."""
    head = HEADER.pack(MAGIC, seed, block, seq)
    body = random.Random("%d:%d:%d" % (seed, block, seq)).randbytes(BLOCK - HEADER.size)
    return head + body


def parse_block(data):
    """(seed, block, seq, intact) of a block's content, or None when it does
    not carry our header."""
    if len(data) != BLOCK or data[:8] != MAGIC:
        return None
    _, seed, block, seq = HEADER.unpack(data[: HEADER.size])
    return seed, block, seq, data == block_bytes(seed, block, seq)


class Log:
    def __init__(self, path, seed, sync):
        self.f = open(path, "a") if path else None
        self.sync = sync
        if self.f:
            self.write("# seed %d\n" % seed)

    def write(self, text):
        if not self.f:
            return
        self.f.write(text)
        self.f.flush()
        if self.sync:
            os.fsync(self.f.fileno())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--export", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--ack-log", required=True)
    ap.add_argument("--issued-log")
    ap.add_argument("--count", type=int, default=0, help="0: until stopped")
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--span-blocks", type=int, default=0, help="0: the whole export")
    ap.add_argument("--first-block", type=int, default=0)
    ap.add_argument("--seq-base", type=int, default=0)
    ap.add_argument("--ready")
    ap.add_argument("--fua", action="store_true")
    ap.add_argument("--time-log")
    a = ap.parse_args()

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        s = nbd_raw.handshake(a.socket, a.export)
        size, err = nbd_raw.go(s, a.export)
    except (OSError, EOFError, AssertionError, struct.error) as e:
        print("writer: cannot open %s: %s" % (a.socket, e))
        return 2
    if err:
        print("writer: server refused the export: %s" % err)
        return 2
    s.settimeout(300)  # a hung server ends the run instead of the test
    span = a.span_blocks or (size // BLOCK - a.first_block)
    if span <= 0 or (a.first_block + span) * BLOCK > size:
        print("writer: span %d blocks from %d does not fit the export (%d bytes)"
              % (span, a.first_block, size))
        return 2

    acks = Log(a.ack_log, a.seed, True)
    times = open(a.time_log, "a") if a.time_log else None
    issued = Log(a.issued_log, a.seed, False)
    if a.ready:
        open(a.ready, "w").close()

    rng = random.Random(a.seed)
    inflight = {}  # cookie -> (block, seq)
    busy = set()  # blocks with a write in flight
    seq = a.seq_base
    n_acked = 0
    n_issued = 0
    cookie = 0
    reason = "count reached"
    rc = 0
    flags = FLAG_FUA if a.fua else 0

    try:
        while True:
            while (not stop["flag"] and len(inflight) < a.depth
                   and (a.count == 0 or n_issued < a.count)):
                block = a.first_block + rng.randrange(span)
                while block in busy:
                    block = a.first_block + rng.randrange(span)
                seq += 1
                cookie += 1
                issued.write("%d %d\n" % (block * BLOCK, seq))
                s.sendall(struct.pack(">IHHQQI", nbd_raw.REQ_MAGIC, flags, CMD_WRITE, cookie,
                                      block * BLOCK, BLOCK) + block_bytes(a.seed, block, seq))
                inflight[cookie] = (block, seq)
                busy.add(block)
                n_issued += 1
            if not inflight:
                if stop["flag"]:
                    reason = "stopped by signal"
                break
            error, got = nbd_raw.reply(s)
            if got not in inflight:
                reason = "reply with unknown cookie %d" % got
                rc = 1
                break
            block, wseq = inflight.pop(got)
            busy.discard(block)
            if error != 0:
                reason = "error reply %d for block %d seq %d" % (error, block, wseq)
                rc = 4
                break
            now = time.monotonic()
            acks.write("%d %d\n" % (block * BLOCK, wseq))
            if times:
                times.write("%d %d %.6f\n" % (block * BLOCK, wseq, now))
                times.flush()
            n_acked += 1
        if rc == 0:
            try:
                nbd_raw.request(s, CMD_DISC, 0, 0, cookie=cookie + 1)
            except OSError:
                pass
    except (EOFError, OSError) as e:
        reason = "connection lost: %s" % (e or type(e).__name__)
        rc = 3
    print("writer: seed %d acked %d issued %d in-flight %d: %s"
          % (a.seed, n_acked, n_issued, len(inflight), reason))
    return rc


if __name__ == "__main__":
    sys.exit(main())
