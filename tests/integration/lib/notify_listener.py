#!/usr/bin/env python3
"""Stands in for systemd's notification socket (sd_notify(3)).

Usage: notify_listener.py SOCKET OUT [COMMAND...]

Binds an AF_UNIX datagram socket at SOCKET and appends one JSON line to OUT
for each notification: its arrival time (CLOCK_MONOTONIC, seconds), the
sender's pid (SO_PASSCRED, as systemd checks it) and its KEY=value fields.
When a notification holds READY=1 and COMMAND is given, COMMAND runs at
once, before the next datagram is read, and its exit status is recorded
with the notification ("command_rc"). Runs until SIGTERM, then records
every datagram still queued on the socket before it exits: a test that
stops it (and waits for it) has everything a sender sent before.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time


def main():
    path, out_path, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(path)
    # SIGTERM: a flag, and an empty datagram to the socket itself, queued
    # behind every notification already there, which wakes the loop.
    stopping = []

    def stop(*_):
        stopping.append(True)
        wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        wake.sendto(b"", path)
        wake.close()

    signal.signal(signal.SIGTERM, stop)
    ucred = struct.calcsize("3i")

    def record_one(out, data, ancdata):
        record = {"t": time.monotonic(), "pid": None, "fields": {}}
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                record["pid"] = struct.unpack("3i", value[:ucred])[0]
        for line in data.decode(errors="replace").split("\n"):
            if "=" in line:
                key, _, val = line.partition("=")
                record["fields"][key] = val
        if command and record["fields"].get("READY") == "1":
            done = subprocess.run(command, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            record["command_rc"] = done.returncode
            record["command_done"] = time.monotonic()
        out.write(json.dumps(record) + "\n")

    with open(out_path, "a", buffering=1) as out:
        while not stopping:
            data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
            if data:
                record_one(out, data, ancdata)
        # Stopped: what is still queued (a sender's datagrams before the
        # wake-up one were read above), then exit.
        sock.setblocking(False)
        while True:
            try:
                data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
            except BlockingIOError:
                break
            if data:
                record_one(out, data, ancdata)


if __name__ == "__main__":
    main()
