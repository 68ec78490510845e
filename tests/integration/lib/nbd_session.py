#!/usr/bin/env python3
"""An NBD connection the test can steer while it stays open (for role
changes with a client attached).

  nbd_session.py SOCKET EXPORT DIR

Connects, negotiates with NBD_OPT_GO and creates DIR/ready (or DIR/refused
holding the server's error text). Then, until the server closes the
connection or DIR/quit appears:
  - DIR/read appears: it is removed, a 4 KiB READ at offset 0 is sent on the
    same connection, and DIR/read-ok or DIR/read-failed (with the reason) is
    created;
  - the server closes the connection: DIR/closed is created and the script
    exits 0.
DIR/quit makes it send NBD_CMD_DISC and exit 0.
"""
import os
import select
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd_raw  # noqa: E402


def touch(path, text=""):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def main():
    path, export, d = sys.argv[1], sys.argv[2], sys.argv[3]
    s = nbd_raw.handshake(path, export)
    size, err = nbd_raw.go(s, export)
    if err:
        touch(os.path.join(d, "refused"), err)
        return 1
    s.settimeout(None)
    touch(os.path.join(d, "ready"), str(size))
    cookie = 100
    while True:
        if os.path.exists(os.path.join(d, "quit")):
            nbd_raw.request(s, 2, 0, 0, cookie=cookie)  # NBD_CMD_DISC
            s.close()
            return 0
        if os.path.exists(os.path.join(d, "read")):
            os.unlink(os.path.join(d, "read"))
            cookie += 1
            try:
                nbd_raw.request(s, 0, 0, 4096, cookie=cookie)
                s.settimeout(10)
                error, got = nbd_raw.reply(s)
                data = nbd_raw.recv_exact(s, 4096) if error == 0 else b""
                s.settimeout(None)
                if error == 0 and got == cookie and len(data) == 4096:
                    touch(os.path.join(d, "read-ok"))
                else:
                    touch(os.path.join(d, "read-failed"), "error %d cookie %d" % (error, got))
            except (OSError, EOFError, AssertionError) as e:
                touch(os.path.join(d, "read-failed"), str(e) or type(e).__name__)
                touch(os.path.join(d, "closed"))
                return 0
            continue
        readable, _, _ = select.select([s], [], [], 0.1)
        if readable:
            try:
                data = s.recv(1)
            except (ConnectionResetError, OSError):
                data = b""
            if data == b"":
                touch(os.path.join(d, "closed"))
                return 0
            # Nothing should arrive unasked; treat it as a protocol error.
            touch(os.path.join(d, "closed"), "unexpected data from the server")
            return 1


if __name__ == "__main__":
    sys.exit(main())
