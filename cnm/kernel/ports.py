"""The two kernel ports: what drivers and the controller may ask of the kernel.

``HostPort`` acts on the managed host namespace, ``SandboxPort`` inside sandbox
namespaces. The real adapters (``cnm.kernel.link.HostLinks`` and ``SandboxLinks``) and the
fakes (``cnm.testing.FakeHostLinks`` and ``FakeSandboxLinks``) implement them
structurally; neither subclasses the other. The records the ports take and return live
here too, so this module imports nothing with side effects (no pyroute2).

Teardown methods treat "already gone" as success; every other failure is a CnmError.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from cnm.errors import Unsupported
from cnm.esp import EspPlan

# One default route of a sandbox: (ip version, gateway, ifname).
DefaultRoute: TypeAlias = tuple[int, str, str]


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
class VxlanSpec:
    """An overlay network's VXLAN device in the host namespace."""

    name: str
    alias: str
    vni: int
    port: int
    local: str  # this host's underlay address (the VTEP)
    master: str  # the network's bridge
    mtu: int


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


@dataclass(frozen=True)
class LinkState:
    """What a check needs of one link: whether it is up, its bridge, its addresses."""

    name: str
    up: bool
    master: str | None  # the name of the bridge (or bond) it is a port of
    addresses: tuple[str, ...] = ()  # global scope ones, "10.1.0.1/24"


@dataclass(frozen=True)
class SandboxState:
    """What a check needs of one sandbox namespace: its links (loopback left out), its
    default routes and the port its DNS redirect (127.0.0.11:53) leads to."""

    links: dict[str, LinkState]
    routes: tuple[DefaultRoute, ...]
    dns_port: int | None  # None: no redirect (for both UDP and TCP to the same port)


class HostPort(Protocol):
    """Links, addresses and routes of the managed host namespace."""

    def retire(self, name: str) -> None:
        """Take a link out of service now; it is deleted soon (``reap``). Gone is fine."""
        ...

    def reap(self) -> None:
        """Delete every retired link now."""
        ...

    def close(self) -> None:
        """Reap a last time and stop background work."""
        ...

    def links(self) -> list[LinkInfo]: ...

    def exists(self, name: str) -> bool: ...

    def attached(self, name: str, master: str) -> bool:
        """True when link ``name`` exists, is up and is a port of ``master``."""
        ...

    def ensure_bridge(self, name: str, alias: str, mtu: int | None, addresses: Sequence[str],
                      mac: str) -> bool:
        """Create the bridge, or bring an existing cnm bridge in line. True if created."""
        ...

    def set_hairpin(self, name: str) -> None:
        """Let a bridge port send frames back out the port they came in on."""
        ...

    def delete_link(self, name: str) -> None:
        """Delete a link now. Gone is fine."""
        ...

    def add_veth(self, name: str, alias: str, peer: str, peer_netns: str, peer_mac: str,
                 master: str | None, mtu: int | None) -> None:
        """A veth pair whose peer is created directly inside ``peer_netns``."""
        ...

    def move_link(self, name: str, netns: str, new_name: str, mac: str | None) -> None:
        """Move the host link ``name`` (a remote plugin's) into the namespace at ``netns``,
        renamed ``new_name``, with ``mac`` when given; it arrives down."""
        ...

    def supports(self, kind: str) -> bool:
        """Whether the kernel has links of ``kind``."""
        ...

    def parent_info(self, name: str) -> ParentInfo | None: ...

    def ensure_dummy(self, name: str, alias: str) -> bool:
        """A dummy link marked ``alias``, up. True if created."""
        ...

    def ensure_vlan(self, name: str, base: str, vid: int, alias: str) -> bool:
        """The 802.1q sub-interface ``name`` of ``base`` with id ``vid``, marked, up."""
        ...

    def delete_owned(self, name: str, alias: str) -> None:
        """Delete link ``name`` only if it carries ``alias``. Gone is fine."""
        ...

    def add_slave(self, spec: SlaveSpec) -> str:
        """A macvlan/ipvlan link, made directly in ``spec.netns``; returns its MAC."""
        ...

    def ensure_shim(self, spec: SlaveSpec, alias: str, addresses: Sequence[str],
                    routes: Sequence[str]) -> bool:
        """The host's own slave on a parent, with addresses and routes to the sandboxes."""
        ...

    def occupied(self) -> list[Occupied]:
        """Every address (not loopback or link-local) and non-default route of the host."""
        ...

    def mtu_towards(self, address: str) -> int:
        """The MTU of the host link that holds ``address`` (an overlay's underlay)."""
        ...

    def ensure_vxlan(self, spec: VxlanSpec) -> bool:
        """The VXLAN device of ``spec`` (no learning, ARP/ND proxy), a port of its bridge,
        up. True if created."""
        ...

    def set_peer(self, device: str, mac: str, addresses: Sequence[str], vtep: str,
                 present: bool) -> None:
        """Frames for ``mac`` go to ``vtep`` on VXLAN ``device``, whose proxy answers ARP/ND
        for ``addresses`` with it (``present``); or no longer. Gone is fine."""
        ...

    def apply_esp(self, plan: EspPlan) -> None:
        """Make cnm's XFRM SAs, policies and its ESP nft table match ``plan`` (cnm.esp);
        what others made is never touched."""
        ...

    def ports_of(self, bridge: str) -> list[str]:
        """The names of the bridge's ports (none when it does not exist)."""
        ...

    def link_state(self, name: str) -> LinkState | None:
        """Link ``name`` as a check sees it, or None when it does not exist."""
        ...


class SandboxPort(Protocol):
    """Sandbox namespaces (by the path they are bound at) and the links inside them."""

    def identity(self, path: str) -> str | None:
        """The identity of the namespace at ``path`` ("dev:inode", the same through every
        path to it), or None when ``path`` is no live network namespace."""
        ...

    def release(self, path: str) -> None:
        """Let go of a namespace cnm did not make: its DNS redirect, cnm's handle on it."""
        ...

    def create_netns(self, path: str) -> None:
        """A new network namespace bound at ``path``, loopback up."""
        ...

    def delete_netns(self, path: str) -> None:
        """Unbind and remove the namespace. Gone is fine."""
        ...

    def configure(self, path: str, ifname: str, addresses: Sequence[str]) -> None:
        """Give an interface its addresses and bring it up."""
        ...

    def set_default_routes(self, path: str, routes: Sequence[DefaultRoute],
                           known: Sequence[DefaultRoute] | None = None) -> None:
        """Make the default routes exactly ``routes``; ``known`` is what is there now."""
        ...

    def retire(self, path: str, ifname: str, new_name: str,
               addresses: Sequence[str] | None = None) -> None:
        """Take an interface out of the sandbox's view (down, no addresses, renamed)."""
        ...

    def open_dns(self, path: str) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP sockets that answer the sandbox's queries to its DNS address."""
        ...

    def remove(self, path: str, ifname: str) -> None:
        """Delete an interface of the sandbox. Gone is fine."""
        ...

    def links(self, path: str) -> list[LinkInfo]: ...

    def inspect(self, path: str) -> SandboxState:
        """The sandbox as a check sees it (cnm doctor)."""
        ...


# The module that provides each link kind a kernel may lack (what Unsupported names).
MODULES = {"macvlan": "macvlan", "ipvlan": "ipvlan", "vlan": "8021q", "dummy": "dummy"}


def unsupported(kind: str, what: str) -> Unsupported:
    module = MODULES.get(kind, kind)
    return Unsupported(f"this kernel has no {kind} links (module {module}): {what}",
                       hint="use a kernel with it built in or load the module")
