#!/usr/bin/env python3
"""A scripted data node talking to a witness hastd, for tests of what the
witness refuses (docs/FAILOVER.md, docs/PROTOCOL.md types 40-42).

  witness_client.py PORT RESOURCE NODE KEYFILE [claim|renew]

Connects to 127.0.0.1:PORT, sends witness_hello, answers the witness's
auth_challenge with HMAC-SHA256(key from KEYFILE, nonce + RESOURCE +
"member"), checks the witness's answer to our own challenge, then sends one
lease_request. Prints "reply {json}" with the witness's lease_reply, or
"closed" when the witness closed the connection instead. Exit 0 either way,
2 on a local error.
"""
import hashlib
import hmac
import json
import os
import socket
import struct
import sys

MAGIC = 0x54534148


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def frame(kind, payload=b"", seq=0):
    head = struct.pack("<IBBHQQQIIBBH32s", MAGIC, 1, kind, 0, seq, 0, 0, len(payload), 0, 0, 0, 0,
                       b"\0" * 32)
    return head + struct.pack("<I", crc32c(head)) + payload


def read_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def read_frame(s):
    while True:
        head = read_exact(s, 80)
        kind = head[5]
        seq = struct.unpack_from("<Q", head, 8)[0]
        length = struct.unpack_from("<I", head, 32)[0]
        payload = read_exact(s, length) if length else b""
        if kind != 15:  # keepalive
            return kind, seq, payload


def main():
    port, resource, node, keyfile = sys.argv[1:5]
    kind = sys.argv[5] if len(sys.argv) > 5 else "claim"
    key = open(keyfile, "rb").read().rstrip(b"\r\n")
    hello = json.dumps({"version": 1, "resource": resource, "node": node, "role": "member"}).encode()
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    mine = os.urandom(32)
    try:
        s.sendall(frame(40, struct.pack("<I", len(hello)) + hello) + frame(3, mine))
        proved = False
        while True:
            t, seq, payload = read_frame(s)
            if t == 3:  # the witness's challenge
                mac = hmac.new(key, payload + resource.encode() + b"member", hashlib.sha256).digest()
                s.sendall(frame(4, mac))
                req = json.dumps({"kind": kind, "node": node, "epoch": 0, "resuid": 0,
                                  "localcnt": 0, "remotecnt": 0, "in_sync": False,
                                  "manual": True}).encode()
                s.sendall(frame(41, req, seq=7))
            elif t == 4:  # its answer to ours
                want = hmac.new(key, mine + resource.encode() + b"witness", hashlib.sha256).digest()
                proved = payload == want
            elif t == 42:
                print("reply", payload.decode(), "witness-proved" if proved else "witness-unproved")
                return 0
            else:
                print("unexpected frame type", t)
                return 0
    except (EOFError, ConnectionResetError, socket.timeout):
        print("closed")
        return 0


if __name__ == "__main__":
    sys.exit(main())
