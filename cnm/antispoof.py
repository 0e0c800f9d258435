"""Anti-spoofing: what a sandbox may send into its bridge, as cnm's bridge table (pure).

``table bridge cnm`` (cnm's own; no other table is touched) hooks bridge prerouting, which
sees every frame entering a bridge port before the bridge forwards or delivers it. A
guarded port (a joined bridge endpoint's host-side veth) lets in only frames that carry the
endpoint's own identity: its MAC as Ethernet source, its MAC and IPv4 (or 0.0.0.0, an ARP
probe) as ARP sender, its IPv4 as IPv4 source, its IPv6 or the link-local derived from its
MAC (or ``::`` in DAD and MLD) as IPv6 source, and only its own addresses as the target of a
neighbour advertisement. Anything else from the port (another MAC, another address, VLAN
tags, other ethertypes) is dropped. Ports not in the sets are never looked at.

The rules are fixed; a port is only elements of sets keyed by interface name, so guarding
or releasing an endpoint is an element change, never a chain rebuild.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import netaddr

TABLE = "bridge cnm"

# Set and chain names may not be nft keywords (ip6, arp ...).
_SKELETON = """\
table bridge cnm {
    set ports { type ifname; }
    set macs { type ifname . ether_addr; }
    set addrs4 { type ifname . ipv4_addr; }
    set addrs6 { type ifname . ipv6_addr; }
    set targets6 { typeof iifname . @th,64,128; }
    chain prerouting {
        type filter hook prerouting priority filter; policy accept;
        iifname @ports jump from_port
    }
    chain from_port {
        iifname . ether saddr != @macs drop
        ether type arp jump from_arp
        ether type ip iifname . ip saddr @addrs4 accept
        ether type ip6 jump from_ip6
        drop
    }
    chain from_arp {
        arp htype != 1 drop
        arp ptype != ip drop
        arp hlen != 6 drop
        arp plen != 4 drop
        iifname . arp saddr ether != @macs drop
        arp saddr ip 0.0.0.0 accept
        iifname . arp saddr ip @addrs4 accept
        drop
    }
    chain from_ip6 {
        icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @targets6 drop
        ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, \
mld2-listener-report } accept
        iifname . ip6 saddr @addrs6 accept
        drop
    }
}
"""


@dataclass(frozen=True)
class PortGuard:
    """One guarded bridge port and the identity the sandbox behind it holds."""

    port: str
    mac: str
    ipv4: str | None = None  # an address, no prefix
    ipv6: str | None = None

    @property
    def link_local(self) -> str:
        """The EUI-64 link-local of the MAC: what a sandbox's kernel gives the interface."""
        return str(netaddr.EUI(self.mac).ipv6_link_local())

    @property
    def addresses6(self) -> tuple[str, ...]:
        return tuple(a for a in (self.ipv6, self.link_local) if a)


def elements(g: PortGuard) -> list[tuple[str, str]]:
    """(set, element) pairs of one guarded port."""
    q = f'"{g.port}"'
    out = [("ports", q), ("macs", f"{q} . {g.mac.lower()}")]
    if g.ipv4:
        out.append(("addrs4", f"{q} . {g.ipv4}"))
    for a in g.addresses6:
        out.append(("addrs6", f"{q} . {a}"))
        # The neighbour advertisement's target, read as the raw 128 bits it is in the
        # packet (nft 1.0.6 has no icmpv6 taddr).
        out.append(("targets6", f"{q} . 0x{int(netaddr.IPAddress(a)):032x}"))
    return out


def layout() -> tuple[dict[str, str], dict[str, int]]:
    """The table's sets (name -> "set") and each chain's number of rules, as the skeleton
    has them: what a check of the live table compares against."""
    kinds: dict[str, str] = {}
    rules: dict[str, int] = {}
    chain = None
    for line in _SKELETON.splitlines():
        words = line.split()
        if line.startswith("    ") and not line.startswith("     ") and len(words) >= 3 \
                and words[0] in ("set", "chain"):
            if words[0] == "chain":
                chain = words[1]
                rules[chain] = 0
            else:
                kinds[words[1]] = "set"
                chain = None
        elif chain and line.startswith(" " * 8) and words[0] != "type":
            rules[chain] += 1
    return kinds, rules


def want(guards: Iterable[PortGuard]) -> dict[str, list[str]]:
    """Each set's elements for these guards, in the spelling a check of the live table
    compares (``cnm.firewall.canonical``; the raw NA targets as nft lists them)."""
    from cnm.firewall import canonical

    out: dict[str, list[str]] = {name: [] for name in layout()[0]}
    for g in guards:
        for name, element in elements(g):
            out[name].append(canonical(element))
    return out


def add(g: PortGuard) -> str:
    return "".join(f"add element {TABLE} {s} {{ {e} }}\n" for s, e in elements(g))


def delete(g: PortGuard) -> str:
    return "".join(f"delete element {TABLE} {s} {{ {e} }}\n" for s, e in elements(g))


def table(guards: Iterable[PortGuard]) -> str:
    """The whole table, replacing whatever is there, as one transaction."""
    return (f"add table {TABLE}\ndelete table {TABLE}\n" + _SKELETON
            + "".join(add(g) for g in guards))
