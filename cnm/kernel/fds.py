"""File descriptors that live long go above 1023.

libnftables 1.0.6 waits on its netlink socket with select(), which cannot take a
descriptor of 1024 or more: glibc aborts the whole process. The daemon holds a few
descriptors per sandbox (DNS sockets, netlink sockets), so without this the short-lived
libnftables contexts get high numbers after a few hundred sandboxes and cnmd dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket

FLOOR = 1024


def lift(sock: socket.socket) -> socket.socket:
    """The same socket on a descriptor of at least FLOOR (close-on-exec); the old one is
    closed. Left where it is if the limit does not allow it."""
    try:
        fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, FLOOR)
    except OSError:
        return sock  # a low open-file limit: nothing above FLOOR to take
    try:
        high = socket.socket(fileno=fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        return sock
    sock.close()
    return high
