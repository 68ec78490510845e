"""Free TCP ports on 127.0.0.1, for the daemons a test or benchmark starts.

The kernel's choice for a port of 0 can repeat a few calls later once the
probing socket is closed (two daemons of one test were once handed the same
port), so a process never gets the same port twice from free_port().
"""

import socket

_given = set()


def free_port():
    """A port nothing listens on now that this process was not given before."""
    held = []
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)  # held until chosen: the kernel cannot offer it again
        port = s.getsockname()[1]
        if port not in _given:
            break
    for s in held:
        s.close()
    _given.add(port)
    return port
