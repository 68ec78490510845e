#!/usr/bin/env python3
"""A scripted data node talking to a witness hastd, for tests of what the
witness refuses (docs/FAILOVER.md, docs/PROTOCOL.md "Session" and types 40-42).

  witness_client.py PORT RESOURCE NODE KEYFILE [claim|renew]

Connects to 127.0.0.1:PORT and runs the session handshake with the key from
KEYFILE (hast_wire.Session: it notes whether the witness proved the key,
and goes on either way so that a test sees the witness refuse a wrong key),
then sends witness_hello and one lease_request, sealed. Prints
"reply {json} witness-proved|witness-unproved" with the witness's
lease_reply, or "closed" when the witness closed the connection instead.
Exit 0 either way, 2 on a local error.
"""
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hast_wire as wire  # noqa: E402

from cryptography.exceptions import InvalidTag  # noqa: E402


def main():
    port, resource, node, keyfile = sys.argv[1:5]
    kind = sys.argv[5] if len(sys.argv) > 5 else "claim"
    key = open(keyfile, "rb").read().rstrip(b"\r\n")
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    try:
        session = wire.Session(s, key, resource, node, "witness")
        session.send(wire.WITNESS_HELLO, wire.hello_payload(
            {"version": 2, "resource": resource, "node": node, "role": "member"}))
        req = json.dumps({"kind": kind, "node": node, "epoch": 0, "resuid": 0, "localcnt": 0,
                          "remotecnt": 0, "in_sync": False, "manual": True}).encode()
        session.send(wire.LEASE_REQUEST, req, seq=7)
        t, _, payload = session.receive()
        if t == wire.LEASE_REPLY:
            print("reply", payload.decode(),
                  "witness-proved" if session.server_proved else "witness-unproved")
        else:
            print("unexpected frame type", t)
        return 0
    except (EOFError, ConnectionResetError, BrokenPipeError, socket.timeout, InvalidTag):
        print("closed")
        return 0


if __name__ == "__main__":
    sys.exit(main())
