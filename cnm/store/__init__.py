"""The store interface: what the core needs from a place that keeps the truth.

The kernel is made to match the store. An implementation keeps networks, sandboxes,
endpoints and their published ports, and writes one operation's changes together or not at
all (``transaction``), refusing a write that would hold something twice with ``Held`` (a
``Conflict``): a network name, a subnet overlapping another network's, a driver's claim (a
bridge name, a VNI), an address of a network, an endpoint name, a host port. It refuses even
if a bug slipped past the core's lock, and even when the other holder is another host sharing
the store: the core then picks another subnet or address and tries again. That makes the
store, not the core's memory, the place where allocation is atomic.

``cnm.store.sqlite`` implements it on one host. A network's ``scope`` says which store owns
it: "local" networks live in this host's store; "global" ones (overlay) in a store every host
shares, which implements the same interface.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from cnm.errors import Conflict
from cnm.model import Endpoint, Network, Sandbox
from cnm.portspec import PortMapping


class Held(Conflict):
    """A write would hold what another record holds: an address, a name or a host port.

    On a store several hosts share, this is how an allocation races are lost: the host
    that commits second is told which value was taken, picks another and tries again.
    """

    def __init__(self, message: str, *, kind: str, network_id: str | None = None,
                 value: str = "") -> None:
        super().__init__(message)
        # "network" (a network name), "subnet", "claim" (a driver's: a bridge, a VNI),
        # "address", "name" (an endpoint's), "sandbox" (one endpoint per network), "port"
        self.kind = kind
        self.network_id = network_id
        self.value = value


@dataclass
class State:
    networks: list[Network]
    sandboxes: list[Sandbox]
    endpoints: list[Endpoint]
    # network id -> subnet -> where its IPAM goes on picking (``Tx.put_cursor``)
    cursors: dict[str, dict[str, int]] = field(default_factory=dict)


class Tx(Protocol):
    """The writes of one operation; committed together or not at all."""

    def put_network(self, n: Network, claims: Sequence[str] = ()) -> None:
        """The network, holding its name, its subnets (none may overlap another network's)
        and ``claims``: what its driver makes that no other network may share
        (``Driver.claims``)."""
        ...

    def delete_network(self, network_id: str) -> None: ...

    def put_sandbox(self, s: Sandbox) -> None: ...

    def delete_sandbox(self, sandbox_id: str) -> None: ...

    def put_endpoint(self, e: Endpoint) -> None:
        """The endpoint and all its published ports (replacing what it had)."""
        ...

    def add_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None: ...

    def delete_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None: ...

    def delete_endpoint(self, endpoint_id: str) -> None:
        """The endpoint and its published ports."""
        ...

    def put_cursor(self, network_id: str, subnet: str, position: int) -> None:
        """Where the IPAM of ``subnet`` goes on picking: kept, so that after a restart a
        just-freed address is not handed straight out again while peers still cache its
        old MAC. Gone with its network."""
        ...


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[Tx]: ...

    def load(self) -> State: ...

    def close(self) -> None: ...
