"""`cnm trace`: the path of one packet from a sandbox, as data (pure, no I/O).

The daemon's adapter (cnm.kernel.trace) looks at the kernel and sends one probe; this
module parses what it saw (`ip -j route get`, `nft monitor trace` lines), decides the
verdict and renders it. The CLI imports it to render the daemon's JSON, so it needs
nothing beyond the standard library and cnm.errors.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cnm.errors import InvalidArgument

PROTOS = ("tcp", "udp", "icmp")
# Where the trace rule hooks: before conntrack (-200) and DNAT (-100), so it sees the
# packet as the sandbox sent it.
TRACE_PRIORITY = -350
TRACE_COMMENT = "cnm trace"


@dataclass(frozen=True)
class Target:
    """What to trace to: an address, and for tcp/udp a port."""

    addr: str
    proto: str
    port: int | None = None

    @property
    def version(self) -> int:
        return 6 if ":" in self.addr else 4

    def __str__(self) -> str:
        host = f"[{self.addr}]" if self.version == 6 and self.port else self.addr
        return f"{host}:{self.port}/{self.proto}" if self.port else f"{self.addr} ({self.proto})"


_HINT = "DEST[:PORT[/PROTO]]: 10.0.0.2, 10.0.0.2:80, 10.0.0.2:53/udp, [fd00::2]:80/tcp"


def parse_target(text: str) -> Target:
    """DEST[:PORT[/PROTO]]; an IPv6 address with a port in brackets. icmp has no port, a
    port alone is tcp."""
    if not text:
        raise InvalidArgument("trace: the destination is empty", hint=_HINT)
    rest, proto = text, ""
    if "/" in text:
        rest, _, proto = text.rpartition("/")
        if proto not in PROTOS:
            raise InvalidArgument(f"trace: invalid protocol {proto!r} in {text!r}: expected "
                                  "tcp, udp or icmp", hint=_HINT)
    addr, port = rest, ""
    if rest.startswith("["):
        addr, sep, tail = rest[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise InvalidArgument(f"trace: invalid destination {text!r}", hint=_HINT)
        port = tail[1:] if tail else ""
        if tail == ":":
            raise InvalidArgument(f"trace: empty port in {text!r}", hint=_HINT)
    elif rest.count(":") == 1:
        addr, _, port = rest.partition(":")
        if not port:
            raise InvalidArgument(f"trace: empty port in {text!r}", hint=_HINT)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise InvalidArgument(f"trace: {addr!r} is not an IP address", hint=_HINT) from None
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidArgument(f"trace: {addr} is not a single destination (unspecified or "
                              "multicast)", hint=_HINT)
    if port:
        if not port.isdecimal() or not 1 <= int(port) <= 65535:
            raise InvalidArgument(f"trace: invalid port {port!r}: expected 1-65535", hint=_HINT)
        if proto == "icmp":
            raise InvalidArgument(f"trace: icmp takes no port ({text!r})", hint=_HINT)
        return Target(str(ip), proto or "tcp", int(port))
    if proto in ("tcp", "udp"):
        raise InvalidArgument(f"trace: {proto} needs a port ({text!r})", hint=_HINT)
    return Target(str(ip), "icmp")


def trace_chain(chain: str, hook: str, iifname: str | None, source: str, t: Target) -> str:
    """The temporary chain, in cnm's table, that marks exactly the probe's flow for
    nftables' tracing (``meta nftrace set 1``): the mark stays with the packet through
    every later chain of every table."""
    ip = "ip6" if t.version == 6 else "ip"
    l4 = "icmpv6" if t.proto == "icmp" and t.version == 6 else t.proto
    match = f'iifname "{iifname}" ' if iifname else ""
    match += f"{ip} saddr {source} {ip} daddr {t.addr} meta l4proto {l4} "
    if t.port:
        match += f"th dport {t.port} "
    if t.proto == "tcp":  # the SYN only, not the rest of the probe's handshake
        match += "tcp flags & (syn | ack) == syn "
    return (f"add chain inet cnm {chain} {{ type filter hook {hook} priority "
            f"{TRACE_PRIORITY}; policy accept; }}\n"
            f'add rule inet cnm {chain} {match}meta nftrace set 1 comment "{TRACE_COMMENT}"\n')


@dataclass(frozen=True)
class TracePath:
    """What the core knows of the sandbox's side of the path, for the adapter."""

    sandbox: str  # its name
    netns: str  # where its links are
    host_netns: str
    # (ifname in the sandbox, network name, host link, bridge) of each joined endpoint
    links: tuple[tuple[str, str, str | None, str | None], ...]
    same_namespace: bool = False  # the sandbox is the host namespace (kind host)


