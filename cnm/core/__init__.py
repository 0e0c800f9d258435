"""The core: validate, plan, apply (with undo), store, split by CNM object.

``Controller`` is the one facade the surfaces call. It owns the lock that serialises every
mutation, and hands each call to the part that owns the object:

    networks.py   create, remove, prune, the pre-defined networks
    endpoints.py  create (reserve) → join → leave → delete; connect, disconnect
    sandboxes.py  cnm's namespaces, adopted ones, the host's; routes and files
    publish.py    published ports and cnm's firewall table
    dnsview.py    which networks have names, what a joined endpoint answers as
    reconcile.py  start: make the kernel match the store
    repair.py     the fixes reconcile and doctor make, one function per kind of fix
    doctor.py     compare the store with the kernel, and repair what differs
    remote.py     what other hosts of a cluster did (global networks, their endpoints)

Every mutation either completes (kernel and store agree) or leaves no trace: each applied
step pushes its undo on an ExitStack, which unwinds on any failure before the store commit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cnm import limits
from cnm.core.dnsview import DnsView
from cnm.core.doctor import Doctor, Drift
from cnm.core.dryrun import Plan, dry_run
from cnm.core.endpoints import Endpoints
from cnm.core.networks import Networks
from cnm.core.publish import Publishing
from cnm.core.reconcile import Reconciler
from cnm.core.remote import Remote
from cnm.core.repair import Repairs
from cnm.core.sandboxes import Sandboxes
from cnm.core.state import Config, EndpointTable, State
from cnm.dns.server import DnsServer
from cnm.drivers.base import Context, Driver
from cnm.errors import CnmError, InvalidArgument, Unsupported
from cnm.events import EventBus
from cnm.ipam import Taken
from cnm.model import (
    ConnectSpec,
    Endpoint,
    EndpointSpec,
    Network,
    NetworkSpec,
    Sandbox,
    SandboxSpec,
)
from cnm.netfilter import Netfilter, NftApi
from cnm.portspec import PortMapping
from cnm.store import Store
from cnm.trace import Observed, Target, TracePath, parse_target

__all__ = ["Config", "Controller", "Plan", "Tracer"]

T = TypeVar("T")
# The kernel side of a trace (cnm.kernel.trace.run), given by the composition root.
Tracer = Callable[[TracePath, Target, NftApi], Observed]


class Controller:
    def __init__(self, config: Config, store: Store, ctx: Context,
                 drivers: dict[str, Driver], netfilter: Netfilter | None = None,
                 dns: DnsServer | None = None) -> None:
        s = self.state = State(config, store, ctx, drivers, netfilter, dns)
        self.config, self.drivers = config, drivers
        self.netfilter, self.dns, self.records, self.lock = netfilter, dns, s.records, s.lock
        self._dns = DnsView(s)
        self._pub = Publishing(s)
        self._nets = Networks(s, self._pub)
        self._sbx = Sandboxes(s, self._pub, self._dns)
        self._eps = Endpoints(s, self._pub, self._dns, self._sbx)
        self._sbx.eps = self._eps
        # One event per change a call made, published when it is done (GET /v1/events);
        # reconcile's and doctor's fixes too.
        self.events = EventBus()
        self._fix = Repairs(s, self._sbx, self._pub, self._dns, self.events)
        self._rec = Reconciler(s, self._nets, self._sbx, self._pub, self._dns, self._fix)
        self._doctor = Doctor(s, self._sbx, self._dns, self._fix)
        # What other hosts of a cluster did (cnm.cluster calls it under the lock).
        self.remote = Remote(s, self._dns, self._pub)
        if netfilter is not None:
            netfilter.repair = self._pub.rebuild_table
        # None over fake adapters: `trace` then says it needs the real kernel.
        self.tracer: Tracer | None = None
        os.makedirs(os.path.join(config.run_dir, "netns"), mode=0o755, exist_ok=True)
        os.makedirs(os.path.join(config.run_dir, "sandboxes"), mode=0o755, exist_ok=True)

    @property
    def ctx(self) -> Context:
        return self.state.ctx

    @ctx.setter
    def ctx(self, ctx: Context) -> None:  # tests swap in adapters that fail on purpose
        self.state.ctx = ctx

    @property
    def store(self) -> Store:
        return self.state.store

    @store.setter
    def store(self, store: Store) -> None:  # tests swap in a store that fails on purpose
        self.state.store = store

    # The records in memory (a cache of the store): read them under the lock.
    @property
    def networks(self) -> dict[str, Network]:
        return self.state.networks

    @property
    def sandboxes(self) -> dict[str, Sandbox]:
        return self.state.sandboxes

    @property
    def endpoints(self) -> EndpointTable:
        return self.state.endpoints

    def dry_run(self, op: Callable[[], T]) -> tuple[T, Plan]:
        """Run ``op`` (a call of this controller) against recorders: the plan of what it
        would do, with nothing changed."""
        with self.lock:
            self.events.muted += 1
            try:
                return dry_run(self.state, self._pub, op)
            finally:
                self.events.muted -= 1

    # ----------------------------------------------------------------------- start
    def start(self) -> None:
        """Load the store and make the kernel match it (reconcile)."""
        with self.lock:
            self._rec.start()

    # ----------------------------------------------------------------------- reads
    def network(self, ref: str) -> Network:
        with self.lock:
            return self.state.network(ref)

    def sandbox(self, ref: str) -> Sandbox:
        with self.lock:
            return self.state.sandbox(ref)

    def endpoint(self, ref: str) -> Endpoint:
        with self.lock:
            return self.state.endpoint(ref)

    def endpoints_of(self, *, network: str | None = None,
                     sandbox: str | None = None) -> list[Endpoint]:
        with self.lock:
            return self.state.endpoints_of(network=network, sandbox=sandbox)

    def list_networks(self) -> list[Network]:
        with self.lock:
            return sorted(self.state.networks.values(), key=lambda n: n.name)

    def list_sandboxes(self) -> list[Sandbox]:
        with self.lock:
            return sorted(self.state.sandboxes.values(), key=lambda s: s.name)

    def list_endpoints(self) -> list[Endpoint]:
        with self.lock:
            return sorted(self.state.endpoints.values(),
                          key=lambda e: (self.state.networks[e.network_id].name, e.name))

    def netns_path(self, sb: Sandbox) -> str:
        return self.state.netns_path(sb)

    def files_dir(self, sb: Sandbox) -> str:
        return self.state.files_dir(sb)

    def host_netns_path(self) -> str:
        return self.state.host_netns_path()

    def link_of(self, net: Network) -> str | None:
        """The network's main host link (its bridge, its macvlan/ipvlan parent), if any."""
        links = self.state.driver(net).kernel_links(net)
        return links[0] if links else None

    def host_link_of(self, ep: Endpoint) -> str | None:
        """The host-namespace end of a joined endpoint (a bridge endpoint's veth peer)."""
        return self.state.driver(self.state.networks[ep.network_id]).host_link(
            self.state.networks[ep.network_id], ep)

    def has_dns(self, net: Network) -> bool:
        """Whether the network has the embedded DNS (its sandboxes ask 127.0.0.11)."""
        return self._dns.named(net)

    def info(self) -> dict[str, Any]:
        with self.lock:
            return self.state.info()

    # ----------------------------------------------------------------------- networks
    # Each mutation checks its request's sizes first, outside the lock: what the core does
    # under the lock is then bounded by cnm.limits, not by what a client sent.
    def create_network(self, spec: NetworkSpec) -> Network:
        limits.check_spec("network create", spec)
        with self.lock:
            net = self._nets.create(spec)
            self.events.publish("network", "create", net.id, net.name, driver=net.driver)
            return net

    def remove_network(self, ref: str) -> Network:
        with self.lock:
            net = self.state.network(ref)
            self._nets.remove(net)
            self.events.publish("network", "remove", net.id, net.name, driver=net.driver)
            return net

    # A runtime's IPAM (Docker's IpamDriver) asks for pools before the network exists and
    # for addresses before the endpoint does; cnm's IPAM answers, holding an address in the
    # network's space until the endpoint that takes it is created.
    def pick_subnet(self, cidr: str | None, version: int,
                    elsewhere: Sequence[tuple[str, str]] = ()) -> str:
        """A subnet no network (or host address, or ``elsewhere`` (cidr, holder)) overlaps:
        ``cidr`` checked, or a free one of the pools. Nothing is held."""
        with self.lock:
            return self._nets.pick_subnet(cidr, version, [Taken(c, h) for c, h in elsewhere])

    def hold_address(self, network: str, version: int, ip: str | None, holder: str) -> str:
        """Take an address of the network ("10.1.0.2/24"), ``ip`` or the next free one, for
        an endpoint not created yet; ``release_address`` gives it back."""
        with self.lock:
            net = self.state.network(network)
            got = self.state.addresses[net.id].allocate(version, holder, ip)
            if got is None:
                raise InvalidArgument(f'network "{net.name}" has no IPv{version} subnet')
            return got

    def release_address(self, network: str, cidr: str) -> None:
        with self.lock:
            net = self.state.network(network)
            self.state.addresses[net.id].release(cidr)

    def address_holder(self, network: str, cidr: str) -> str | None:
        with self.lock:
            net = self.state.network(network)
            return self.state.addresses[net.id].holder(cidr)

    def prune_networks(self) -> list[str]:
        with self.lock:
            before = {n.name: n for n in self.state.networks.values()}
            removed = self._nets.prune()
            for name in removed:
                net = before[name]
                self.events.publish("network", "remove", net.id, net.name,
                                    driver=net.driver)
            return removed

    # ----------------------------------------------------------------------- sandboxes
    def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        limits.check_spec("sandbox create", spec)
        with self.lock:
            sb = self._sbx.create(spec)
            self.events.publish("sandbox", "create", sb.id, sb.name, network=spec.network)
            return sb

    def create_handover_sandbox(self, name: str, labels: dict[str, str]) -> Sandbox:
        """A sandbox the runtime plumbs itself (Docker's): its joins hand the link over in
        the host namespace (``Sandboxes.create_handover``)."""
        with self.lock:
            sb = self._sbx.create_handover(name, labels)
            self.events.publish("sandbox", "create", sb.id, sb.name)
            return sb

    def remove_sandbox(self, ref: str, force: bool = False) -> Sandbox:
        with self.lock:
            sb = self.state.sandbox(ref)
            self._sbx.remove(sb, force)
            self.events.publish("sandbox", "remove", sb.id, sb.name)
            return sb

    def _endpoint_event(self, action: str, ep: Endpoint, sandbox: str | None = None) -> None:
        net = self.state.networks.get(ep.network_id)
        self.events.publish("endpoint", action, ep.id, ep.name,
                            network=net.name if net else None, sandbox=sandbox)

    # ----------------------------------------------------------------------- endpoints
    def create_endpoint(self, spec: EndpointSpec) -> Endpoint:
        limits.check_spec("endpoint create", spec)
        with self.lock:
            ep = self._eps.create(spec.network, spec.name, ip=spec.ip, ip6=spec.ip6,
                                  mac=spec.mac, aliases=spec.aliases, ports=spec.ports)
            self._endpoint_event("create", ep)
            return ep

    def join(self, endpoint: str, sandbox: str, ifname: str = "") -> Endpoint:
        limits.check_field("join", "ifname", ifname)
        with self.lock:
            ep = self._eps.join(endpoint, sandbox, ifname)
            self._endpoint_event("join", ep, self.state.sandbox(sandbox).name)
            return ep

    def leave(self, endpoint: str) -> Endpoint:
        with self.lock:
            ep = self._eps.leave(endpoint)
            self._endpoint_event("leave", ep)
            return ep

    def delete_endpoint(self, endpoint: str) -> Endpoint:
        with self.lock:
            ep = self._eps.delete(endpoint)
            self._endpoint_event("remove", ep)
            return ep

    def connect(self, spec: ConnectSpec) -> Endpoint:
        limits.check_spec("connect", spec)
        with self.lock:
            ep = self._eps.connect(spec.network, spec.sandbox, ip=spec.ip, ip6=spec.ip6,
                                   mac=spec.mac, aliases=spec.aliases, ports=spec.ports,
                                   ifname=spec.ifname)
            self._endpoint_event("connect", ep, self.state.sandbox(spec.sandbox).name)
            return ep

    def disconnect(self, network: str, sandbox: str) -> Endpoint:
        with self.lock:
            ep = self._eps.disconnect(network, sandbox)  # (its errors first, as before)
            self._endpoint_event("disconnect", ep, self.state.sandbox(sandbox).name)
            return ep

    # ----------------------------------------------------------------------- ports
    def publish(self, sandbox: str, specs: Sequence[str],
                network: str | None = None) -> list[PortMapping]:
        limits.check_field("publish", "ports", list(specs))
        with self.lock:
            sb = self._sbx.live(self.state.sandbox(sandbox))
            done = self._pub.publish(sb, specs, network)
            for m in done:
                self.events.publish("port", "publish", sb.id, sb.name, proto=m.proto,
                                    host_port=m.host_port, container_port=m.container_port)
            return done

    def publishing_network(self, sandbox: str, network: str | None = None) -> str:
        with self.lock:
            return self._pub.publishing_network(self.state.sandbox(sandbox), network)

    def unpublish(self, sandbox: str, host_port: int, proto: str = "tcp") -> list[PortMapping]:
        with self.lock:
            sb = self.state.sandbox(sandbox)
            done = self._pub.unpublish(sb, host_port, proto)
            for m in done:
                self.events.publish("port", "unpublish", sb.id, sb.name, proto=m.proto,
                                    host_port=m.host_port, container_port=m.container_port)
            return done

    def ports(self, sandbox: str) -> list[tuple[str, PortMapping]]:
        with self.lock:
            return self._pub.ports(self.state.sandbox(sandbox))

    # ----------------------------------------------------------------------- trace
    def trace(self, sandbox: str, destination: str) -> Observed:
        """The path of one real probe from the sandbox to ``destination``
        (DEST[:PORT[/PROTO]]), through cnm's firewall (cnm.trace, cnm.kernel.trace)."""
        target = parse_target(destination)
        with self.lock:
            sb = self._sbx.live(self.state.sandbox(sandbox))
            if sb.kind == "handover":
                raise Unsupported(f'sandbox "{sb.name}" belongs to its runtime (handover): '
                                  "cnm never enters its namespace, so it cannot probe from it",
                                  hint="trace from the runtime's side (nsenter, ping)")
            links = []
            for ep in self.state.endpoints_of(sandbox=sb.id):
                net = self.state.networks[ep.network_id]
                veth = self.state.driver(net).capabilities.link == "veth"
                links.append((ep.ifname, net.name, self.host_link_of(ep),
                              self.link_of(net) if veth else None))
            path = TracePath(sb.name, self.state.netns_path(sb), self.state.host_netns_path(),
                             tuple(links), same_namespace=sb.kind == "host")
        if self.tracer is None or self.netfilter is None:
            raise Unsupported("trace needs cnm's firewall and the real kernel")
        # Outside the lock: the probe waits up to a second for its answer.
        return self.tracer(path, target, self.netfilter.nft)

    def reload_firewall(self) -> dict[str, int]:
        with self.lock:
            return self._pub.reload()

    # ----------------------------------------------------------------------- doctor
    def doctor(self) -> list[Drift]:
        """Every difference between the records and the kernel (cnm doctor)."""
        with self.lock:
            return self._doctor.check()

    def doctor_fix(self) -> tuple[list[Drift], list[Drift], list[CnmError]]:
        """Repair them with reconcile's fixes: (found, left after, the fixes' errors)."""
        with self.lock:
            return self._doctor.fix()
