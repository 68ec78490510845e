#!/usr/bin/env python3
"""A user-space TCP relay between hastd peer ports: the network of the
chaos suite (faults switched at run time) and of the benchmarks (a link
with a one-way delay and a bandwidth, counting bytes).

    relay.py --route LISTEN:TARGET [--route LISTEN:TARGET ...]
             [--control SOCK] [--log FILE]
             [--delay-ms F] [--rate-mib F] [--stats FILE]
    relay.py --target HOST:PORT [--listen HOST:PORT] [same options]

Each --route listens on 127.0.0.1:LISTEN (0 = pick a port) and forwards every
accepted connection to 127.0.0.1:TARGET; --target (with --listen, default
127.0.0.1:0) is one route to HOST:PORT. Connections to the target are made
from 127.0.0.1 (so that a hastd secondary whose `remote` is 127.0.0.1 accepts
them). The chosen listen ports are printed, space separated and in --route
order (--target last), as the first line on stdout. A pair needs two routes
for the link to run through the relay whichever node is primary: nodeA's
`remote` points at the first (which forwards to nodeB's listen port), nodeB's
at the second.

--delay-ms holds every chunk that long before it is written (per chunk, so
the stream is not serialised: a link of that one-way latency, RTT = 2 x
delay, and up to this process's CPU the loopback's bandwidth). With
--rate-mib each direction is also a link of that bandwidth (MiB/s): a chunk
is due no earlier than the previous one of its direction plus its size at
that rate (serialisation delay), so a burst queues as on a slow wire. A chunk
never overtakes one queued before it, also when the delay changes.

The control socket (a Unix stream socket) takes one command per line and
answers one line ("ok MODE" or "error: ..."):

  pass         forward everything (the default, or "delay" with --delay-ms)
  delay MS     forward, each chunk held MS milliseconds
  cut          close every relayed connection with a reset (SO_LINGER 0) and
               reset every new one as soon as it is accepted: the peer sees
               ECONNRESET / a refused handshake
  blackhole    keep every connection open but read and drop all bytes in
               both directions; new connections are accepted, never
               forwarded, and their bytes dropped too
  status       the mode, the connection counts, the bytes dropped

A connection that lost bytes in a black hole stays a black hole after the
mode changes (its stream has a gap, like a flow whose state a middlebox
forgot): it is closed only when one of its ends closes it, so each end must
notice the dead link by its own timeout. Connections opened after the mode
changed are forwarded normally. --rate-mib holds in every mode.

Counters (bytes forwarded in each direction, connections forwarded, open now)
are written as JSON to --stats every 50 ms and at exit; `up` is client ->
target, `down` is target -> client.

One thread and one epoll loop (no hand-offs between Python threads, which
cost ~100 us each on a small VM). A direction stops reading while more than
16 MiB wait to be written. SIGTERM / SIGINT end the relay and close every
connection.
"""

import argparse
import collections
import heapq
import itertools
import json
import os
import select
import signal
import socket
import struct
import sys
import time

CHUNK = 256 * 1024
HIGH_WATER = 16 << 20


class Direction:
    """src -> dst of one relayed connection."""

    def __init__(self, conn, src, dst, name):
        self.conn, self.src, self.dst, self.name = conn, src, dst, name
        self.queue = collections.deque()  # [due, memoryview], written in order once due
        self.queued = 0
        self.last_due = 0.0
        self.eof = False        # src said EOF: half-close dst once the queue is empty
        self.shut = False       # dst half-closed
        self.want_write = False  # dst's send buffer was full
        self.wire_free = 0.0    # --rate-mib: when the simulated wire is free again


class Conn:
    def __init__(self, client, server):
        self.client, self.server = client, server
        self.closed = False
        self.holed = server is None  # bytes were dropped: never forwarded again
        if server is not None:
            self.up = Direction(self, client, server, "up")
            self.down = Direction(self, server, client, "down")