# ------------------------------------------------------------------ nft monitor trace
@dataclass(frozen=True)
class Event:
    """One line of `nft monitor trace`."""

    id: str
    family: str
    table: str
    chain: str
    kind: str  # packet, rule, verdict, policy
    text: str = ""  # the packet's fields, or the rule
    verdict: str = ""  # of a rule, a chain's verdict or its policy
    line: str = field(default="", compare=False)  # as nft printed it

    @property
    def comment(self) -> str | None:
        m = re.search(r'comment "([^"]*)"', self.text) if self.kind == "rule" else None
        return m.group(1) if m else None

    @property
    def where(self) -> str:
        return f"{self.family} {self.table} {self.chain}"


_LINE = re.compile(r"^trace id (\S+) (\S+) (\S+) (\S+) (.*?)\s*$")


def parse_event(line: str) -> Event | None:
    """One event, or None for a line that is not one (nft's other output)."""
    m = _LINE.match(line.strip())
    if not m:
        return None
    tid, family, table, chain, rest = m.groups()
    if rest.startswith("packet: "):
        return Event(tid, family, table, chain, "packet", rest[len("packet: "):])
    if rest.startswith("rule "):
        rm = re.match(r"rule (.*) \(verdict ([^)]*)\)$", rest)
        if rm:
            return Event(tid, family, table, chain, "rule", rm.group(1), rm.group(2))
        return Event(tid, family, table, chain, "rule", rest[len("rule "):])
    if rest.startswith("unknown rule handle "):  # a rule newer than the monitor's cache
        rm = re.match(r"unknown rule (handle \d+) \(verdict ([^)]*)\)$", rest)
        if rm:
            return Event(tid, family, table, chain, "rule", rm.group(1), rm.group(2))
    for kind in ("verdict", "policy"):
        if rest.startswith(kind + " "):
            return Event(tid, family, table, chain, kind, "", rest[len(kind) + 1:].strip())
    return None


def parse_events(lines: str, trace_chain_name: str) -> list[Event]:
    """The events of a trace, without those of the trace chain itself."""
    out = []
    for line in lines.splitlines():
        e = parse_event(line)
        if e is not None and not (e.table == "cnm" and e.chain == trace_chain_name):
            out.append(replace(e, line=line.strip()))
    return out


_FIELDS = re.compile(r'\b(iif|oif) "([^"]*)"|\b(ip6?) (saddr|daddr) (\S+)'
                     r"|\b(tcp|udp|sctp) (sport|dport) (\d+)|\bip protocol (\S+)"
                     r"|\bip6 nexthdr (\S+)")


def packet_fields(text: str) -> dict[str, str]:
    """The fields of a packet event that the path is told by."""
    out: dict[str, str] = {}
    for m in _FIELDS.finditer(text):
        if m.group(1):
            out[m.group(1)] = m.group(2)
        elif m.group(3):
            out[m.group(4)] = m.group(5)
        elif m.group(6):
            out[m.group(7)] = m.group(8)
            out.setdefault("proto", m.group(6))
        else:
            out.setdefault("proto", m.group(9) or m.group(10))
    return out


# ------------------------------------------------------------------ the result
@dataclass
class Hop:
    """One chain that saw the packet: its packet line's fields and what it did."""

    chain: str  # "inet cnm forward"
    packet: dict[str, str]
    rules: list[dict[str, str]] = field(default_factory=list)  # rule, verdict, meaning
    verdict: str = ""  # the chain's end: its policy, or the rule's verdict


