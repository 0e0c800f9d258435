"""Run a command inside a sandbox, as `ip netns exec` does, plus the sandbox's own files.

The calling process (the single-threaded CLI) becomes the command: a private mount
namespace shows the sandbox's hosts and resolv.conf at /etc/ and a /sys of its network
namespace; a private UTS namespace carries its hostname.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping, Sequence
from typing import NoReturn

from cnm.errors import CnmError, InvalidArgument
from cnm.kernel.netns import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWUTS,
    MS_BIND,
    MS_REC,
    MS_SLAVE,
    mount,
    setns,
    umount,
    unshare,
)


class CommandFailed(InvalidArgument):
    """The command could not be run: not found (``not_found``), or not executable."""

    def __init__(self, message: str, not_found: bool) -> None:
        super().__init__(message)
        self.not_found = not_found


def exec_in(netns_path: str, files: Mapping[str, str], hostname: str | None,
            argv: Sequence[str]) -> NoReturn:
    """Enter the sandbox and exec ``argv``; returns only by raising."""
    if not argv:
        raise InvalidArgument("no command given to run in the sandbox")
    fd = os.open(netns_path, os.O_RDONLY)
    unshare(CLONE_NEWNS | (CLONE_NEWUTS if hostname else 0))
    # Our mounts must not propagate back to the host's mount namespace.
    mount(None, "/", None, MS_REC | MS_SLAVE)
    for target, source in files.items():
        if os.path.exists(target) and os.path.exists(source):
            mount(source, target, None, MS_BIND)
    setns(fd, netns_path, CLONE_NEWNET)
    os.close(fd)
    # A /sys mounted after setns shows this namespace's devices (best effort, as ip does).
    with contextlib.suppress(CnmError):
        umount("/sys")
        mount("sysfs", "/sys", "sysfs", 0)
    if hostname:
        socket.sethostname(hostname)
    try:
        os.execvp(argv[0], list(argv))
    except FileNotFoundError:
        raise CommandFailed(f"command not found: {argv[0]}", not_found=True) from None
    except (PermissionError, IsADirectoryError, OSError) as e:
        raise CommandFailed(f"cannot run {argv[0]}: {e.strerror}", not_found=False) from None
