"""A LAN outside the cnm host, for macvlan and ipvlan: throwaway namespaces only.

``lan``: the parent is a veth in the cnm host namespace whose other end is a port of a
switch (a bridge in a "switch" namespace, hairpin mode on demand); a LAN host in a third
namespace hangs on the switch. ``vlan_lan``: the other end of the parent carries 802.1q
VLANs, each ending in a host namespace of its own. Everything is deleted on exit, even when
the test failed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cnm.testing.netns import in_ns, run

PARENT = "par0"


@dataclass
class Lan:
    switch: str  # name of the namespace holding the bridge "sw" and its port "port0"
    host: str  # path of the LAN host's namespace
    parent_ns: str  # name of the cnm host namespace, which holds the parent
    parent: str = PARENT
    vlan_hosts: dict[int, str] = field(default_factory=dict)  # VLAN id -> namespace path

    def hairpin(self, on: bool) -> None:
        """Hairpin mode of the switch port facing the parent (what a VEPA switch does)."""
        run("bridge", "-n", self.switch, "link", "set", "dev", "port0", "hairpin",
            "on" if on else "off")

    def on_parent(self, *args: str) -> None:
        """An `ip` command in the cnm host namespace (the parent's)."""
        run("ip", "-n", self.parent_ns, *args)

    def on_host(self, *args: str) -> None:
        run("nsenter", f"--net={self.host}", "ip", *args)

    def neighbour_mac(self, ip: str, netns: str | None = None) -> str | None:
        """The MAC the LAN host (or ``netns``) has learned for ``ip``."""
        out = json.loads(in_ns(netns or self.host, "ip", "-j", "neigh", "show", ip).stdout)
        return out[0].get("lladdr") if out else None


@contextmanager
def _namespaces(*prefixes: str) -> Iterator[list[str]]:
    tag = secrets.token_hex(4)
    made: list[str] = []
    try:
        for p in prefixes:
            name = f"cnmtest-{p}-{tag}"
            run("ip", "netns", "add", name)
            made.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        yield made
    finally:
        for name in reversed(made):
            run("ip", "netns", "del", name, check=False)


@contextmanager
def lan(host_ns: str, lan_host: str = "10.77.0.200/24") -> Iterator[Lan]:
    with _namespaces("sw", "lh") as (switch, lanhost):
        s = ("ip", "-n", switch)
        run(*s, "link", "add", "sw", "type", "bridge")
        run(*s, "link", "set", "sw", "up")
        run(*s, "link", "add", "port0", "type", "veth", "peer", "name", PARENT, "netns",
            host_ns)
        run(*s, "link", "set", "port0", "master", "sw", "up")
        run("ip", "-n", host_ns, "link", "set", PARENT, "up")
        run(*s, "link", "add", "hport", "type", "veth", "peer", "name", "eth0", "netns",
            lanhost)
        run(*s, "link", "set", "hport", "master", "sw", "up")
        run("ip", "-n", lanhost, "addr", "add", lan_host, "dev", "eth0")
        run("ip", "-n", lanhost, "link", "set", "eth0", "up")
        yield Lan(switch, f"/run/netns/{lanhost}", host_ns)


@contextmanager
def vlan_lan(host_ns: str, hosts: dict[int, str]) -> Iterator[Lan]:
    """The parent's far end carries VLANs: ``hosts`` maps a VLAN id to the address (CIDR)
    of a host namespace on that VLAN only."""
    with _namespaces("sw", *(f"v{vid}" for vid in hosts)) as (switch, *vlan_ns):
        s = ("ip", "-n", switch)
        run(*s, "link", "add", "port0", "type", "veth", "peer", "name", PARENT, "netns",
            host_ns)
        run(*s, "link", "set", "port0", "up")
        run("ip", "-n", host_ns, "link", "set", PARENT, "up")
        paths = {}
        for (vid, cidr), ns in zip(hosts.items(), vlan_ns, strict=True):
            # The VLAN link is made straight into the host's namespace, on port0.
            run(*s, "link", "add", "link", "port0", "name", f"v{vid}", "netns", ns, "type",
                "vlan", "id", str(vid))
            run("ip", "-n", ns, "addr", "add", cidr, "dev", f"v{vid}")
            run("ip", "-n", ns, "link", "set", f"v{vid}", "up")
            paths[vid] = f"/run/netns/{ns}"
        yield Lan(switch, "", host_ns, vlan_hosts=paths)