@dataclass(frozen=True)
class Observed:
    """What the adapter saw, all of it plain data."""

    sandbox: str
    target: Target
    route: dict[str, Any] | None  # `ip -j route get`'s object
    route_error: str | None
    interface: str | None  # the sandbox's interface the route takes
    network: str | None
    host_link: str | None  # its host end (a veth)
    bridge: str | None
    next_hop: str | None
    neighbour: dict[str, Any] | None  # `ip -j neigh show`'s object, after the probe
    fdb: dict[str, Any] | None  # the bridge's `bridge -j fdb` entry for the next hop's MAC
    events: str  # `nft monitor trace` output
    chain: str  # the trace chain's name
    probe: str  # answered, refused, no answer, or the error


def hops(events: list[Event]) -> list[Hop]:
    """The chains in the order they saw the packet; a jump's chain is a hop of its own."""
    out: list[Hop] = []
    for e in events:
        if e.kind == "packet" or not out or out[-1].chain != e.where:
            out.append(Hop(e.where, packet_fields(e.text) if e.kind == "packet" else {}))
            if e.kind == "packet":
                continue
        hop = out[-1]
        if e.kind == "rule":
            rule = re.sub(r'\s*comment "[^"]*"', "", e.text)
            hop.rules.append({"rule": rule, "verdict": e.verdict, "meaning": e.comment or ""})
            # A jump or goto goes on in the next chain: not this chain's end.
            if e.verdict and e.verdict.split()[0] not in ("continue", "jump", "goto"):
                hop.verdict = e.verdict
        else:
            hop.verdict = f"policy {e.verdict}" if e.kind == "policy" else e.verdict
    return out


def _hostport(addr: str, port: str | None) -> str:
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _endpoint(p: dict[str, str]) -> str:
    return _hostport(p.get("daddr", "?"), p.get("dport"))


_DNAT = re.compile(r"\bdnat (ip6? )?to\b")
_SNAT = re.compile(r"\b(masquerade|snat (ip6? )?to)\b")


def nat(path: list[Hop]) -> list[str]:
    """The translations seen: a DNAT rule and the address it led to, masquerade or SNAT."""
    out = []
    first = next((h.packet for h in path if h.packet), {})
    for i, h in enumerate(path):
        for r in h.rules:
            if r["verdict"] != "accept":
                continue
            why = r["meaning"] or r["rule"]
            if _DNAT.search(r["rule"]):
                after = next((x.packet for x in path[i + 1:] if x.packet), {})
                to = _endpoint(after) if after else "?"
                out.append(f"DNAT {_endpoint(first)} -> {to} ({why})")
            elif m := _SNAT.search(r["rule"]):
                kind = "masquerade" if m.group(1) == "masquerade" else "SNAT"
                out.append(f"{kind} of source {first.get('saddr', '?')} ({why})")
    return out


def _drop(path: list[Hop]) -> dict[str, str] | None:
    for h in path:
        for r in h.rules:
            if r["verdict"] == "drop":
                return {"chain": h.chain, "rule": r["rule"], "meaning": r["meaning"]}
        if h.verdict == "policy drop":
            return {"chain": h.chain, "rule": "policy drop", "meaning": "the chain's policy"}
    return None


def verdict(o: Observed, path: list[Hop]) -> dict[str, Any]:
    """delivered, dropped (by which rule), no-route, no-neighbour or no-answer."""
    if o.route_error is not None:
        return {"verdict": "no-route",
                "reason": f"{o.sandbox} has no route to {o.target.addr}: {o.route_error}"}
    drop = _drop(path)
    if drop is not None:
        why = f" ({drop['meaning']})" if drop["meaning"] else ""
        return {"verdict": "dropped", "by": drop,
                "reason": f"dropped by rule \"{drop['rule']}\" in {drop['chain']}{why}"}
    if o.probe in ("answered", "refused"):
        extra = ": nothing listens on that port" if o.probe == "refused" else ""
        return {"verdict": "delivered", "reason": f"the probe was {o.probe}{extra}"}
    state = (o.neighbour or {}).get("state") or []
    if not path and (o.neighbour is None or any(s in ("FAILED", "INCOMPLETE") for s in state)):
        return {"verdict": "no-neighbour",
                "reason": f"no neighbour answers for {o.next_hop} on {o.interface}"}
    return {"verdict": "no-answer",
            "reason": "no rule of the host dropped it, but no answer came back"
                      + ("" if path else " (the host's firewall never saw it)")}


