"""The driver contract: what a network driver declares and does, given a context it may touch.

A driver declares one frozen ``Capabilities`` record; the core reads it instead of asking
what class a driver is, so a driver known only at run time (a remote plugin) fits the same
contract. Options are parsed once into the driver's own typed record (``parse_options``)
and kept per network (``options``). The endpoint life cycle is libnetwork's:
``create_endpoint`` (reserve: nothing in a sandbox yet) → ``join`` → ``leave`` →
``delete_endpoint``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from cnm.antispoof import PortGuard
from cnm.errors import InvalidArgument
from cnm.firewall import NetworkRules
from cnm.kernel.ports import HostPort, SandboxPort
from cnm.model import Endpoint, Network, Peer


@dataclass
class Context:
    """Everything a driver may act on: the host namespace and sandbox namespaces."""

    host: HostPort
    sandbox: SandboxPort
    # A dry run's recorders: a driver whose work is not through them (a remote plugin's
    # calls) must refuse rather than do it.
    dry_run: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a driver's networks are and get, declared once."""

    # "local": its networks live in this host's store; "global": in the store all hosts
    # share (overlay).
    scope: Literal["local", "global"] = "local"
    # Its networks get subnets and its endpoints addresses (IPAM).
    ipam: bool = True
    # User-defined networks of it get the embedded DNS (the default bridge never does).
    dns: bool = True
    # Its networks take part in cnm's firewall and can publish ports.
    publishes: bool = False
    # Where an endpoint's link is made: a veth pair ("veth"), a slave of a parent link
    # made inside the sandbox ("slave"), a link a remote plugin made in the host namespace
    # and cnm moves in ("moved"), or none at all ("none").
    link: Literal["veth", "slave", "moved", "none"] = "veth"
    # Users may create networks of it (null and host have one pre-defined network each).
    user_creatable: bool = True
    # A sandbox on it *is* the host namespace (host): no namespace of its own.
    host_namespace: bool = False
    # A sandbox on it may be on no other network (null: loopback only).
    exclusive: bool = False


