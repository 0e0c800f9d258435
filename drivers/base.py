"""The driver protocol: what every network driver does, given a context it may touch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cnm.errors import InvalidArgument
from cnm.firewall import NetworkRules
from cnm.kernel.ports import HostPort, SandboxPort
from cnm.model import Endpoint, Network


@dataclass
class Context:
    """Everything a driver may act on: the host namespace and sandbox namespaces."""

    host: HostPort
    sandbox: SandboxPort


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
    # Whether networks of this driver get subnets and endpoints get addresses.
    needs_ipam: bool
    # Whether users may create networks of this driver (host and null are predefined only).
    user_creatable: bool

    def parse_options(self, raw: Mapping[str, str]) -> dict[str, str]:
        """Validate raw ``-o`` options; return their canonical form (what is stored)."""
        ...

    def create_network(self, net: Network, ctx: Context) -> None: ...

    def delete_network(self, net: Network, ctx: Context) -> None: ...

    def join(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> JoinInfo: ...

    def leave(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> None: ...

    def endpoint_alive(self, net: Network, ep: Endpoint, ctx: Context) -> bool: ...

    def kernel_links(self, net: Network) -> tuple[str, ...]:
        """Names of the host-namespace links this network owns."""
        ...


@runtime_checkable
class Publisher(Protocol):
    """A driver whose networks take part in the firewall and can publish ports."""

    def firewall_rules(self, net: Network) -> NetworkRules: ...

    def host_binding(self, net: Network) -> str: ...

    def prepare_publish(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        """Ready the endpoint for published ports (a sandbox reaching its own)."""
        ...


@runtime_checkable
class Validator(Protocol):
    """A driver with rules that span records: checked before anything is touched."""

    def validate_network(self, net: Network, others: Sequence[Network]) -> None:
        """Refuse ``net`` if it clashes with the existing networks ``others``."""
        ...

    def validate_endpoint(self, net: Network, mac: str | None,
                          holders: Sequence[str]) -> None:
        """Refuse a new endpoint (``mac`` as requested) on ``net``, whose endpoints are held
        by the sandboxes named ``holders``."""
        ...

    def parent_link(self, options: Mapping[str, str]) -> str | None:
        """The host link whose LAN the network is on (parsed ``options``): the host's own
        addresses there are no clash for its subnets."""
        ...


def refuse_options(driver: str, raw: Mapping[str, str]) -> dict[str, str]:
    if raw:
        key = sorted(raw)[0]
        raise InvalidArgument(f"unknown option {key!r} for driver {driver}: it takes no options")
    return {}


def parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise InvalidArgument(f"invalid value {value!r} for option {key}: expected true or false")
