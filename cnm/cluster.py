"""This host in a cluster: its lease, its announcements, and its watch of the others.

cnmd holds one etcd lease (``--cluster-ttl``, default 10 s), renewed every third of it. Its
host record and its peers (the joined endpoints of global networks, ``P/peer/NET/SANDBOX``)
live under that lease, so a host that dies vanishes from every other host within the TTL,
while the endpoints' reservations (addresses, names) stay. A watch of the whole prefix,
resumed from the last revision it saw after any break (another member, the same member
back), applies what the other hosts do (``cnm.core.remote``, under the controller's lock).
When the cluster comes back after an outage longer than the lease, the lease is granted
again and this host's records put again: nothing needs a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import requests

from cnm.errors import CnmError
from cnm.esp import KeyDoc, KeyRing, rotate
from cnm.model import Endpoint, Network, Peer
from cnm.store.etcd import EtcdStore
from cnm.store.etcdclient import KV, Compacted, Stream, Tls

if TYPE_CHECKING:
    from cnm.core import Controller
    from cnm.store.scoped import ScopedStore

log = logging.getLogger("cnm.cluster")


@dataclass(frozen=True)
class ClusterConfig:
    endpoints: tuple[tuple[str, int], ...]
    advertise: str
    ttl: int = 10
    timeout: float = 5.0
    tls: Tls | None = None
    prefix: str = "/cnm/"
    key_rotation: float = 12 * 3600.0  # --cluster-key-rotation, seconds


class Cluster:
    def __init__(self, store: EtcdStore, config: ClusterConfig) -> None:
        self.store = store
        self.client = store.client
        self.config = config
        self.me = config.advertise
        self.p = store.prefix
        self.lease = 0
        self.controller: Controller | None = None
        self.scoped: ScopedStore | None = None
        self.mine: dict[str, str] = {}  # peer key -> its document (this host's)
        self.pending: set[str] = set()  # peer keys to delete once the store is back
        self.rev = 0
        self._stop = threading.Event()
        self._stream = Stream()
        self._threads: list[threading.Thread] = []
        self._mu = threading.Lock()
        # Set once the watch has applied everything up to the revision the sync read.
        self.synced = threading.Event()
        # The cluster key of encrypted overlays (P/key, cnm.esp), and who reprograms ESP
        # when it changes or when a rotation's switch or grace comes (under the core's
        # lock; wiring sets it to the overlay driver's refresh).
        self.keys = KeyRing(config.key_rotation)
        self.on_keys: Callable[[], None] | None = None

    # ------------------------------------------------------------------ start
    def connect(self) -> None:
        """The lease and the host record (before the core starts: its reconcile announces
        this host's joined endpoints under the lease)."""
        self.lease = self.client.grant(self.config.ttl)
        self.client.put(f"{self.p}host/{self.me}", json.dumps({"address": self.me}),
                        self.lease)
        # The key before the core starts: its reconcile reprograms the SAs with it.
        self._rotate()

    def _rotate(self) -> bool:
        """The cluster key, rotated when due (one host of those racing writes it); True
        if what this host knows of it changed. The store is asked outside the core's
        lock, the ring changed under it (the driver reads it under that lock)."""
        now = time.time()
        doc = self.keys.doc
        if doc is not None and now - doc.current.created < self.config.key_rotation:
            return False
        got, wrote = rotate(self.client, f"{self.p}key", self.config.key_rotation, now)
        if wrote:
            log.info("cluster key: generation %d", got.current.generation)
        c = self.controller
        with c.lock if c is not None else contextlib.nullcontext():
            return self.keys.update(got, time.monotonic())

    def _key_changed(self) -> None:
        c = self.controller
        if self.on_keys is not None and c is not None:
            with c.lock:
                self.on_keys()

    def _key_loop(self) -> None:
        """Rotate when due, and reprogram ESP while a rotation's switch and grace run."""
        every = min(1.0, self.config.key_rotation / 20)
        while not self._stop.wait(every):
            try:
                due = self.keys.due(time.monotonic())
                if self._rotate() or due:
                    self._key_changed()
            except CnmError as e:
                log.warning("cluster key: %s", e.message)

    def attach(self, controller: Controller, scoped: ScopedStore) -> None:
        self.controller = controller
        self.scoped = scoped
        controller.state.cluster = self

    def sync(self) -> None:
        """Everything the other hosts hold now, applied (the start's resync, and after a
        compaction): networks, endpoints' addresses, peers; what went while this host was
        not watching goes here too."""
        c = self.controller
        assert c is not None
        rev, nets = self.client.prefix(f"{self.p}net/")
        _, eps = self.client.prefix(f"{self.p}ep/", revision=rev)
        _, peers = self.client.prefix(f"{self.p}peer/", revision=rev)
        _, key, _ = self.client.range(f"{self.p}key", revision=rev)
        with c.lock:
            if key and self.keys.update(KeyDoc.loads(key[0].value), time.monotonic()) and \
                    self.on_keys is not None:
                self._try(self.on_keys)
            shared = {kv.key.rsplit("/", 1)[1] for kv in nets}
            for net_id in [i for i, n in c.state.networks.items()
                           if n.scope == "global" and i not in shared]:
                self._network_gone(net_id)
            for kv in nets:
                self._network(kv)
            for kv in eps:
                self._endpoint(kv, True)
            live = {kv.key for kv in peers}
            for known in list(c.state.peers.values()):
                for peer in list(known.values()):
                    if self._peer_key(peer.network_id, peer.sandbox_id) not in live:
                        c.remote.peer(peer, False)
            for kv in peers:
                self._peer(kv, True)
            self.rev = rev
        self.synced.set()

    def start(self) -> None:
        for target, name in ((self._keepalive, "cnm-cluster-lease"),
                             (self._watch, "cnm-cluster-watch"),
                             (self._key_loop, "cnm-cluster-key")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        """Stop renewing and watching (the lease is left to expire, as a crash would: the
        sandboxes stay, and a restart within the TTL changes nothing for the others)."""
        self._stop.set()
        self._stream.abort()  # the watch's read wakes at once (it is a daemon thread)
        for t in self._threads:
            t.join(timeout=2)

    # ------------------------------------------------------------------ announcements
    def _peer_key(self, network_id: str, sandbox_id: str) -> str:
        return f"{self.p}peer/{network_id}/{sandbox_id}"

    def announce(self, peer: Peer) -> None:
        key = self._peer_key(peer.network_id, peer.sandbox_id)
        doc = json.dumps(replace(peer, host=self.me).to_dict())
        with self._mu:
            self.pending.discard(key)
            self.mine[key] = doc
        try:
            self.client.put(key, doc, self.lease)
        except BaseException:
            with self._mu:
                self.mine.pop(key, None)
            raise

    def withdraw(self, network_id: str, sandbox_id: str) -> None:
        """Never fails: a withdrawal the store could not take now is retried when it is
        back (and the lease takes it away anyway if this host is gone by then)."""
        key = self._peer_key(network_id, sandbox_id)
        with self._mu:
            self.mine.pop(key, None)
        try:
            self.client.delete(key)
        except CnmError as e:
            log.warning("withdrawing %s: %s; retrying when the store is back", key, e.message)
            with self._mu:
                self.pending.add(key)

    # ------------------------------------------------------------------ the lease
    def _keepalive(self) -> None:
        every = max(0.5, self.config.ttl / 3)
        while not self._stop.wait(every):
            try:
                if self.client.keepalive(self.lease) <= 0:
                    log.warning("the cluster lease expired (an outage longer than %d s): "
                                "registering again", self.config.ttl)
                    self._register_again()
                self._flush_pending()
            except CnmError as e:
                log.warning("cluster lease: %s", e.message)

    def _register_again(self) -> None:
        self.lease = self.client.grant(self.config.ttl)
        self.client.put(f"{self.p}host/{self.me}", json.dumps({"address": self.me}),
                        self.lease)
        with self._mu:
            mine = dict(self.mine)
        for key, doc in mine.items():
            self.client.put(key, doc, self.lease)

    def _flush_pending(self) -> None:
        with self._mu:
            keys = list(self.pending)
        for key in keys:
            self.client.delete(key)
            with self._mu:
                self.pending.discard(key)

    # ------------------------------------------------------------------ the watch
    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                for rev, events in self.client.watch(self.p, self.rev + 1, self._stop,
                                                     self._stream):
                    if events:
                        self._apply(events)
                    if rev:
                        self.rev = max(self.rev, rev)
            except Compacted:
                log.warning("the store compacted past revision %d: resyncing", self.rev)
                self._try(self.sync)
            except (CnmError, OSError, requests.exceptions.RequestException) as e:
                if not self._stop.is_set():
                    log.warning("cluster watch: %s", getattr(e, "message", e))
            self._stop.wait(0.2)

    def _try(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except CnmError as e:
            log.warning("cluster: %s", e.message)

    def _apply(self, events: list[tuple[str, KV]]) -> None:
        c = self.controller
        assert c is not None
        with c.lock:
            for kind, kv in events:
                present = kind == "PUT"
                rest = kv.key[len(self.p):]
                try:
                    if rest.startswith("net/"):
                        if present:
                            self._network(kv)
                        else:
                            self._network_gone(rest[4:])
                    elif rest.startswith("ep/") and kv.value:
                        self._endpoint(kv, present)
                    elif rest.startswith("peer/") and kv.value:
                        self._peer(kv, present)
                    elif rest == "key" and present and \
                            self.keys.update(KeyDoc.loads(kv.value), time.monotonic()) and \
                            self.on_keys is not None:
                        self.on_keys()
                except (CnmError, KeyError, ValueError) as e:
                    log.error("cluster: applying %s: %s", kv.key, e)

    def _network(self, kv: KV) -> None:
        c = self.controller
        assert c is not None and self.scoped is not None
        net = Network.from_dict(kv.doc()["network"])
        self.scoped.note_network(net.id, True)
        if net.driver in c.drivers:
            c.remote.network(net)

    def _network_gone(self, network_id: str) -> None:
        c = self.controller
        assert c is not None and self.scoped is not None
        c.remote.network_gone(network_id)
        if network_id not in c.state.networks:
            self.scoped.note_network(network_id, False)

    def _endpoint(self, kv: KV, present: bool) -> None:
        doc = kv.doc()
        if doc["host"] != self.me:
            assert self.controller is not None
            self.controller.remote.endpoint(Endpoint.from_dict(doc["endpoint"]), present)

    def _peer(self, kv: KV, present: bool) -> None:
        peer = Peer.from_dict(kv.doc())
        if peer.host != self.me:
            assert self.controller is not None
            self.controller.remote.peer(peer, present)
