"""IP address management: subnets for networks, addresses for endpoints.

Pure Python over netaddr. The controller owns one ``Ipam`` and calls it under its lock, so
allocation is race-free; the store's unique constraints are a second line of defence.
"""

from __future__ import annotations

import bisect
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import netaddr

from cnm.errors import Conflict, Exhausted, InvalidArgument
from cnm.model import Subnet


@dataclass(frozen=True)
class Pool:
    """A default address pool: carve subnets of ``size`` bits out of ``base``."""

    base: str
    size: int

    @classmethod
    def parse(cls, text: str) -> Pool:
        """Parse Docker's ``base=CIDR,size=N`` form."""
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("base", "size"):
                raise InvalidArgument(
                    f"invalid default address pool {text!r}: expected base=CIDR,size=N"
                )
            fields[key.strip()] = value.strip()
        if "base" not in fields or "size" not in fields:
            raise InvalidArgument(f"invalid default address pool {text!r}: needs base and size")
        base = parse_cidr(fields["base"], "default address pool base")
        try:
            size = int(fields["size"])
        except ValueError:
            raise InvalidArgument(f"invalid default address pool size {fields['size']!r}") from None
        bits = 32 if base.version == 4 else 128
        if not base.prefixlen <= size <= bits - 2:
            raise InvalidArgument(
                f"invalid default address pool {text!r}: size must be between "
                f"{base.prefixlen} and {bits - 2}"
            )
        return cls(str(base), size)

    @property
    def version(self) -> int:
        return 6 if ":" in self.base else 4


# Docker's pools first (familiar addresses), then a large pool of /24s, so that well over
# 1,000 networks fit; any candidate overlapping a host route or address is skipped.
DEFAULT_POOLS: tuple[Pool, ...] = (
    Pool("172.17.0.0/16", 16),
    Pool("172.18.0.0/15", 16),
    Pool("172.20.0.0/14", 16),
    Pool("172.24.0.0/13", 16),
    Pool("192.168.0.0/16", 20),
    Pool("10.128.0.0/9", 24),
    Pool("fd63:6e6d::/48", 64),
)


@dataclass(frozen=True)
class Taken:
    """A range no new subnet may overlap, with the words that name its holder."""

    cidr: str
    holder: str
    device: str | None = None  # the host link holding it (a host address or route)


def parse_cidr(text: str, what: str = "subnet") -> netaddr.IPNetwork:
    """A CIDR with an explicit prefix and no host bits."""
    if "/" not in text:
        raise InvalidArgument(f"invalid {what} {text!r}: expected CIDR notation like 10.1.0.0/24")
    try:
        net = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise InvalidArgument(f"invalid {what} {text!r}: not an IP network in CIDR form") from None
    if net.ip != net.network:
        raise InvalidArgument(
            f"invalid {what} {text!r}: host bits are set", hint=f"did you mean {net.cidr}?"
        )
    return net


# Ranges no network may use: a sandbox given one of them could never talk to anyone
# (loopback, multicast, reserved, v4-mapped, "this network"); and a /32 or /128 is one
# address, with none beside the gateway.
_REFUSED = (
    (netaddr.IPNetwork("0.0.0.0/8"), "it is \"this network\" (0.0.0.0/8)"),
    (netaddr.IPNetwork("127.0.0.0/8"), "it is loopback (127.0.0.0/8)"),
    (netaddr.IPNetwork("224.0.0.0/4"), "it is multicast (224.0.0.0/4)"),
    (netaddr.IPNetwork("240.0.0.0/4"), "it is reserved (240.0.0.0/4)"),
    (netaddr.IPNetwork("::/128"), "it is the unspecified address"),
    (netaddr.IPNetwork("::1/128"), "it is loopback (::1)"),
    (netaddr.IPNetwork("::ffff:0:0/96"), "it is IPv4-mapped (::ffff:0:0/96)"),
    (netaddr.IPNetwork("ff00::/8"), "it is multicast (ff00::/8)"),
)


def parse_subnet(text: str, what: str = "subnet") -> netaddr.IPNetwork:
    """A network's subnet: a CIDR (``parse_cidr``) that endpoints can live in."""
    net = parse_cidr(text, what)
    for bad, why in _REFUSED:
        if net.version == bad.version and net.first <= bad.last and bad.first <= net.last:
            raise InvalidArgument(f"invalid {what} {text!r}: {why}")
    if net.prefixlen == (32 if net.version == 4 else 128):
        raise InvalidArgument(f"invalid {what} {text!r}: a /{net.prefixlen} is one address, "
                              "with no room for a gateway and an endpoint",
                              hint="use a /31 or wider" if net.version == 4 else
                              "use a /127 or wider")
    return net


