#!/usr/bin/env python3
"""A tiny raw NBD client for the integration tests: what real clients cannot
do on purpose (hold a connection open, send malformed frames).

  nbd_raw.py SOCKET EXPORT hold READY_FILE   connect, GO, touch READY_FILE, wait
  nbd_raw.py SOCKET EXPORT badmagic          GO, send a request with bad magic,
                                             expect the server to close
  nbd_raw.py SOCKET EXPORT pastend           GO, READ past the end: expect EINVAL,
                                             then a good READ on the same connection
  nbd_raw.py SOCKET EXPORT garbage           send garbage instead of client flags
  nbd_raw.py SOCKET EXPORT go                GO only; prints the error text or 'ok SIZE'
"""
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
OPT_GO = 7
REQ_MAGIC = 0x25609513
SIMPLE_REPLY = 0x67446698


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("server closed the connection")
        buf += chunk
    return buf


def handshake(path, export):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    magic, opt, flags = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT, "bad server greeting"
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    return s


def go(s, export):
    name = export.encode()
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    size = None
    while True:
        magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        assert magic == REPLY_MAGIC
        payload = recv_exact(s, length)
        if rtype == 1:  # ACK
            return size, None
        if rtype == 3:  # INFO
            (itype,) = struct.unpack(">H", payload[:2])
            if itype == 0:
                size, _ = struct.unpack(">QH", payload[2:12])
            continue
        if rtype & 0x80000000:
            return None, payload.decode(errors="replace") or "error %#x" % rtype


def request(s, cmd, offset, length, cookie=1, magic=REQ_MAGIC, flags=0):
    s.sendall(struct.pack(">IHHQQI", magic, flags, cmd, cookie, offset, length))


def reply(s):
    magic, error, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == SIMPLE_REPLY, "bad reply magic"
    return error, cookie


def main():
    path, export, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "garbage":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        recv_exact(s, 18)
        s.sendall(b"\xff" * 64)
        try:
            data = s.recv(1)
        except ConnectionResetError:
            data = b""
        print("closed" if data == b"" else "still open")
        return
    s = handshake(path, export)
    size, err = go(s, export)
    if mode == "go":
        print("error: " + err if err else "ok %d" % size)
        return
    if err:
        print("error: " + err)
        sys.exit(1)
    if mode == "hold":
        open(sys.argv[4], "w").close()
        while True:
            time.sleep(1)
    elif mode == "badmagic":
        request(s, 0, 0, 512, magic=0xDEADBEEF)
        try:
            data = s.recv(16)
        except ConnectionResetError:
            data = b""
        print("closed" if data == b"" else "still open")
    elif mode == "pastend":
        request(s, 0, size, 4096, cookie=7)
        error, cookie = reply(s)
        assert cookie == 7
        print("error %d" % error)
        request(s, 0, 0, 4096, cookie=8)
        error, cookie = reply(s)
        data = recv_exact(s, 4096) if error == 0 else b""
        print("then read %s" % ("ok" if error == 0 and len(data) == 4096 else "failed %d" % error))
        request(s, 2, 0, 0, cookie=9)  # DISC


if __name__ == "__main__":
    main()
