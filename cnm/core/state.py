"""What every part of the core shares: the configuration, the adapters, the records in
memory (a cache of the store), the lock, and the lookups."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cnm import sandboxfile
from cnm.dns.records import Records
from cnm.dns.server import DnsServer
from cnm.drivers.base import Capabilities, Context, Driver
from cnm.errors import InvalidArgument, NotFound
from cnm.ipam import DEFAULT_POOLS, NetworkAddresses, Pool
from cnm.model import Endpoint, Network, Peer, Sandbox
from cnm.netfilter import Netfilter
from cnm.store import Store


@dataclass(frozen=True)
class Config:
    state_dir: str = "/var/lib/cnm"
    run_dir: str = "/run/cnm"
    # Path of the host namespace to manage; None manages the daemon's own namespace.
    host_netns: str | None = None
    pools: tuple[Pool, ...] = DEFAULT_POOLS
    # Automatic subnets of global (overlay) networks: Docker's overlay pool, 10.0.0.0/8 in
    # /24s (IPv6 from the local pools' ULA).
    global_pools: tuple[Pool, ...] = (Pool("10.0.0.0/8", 24),
                                      *(p for p in DEFAULT_POOLS if ":" in p.base))
    # None: 172.17.0.0/16 unless it overlaps something, then the pools.
    default_bridge_subnet: str | None = None
    default_bridge_name: str = "cnm0"
    resolv_conf: str = "/etc/resolv.conf"


T = TypeVar("T", Network, Sandbox, Endpoint)


class Announcer(Protocol):
    """Tells the other hosts of a cluster about this host's joined endpoints on global
    networks (cnm.cluster): raises when the cluster store cannot be reached."""

    def announce(self, peer: Peer) -> None: ...

    def withdraw(self, network_id: str, sandbox_id: str) -> None: ...


class EndpointTable(Mapping[str, Endpoint]):
    """The endpoints by id, indexed by network and by sandbox: a connect on a host with
    2,000 endpoints looks at its sandbox's few, not at all of them."""

    def __init__(self, eps: Iterable[Endpoint] = ()) -> None:
        self._all: dict[str, Endpoint] = {}
        self._by: dict[str | None, dict[str, Endpoint]] = {}
        self._names: dict[str, set[str]] = {}  # network id -> its endpoints' names
        for e in eps:
            self[e.id] = e

    def __getitem__(self, key: str) -> Endpoint:
        return self._all[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def __setitem__(self, key: str, ep: Endpoint) -> None:
        self.pop(key)
        self._all[key] = ep
        for k in (("n", ep.network_id), ("s", ep.sandbox_id)):
            self._by.setdefault(f"{k[0]}:{k[1]}", {})[key] = ep
        self._names.setdefault(ep.network_id, set()).add(ep.name)

    def pop(self, key: str) -> Endpoint | None:
        ep = self._all.pop(key, None)
        if ep is not None:
            for k in (f"n:{ep.network_id}", f"s:{ep.sandbox_id}"):
                held = self._by.get(k)
                if held is not None:
                    held.pop(key, None)
                    if not held:
                        del self._by[k]
            self._names.get(ep.network_id, set()).discard(ep.name)
        return ep

    def name_taken(self, network_id: str, name: str) -> bool:
        return name in self._names.get(network_id, ())

    def of_network(self, network_id: str) -> list[Endpoint]:
        return list(self._by.get(f"n:{network_id}", {}).values())

    def of_sandbox(self, sandbox_id: str) -> list[Endpoint]:
        return list(self._by.get(f"s:{sandbox_id}", {}).values())

    def copy(self) -> EndpointTable:
        return EndpointTable(self._all.values())


class State:
    """The records and adapters; every method here is a read (callers hold the lock)."""

    def __init__(self, config: Config, store: Store, ctx: Context, drivers: dict[str, Driver],
                 netfilter: Netfilter | None, dns: DnsServer | None) -> None:
        self.config = config
        self.store = store
        self.ctx = ctx
        self.drivers = drivers
        # None: no firewall (unit tests of other parts); -p is then refused.
        self.netfilter = netfilter
        # Names are kept even without a server (unit tests); the server answers from them.
        self.records = dns.records if dns is not None else Records()
        self.dns = dns
        # Serialises every mutation (and the daemon's stop); reads take it briefly.
        self.lock = threading.RLock()
        self.networks: dict[str, Network] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.endpoints = EndpointTable()
        self.addresses: dict[str, NetworkAddresses] = {}
        # Set when this host is part of a cluster (a global store).
        self.cluster: Announcer | None = None
        # Global networks' joined endpoints on other hosts: network id -> endpoint id -> Peer.
        self.peers: dict[str, dict[str, Peer]] = {}
        # Set once cnm's table exists (start builds it after reconcile).
        self.fw_built = False
        # Writes a sandbox's files (hosts, resolv.conf); a dry run notes them instead.
        self.write_file: Callable[[str, str], None] = self._write_changed
        self._written: dict[str, str] = {}  # path -> what cnm last wrote there

    def changes(self, path: str, text: str) -> bool:
        """Whether writing ``text`` to the sandbox file ``path`` would change it."""
        return self._written.get(path) != text or not os.path.exists(path)

    def _write_changed(self, path: str, text: str) -> None:
        """Write a sandbox file unless it already holds ``text`` (a second network's connect
        changes the hosts file only: two of three writes saved)."""
        if not self.changes(path, text):
            return
        sandboxfile.write(path, text)
        self._written[path] = text

    def forget_files(self, directory: str) -> None:
        """The files of a sandbox that went away."""
        prefix = directory.rstrip("/") + "/"
        for path in [p for p in self._written if p.startswith(prefix)]:
            del self._written[path]

    # ----------------------------------------------------------------------- drivers
    def driver(self, net: Network) -> Driver:
        return self.drivers[net.driver]

    def caps(self, net: Network) -> Capabilities:
        return self.drivers[net.driver].capabilities

    # ----------------------------------------------------------------------- paths
    def host_netns_path(self) -> str:
        return self.config.host_netns or f"/proc/{os.getpid()}/ns/net"

    def netns_path(self, sb: Sandbox) -> str:
        """Where the sandbox's links are made: a handover sandbox's in the host namespace,
        for the runtime to move."""
        if sb.kind in ("host", "handover"):
            return self.host_netns_path()
        if sb.kind == "external":
            return sb.netns
        return os.path.join(self.config.run_dir, "netns", sb.id)

    def files_dir(self, sb: Sandbox) -> str:
        return os.path.join(self.config.run_dir, "sandboxes", sb.id)

    # ----------------------------------------------------------------------- lookups
    @staticmethod
    def find(table: Mapping[str, T], ref: str, what: str) -> T:
        """By name, then id, then a unique id prefix of 3 or more characters."""
        for obj in table.values():
            if obj.name == ref:
                return obj
        if ref in table:
            return table[ref]
        hits = [o for i, o in table.items() if len(ref) >= 3 and i.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InvalidArgument(f"{what} id prefix {ref!r} is ambiguous")
        raise NotFound(f"{what} {ref!r} not found")

    def network(self, ref: str) -> Network:
        return self.find(self.networks, ref, "network")

    def sandbox(self, ref: str) -> Sandbox:
        return self.find(self.sandboxes, ref, "sandbox")

    def endpoint(self, ref: str) -> Endpoint:
        # Names are unique per network only: a name held on two networks is ambiguous.
        named = [e for e in self.endpoints.values() if e.name == ref]
        if len(named) > 1:
            nets = ", ".join(sorted(self.networks[e.network_id].name for e in named))
            raise InvalidArgument(f"endpoint name {ref!r} is on several networks ({nets})",
                                  hint="name it by id")
        if named:
            return named[0]
        return self.find(self.endpoints, ref, "endpoint")

    def endpoints_of(self, *, network: str | None = None,
                     sandbox: str | None = None) -> list[Endpoint]:
        if sandbox is not None:
            eps = [e for e in self.endpoints.of_sandbox(sandbox)
                   if network is None or e.network_id == network]
        elif network is not None:
            eps = self.endpoints.of_network(network)
        else:
            eps = list(self.endpoints.values())
        return sorted(eps, key=lambda e: e.order)

    def holder(self, ep: Endpoint) -> str:
        """Who holds an endpoint, as a user knows it: its sandbox, or the endpoint itself."""
        if ep.sandbox_id is not None and ep.sandbox_id in self.sandboxes:
            return f'sandbox "{self.sandboxes[ep.sandbox_id].name}"'
        return f'endpoint "{ep.name}"'

    def info(self) -> dict[str, Any]:
        return {
            "networks": len(self.networks),
            "sandboxes": len(self.sandboxes),
            "endpoints": len(self.endpoints),
            "host_netns": self.config.host_netns or "(daemon's own)",
            "state_dir": self.config.state_dir,
            "run_dir": self.config.run_dir,
            "drivers": sorted(self.drivers),
            "default_address_pools": [f"base={p.base},size={p.size}"
                                      for p in self.config.pools],
        }
