"""The records the kernel adapters take and return, apart from the adapters: this module
imports nothing with side effects (no pyroute2), so drivers and fakes may use it freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class LinkInfo:
    name: str
    index: int
    kind: str
    alias: str | None
    master: int | None


@dataclass(frozen=True)
class ParentInfo:
    """What a network needs to know of a would-be parent link in the host namespace."""

    name: str
    index: int
    kind: str
    up: bool
    ether: bool  # an Ethernet link, not loopback: the only kind macvlan and ipvlan take
    master: str | None  # the bridge or bond it is a port of
    alias: str | None
    mac: str
    addresses: tuple[str, ...] = ()  # the host's own, "192.168.5.10/24"


@dataclass(frozen=True)
class SlaveSpec:
    """One macvlan or ipvlan link on ``parent``; ``netns`` None is the host namespace."""

    ifname: str
    parent: str
    kind: str  # "macvlan" or "ipvlan"
    mode: str  # a key of lower.MACVLAN_MODES or lower.IPVLAN_MODES
    flag: str = "bridge"  # ipvlan only: a key of lower.IPVLAN_FLAGS
    mac: str | None = None  # macvlan only (passthru takes the parent's); None: the kernel's
    netns: str | None = None


@dataclass(frozen=True)
class Occupied:
    """A range the host namespace already uses: an address on a link, or a route via one."""

    cidr: str  # the network, "192.0.2.0/24"
    kind: Literal["address", "route"]
    device: str | None  # the link's name; None when the kernel did not say
    address: str | None = None  # kind "address": the address itself, "192.0.2.10/24"

    @property
    def holder(self) -> str:
        """The words that name it in an error."""
        dev = self.device or "?"
        if self.kind == "address":
            return f"address {self.address or self.cidr} on {dev} in the host namespace"
        return f"route {self.cidr} via {dev} in the host namespace"
