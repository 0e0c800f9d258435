"""The firewall plan: cnm's one nftables table, rendered from records (pure).

A fixed set of rules; networks and published ports are only elements of sets and maps, so
the 10,000th mapping costs what the first did. Single ports live in hash maps (O(1) insert
and lookup). A range whose host and container ports are the same numbers is one element of
an interval map; a shifted range becomes one hash element per port, because NAT cannot add
an offset from a map lookup. Interval maps cost the kernel O(n) per change, so only such
ranges go there.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cnm.portspec import PortMapping

TABLE = "inet cnm"
# Comment on the rules cnm puts in Docker's DOCKER-USER chain (the one exception to "only
# our table": next to dockerd, FORWARD drops what DOCKER-USER does not accept).
DOCKER_COMMENT = "cnm"

# The DNAT rules, one per map; a port mapping needs a transport protocol match first.
_PUBLISHED = "".join(
    f"        meta l4proto {{ tcp, udp, sctp }} dnat {fam} to meta l4proto . {key} map "
    f'@pub{v}_{kind} comment "published port"\n'
    for v, fam, addr in ((4, "ip", "ip daddr"), (6, "ip6", "ip6 daddr"))
    for kind, key in (("addr", f"{addr} . th dport"), ("any", "th dport"),
                      ("range", f"{addr} . th dport"))
)

_SKELETON = """\
table inet cnm {
    set bridges { type ifname; }
    set internal { type ifname; }
    set same { type ifname . ifname; }
    set icc_off { type ifname . ifname; }
    set masq4 { type ipv4_addr; flags interval; }
    set masq6 { type ipv6_addr; flags interval; }
    set hairpin4 { type ipv4_addr . ipv4_addr; }
    set hairpin6 { type ipv6_addr . ipv6_addr; }
    map pub4_any { type inet_proto . inet_service : ipv4_addr . inet_service; }
    map pub4_addr { type inet_proto . ipv4_addr . inet_service : ipv4_addr . inet_service; }
    map pub4_range { type inet_proto . ipv4_addr . inet_service : ipv4_addr; flags interval; }
    map pub6_any { type inet_proto . inet_service : ipv6_addr . inet_service; }
    map pub6_addr { type inet_proto . ipv6_addr . inet_service : ipv6_addr . inet_service; }
    map pub6_range { type inet_proto . ipv6_addr . inet_service : ipv6_addr; flags interval; }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        fib daddr type local jump published comment "to the host: published ports"
    }
    chain output {
        type nat hook output priority -100; policy accept;
        fib daddr type local jump published comment "to the host: published ports"
    }
    chain published {
{published}    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 127.0.0.0/8 oifname @bridges masquerade comment "loopback to a published port"
        ct status dnat ip saddr . ip daddr @hairpin4 masquerade comment "hairpin"
        ct status dnat ip6 saddr . ip6 daddr @hairpin6 masquerade comment "hairpin"
        oifname @bridges return comment "into a bridge: no NAT"
        ip saddr @masq4 masquerade comment "masquerade"
        ip6 saddr @masq6 masquerade comment "masquerade"
    }
    chain input {
        type filter hook input priority filter; policy accept;
        ct state established,related accept comment "replies"
        iifname @internal drop comment "internal network: not to the host"
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept comment "replies"
        iifname . oifname @icc_off drop comment "icc=false: no traffic within the network"
        iifname . oifname @same accept comment "same network"
        iifname @internal drop comment "internal network: no way out"
        oifname @internal drop comment "internal network: nothing in from outside"
        ct status dnat accept comment "published port"
        iifname @bridges oifname @bridges drop comment "inter-network isolation"
    }
}
"""


_SKELETON = _SKELETON.replace("{published}", _PUBLISHED)


@dataclass(frozen=True)
class NetworkRules:
    """What the firewall needs to know of one bridge network."""

    bridge: str
    subnets: tuple[str, ...]
    internal: bool = False
    icc: bool = True
    masquerade: bool = True


@dataclass(frozen=True)
class PortRule:
    """One published mapping and the endpoint addresses it leads to."""

    mapping: PortMapping
    addr4: str | None
    addr6: str | None


def _q(name: str) -> str:
    return f'"{name}"'


def network_elements(n: NetworkRules) -> list[tuple[str, str]]:
    """(set, element) pairs of one network."""
    out = [("bridges", _q(n.bridge)), ("same", f"{_q(n.bridge)} . {_q(n.bridge)}")]
    if not n.icc:
        out.append(("icc_off", f"{_q(n.bridge)} . {_q(n.bridge)}"))
    if n.internal:
        out.append(("internal", _q(n.bridge)))
    elif n.masquerade:
        for s in n.subnets:
            out.append(("masq6" if ":" in s else "masq4", s))
    return out


def port_elements(r: PortRule) -> list[tuple[str, str, str]]:
    """(map, key, value) triples of one published mapping."""
    m = r.mapping
    out: list[tuple[str, str, str]] = []
    for version, addr in ((4, r.addr4), (6, r.addr6)):
        if addr is None or version not in m.families:
            continue
        if m.is_range and not m.shifted:
            host = ("0.0.0.0/0" if version == 4 else "::/0") if m.wildcard else m.host_ip
            key = f"{m.proto} . {host} . {m.host_port}-{m.host_port_end}"
            out.append((f"pub{version}_range", key, addr))
            continue
        for offset in range(m.host_port_end - m.host_port + 1):
            hport, cport = m.host_port + offset, m.container_port + offset
            if not m.wildcard:
                out.append((f"pub{version}_addr", f"{m.proto} . {m.host_ip} . {hport}",
                            f"{addr} . {cport}"))
            else:
                out.append((f"pub{version}_any", f"{m.proto} . {hport}", f"{addr} . {cport}"))
    return out


def hairpin_elements(addr4: str | None, addr6: str | None) -> list[tuple[str, str]]:
    """(set, element) pairs that let an endpoint reach its own published ports: traffic
    from it to itself through a DNAT is masqueraded, so the reply comes back the same way.
    Present while the endpoint publishes anything."""
    return [(f"hairpin{v}", f"{a} . {a}") for v, a in ((4, addr4), (6, addr6)) if a]


def add_hairpin(addr4: str | None, addr6: str | None) -> str:
    return "".join(f"add element {TABLE} {s} {{ {e} }}\n"
                   for s, e in hairpin_elements(addr4, addr6))


def delete_hairpin(addr4: str | None, addr6: str | None) -> str:
    return "".join(f"delete element {TABLE} {s} {{ {e} }}\n"
                   for s, e in hairpin_elements(addr4, addr6))


def add_network(n: NetworkRules) -> str:
    return "".join(f"add element {TABLE} {s} {{ {e} }}\n" for s, e in network_elements(n))


def delete_network(n: NetworkRules) -> str:
    return "".join(f"delete element {TABLE} {s} {{ {e} }}\n" for s, e in network_elements(n))


def add_ports(rules: Iterable[PortRule]) -> str:
    return "".join(f"add element {TABLE} {m} {{ {k} : {v} }}\n"
                   for r in rules for m, k, v in port_elements(r))


def delete_ports(rules: Iterable[PortRule]) -> str:
    return "".join(f"delete element {TABLE} {m} {{ {k} }}\n"
                   for r in rules for m, k, _ in port_elements(r))


def table(networks: Iterable[NetworkRules], ports: Iterable[PortRule],
          hairpins: Iterable[tuple[str | None, str | None]] = ()) -> str:
    """The whole table, replacing whatever is there, as one transaction."""
    # "add" first so the "delete" cannot fail on a host that has no table yet (nft 1.0.6
    # has no "destroy").
    return (f"add table {TABLE}\ndelete table {TABLE}\n" + _SKELETON
            + "".join(add_network(n) for n in networks) + add_ports(ports)
            + "".join(add_hairpin(a4, a6) for a4, a6 in hairpins))


def layout() -> tuple[dict[str, str], dict[str, int]]:
    """The table's sets and maps (name -> "set" or "map") and each chain's number of rules,
    as the skeleton has them: what a check of the live table compares against."""
    kinds: dict[str, str] = {}
    rules: dict[str, int] = {}
    chain = None
    for line in _SKELETON.splitlines():
        m = re.match(r"^ {4}(set|map|chain) (\w+) \{", line)
        if m:
            if m.group(1) == "chain":
                chain = m.group(2)
                rules[chain] = 0
            else:
                kinds[m.group(2)] = m.group(1)
                chain = None
        elif chain and line.startswith(" " * 8) and not line.strip().startswith("type "):
            rules[chain] += 1
    return kinds, rules


def elements(networks: Iterable[NetworkRules], ports: Iterable[PortRule],
             hairpins: Iterable[tuple[str | None, str | None]] = ()) -> dict[str, list[str]]:
    """Each set's and map's elements as ``table`` puts them there (a map's as "KEY :
    VALUE"), in ``canonical`` form."""
    out: dict[str, list[str]] = {name: [] for name in layout()[0]}
    for n in networks:
        for name, e in network_elements(n):
            out[name].append(canonical(e))
    for r in ports:
        for name, key, value in port_elements(r):
            out[name].append(canonical(f"{key} : {value}"))
    for a4, a6 in hairpins:
        for name, e in hairpin_elements(a4, a6):
            out[name].append(canonical(e))
    return out


def canonical(element: str) -> str:
    """An element's text with interface names unquoted and addresses in one spelling, so
    the plan's and nft's (``element_text``) compare equal."""
    def part(p: str) -> str:
        p = p.strip().strip('"')
        try:
            return str(ipaddress.ip_network(p, strict=False)) if "/" in p else \
                str(ipaddress.ip_address(p))
        except ValueError:
            return p

    return " : ".join(" . ".join(part(p) for p in side.split(" . "))
                      for side in element.split(" : "))


def element_text(e: Any) -> str:
    """One element of ``nft -j list``'s "elem" list as text (``canonical`` form)."""
    def text(v: Any) -> str:
        if isinstance(v, dict):
            if "concat" in v:
                return " . ".join(text(x) for x in v["concat"])
            if "prefix" in v:
                return f"{v['prefix']['addr']}/{v['prefix']['len']}"
            if "range" in v:
                return "-".join(text(x) for x in v["range"])
            if "elem" in v:  # an element with options (timeout, counter)
                return text(v["elem"]["val"])
        if isinstance(v, list) and len(v) == 2:  # a map's [key, value]
            return f"{text(v[0])} : {text(v[1])}"
        return str(v)

    return canonical(text(e))


def docker_user(bridges: Iterable[str], handles: Iterable[int]) -> str:
    """Replace cnm's accepts in Docker's DOCKER-USER chain (found by their comment).

    Only what Docker's own rules would otherwise drop and cnm's table then judges: traffic
    within a cnm bridge, replies and published ports into it, and traffic out of it to
    anything but Docker's bridges (whose containers stay as closed to cnm's sandboxes as
    Docker keeps them to each other; other cnm bridges are cut off by cnm's own table).
    """
    out = [f"delete rule ip filter DOCKER-USER handle {h}\n" for h in handles]
    tail = f'accept comment "{DOCKER_COMMENT}"\n'
    for b in sorted(bridges):
        q = _q(b)
        # "insert" puts a rule first, before Docker's closing "return": the order here is
        # the reverse of the order in the chain.
        for match in (f'iifname {q} oifname != {{ {q}, "docker0" }} oifname != "br-*"',
                      f"oifname {q} ct status dnat",
                      f"oifname {q} ct state established,related",
                      f"iifname {q} oifname {q}"):
            out.append(f"insert rule ip filter DOCKER-USER {match} {tail}")
    return "".join(out)
