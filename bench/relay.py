#!/usr/bin/env python3
"""A user-space TCP relay that adds a one-way delay to every chunk it forwards.

    relay.py --target HOST:PORT [--listen HOST:PORT] [--delay-ms F] [--rate-mib F] [--stats FILE]

Listens (port 0 = pick one; the chosen port is printed as the first line on
stdout), and for every accepted connection opens one to --target from
127.0.0.1 (so that a hastd secondary whose `remote` is 127.0.0.1 accepts it).
Every chunk read from one side is stamped "now + delay" and written to the
other side when that time has come, so the delay is added per chunk without
serialising the stream: a link of latency `delay` in each direction
(RTT = 2 x delay) and, up to this process's CPU, the loopback's bandwidth.
With --rate-mib each direction is also a link of that bandwidth (MiB/s): a
chunk is due no earlier than the previous one of its direction plus its
size at that rate (serialisation delay), so a burst queues as on a slow
wire (and, past 16 MiB queued, pushes back on the sender).

One thread and one epoll loop (no hand-offs between Python threads, which
cost ~100 us each on a small VM). Backpressure: a direction stops reading
while more than 16 MiB wait to be written.

Counters (bytes forwarded in each direction, connections) are written as JSON
to --stats every 50 ms and at exit; `up` is client -> target, `down` is
target -> client. SIGTERM / SIGINT end the relay and close every connection.
"""

import argparse
import collections
import errno
import heapq
import itertools
import json
import os
import select
import signal
import socket
import sys
import time

CHUNK = 256 * 1024
HIGH_WATER = 16 << 20


class Counters:
    def __init__(self):
        self.up = 0
        self.down = 0
        self.connections = 0
        self.active = 0

    def snapshot(self):
        return {"up": self.up, "down": self.down, "connections": self.connections,
                "active": self.active, "time": time.time()}


class Direction:
    """src -> dst of one connection."""

    def __init__(self, conn, src, dst, name):
        self.conn, self.src, self.dst, self.name = conn, src, dst, name
        self.queue = collections.deque()  # [due, memoryview]; the due ones are written in order
        self.queued = 0
        self.eof = False        # src said EOF: half-close dst once the queue is empty
        self.shut = False       # dst half-closed
        self.want_write = False # dst's send buffer was full
        self.wire_free = 0.0    # --rate-mib: when the simulated wire is free again


class Relay:
    def __init__(self, listener, target, delay, counters, rate=0.0):
        self.listener, self.target, self.delay, self.counters = listener, target, delay, counters
        self.rate = rate      # bytes per second of each direction; 0: no limit
        self.ep = select.epoll()
        self.ep.register(listener.fileno(), select.EPOLLIN)
        self.by_fd = {}       # fd -> (connection, "client"|"server")
        self.conns = set()
        self.timers = []      # (due, seq, direction)
        self.seq = itertools.count()

    # ---- connections ----
    def accept(self):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(self.target, source_address=("127.0.0.1", 0))
        except OSError as e:
            print(f"relay: cannot reach {self.target}: {e}", file=sys.stderr, flush=True)
            client.close()
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
        conn = {"client": client, "server": server}
        conn["up"] = Direction(conn, client, server, "up")
        conn["down"] = Direction(conn, server, client, "down")
        conn["closed"] = False
        self.conns.add(id(conn))
        self.by_fd[client.fileno()] = (conn, "client")
        self.by_fd[server.fileno()] = (conn, "server")
        self.ep.register(client.fileno(), select.EPOLLIN)
        self.ep.register(server.fileno(), select.EPOLLIN)
        self.counters.connections += 1
        self.counters.active += 1

    def close(self, conn):
        if conn["closed"]:
            return
        conn["closed"] = True
        for side in ("client", "server"):
            s = conn[side]
            try:
                self.ep.unregister(s.fileno())
            except (OSError, ValueError):
                pass
            self.by_fd.pop(s.fileno(), None)
            s.close()
        self.counters.active -= 1

    def update(self, conn):
        """Re-arms epoll for both sockets from the directions' state."""
        if conn["closed"]:
            return
        for side, reading, writing in (("client", conn["up"], conn["down"]), ("server", conn["down"], conn["up"])):
            mask = 0
            if not reading.eof and reading.queued < HIGH_WATER:
                mask |= select.EPOLLIN
            if writing.want_write:
                mask |= select.EPOLLOUT
            try:
                self.ep.modify(conn[side].fileno(), mask)
            except OSError:
                pass
        if conn["up"].shut and conn["down"].shut:
            self.close(conn)

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
        due = now + self.delay
        if data and self.rate > 0:
            start = max(now, d.wire_free)
            d.wire_free = start + len(data) / self.rate
            due = d.wire_free + self.delay
        if data:
            d.queue.append([due, memoryview(data)])
            d.queued += len(data)
        if self.delay > 0 or self.rate > 0:
            heapq.heappush(self.timers, (due, next(self.seq), d))
        else:
            self.flush(d)
        self.update(d.conn)

    def flush(self, d):
        """Writes every chunk that is due, in order."""
        if d.conn["closed"]:
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
                self.counters.up += n
            else:
                self.counters.down += n
            if n < len(view):
                d.queue[0][1] = view[n:]
                d.want_write = True
                return
            d.queue.popleft()
        d.want_write = False
        if d.eof and not d.queue and not d.shut:
            try:
                d.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            d.shut = True

    def loop(self, stats):
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
            if self.timers:
                select.select([self.ep.fileno()], [], [], timeout)
                events = self.ep.poll(0)
            else:
                events = self.ep.poll(timeout)
            for fd, ev in events:
                if fd == self.listener.fileno():
                    self.accept()
                    continue
                entry = self.by_fd.get(fd)
                if not entry:
                    continue
                conn, side = entry
                reading = conn["up"] if side == "client" else conn["down"]
                writing = conn["down"] if side == "client" else conn["up"]
                if ev & select.EPOLLOUT:
                    self.flush(writing)
                if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not conn["closed"] \
                        and not reading.eof:
                    self.read(reading)
                self.update(conn)
            if time.monotonic() - last >= 0.05:
                stats()
                last = time.monotonic()


def less_timer_slack():
    """The default 50 us timer slack would add to every delayed chunk."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass


def hostport(text):
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:0", type=hostport)
    ap.add_argument("--target", required=True, type=hostport)
    ap.add_argument("--delay-ms", default=0.0, type=float)
    ap.add_argument("--rate-mib", default=0.0, type=float)
    ap.add_argument("--stats", default=None)
    args = ap.parse_args()

    counters = Counters()
    less_timer_slack()

    def write_stats():
        if not args.stats:
            return
        tmp = args.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(counters.snapshot(), f)
        os.replace(tmp, args.stats)

    def on_signal(_sig, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(args.listen)
    listener.listen(16)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    relay = Relay(listener, args.target, args.delay_ms / 1000.0, counters, args.rate_mib * (1 << 20))
    try:
        relay.loop(write_stats)
    finally:
        write_stats()
        listener.close()


if __name__ == "__main__":
    main()
