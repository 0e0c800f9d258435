"""CHECK's look at the kernel: one interface inside the container's namespace, read with
iproute2 (`nsenter --net=PATH ip -j addr show dev IF`). A subprocess, not netlink in
process: pyroute2 costs ~100 ms to import, and runtimes call CHECK rarely (podman never)."""

from __future__ import annotations

import json
import subprocess


class Link:
    __slots__ = ("mac", "up", "addresses")

    def __init__(self, mac: str, up: bool, addresses: list[str]) -> None:
        self.mac, self.up, self.addresses = mac, up, addresses


def link(netns: str, ifname: str) -> Link | None:
    """The interface ``ifname`` in the namespace at ``netns``, or None when it has none."""
    r = subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "dev",
                        ifname], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        if "does not exist" in r.stderr:
            return None
        raise OSError(0, f"ip addr show in {netns}: {r.stderr.strip() or r.returncode}")
    found = json.loads(r.stdout or "[]")
    if not found:
        return None
    x = found[0]
    return Link(str(x.get("address", "")), "UP" in x.get("flags", ()),
                [f"{a['local']}/{a['prefixlen']}" for a in x.get("addr_info", ())
                 if a.get("scope") == "global"])
