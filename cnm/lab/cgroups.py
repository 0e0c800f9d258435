"""The machine's cgroup mounts, to be made again where dockerd runs in a new mount namespace.

`ip netns exec` gives dockerd a fresh /sys without them, and dockerd refuses to start
without them. The standard library only: bench/dns.py, which starts its own dockerd the
same way, imports this file too.
"""

from __future__ import annotations

import shlex
from pathlib import Path


class NoCgroups(RuntimeError):
    """The machine has no cgroup mounts under /sys/fs/cgroup: dockerd cannot start."""


def cgroup_mounts() -> str:
    """Shell commands that repeat, in the new mount namespace, the machine's cgroup
    mounts under /sys/fs/cgroup (v1 hierarchies, a hybrid layout or pure cgroup2)."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target, fstype, opts = line.split()[:4]
        if not target.startswith("/sys/fs/cgroup"):
            continue
        if fstype not in ("tmpfs", "cgroup", "cgroup2"):
            continue
        out.append(f"mkdir -p {shlex.quote(target)}; mount -t {fstype} "
                   f"-o {shlex.quote(opts)} {shlex.quote(source)} {shlex.quote(target)}")
    if not out:
        raise NoCgroups("no cgroup mounts under /sys/fs/cgroup: dockerd cannot start")
    return "\n".join(out)
