#!/usr/bin/env python3
"""A hostile network for hastd's peer and witness ports (docs/SECURITY.md),
speaking the wire through hast_wire.py.

  attacker.py flood PORT --source IP [--claims N] [--junk BYTES] [--idle M]
                         [--hold S | --settle S] [--duration S]
      N connections that each send one 80-byte header claiming a 64 MiB
      payload and then try to stream BYTES of it, plus M connections that
      send nothing and stay open, all from IP to 127.0.0.1:PORT. With
      --duration, keeps doing so for S seconds. Prints one JSON line:
      claims whose connection hastd closed before the junk was all sent,
      idle connections still open after S (--hold) seconds, or with
      --settle, still open when S seconds passed without their close.

  attacker.py stranger-witness PORT RESOURCE NODE [--hold S]
      A stranger that knows no key: one connection sends a plaintext
      witness_hello naming NODE (the old, pre-session first frame), another
      a session_open naming NODE and then never proves anything, both
      sending keepalives every 0.2 s; a third ("silent") sends session_open
      and then nothing. For at most S seconds. Prints one JSON line saying
      which of them hastd closed and after how long.

  attacker.py mitm --target PORT --control SOCK
      An on-path relay: listens on 127.0.0.1 (its port is the first line
      on stdout) and forwards each connection to 127.0.0.1:PORT, frame by
      frame from the connecting side (the primary) and byte by byte back.
      Commands on the Unix socket SOCK, one per line, answered "ok ...":
        flip     the next write frame gets one bit of its payload flipped
        reorder  the next write frame is held back and sent after the frame
                 behind it
        freeze   stop updating the remembered write frame (the last one seen)
        replay   send the remembered write frame again, now
        inject   send a fabricated write frame (the remembered header with
                 another seq, random payload and tag), now
        pass     forward new connections again
        status   the counts: connections, attacks carried out, mode
      After an attack the relay refuses new connections (accepts and closes
      them) until `pass`, so that a test can look at the secondary's disk
      while the link is down.
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hast_wire as wire  # noqa: E402

CLAIM = 64 << 20


# --- flood -----------------------------------------------------------------------------------

def connect_from(source, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def claim_closed(source, port, junk):
    """True when hastd closes a connection whose header claims 64 MiB."""
    try:
        s = connect_from(source, port)
    except OSError:
        return True  # refused outright
    try:
        s.sendall(wire.header(wire.SESSION_OPEN, CLAIM))
        chunk = b"\x5a" * 65536
        sent = 0
        while sent < junk:
            r, _, _ = select.select([s], [], [], 0)
            if r and not s.recv(65536):
                return True
            s.sendall(chunk)
            sent += len(chunk)
        # Everything went out: is the connection still there?
        s.settimeout(3)
        return s.recv(1) == b""
    except (OSError, socket.timeout):
        return True
    finally:
        s.close()


def flood(args):
    closed = 0
    total = 0
    idle = []
    end = time.monotonic() + args.duration
    while True:
        for _ in range(args.claims):
            total += 1
            closed += claim_closed(args.source, args.port, args.junk)
        for _ in range(args.idle):
            try:
                s = connect_from(args.source, args.port)
                idle.append(s)
            except OSError:
                pass
        if time.monotonic() >= end:
            break
        for s in idle:
            s.close()
        idle = []
    if args.settle:
        # Up to --settle seconds for the server to close them (a loaded
        # server accepts what waits in its backlog late), then count.
        deadline = time.monotonic() + args.settle
        waiting = list(idle)
        while waiting and time.monotonic() < deadline:
            r, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
            for s in r:
                waiting.remove(s)
    else:
        time.sleep(args.hold)
    still_open = 0
    for s in idle:
        try:
            s.setblocking(False)
            data = s.recv(1)
            if data:
                still_open += 1
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        s.close()
    print(json.dumps({"claims": total, "claims_closed": closed, "idle": args.idle,
                      "idle_open": still_open}))


# --- a stranger at the witness ---------------------------------------------------------------

def stranger(args):
    plain = socket.create_connection(("127.0.0.1", args.port), timeout=5)
    plain.sendall(wire.plain_frame(wire.WITNESS_HELLO, wire.hello_payload(
        {"version": 2, "resource": args.resource, "node": args.node, "role": "member"})))
    def session_open():
        s = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        s.sendall(wire.plain_frame(wire.SESSION_OPEN, json.dumps({
            "version": 2, "resource": args.resource, "node": args.node, "link": "witness",
            "nonce": os.urandom(32).hex(), "ciphers": ["aes-256-gcm"], "encrypt": True}).encode()))
        return s
    start = time.monotonic()
    closed = {}
    # "silent" opens a session and then says nothing: it may stay until the
    # deadline. The other two send keepalives, which must not keep them.
    conns = {"witness_hello": plain, "session_open": session_open(), "silent": session_open()}
    while time.monotonic() - start < args.hold and len(closed) < len(conns):
        for name, s in conns.items():
            if name in closed:
                continue
            try:
                if name != "silent":
                    s.sendall(wire.plain_frame(wire.KEEPALIVE))
                s.setblocking(False)
                try:
                    while True:
                        data = s.recv(65536)
                        if not data:
                            raise EOFError
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            except (OSError, EOFError):
                closed[name] = round(time.monotonic() - start, 2)
        time.sleep(0.2)
    for s in conns.values():
        s.close()
    print(json.dumps({"closed_after_s": closed, "held_s": args.hold}))


# --- on the path -----------------------------------------------------------------------------

class Mitm:
    def __init__(self, target):
        self.target = target
        self.lock = threading.Lock()
        self.armed = None       # "flip" or "reorder"
        self.holding = False    # refuse new connections
        self.frozen = False
        self.remembered = None  # (head, body) of a write frame, primary -> secondary
        self.upstream = None    # the socket towards the secondary of the live connection
        self.send_lock = threading.Lock()
        self.connections = 0
        self.attacks = []

    def command(self, line):
        word = line.strip()
        with self.lock:
            if word in ("flip", "reorder"):
                self.armed = word
            elif word == "freeze":
                self.frozen = True
            elif word == "pass":
                self.holding = False
                self.frozen = False
            elif word in ("replay", "inject"):
                if self.remembered is None or self.upstream is None:
                    return "error: no write frame remembered or no live connection"
                head, body = self.remembered
                if word == "inject":
                    seq = struct.unpack_from("<Q", head, 8)[0] + 1000
                    offset = struct.unpack_from("<Q", head, 16)[0]
                    length = struct.unpack_from("<Q", head, 24)[0]
                    body = os.urandom(len(body))
                    head = wire.header(wire.WRITE, len(body), seq, offset, length)
                with self.send_lock:
                    self.upstream.sendall(head + body)
                self.attacks.append(word)
                self.holding = True
            elif word != "status":
                return "error: unknown command " + word
            return "ok " + json.dumps({"connections": self.connections, "attacks": self.attacks,
                                       "armed": self.armed, "holding": self.holding})

    def serve_control(self, path):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(8)
        while True:
            c, _ = srv.accept()
            with c:
                line = c.makefile().readline()
                c.sendall((self.command(line) + "\n").encode())

    def relay(self, down):
        with self.lock:
            refuse = self.holding
            self.connections += 1
        if refuse:
            down.close()
            return
        try:
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            up.bind(("127.0.0.1", 0))
            up.connect(("127.0.0.1", self.target))
        except OSError:
            down.close()
            return
        with self.lock:
            self.upstream = up
        threading.Thread(target=self.back, args=(up, down), daemon=True).start()
        try:
            while True:
                head, body = wire.read_raw_frame(down)
                out = head + body
                if wire.kind_of(head) == wire.WRITE:
                    with self.lock:
                        armed = self.armed
                        if not self.frozen:
                            self.remembered = (head, body)
                    if armed == "flip":
                        flipped = bytearray(body)
                        flipped[len(flipped) // 2] ^= 0x10
                        out = head + bytes(flipped)
                        self.done("flip")
                    elif armed == "reorder":
                        head2, body2 = wire.read_raw_frame(down)
                        out = head2 + body2 + out
                        self.done("reorder")
                with self.send_lock:
                    up.sendall(out)
        except (OSError, EOFError):
            pass
        finally:
            for s in (up, down):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def done(self, attack):
        with self.lock:
            self.armed = None
            self.holding = True
            self.attacks.append(attack)

    @staticmethod
    def back(up, down):
        try:
            while True:
                data = up.recv(262144)
                if not data:
                    break
                down.sendall(data)
        except OSError:
            pass
        for s in (up, down):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def mitm(args):
    m = Mitm(args.target)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    print(srv.getsockname()[1], flush=True)
    threading.Thread(target=m.serve_control, args=(args.control,), daemon=True).start()
    while True:
        c, _ = srv.accept()
        threading.Thread(target=m.relay, args=(c,), daemon=True).start()


def control(path, command):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall((command + "\n").encode())
    return s.makefile().readline().strip()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    f.add_argument("port", type=int)
    f.add_argument("--source", default="127.0.0.1")
    f.add_argument("--claims", type=int, default=0)
    f.add_argument("--junk", type=int, default=4 << 20)
    f.add_argument("--idle", type=int, default=0)
    f.add_argument("--hold", type=float, default=0)
    f.add_argument("--settle", type=float, default=0)
    f.add_argument("--duration", type=float, default=0)
    w = sub.add_parser("stranger-witness")
    w.add_argument("port", type=int)
    w.add_argument("resource")
    w.add_argument("node")
    w.add_argument("--hold", type=float, default=10)
    m = sub.add_parser("mitm")
    m.add_argument("--target", type=int, required=True)
    m.add_argument("--control", required=True)
    c = sub.add_parser("control")
    c.add_argument("socket")
    c.add_argument("command")
    args = p.parse_args()
    if args.cmd == "flood":
        flood(args)
    elif args.cmd == "stranger-witness":
        stranger(args)
    elif args.cmd == "mitm":
        try:
            mitm(args)
        except KeyboardInterrupt:
            pass
    else:
        print(control(args.socket, args.command))


if __name__ == "__main__":
    main()
