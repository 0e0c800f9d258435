"""The composition root: the one place that builds kernel adapters and puts a core together.

The daemon, the root-tier tests and the benchmarks call ``build`` for the real thing; the
unit tests give it the fakes of cnm.testing as ``Adapters``. Everything it made is closed by
``Stack.close``, in the right order.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cnm.cluster import Cluster, ClusterConfig
from cnm.core import Config, Controller, Tracer
from cnm.dns.records import Records
from cnm.dns.server import DnsServer, Upstreams
from cnm.drivers.base import Context, Driver
from cnm.drivers.overlay import OverlayDriver
from cnm.drivers.registry import builtin
from cnm.kernel.ports import HostPort, SandboxPort
from cnm.netfilter import Netfilter, NftApi
from cnm.store import Store
from cnm.store.etcd import EtcdStore
from cnm.store.etcdclient import EtcdClient
from cnm.store.scoped import ScopedStore
from cnm.store.sqlite import SqliteStore


@dataclass
class Adapters:
    """The kernel ports a core acts through, and how to close them."""

    host: HostPort
    sandbox: SandboxPort
    # None: no firewall (then -p is refused).
    nft: NftApi | None = None
    # Sockets in the host namespace for the DNS server's upstream queries.
    host_socket: Callable[[int, int], socket.socket] | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    # The real adapters' threads (the host namespace's and the sandbox visitor), for the
    # benchmarks that time the kernel work on them.
    threads: tuple[Any, ...] = ()
    # The kernel side of `trace` (cnm.kernel.trace.run); None: trace is unsupported.
    tracer: Tracer | None = None


def kernel(host_netns: str | None) -> Adapters:
    """The real adapters, acting in the namespace at ``host_netns`` (None: this process's)."""
    from cnm.kernel.link import HostLinks, SandboxLinks, host_socket_factory
    from cnm.kernel.netns import NsThread, Visitor
    from cnm.kernel.nft import Nftables
    from cnm.kernel.trace import run as trace

    thread = NsThread(host_netns)
    visitor = Visitor()
    host = HostLinks(thread)
    # Closed last in, first out: the reaper's last reap needs the host thread.
    return Adapters(host, SandboxLinks(visitor), Nftables(thread), host_socket_factory(thread),
                    [thread.stop, visitor.stop, host.close], (thread, visitor), trace)


@dataclass
class Stack:
    controller: Controller
    config: Config
    adapters: Adapters
    store: Store
    dns: DnsServer | None
    cluster: Cluster | None = None

    def close(self) -> None:
        """Stop everything built (the kernel objects stay, as a daemon's stop leaves them);
        under the core's lock, so no operation is cut in half."""
        if self.cluster is not None:
            self.cluster.close()  # its watch takes the core's lock: not under it
        with self.controller.lock:
            if self.dns is not None:
                self.dns.close()
            for close in reversed(self.adapters.closers):
                close()
            self.store.close()


def build(config: Config, adapters: Adapters | None = None, *, firewall: bool = True,
          dns: bool = True, upstreams: Sequence[str] = (),
          drivers: dict[str, Driver] | None = None, start: bool = True,
          cluster: ClusterConfig | None = None) -> Stack:
    """A core over ``adapters`` (the real kernel by default), its SQLite store under the
    state dir, the embedded DNS (``upstreams``: resolvers for other names; default the
    host's resolv.conf) and cnm's firewall; started (reconciled) unless ``start`` is off.
    With ``cluster``, global networks live in its etcd and the overlay driver works."""
    adapters = adapters or kernel(config.host_netns)
    # A copy (a cluster's overlay replaces the stand-in), of the same kind: the daemon's
    # table also finds Docker network plugins (remote.Drivers).
    drivers = copy.copy(drivers) if drivers is not None else builtin()
    store: Store = SqliteStore(config.state_dir)
    agent = None
    if cluster is not None:
        try:
            agent, store = _join_cluster(cluster, adapters, store, drivers)
        except BaseException:
            store.close()
            for close in reversed(adapters.closers):
                close()
            raise
    server = None
    if dns and adapters.host_socket is not None:
        server = DnsServer(Records(), Upstreams(list(upstreams), config.resolv_conf),
                           adapters.host_socket)
    netfilter = Netfilter(adapters.nft) if firewall and adapters.nft is not None else None
    controller = Controller(config, store, Context(adapters.host, adapters.sandbox),
                            drivers, netfilter, server)
    controller.tracer = adapters.tracer
    stack = Stack(controller, config, adapters, store, server, agent)
    if agent is not None:
        agent.attach(controller, cast(ScopedStore, store))
        overlay = drivers.get("overlay")
        if isinstance(overlay, OverlayDriver):
            ctx = controller.state.ctx
            agent.on_keys = lambda: overlay.refresh_esp(ctx)
    if start:
        try:
            controller.start()
            if agent is not None:
                # Ready only once what the other hosts hold is applied here.
                agent.sync()
                agent.start()
        except BaseException:
            stack.close()
            raise
    return stack


def _join_cluster(cluster: ClusterConfig, adapters: Adapters, local: Store,
                  drivers: dict[str, Driver]) -> tuple[Cluster, Store]:
    """The cluster store beside the local one, reached from the host namespace, this
    host's lease in it, and the overlay driver with this host as its VTEP."""
    # The advertise address must be this host's own: it is every peer's way here.
    adapters.host.mtu_towards(cluster.advertise)
    client = EtcdClient(cluster.endpoints, timeout=cluster.timeout, tls=cluster.tls,
                        socket_factory=adapters.host_socket)
    shared = EtcdStore(client, cluster.advertise, cluster.prefix)
    agent = Cluster(shared, cluster)
    try:
        agent.connect()
    except BaseException:
        client.close()
        raise
    drivers["overlay"] = OverlayDriver(cluster.advertise, agent.keys)
    return agent, ScopedStore(local, shared)
