#!/usr/bin/env python3
"""A plain TCP copy of N bytes, the baseline for hast's resynchronisation.

    tcpcopy.py sink                       # prints its port, reads until EOF, prints bytes and seconds
    tcpcopy.py send HOST:PORT BYTES [--file F]
    tcpcopy.py echo                       # prints its port; answers every 4096 bytes with 80 bytes

`send` connects (from 127.0.0.1), writes BYTES bytes in 1 MiB chunks (from
--file when given, read like a resync reads its source, else from one
random 1 MiB block repeated), half-closes and waits for the sink's one-line
JSON verdict {"bytes": n, "seconds": t}, which it prints. The sink's clock
runs from its first byte to EOF.
"""

import json
import os
import socket
import sys
import time

CHUNK = 1 << 20


def sink():
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    print(ls.getsockname()[1], flush=True)
    conn, _ = ls.accept()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    start = None
    while True:
        n = conn.recv_into(view)
        if n == 0:
            break
        if start is None:
            start = time.monotonic()
        total += n
    seconds = time.monotonic() - start if start else 0.0
    conn.sendall((json.dumps({"bytes": total, "seconds": seconds}) + "\n").encode())
    conn.close()


def echo():
    """A stand-in for the secondary in the round-trip measurement: every
    4096-byte request (a 4k write) is answered with 80 bytes (a `done` header)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    print(ls.getsockname()[1], flush=True)
    conn, _ = ls.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reply = b"r" * 80
    pending = 0
    while True:
        b = conn.recv(65536)
        if not b:
            break
        pending += len(b)
        while pending >= 4096:
            pending -= 4096
            conn.sendall(reply)
    conn.close()


def send(target, nbytes, path=None):
    host, _, port = target.rpartition(":")
    s = socket.create_connection((host, int(port)), source_address=("127.0.0.1", 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.monotonic()
    left = nbytes
    if path:
        with open(path, "rb", buffering=0) as f:
            while left:
                b = f.read(min(left, CHUNK))
                if not b:
                    f.seek(0)
                    continue
                s.sendall(b)
                left -= len(b)
    else:
        block = os.urandom(CHUNK)
        while left:
            n = min(left, CHUNK)
            s.sendall(block if n == CHUNK else block[:n])
            left -= n
    s.shutdown(socket.SHUT_WR)
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(4096)
        if not b:
            break
        line += b
    verdict = json.loads(line or b"{}")
    verdict["sender_seconds"] = time.monotonic() - start
    print(json.dumps(verdict), flush=True)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "sink":
        sink()
    elif len(sys.argv) >= 2 and sys.argv[1] == "echo":
        echo()
    elif len(sys.argv) >= 4 and sys.argv[1] == "send":
        path = None
        if len(sys.argv) >= 6 and sys.argv[4] == "--file":
            path = sys.argv[5]
        send(sys.argv[2], int(sys.argv[3]), path)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