def result(o: Observed) -> dict[str, Any]:
    """The trace as the API answers it."""
    events = parse_events(o.events, o.chain)
    path = hops(events)
    return {
        "sandbox": o.sandbox, "destination": str(o.target),
        "target": asdict(o.target),
        "route": o.route, "route_error": o.route_error, "interface": o.interface,
        "network": o.network, "host_link": o.host_link, "bridge": o.bridge,
        "next_hop": o.next_hop, "neighbour": o.neighbour, "fdb": o.fdb,
        "nftables": [asdict(h) for h in path], "nat": nat(path), "probe": o.probe,
        "monitor": [e.line for e in events],
        **verdict(o, path),
    }


# ------------------------------------------------------------------ text
def _route_text(r: dict[str, Any]) -> str:
    parts = [str(r.get("dst", "?"))]
    if r.get("gateway"):
        parts.append(f"via {r['gateway']}")
    parts.append(f"dev {r.get('dev', '?')}")
    if r.get("prefsrc"):
        parts.append(f"src {r['prefsrc']}")
    return " ".join(parts)


def _packet_text(p: dict[str, str]) -> str:
    out = []
    if "iif" in p:
        out.append(f"in {p['iif']}")
    if "oif" in p:
        out.append(f"out {p['oif']}")
    out.append(f"{_hostport(p.get('saddr', '?'), p.get('sport'))} -> {_endpoint(p)}")
    return ", ".join(out)


def render_text(d: dict[str, Any]) -> str:
    """The trace hop by hop, for a person."""
    lines = [f"trace {d['sandbox']} -> {d['destination']}"]
    if d.get("route_error"):
        lines.append(f"  route      in {d['sandbox']}: {d['route_error']}")
    elif d.get("route"):
        lines.append(f"  route      in {d['sandbox']}: {_route_text(d['route'])}")
    n = d.get("neighbour")
    if d.get("next_hop"):
        if n and n.get("lladdr"):
            state = ",".join(n.get("state") or []).lower() or "?"
            lines.append(f"  neighbour  {d['next_hop']} is {n['lladdr']} ({state})")
        elif n:
            state = ",".join(n.get("state") or []).lower() or "?"
            lines.append(f"  neighbour  {d['next_hop']}: no address ({state})")
        else:
            lines.append(f"  neighbour  {d['next_hop']}: no entry")
    if d.get("host_link"):
        where = f", a port of bridge {d['bridge']}" if d.get("bridge") else ""
        net = f" (network {d['network']})" if d.get("network") else ""
        lines.append(f"  link       {d['interface']} <-> {d['host_link']}{where}{net}")
    f = d.get("fdb")
    if f:
        on = ("the bridge itself" if f.get("ifname") == d.get("bridge")
              else f"port {f.get('ifname')}")
        lines.append(f"  fdb        {f['mac']} on {d['bridge']}: {on}")
    elif d.get("bridge") and n and n.get("lladdr"):
        lines.append(f"  fdb        {n['lladdr']}: not learnt on {d['bridge']}")
    hops_ = d.get("nftables") or []
    if hops_:
        lines.append("  nftables")
    for h in hops_:
        head = f"    {h['chain']}"
        if h["packet"]:
            head += f": {_packet_text(h['packet'])}"
        lines.append(head)
        for r in h["rules"]:
            meaning = f"  ({r['meaning']})" if r["meaning"] else ""
            lines.append(f"      rule {r['rule']} -> {r['verdict'] or 'continue'}{meaning}")
        if h["verdict"]:
            lines.append(f"      = {h['verdict']}")
    if d.get("interface") == "lo":
        lines.append("  loopback   an address of the sandbox itself: the packet never leaves it")
    elif d.get("route") and not hops_:
        lines.append("  nftables   the host's firewall did not see the packet")
    for x in d.get("nat") or []:
        lines.append(f"  nat        {x}")
    lines.append(f"  probe      {d['probe']}")
    lines.append(f"verdict: {d['verdict']}: {d['reason']}")
    return "\n".join(lines) + "\n"