class Relay:
    def __init__(self, routes, control=None, log=None, delay=0.0, rate=0.0):
        """routes: [((listen host, port), (target host, port))]; delay in seconds; rate in bytes
        per second of each direction, 0 for no limit."""
        self.ep = select.epoll()
        self.routes = {}  # listener fd -> (listener, target)
        self.ports = []
        for listen, target in routes:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(listen)
            ls.listen(16)
            ls.setblocking(False)
            self.routes[ls.fileno()] = (ls, target)
            self.ports.append(ls.getsockname()[1])
            self.ep.register(ls.fileno(), select.EPOLLIN)
        self.control = None
        if control:
            if os.path.exists(control):
                os.unlink(control)
            self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.control.bind(control)
            self.control.listen(4)
            self.control.setblocking(False)
            self.ep.register(self.control.fileno(), select.EPOLLIN)
        self.controllers = {}  # fd -> [socket, bytearray]
        self.by_fd = {}  # fd -> (conn, "client"|"server")
        self.conns = set()
        self.timers = []  # (due, seq, direction)
        self.seq = itertools.count()
        self.mode = "delay" if delay > 0 else "pass"
        self.delay = delay
        self.rate = rate
        self.accepted = 0
        self.forwarded = 0  # connections relayed to their target
        self.dropped = 0
        self.up = 0         # bytes written to targets
        self.down = 0       # bytes written back to clients
        self.log = log

    def snapshot(self):
        return {"up": self.up, "down": self.down, "connections": self.forwarded,
                "active": sum(1 for c in self.conns if not c.holed), "time": time.time()}

    def note(self, text):
        if self.log:
            self.log.write("%.3f %s\n" % (time.time(), text))
            self.log.flush()

    # ---- connections ----
    def register(self, conn):
        self.conns.add(conn)
        for side, s in (("client", conn.client), ("server", conn.server)):
            if s is None:
                continue
            s.setblocking(False)
            self.by_fd[s.fileno()] = (conn, side)
            self.ep.register(s.fileno(), select.EPOLLIN)

    def accept(self, fd):
        listener, target = self.routes[fd]
        try:
            client, _ = listener.accept()
        except OSError:
            return
        self.accepted += 1
        if self.mode == "cut":
            reset(client)
            return
        if self.mode == "blackhole":
            self.register(Conn(client, None))
            return
        try:
            server = socket.create_connection(target, timeout=2, source_address=("127.0.0.1", 0))
        except OSError as e:
            self.note("cannot reach %s:%d: %s" % (target[0], target[1], e))
            reset(client)
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.forwarded += 1
        self.register(Conn(client, server))

    def close(self, conn, rst=False):
        if conn.closed:
            return
        conn.closed = True
        for s in (conn.client, conn.server):
            if s is None:
                continue
            try:
                self.ep.unregister(s.fileno())
            except (OSError, ValueError):
                pass
            self.by_fd.pop(s.fileno(), None)
            if rst:
                reset(s)
            else:
                s.close()
        self.conns.discard(conn)

    def update(self, conn):
        """Re-arms epoll for both sockets from the directions' state."""
        if conn.closed or conn.holed:
            return
        for side, reading, writing in (("client", conn.up, conn.down), ("server", conn.down, conn.up)):
            mask = 0
            if not reading.eof and reading.queued < HIGH_WATER:
                mask |= select.EPOLLIN
            if writing.want_write:
                mask |= select.EPOLLOUT
            try:
                self.ep.modify(getattr(conn, side).fileno(), mask)
            except OSError:
                pass
        if conn.up.shut and conn.down.shut:
            self.close(conn)

    def hole(self, conn):
        """From now on the connection's bytes are read and dropped."""
        if conn.holed:
            return
        conn.holed = True
        for d in (conn.up, conn.down):
            self.dropped += d.queued
            d.queue.clear()
            d.queued = 0
        for s in (conn.client, conn.server):
            try:
                self.ep.modify(s.fileno(), select.EPOLLIN)
            except OSError:
                pass

    def drain(self, conn, s):
        """Reads and drops what a black-holed socket has; its EOF closes the connection."""
        try:
            data = s.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self.close(conn)
            return
        self.dropped += len(data)

    # ---- data ----
    def read(self, d):
        try:
            data = d.src.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self.close(d.conn)
            return
        now = time.monotonic()
        if not data:
            d.eof = True
        else:
            due = now + self.delay
            if self.rate > 0:
                start = max(now, d.wire_free)
                d.wire_free = start + len(data) / self.rate
                due = d.wire_free + self.delay
            # Never overtake a chunk queued under a longer delay.
            due = max(due, d.last_due)
            d.last_due = due
            d.queue.append([due, memoryview(data)])
            d.queued += len(data)
        if d.queue and d.queue[0][0] > now:
            heapq.heappush(self.timers, (d.queue[0][0], next(self.seq), d))
        else:
            self.flush(d)
        self.update(d.conn)

    def flush(self, d):
        """Writes every chunk that is due, in order."""
        if d.conn.closed or d.conn.holed:
            return
        now = time.monotonic()
        while d.queue and d.queue[0][0] <= now:
            view = d.queue[0][1]
            try:
                n = d.dst.send(view)
            except BlockingIOError:
                n = 0
            except OSError:
                self.close(d.conn)
                return
            d.queued -= n
            if d.name == "up":
                self.up += n
            else:
                self.down += n
            if n < len(view):
                d.queue[0][1] = view[n:]
                d.want_write = True
                return
            d.queue.popleft()
        d.want_write = False
        if d.queue:
            heapq.heappush(self.timers, (d.queue[0][0], next(self.seq), d))
        if d.eof and not d.queue and not d.shut:
            try:
                d.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            d.shut = True

    # ---- control ----
    def command(self, line):
        words = line.split()
        if not words:
            return "error: empty command"
        cmd = words[0]
        if cmd == "status":
            holed = sum(1 for c in self.conns if c.holed)
            return "ok %s delay_ms=%g connections=%d holed=%d accepted=%d dropped=%d" % (
                self.mode, self.delay * 1000, len(self.conns), holed, self.accepted, self.dropped)
        if cmd == "pass":
            self.mode, self.delay = "pass", 0.0
        elif cmd == "delay" and len(words) == 2:
            try:
                ms = float(words[1])
            except ValueError:
                return "error: delay takes milliseconds"
            self.mode, self.delay = "delay", max(0.0, ms) / 1000.0
        elif cmd == "cut":
            self.mode, self.delay = "cut", 0.0
            for conn in list(self.conns):
                self.close(conn, rst=True)
        elif cmd == "blackhole":
            self.mode, self.delay = "blackhole", 0.0
            for conn in list(self.conns):
                self.hole(conn)
        else:
            return "error: unknown command %r" % line.strip()
        self.note("mode %s%s" % (self.mode, " %g ms" % (self.delay * 1000) if self.mode == "delay" else ""))
        return "ok %s" % self.mode

    def controller_event(self, fd):
        s, buf = self.controllers[fd]
        try:
            data = s.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.ep.unregister(fd)
            s.close()
            del self.controllers[fd]
            return
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            answer = self.command(line.decode(errors="replace"))
            try:
                s.setblocking(True)
                s.sendall(answer.encode() + b"\n")
                s.setblocking(False)
            except OSError:
                pass

    def loop(self, stats=lambda: None):
        last = 0.0
        while True:
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, d = heapq.heappop(self.timers)
                if not d.want_write:
                    self.flush(d)
                    self.update(d.conn)
            timeout = 0.05
            if self.timers:
                timeout = min(timeout, max(0.0, self.timers[0][0] - now))
            # epoll_wait's timeout is in whole milliseconds (Python rounds
            # up), too coarse for a 0.5 ms delay: wait on the epoll fd with
            # select(), whose timeout has microseconds, then collect.
            select.select([self.ep.fileno()], [], [], timeout)
            for fd, ev in self.ep.poll(0):
                if fd in self.routes:
                    self.accept(fd)
                    continue
                if self.control and fd == self.control.fileno():
                    try:
                        c, _ = self.control.accept()
                        c.setblocking(False)
                        self.controllers[c.fileno()] = [c, bytearray()]
                        self.ep.register(c.fileno(), select.EPOLLIN)
                    except OSError:
                        pass
                    continue
                if fd in self.controllers:
                    self.controller_event(fd)
                    continue
                entry = self.by_fd.get(fd)
                if not entry:
                    continue
                conn, side = entry
                if conn.holed:
                    self.drain(conn, conn.client if side == "client" else conn.server)
                    continue
                reading = conn.up if side == "client" else conn.down
                writing = conn.down if side == "client" else conn.up
                if ev & select.EPOLLOUT:
                    self.flush(writing)
                if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not conn.closed \
                        and not reading.eof:
                    self.read(reading)
                self.update(conn)
            if time.monotonic() - last >= 0.05:
                stats()
                last = time.monotonic()