class Options(Protocol):
    """A driver's parsed options; ``to_dict`` is their canonical (stored) form."""

    def to_dict(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class NoOptions:
    def to_dict(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class JoinInfo:
    """What the sandbox needs after a join: the interface to configure and its gateways."""

    interface: bool = True
    # (ip version, gateway); the unspecified address (0.0.0.0, ::) routes out of the
    # interface itself, with no gateway (ipvlan L3).
    gateways: tuple[tuple[int, str], ...] = field(default_factory=tuple)
    # The MAC the interface really has, when not the endpoint's (ipvlan shares its parent's).
    mac: str | None = None


class Driver(Protocol):
    name: str
    capabilities: Capabilities

    def parse_options(self, raw: Mapping[str, str]) -> Options:
        """Validate raw ``-o`` options (pure); unknown keys and bad values are refused."""
        ...

    def validate_network(self, net: Network, others: Sequence[Network]) -> None:
        """Refuse ``net`` if it clashes with the existing networks ``others``."""
        ...

    def lan_link(self, net: Network) -> str | None:
        """The host link whose LAN the network is on: the host's own addresses there are
        no clash for its subnets."""
        ...

    def create_network(self, net: Network, ctx: Context) -> None: ...

    def restore_network(self, net: Network, ctx: Context) -> None:
        """At start: make a stored network's links exist again (cnm's drivers create them
        idempotently; a remote plugin keeps its own networks and is not asked again)."""
        ...

    def delete_network(self, net: Network, ctx: Context) -> None: ...

    def create_endpoint(self, net: Network, ep: Endpoint, mac: str | None,
                        holders: Callable[[], Sequence[str]], ctx: Context) -> None:
        """Reserve ``ep`` (``mac`` as requested) on ``net``; refuse it if the network cannot
        take it. ``holders()`` says who holds the network's endpoints, as the user knows them
        ('sandbox "a"'): called only by a driver that needs it (a connect must not pay for
        listing a thousand endpoints). Nothing in a sandbox yet."""
        ...

    def delete_endpoint(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        """Give back what ``create_endpoint`` took, and a handed-over link end the runtime
        moved back to the host namespace after its Leave (``names.handover_name``)."""
        ...

    def join(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> JoinInfo:
        """Make the endpoint's link with its sandbox end named ``ep.ifname`` in ``netns``.
        For a sandbox the runtime plumbs itself (kind "handover", Docker's), ``netns`` is
        the host namespace: the end is left there for the runtime to move in, and the core
        configures nothing inside. A driver need not tell the two apart."""
        ...

    def leave(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> None:
        """Undo ``join``; a handover end may be back in the host namespace (the runtime
        gives it back under its name) or gone with the runtime's namespace."""
        ...

    def endpoint_alive(self, net: Network, ep: Endpoint, ctx: Context) -> bool: ...

    def kernel_links(self, net: Network) -> tuple[str, ...]:
        """Names of the host-namespace links this network needs (reconcile checks them)."""
        ...

    def gateway_links(self, net: Network) -> dict[str, tuple[str, ...]]:
        """The host links of the network that hold its gateway addresses, with them (a
        bridge's): cnm doctor checks that each is up and holds them."""
        ...

    def host_link(self, net: Network, ep: Endpoint) -> str | None:
        """The host-namespace end of a joined endpoint's link (a veth's peer), where
        tcpdump on the host sees its traffic; None when it has none there."""
        ...

    def claims(self, net: Network) -> tuple[str, ...]:
        """The host links this network makes and no other network may share (its bridge)."""
        ...

    def firewall_rules(self, net: Network) -> NetworkRules | None:
        """The network's part of cnm's table (publishing drivers only)."""
        ...

    def guard(self, net: Network, ep: Endpoint) -> PortGuard | None:
        """What may enter the network from the endpoint's host-side port (anti-spoofing),
        or None when its frames are not checked there."""
        ...

    def host_binding(self, net: Network) -> str:
        """The host address published ports bind to by default ("" = every address)."""
        ...

    def prepare_publish(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        """Ready a joined endpoint for published ports (a sandbox reaching its own)."""
        ...

    def remote(self, net: Network, peer: Peer, present: bool, ctx: Context) -> None:
        """A joined endpoint of the (global) network on another host appeared or changed
        (``present``), or went: the data plane towards it follows."""
        ...


Opts = TypeVar("Opts", bound=Options)


class BaseDriver(Generic[Opts]):
    """Defaults for the parts of the contract a driver has nothing to do in, and the
    per-network cache of parsed options."""

    name = ""
    capabilities = Capabilities()

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[dict[str, str], Opts]] = {}

    def parse_options(self, raw: Mapping[str, str]) -> Opts:
        raise NotImplementedError

    def options(self, net: Network) -> Opts:
        """The network's options, parsed once and kept (until its record changes)."""
        hit = self._parsed.get(net.id)
        if hit is None or hit[0] is not net.options:
            hit = (net.options, self.parse_options(net.options))
            self._parsed[net.id] = hit
        return hit[1]

    def validate_network(self, net: Network, others: Sequence[Network]) -> None:
        pass

    def lan_link(self, net: Network) -> str | None:
        return None

    def create_network(self, net: Network, ctx: Context) -> None:
        pass

    def restore_network(self, net: Network, ctx: Context) -> None:
        self.create_network(net, ctx)

    def delete_network(self, net: Network, ctx: Context) -> None:
        self._parsed.pop(net.id, None)

    def create_endpoint(self, net: Network, ep: Endpoint, mac: str | None,
                        holders: Callable[[], Sequence[str]], ctx: Context) -> None:
        pass

    def delete_endpoint(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        pass

    def join(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> JoinInfo:
        return JoinInfo(interface=False)

    def leave(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> None:
        pass

    def endpoint_alive(self, net: Network, ep: Endpoint, ctx: Context) -> bool:
        return True

    def kernel_links(self, net: Network) -> tuple[str, ...]:
        return ()

    def gateway_links(self, net: Network) -> dict[str, tuple[str, ...]]:
        return {}

    def host_link(self, net: Network, ep: Endpoint) -> str | None:
        return None

    def claims(self, net: Network) -> tuple[str, ...]:
        return ()

    def firewall_rules(self, net: Network) -> NetworkRules | None:
        return None

    def guard(self, net: Network, ep: Endpoint) -> PortGuard | None:
        return None

    def host_binding(self, net: Network) -> str:
        return ""

    def prepare_publish(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        pass

    def remote(self, net: Network, peer: Peer, present: bool, ctx: Context) -> None:
        pass


def refuse_options(driver: str, raw: Mapping[str, str]) -> NoOptions:
    if raw:
        key = sorted(raw)[0]
        raise InvalidArgument(f"unknown option {key!r} for driver {driver}: it takes no options")
    return NoOptions()


def parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(f"invalid value {value!r} for option {key}: expected true or false")
