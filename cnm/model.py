"""The CNM records (what is stored) and specs (what a user asks for).

Records are frozen; a change makes a new record (``dataclasses.replace``). Their dict form is
both the store's document and the API's JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cnm.portspec import PortMapping

PREDEFINED = ("bridge", "host", "none")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Subnet:
    """One IPAM pool of a network: a subnet with its gateway, range and reserved addresses."""

    subnet: str
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return 6 if ":" in self.subnet else 4


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    created: str
    subnets: tuple[Subnet, ...] = ()
    ipv6: bool = False
    internal: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # "local": this host's store only; "global": shared by every host (overlay).
    scope: str = "local"

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        subnets = tuple(Subnet(**s) for s in d.get("subnets", ()))
        return cls(**{**d, "subnets": subnets})


@dataclass(frozen=True)
class Endpoint:
    """One interface of one sandbox on one network. Created (its addresses, MAC, names and
    host ports reserved) before it joins a sandbox: ``sandbox_id`` is None until then."""

    id: str
    network_id: str
    sandbox_id: str | None
    created: str
    # Unique in its network; an endpoint made by connect is named after its sandbox.
    name: str = ""
    # Made by `endpoint create` (it outlives a sandbox it joined), not by connect.
    standalone: bool = False
    ifname: str = ""
    mac: str = ""
    ipv4: str | None = None  # "10.1.0.2/24"
    ipv6: str | None = None
    gateway4: str | None = None  # from the driver's join; None on internal networks
    gateway6: str | None = None
    aliases: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    # Monotonic order of connection within a sandbox: the first gives the default route.
    order: int = 0

    @property
    def joined(self) -> bool:
        return self.sandbox_id is not None

    @property
    def cidrs(self) -> list[str]:
        """Its addresses with their prefix lengths ("10.1.0.2/24")."""
        return [a for a in (self.ipv4, self.ipv6) if a]

    @property
    def ip4(self) -> str | None:
        """Its IPv4 address alone ("10.1.0.2")."""
        return self.ipv4.partition("/")[0] if self.ipv4 else None

    @property
    def ip6(self) -> str | None:
        return self.ipv6.partition("/")[0] if self.ipv6 else None

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every port mapping only for
        # the copies to be thrown away below: ~6 us a mapping, on every store write.
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["aliases"] = list(self.aliases)
        d["ports"] = [p.to_dict() for p in self.ports]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Endpoint:
        return cls(**{**d, "aliases": tuple(d.get("aliases", ())),
                      "ports": tuple(PortMapping.from_dict(p) for p in d.get("ports", ()))})


@dataclass(frozen=True)
class Sandbox:
    id: str
    name: str
    hostname: str
    created: str
    # "netns": a namespace cnm made; "host": the sandbox is the host namespace;
    # "external": a namespace a runtime made, adopted by path (cnm never deletes it);
    # "handover": a namespace the runtime plumbs itself (Docker's remote-driver protocol):
    # cnm never enters it, a join leaves the endpoint's link in the host namespace for the
    # runtime to move in, and the runtime sets addresses, routes and files.
    kind: str = "netns"
    labels: dict[str, str] = field(default_factory=dict)
    # An external sandbox's namespace: its path, and the identity ("dev:inode") it had
    # when adopted (a /proc/PID path may later name another process's namespace).
    netns: str = ""
    netns_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sandbox:
        return cls(**d)


@dataclass(frozen=True)
class Peer:
    """A joined endpoint of a global network on another host, as its host announced it in
    the cluster store: what the overlay's data plane and the embedded DNS need of it."""

    network_id: str
    endpoint_id: str
    sandbox_id: str
    host: str  # the host's advertise address: its VTEP
    mac: str
    ipv4: str | None = None
    ipv6: str | None = None
    sandbox_name: str = ""
    names: tuple[str, ...] = ()
    name: str = ""  # the endpoint's

    @property
    def cidrs(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Peer:
        return cls(**{**d, "names": tuple(d.get("names", ()))})


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    driver: str = "bridge"
    subnets: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    aux_addresses: dict[str, str] = field(default_factory=dict)
    ipv6: bool = False
    internal: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointSpec:
    """An endpoint to reserve on ``network`` (`cnm endpoint create`)."""

    network: str
    name: str
    ip: str | None = None
    ip6: str | None = None
    aliases: tuple[str, ...] = ()
    mac: str | None = None
    ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConnectSpec:
    network: str
    sandbox: str
    ip: str | None = None
    ip6: str | None = None
    aliases: tuple[str, ...] = ()
    mac: str | None = None
    ports: tuple[str, ...] = ()
    # The interface name inside the sandbox (CNI_IFNAME, Docker's DstPrefix); "" picks one.
    ifname: str = ""


@dataclass(frozen=True)
class SandboxSpec:
    name: str
    network: str = "bridge"
    ip: str | None = None
    ip6: str | None = None
    aliases: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    hostname: str | None = None
    mac: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # Adopt this existing namespace (a container's) instead of making one.
    netns: str | None = None
    ifname: str = ""