def parse_ip(text: str, what: str = "address") -> netaddr.IPAddress:
    try:
        return netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise InvalidArgument(f"invalid {what} {text!r}: not an IP address") from None


def _usable(net: netaddr.IPNetwork) -> tuple[int, int]:
    """First and last address an endpoint may hold in ``net``."""
    if net.version == 4 and net.prefixlen <= 30:
        return net.first + 1, net.last - 1
    if net.version == 6 and net.prefixlen <= 126:
        return net.first + 1, net.last
    return net.first, net.last


def _merged(ranges: Iterable[tuple[int, int]]) -> tuple[list[int], list[int]]:
    firsts: list[int] = []
    lasts: list[int] = []
    for first, last in sorted(ranges):
        if lasts and first <= lasts[-1] + 1:
            lasts[-1] = max(lasts[-1], last)
        else:
            firsts.append(first)
            lasts.append(last)
    return firsts, lasts


def free_subnet(pools: Sequence[Pool], version: int, taken: Iterable[Taken]) -> str:
    """The first subnet of the pools (of one IP version) that overlaps nothing taken.

    Taken ranges are merged once, then each pool is walked by jumping past every blocking
    range, so the cost grows with the number of taken ranges, not with the pool size.
    """
    ranges = []
    for t in taken:
        n = netaddr.IPNetwork(t.cidr)
        if n.version == version:
            ranges.append((n.first, n.last))
    firsts, lasts = _merged(ranges)
    for pool in pools:
        if pool.version != version:
            continue
        base = netaddr.IPNetwork(pool.base)
        bits = 32 if version == 4 else 128
        step = 1 << (bits - pool.size)
        cand = base.first
        while cand + step - 1 <= base.last:
            hi = cand + step - 1
            i = bisect.bisect_right(firsts, hi) - 1
            if i < 0 or lasts[i] < cand:
                return str(netaddr.IPNetwork((cand, pool.size), version=version))
            # Jump to the first aligned candidate past the blocking range.
            past = lasts[i] + 1
            cand = base.first + -(-(past - base.first) // step) * step
    kind = "IPv4" if version == 4 else "IPv6"
    raise Exhausted(
        f"could not find an available, non-overlapping {kind} address pool",
        hint="free a network, or add a pool with --default-address-pool base=CIDR,size=N",
    )


def _overlap(net: netaddr.IPNetwork, taken: Iterable[Taken]) -> Taken | None:
    for t in taken:
        other = netaddr.IPNetwork(t.cidr)
        if other.version == net.version and other.first <= net.last and net.first <= other.last:
            return t
    return None


class _Spans:
    """What a set of taken ranges covers, merged and sorted once, so whether a subnet
    overlaps any of them is one bisection (O(log n)); the holder is looked up only for the
    subnet that does overlap."""

    def __init__(self, taken: Sequence[Taken]) -> None:
        self._taken = taken
        self._merged: dict[int, tuple[list[int], list[int]]] = {}
        by_version: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for t in taken:
            n = netaddr.IPNetwork(t.cidr)
            by_version[n.version].append((n.first, n.last))
        for version, ranges in by_version.items():
            self._merged[version] = _merged(ranges)

    def hit(self, net: netaddr.IPNetwork) -> Taken | None:
        firsts, lasts = self._merged[net.version]
        i = bisect.bisect_right(firsts, net.last) - 1
        if i < 0 or lasts[i] < net.first:
            return None
        return _overlap(net, self._taken)


def _first_overlap(nets: Sequence[netaddr.IPNetwork]
                   ) -> tuple[netaddr.IPNetwork, netaddr.IPNetwork] | None:
    """Two subnets of one request that overlap, found by sorting (O(n log n))."""
    ordered = sorted(nets, key=lambda n: (n.version, n.first, n.last))
    widest: netaddr.IPNetwork | None = None
    for n in ordered:
        if widest is not None and widest.version == n.version and n.first <= widest.last:
            return n, widest
        if widest is None or widest.version != n.version or n.last > widest.last:
            widest = n
    return None


def plan_subnets(
    subnets: Sequence[str],
    gateways: Sequence[str],
    ip_ranges: Sequence[str],
    aux_addresses: dict[str, str],
    *,
    ipv6: bool,
    pools: Sequence[Pool],
    taken: Sequence[Taken],
    routes: Sequence[Taken] = (),
) -> tuple[Subnet, ...]:
    """Validate a network's IPAM request and resolve it into concrete subnets.

    Gateways, ranges and aux addresses attach to the subnet that contains them (as in Docker).
    A requested subnet may not overlap ``taken`` (other networks, host addresses); a missing
    IPv4 subnet, or a missing IPv6 one with ``ipv6``, comes from the pools and avoids
    ``routes`` as well, so an explicit request may still overlap a route the user knows of.
    """
    nets = [parse_subnet(s) for s in subnets]
    pair = _first_overlap(nets)
    if pair is not None:
        raise InvalidArgument(f"subnet {pair[0]} overlaps subnet {pair[1]} of the same request")
    if any(n.version == 6 for n in nets) and not ipv6:
        raise InvalidArgument(
            f"subnet {next(n for n in nets if n.version == 6)} is IPv6 but IPv6 is not enabled",
            hint="add --ipv6",
        )
    spans = _Spans(taken)
    for n in nets:
        hit = spans.hit(n)
        if hit:
            raise Conflict(f"subnet {n} overlaps {hit.holder}")

    # The request's subnets overlap no one another: the one that could hold an address
    # is the last that starts at or before it (a bisection, not a scan).
    index = sorted(((n.version, n.first), i) for i, n in enumerate(nets))
    keys = [k for k, _ in index]

    def owner(addr: netaddr.IPAddress | netaddr.IPNetwork, what: str) -> int:
        span = netaddr.IPNetwork(addr)  # an IPAddress has no first/last
        at = bisect.bisect_right(keys, (span.version, span.first)) - 1
        if at >= 0:
            i = index[at][1]
            n = nets[i]
            if n.version == span.version and n.first <= span.first and span.last <= n.last:
                return i
        raise InvalidArgument(f"{what} {addr} is not inside any requested subnet")

    gw: dict[int, str] = {}
    for text in gateways:
        ip = parse_ip(text, "gateway")
        i = owner(ip, "gateway")
        if i in gw:
            raise InvalidArgument(f"subnet {nets[i]} has more than one gateway")
        lo, hi = _usable(nets[i])
        if not lo <= int(ip) <= hi:
            raise InvalidArgument(f"gateway {ip} is not a usable address of subnet {nets[i]}")
        gw[i] = str(ip)
    rng: dict[int, str] = {}
    for text in ip_ranges:
        r = parse_cidr(text, "ip range")
        i = owner(r, "ip range")
        if i in rng:
            raise InvalidArgument(f"subnet {nets[i]} has more than one ip range")
        rng[i] = str(r)
    aux: dict[int, dict[str, str]] = {}
    for name, text in aux_addresses.items():
        ip = parse_ip(text, f"aux address {name!r}")
        i = owner(ip, f"aux address {name}")
        aux.setdefault(i, {})[name] = str(ip)

    out: list[Subnet] = []
    for i, n in enumerate(nets):
        lo, _ = _usable(n)
        gateway = gw.get(i, str(netaddr.IPAddress(lo, version=n.version)))
        if gateway in aux.get(i, {}).values():
            raise InvalidArgument(f"gateway {gateway} is also an aux address")
        out.append(Subnet(str(n), gateway, rng.get(i), aux.get(i, {})))
    grown = list(taken) + list(routes)
    for version in (4, 6):
        if version == 6 and not ipv6:
            continue
        if not any(n.version == version for n in nets):
            cidr = free_subnet(pools, version, grown)
            n = netaddr.IPNetwork(cidr)
            grown.append(Taken(cidr, "this request"))
            out.append(Subnet(cidr, str(netaddr.IPAddress(_usable(n)[0], version=version))))
    return tuple(out)


@dataclass
class _Space:
    """Free/used addresses of one subnet. Ints, so IPv6 /64s cost what IPv4 /24s do."""

    net: netaddr.IPNetwork
    lo: int
    hi: int
    reserved: set[int]
    used: dict[int, str] = field(default_factory=dict)
    cursor: int = 0
    # The latest dynamic pick and the cursor before it, so a failed operation can undo it.
    last: tuple[int, int] | None = None
    # Pick at random (a global network: hosts sharing it would otherwise all pick the same
    # next address and race for it, over and over).
    scatter: bool = False

    def take(self, owner: str) -> int:
        span = self.hi - self.lo + 1
        if self.scatter and len(self.used) + len(self.reserved) < span // 2:
            for _ in range(16):
                cand = self.lo + secrets.randbelow(span)
                if cand not in self.used and cand not in self.reserved:
                    self.used[cand] = owner
                    self.last = (cand, self.cursor)
                    return cand
        start = self.cursor if self.lo <= self.cursor <= self.hi else self.lo
        cand = start
        # Serial allocation (continue after the last one) avoids reusing a just-freed address
        # while peers may still cache its MAC; wrap once, then give up.
        for _ in range(min(span, len(self.used) + len(self.reserved) + 1)):
            if cand not in self.used and cand not in self.reserved:
                self.used[cand] = owner
                self.last = (cand, self.cursor)
                self.cursor = cand + 1 if cand < self.hi else self.lo
                return cand
            cand = cand + 1 if cand < self.hi else self.lo
        raise Exhausted(f"no free address left in {self.net}")


class NetworkAddresses:
    """The address spaces of one network."""

    def __init__(self, subnets: Sequence[Subnet], *, scatter: bool = False) -> None:
        self.spaces: list[tuple[Subnet, _Space, tuple[int, int]]] = []
        for s in subnets:
            net = netaddr.IPNetwork(s.subnet)
            lo, hi = _usable(net)
            reserved = {int(netaddr.IPAddress(a)) for a in s.aux_addresses.values()}
            if s.gateway:
                reserved.add(int(netaddr.IPAddress(s.gateway)))
            dyn = (lo, hi)
            if s.ip_range:
                r = netaddr.IPNetwork(s.ip_range)
                dyn = (max(lo, r.first), min(hi, r.last))
            self.spaces.append((s, _Space(net, dyn[0], dyn[1], reserved, scatter=scatter),
                                (lo, hi)))

    def _space(self, version: int) -> tuple[Subnet, _Space, tuple[int, int]] | None:
        return next((x for x in self.spaces if x[0].version == version), None)

    def has(self, version: int) -> bool:
        return self._space(version) is not None

    def allocate(self, version: int, owner: str, requested: str | None = None) -> str | None:
        """An address with prefix ("10.1.0.2/24"), or None when the network has no such subnet."""
        entry = self._space(version)
        if entry is None:
            if requested:
                raise InvalidArgument(f"address {requested} requested but the network has no "
                                      f"IPv{version} subnet")
            return None
        subnet, space, (lo, hi) = entry
        if requested is None:
            value = space.take(owner)
        else:
            ip = parse_ip(requested, "ip" if version == 4 else "ip6")
            if ip.version != version:
                raise InvalidArgument(f"address {ip} is not an IPv{version} address")
            value = int(ip)
            if not lo <= value <= hi:
                raise InvalidArgument(f"address {ip} is not a usable address of {subnet.subnet}")
            if value in space.reserved:
                raise Conflict(f"address {ip} is reserved in {subnet.subnet} (gateway or aux)")
            if value in space.used:
                raise Conflict(f"address {ip} is already in use", hint=f"by {space.used[value]}")
            space.used[value] = owner
            space.last = None  # a rollback of this one must not rewind to an older pick
        return f"{netaddr.IPAddress(value, version=version)}/{space.net.prefixlen}"

    def positions(self) -> dict[str, int]:
        """Where each subnet goes on picking, to be stored (``restore`` after a restart)."""
        return {s.subnet: space.cursor for s, space, _ in self.spaces}

    def restore(self, positions: dict[str, int]) -> None:
        for s, space, _ in self.spaces:
            if s.subnet in positions:
                space.cursor = positions[s.subnet]

    def mark(self, cidr: str, owner: str) -> None:
        """Record an address already held (loading state from the store)."""
        ip = netaddr.IPNetwork(cidr).ip
        entry = self._space(ip.version)
        if entry is not None:
            entry[1].used[int(ip)] = owner

    def release(self, cidr: str | None) -> None:
        if not cidr:
            return
        ip = netaddr.IPNetwork(cidr).ip
        entry = self._space(ip.version)
        if entry is not None:
            entry[1].used.pop(int(ip), None)
            if entry[1].last is not None and entry[1].last[0] == int(ip):
                entry[1].last = None

    def rollback(self, cidr: str | None) -> None:
        """Undo an allocation of an operation that failed: unlike ``release``, the cursor
        goes back too, so the next request gets the same address (no one ever used it)."""
        if not cidr:
            return
        ip = netaddr.IPNetwork(cidr).ip
        entry = self._space(ip.version)
        if entry is None:
            return
        space, value = entry[1], int(ip)
        space.used.pop(value, None)
        if space.last is not None and space.last[0] == value:
            space.cursor = space.last[1]
            space.last = None

    def holder(self, cidr: str) -> str | None:
        ip = netaddr.IPNetwork(cidr).ip
        entry = self._space(ip.version)
        return entry[1].used.get(int(ip)) if entry else None
