"""Published ports: Docker's -p grammar, and the mappings it resolves into (pure).

``[HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|udp|sctp]``; an IPv6 host address
goes in brackets (``[::1]:8080:80``). A missing host port is picked from the ephemeral
range; a host range with one container port picks one free port of that range (as Docker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import netaddr

from cnm.errors import Conflict, Exhausted, InvalidArgument

PROTOCOLS = ("tcp", "udp", "sctp")
EPHEMERAL = (32768, 60999)

_SPEC = re.compile(
    r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|\d{1,3}(?:\.\d{1,3}){3}):)?"
    r"(?:(?P<host>\d*(?:-\d+)?):)?"
    r"(?P<ctr>\d+(?:-\d+)?)"
    r"(?:/(?P<proto>[a-zA-Z]+))?$"
)


@dataclass(frozen=True)
class PortSpec:
    """What the user asked for; host ports may still be open (None)."""

    proto: str
    # "" = every address of the host, IPv4 and IPv6; "0.0.0.0" / "::" = every address of
    # one family (as Docker reads an explicit 0.0.0.0); otherwise one address.
    host_ip: str
    host_port: int | None
    host_port_end: int | None
    container_port: int
    container_port_end: int


@dataclass(frozen=True)
class PortMapping:
    """A resolved mapping, as stored with its endpoint."""

    proto: str
    host_ip: str
    host_port: int
    host_port_end: int
    container_port: int
    container_port_end: int

    @property
    def is_range(self) -> bool:
        return self.host_port_end != self.host_port

    @property
    def shifted(self) -> bool:
        return self.host_port != self.container_port

    @property
    def families(self) -> frozenset[int]:
        """The IP versions this mapping listens on."""
        if not self.host_ip:
            return frozenset((4, 6))
        return frozenset((6 if ":" in self.host_ip else 4,))

    @property
    def wildcard(self) -> bool:
        """Every address of its families ("", "0.0.0.0", "::")."""
        return self.host_ip in ("", "0.0.0.0", "::")

    def overlaps(self, other: PortMapping) -> bool:
        if self.proto != other.proto or not self.families & other.families:
            return False
        if not (self.wildcard or other.wildcard) and self.host_ip != other.host_ip:
            return False
        return self.host_port <= other.host_port_end and other.host_port <= self.host_port_end

    def __str__(self) -> str:
        ip = self.host_ip
        if ":" in ip:
            ip = f"[{ip}]"
        host = f"{self.host_port}" + (f"-{self.host_port_end}" if self.is_range else "")
        ctr = f"{self.container_port}" + (
            f"-{self.container_port_end}" if self.container_port_end != self.container_port
            else "")
        return f"{ip + ':' if ip else ''}{host}:{ctr}/{self.proto}"

    def to_dict(self) -> dict[str, object]:
        return {"proto": self.proto, "host_ip": self.host_ip, "host_port": self.host_port,
                "host_port_end": self.host_port_end, "container_port": self.container_port,
                "container_port_end": self.container_port_end}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> PortMapping:
        return cls(str(d["proto"]), str(d["host_ip"]), int(str(d["host_port"])),
                   int(str(d["host_port_end"])), int(str(d["container_port"])),
                   int(str(d["container_port_end"])))


def _range(text: str, spec: str, what: str) -> tuple[int, int]:
    lo_s, dash, hi_s = text.partition("-")
    if not lo_s or (dash and not hi_s):
        raise InvalidArgument(f"invalid port spec {spec!r}: {what} port {text!r} is not a "
                              "port or a range of ports")
    if len(lo_s) > 5 or len(hi_s) > 5:  # also keeps int() off 5,000-digit numbers
        raise InvalidArgument(f"invalid port spec {spec!r}: {what} port {text[:12]}... is "
                              "not in 1-65535")
    lo, hi = int(lo_s), int(hi_s or lo_s)
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        raise InvalidArgument(f"invalid port spec {spec!r}: {what} port {text} is not in 1-65535")
    if hi < lo:
        raise InvalidArgument(f"invalid port spec {spec!r}: {what} range {text} is reversed")
    return lo, hi


def parse(spec: str) -> PortSpec:
    m = _SPEC.match(spec.strip())
    if not m:
        raise InvalidArgument(
            f"invalid port spec {spec!r}",
            hint="expected [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|udp|sctp]",
        )
    proto = (m["proto"] or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid port spec {spec!r}: unknown protocol {proto!r}",
                              hint="protocols: tcp, udp, sctp")
    host_ip = ""
    if m["ip"]:
        text = m["ip"].strip("[]")
        try:
            ip = netaddr.IPAddress(text)
        except (netaddr.AddrFormatError, ValueError):
            raise InvalidArgument(f"invalid port spec {spec!r}: {text!r} is not an IP "
                                  "address") from None
        if m["ip"].startswith("[") != (ip.version == 6):
            raise InvalidArgument(f"invalid port spec {spec!r}: put an IPv6 host address in "
                                  "brackets, and only an IPv6 one")
        if ip.version == 6 and ip.is_loopback():
            raise InvalidArgument(
                f"invalid port spec {spec!r}: [::1] cannot carry published traffic (IPv6 "
                "has no route_localnet to let it leave the loopback)",
                hint="publish on 127.0.0.1 for the host only, or on [::] for everyone",
            )
        # An explicit 0.0.0.0 or :: is every address of that family only, as in Docker.
        host_ip = str(ip)
    if m["ip"] and m["host"] is None:
        raise InvalidArgument(
            f"invalid port spec {spec!r}: a host address needs a host port after it",
            hint=f"{m['ip']}:HOST_PORT:{m['ctr']}, or {m['ip']}::{m['ctr']} for any free one",
        )
    c_lo, c_hi = _range(m["ctr"], spec, "container")
    h_lo = h_hi = None
    if m["host"]:
        h_lo, h_hi = _range(m["host"], spec, "host")
        if c_hi != c_lo and h_hi - h_lo != c_hi - c_lo:
            raise InvalidArgument(f"invalid port spec {spec!r}: the host and container ranges "
                                  "differ in size")
    elif c_hi != c_lo:
        h_lo, h_hi = c_lo, c_hi  # "-p 8000-8010": the same ports on the host
    return PortSpec(proto, host_ip, h_lo, h_hi, c_lo, c_hi)


class PortTable:
    """Every published host port, indexed so a clash check costs the same at 10,000 as at 1.

    Single ports are keyed by (proto, port); ranges are few and kept in a list.
    """

    def __init__(self) -> None:
        self._single: dict[tuple[str, int], list[tuple[PortMapping, str]]] = {}
        self._ranges: list[tuple[PortMapping, str]] = []
        self._cursor: dict[str, int] = {}

    def add(self, m: PortMapping, holder: str) -> None:
        if m.is_range:
            self._ranges.append((m, holder))
        else:
            self._single.setdefault((m.proto, m.host_port), []).append((m, holder))

    def remove(self, m: PortMapping) -> None:
        if m.is_range:
            self._ranges = [x for x in self._ranges if x[0] != m]
            return
        key = (m.proto, m.host_port)
        rest = [x for x in self._single.get(key, ()) if x[0] != m]
        if rest:
            self._single[key] = rest
        else:
            self._single.pop(key, None)

    def clash(self, m: PortMapping) -> str | None:
        """The holder of a mapping ``m`` overlaps, if any."""
        for other, who in self._ranges:
            if m.overlaps(other):
                return who
        if m.host_port_end - m.host_port > len(self._single):
            candidates = [x for key, xs in self._single.items() if key[0] == m.proto for x in xs]
        else:
            candidates = [x for port in range(m.host_port, m.host_port_end + 1)
                          for x in self._single.get((m.proto, port), ())]
        return next((who for other, who in candidates if m.overlaps(other)), None)

    def resolve(self, spec: PortSpec, default_host_ip: str = "") -> PortMapping:
        """Fix the host ports of ``spec``: refuse a clash, or pick a free port."""
        host_ip = spec.host_ip or default_host_ip
        width = spec.container_port_end - spec.container_port
        if spec.host_port is not None and spec.host_port_end is not None and (
                width > 0 or spec.host_port_end == spec.host_port):
            m = PortMapping(spec.proto, host_ip, spec.host_port, spec.host_port_end,
                            spec.container_port, spec.container_port_end)
            who = self.clash(m)
            if who:
                addr = f" on {host_ip}" if host_ip else ""
                raise Conflict(f"host port {m.host_port}"
                               + (f"-{m.host_port_end}" if m.is_range else "")
                               + f"/{m.proto}{addr} is already published by {who}")
            return m
        if spec.host_port is not None and spec.host_port_end is not None:
            lo, hi, start = spec.host_port, spec.host_port_end, spec.host_port
        else:
            lo, hi = EPHEMERAL
            start = self._cursor.get(spec.proto, lo)
        port = start
        for _ in range(hi - lo + 1):
            m = PortMapping(spec.proto, host_ip, port, port, spec.container_port,
                            spec.container_port)
            if self.clash(m) is None:
                if spec.host_port is None:
                    self._cursor[spec.proto] = port + 1 if port < hi else lo
                return m
            port = port + 1 if port < hi else lo
        raise Exhausted(f"no free host port in {lo}-{hi}/{spec.proto} for container port "
                        f"{spec.container_port}")