def reset(s):
    """Closes with a reset instead of a FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def less_timer_slack():
    """The default 50 us timer slack would add to every delayed chunk."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass


def route(text):
    """LISTEN:TARGET, two ports on 127.0.0.1."""
    listen, _, target = text.partition(":")
    return ("127.0.0.1", int(listen)), ("127.0.0.1", int(target))


def hostport(text):
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def control(path, line, timeout=5.0):
    """Sends one command to a running relay; returns its answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.decode().strip()
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--route", action="append", type=route, default=[])
    ap.add_argument("--target", type=hostport, help="one more route, from --listen to HOST:PORT")
    ap.add_argument("--listen", type=hostport, default=("127.0.0.1", 0))
    ap.add_argument("--control")
    ap.add_argument("--log")
    ap.add_argument("--delay-ms", default=0.0, type=float)
    ap.add_argument("--rate-mib", default=0.0, type=float)
    ap.add_argument("--stats")
    args = ap.parse_args()
    routes = args.route + ([(args.listen, args.target)] if args.target else [])
    if not routes:
        ap.error("give at least one --route or --target")

    def on_signal(_sig, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    less_timer_slack()
    log = open(args.log, "a") if args.log else None
    relay = Relay(routes, args.control, log, args.delay_ms / 1000.0, args.rate_mib * (1 << 20))

    def write_stats():
        if not args.stats:
            return
        tmp = args.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(relay.snapshot(), f)
        os.replace(tmp, args.stats)

    print(" ".join(str(p) for p in relay.ports), flush=True)
    try:
        relay.loop(write_stats)
    finally:
        write_stats()
        if args.control:
            try:
                os.unlink(args.control)
            except OSError:
                pass


if __name__ == "__main__":
    main()
