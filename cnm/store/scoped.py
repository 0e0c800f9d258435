"""The store of a host in a cluster: its own records in the local store, global networks
and their endpoints in the cluster's (etcd), behind cnm.store's one interface.

A network's ``scope`` says which store owns it, and an endpoint goes where its network is;
sandboxes are always the host's own. A transaction writes to both: the global part commits
first (its refusals, ``Held`` or the cluster being unreachable, then roll the local part
back, so nothing is written), the local part after it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from cnm.model import Endpoint, Network, Sandbox
from cnm.portspec import PortMapping
from cnm.store import State, Store
from cnm.store import Tx as LocalTx
from cnm.store.etcd import EtcdStore
from cnm.store.etcd import Tx as GlobalTx

log = logging.getLogger("cnm.store")


class Tx:
    def __init__(self, store: ScopedStore, local: LocalTx, global_: GlobalTx) -> None:
        self.s = store
        self.local = local
        self.global_ = global_
        self.nets: dict[str, bool] = {}  # network id -> global, as this transaction wrote
        self.eps: dict[str, bool] = {}

    def _net_global(self, network_id: str) -> bool:
        return self.nets.get(network_id, network_id in self.s.global_networks)

    def _ep_global(self, endpoint_id: str) -> bool:
        return self.eps.get(endpoint_id, endpoint_id in self.s.global_endpoints)

    def put_network(self, n: Network, claims: Sequence[str] = ()) -> None:
        glob = n.scope == "global"
        (self.global_ if glob else self.local).put_network(n, claims)
        self.nets[n.id] = glob

    def delete_network(self, network_id: str) -> None:
        (self.global_ if self._net_global(network_id) else self.local).delete_network(
            network_id)

    def put_sandbox(self, s: Sandbox) -> None:
        self.local.put_sandbox(s)

    def delete_sandbox(self, sandbox_id: str) -> None:
        self.local.delete_sandbox(sandbox_id)

    def put_endpoint(self, e: Endpoint) -> None:
        glob = self._net_global(e.network_id)
        (self.global_ if glob else self.local).put_endpoint(e)
        self.eps[e.id] = glob

    def add_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None:
        (self.global_ if self._ep_global(endpoint_id) else self.local).add_ports(
            endpoint_id, mappings)

    def delete_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None:
        (self.global_ if self._ep_global(endpoint_id) else self.local).delete_ports(
            endpoint_id, mappings)

    def delete_endpoint(self, endpoint_id: str) -> None:
        (self.global_ if self._ep_global(endpoint_id) else self.local).delete_endpoint(
            endpoint_id)


    def put_cursor(self, network_id: str, subnet: str, position: int) -> None:
        (self.global_ if self._net_global(network_id) else self.local).put_cursor(
            network_id, subnet, position)


class ScopedStore:
    def __init__(self, local: Store, global_: EtcdStore) -> None:
        self.local = local
        self.global_ = global_
        self.global_networks: set[str] = set()
        self.global_endpoints: set[str] = set()

    def note_network(self, network_id: str, present: bool) -> None:
        """A global network another host created (or removed): its writes go to etcd."""
        (self.global_networks.add if present else self.global_networks.discard)(network_id)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.local.transaction() as ltx:
            tx = Tx(self, ltx, GlobalTx(self.global_))
            yield tx
            tx.global_.commit()
        for network_id, glob in tx.nets.items():
            if glob:
                self.global_networks.add(network_id)
        for endpoint_id, glob in tx.eps.items():
            if glob:
                self.global_endpoints.add(endpoint_id)

    def load(self) -> State:
        mine = self.local.load()
        shared = self.global_.load()
        self.global_networks = {n.id for n in shared.networks}
        self.global_endpoints = {e.id for e in shared.endpoints}
        return State(mine.networks + shared.networks, mine.sandboxes,
                     mine.endpoints + shared.endpoints, {**mine.cursors, **shared.cursors})

    def close(self) -> None:
        self.local.close()
        self.global_.close()
