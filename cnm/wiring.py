"""The composition root: the one place that builds kernel adapters and puts a core together.

The daemon, the root-tier tests and the benchmarks call ``build`` for the real thing; the
unit tests give it the fakes of cnm.testing as ``Adapters``. Everything it made is closed by
``Stack.close``, in the right order.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cnm.core import Config, Controller
from cnm.dns.records import Records
from cnm.dns.server import DnsServer, Upstreams
from cnm.drivers.base import Context, Driver
from cnm.drivers.registry import builtin
from cnm.kernel.ports import HostPort, SandboxPort
from cnm.netfilter import Netfilter, NftApi
from cnm.store import Store
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


def kernel(host_netns: str | None) -> Adapters:
    """The real adapters, acting in the namespace at ``host_netns`` (None: this process's)."""
    from cnm.kernel.link import HostLinks, SandboxLinks, host_socket_factory
    from cnm.kernel.netns import NsThread, Visitor
    from cnm.kernel.nft import Nftables

    thread = NsThread(host_netns)
    visitor = Visitor()
    host = HostLinks(thread)
    # Closed last in, first out: the reaper's last reap needs the host thread.
    return Adapters(host, SandboxLinks(visitor), Nftables(thread), host_socket_factory(thread),
                    [thread.stop, visitor.stop, host.close], (thread, visitor))


@dataclass
class Stack:
    controller: Controller
    config: Config
    adapters: Adapters
    store: Store
    dns: DnsServer | None

    def close(self) -> None:
        """Stop everything built (the kernel objects stay, as a daemon's stop leaves them);
        under the core's lock, so no operation is cut in half."""
        with self.controller.lock:
            if self.dns is not None:
                self.dns.close()
            for close in reversed(self.adapters.closers):
                close()
            self.store.close()


def build(config: Config, adapters: Adapters | None = None, *, firewall: bool = True,
          dns: bool = True, upstreams: Sequence[str] = (),
          drivers: dict[str, Driver] | None = None, start: bool = True) -> Stack:
    """A core over ``adapters`` (the real kernel by default), its SQLite store under the
    state dir, the embedded DNS (``upstreams``: resolvers for other names; default the
    host's resolv.conf) and cnm's firewall; started (reconciled) unless ``start`` is off."""
    adapters = adapters or kernel(config.host_netns)
    store = SqliteStore(config.state_dir)
    server = None
    if dns and adapters.host_socket is not None:
        server = DnsServer(Records(), Upstreams(list(upstreams), config.resolv_conf),
                           adapters.host_socket)
    netfilter = Netfilter(adapters.nft) if firewall and adapters.nft is not None else None
    controller = Controller(config, store, Context(adapters.host, adapters.sandbox),
                            drivers if drivers is not None else builtin(), netfilter, server)
    stack = Stack(controller, config, adapters, store, server)
    if start:
        try:
            controller.start()
        except BaseException:
            stack.close()
            raise
    return stack
