"""The controller: validate, plan, apply (with undo), store. One lock serialises mutations.

Kernel work goes through the drivers and the kernel adapters; this module decides. Every
mutation either completes (kernel and store agree) or leaves no trace: each applied step
pushes its undo on an ExitStack, which unwinds on any failure before the store commit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from cnm import names, portspec, sandboxfile
from cnm.dns.records import Entry, Records
from cnm.dns.server import DnsServer
from cnm.drivers.base import Context, Driver, Publisher, Validator
from cnm.drivers.registry import lookup
from cnm.errors import (
    AlreadyExists,
    CnmError,
    Conflict,
    InUse,
    InvalidArgument,
    NotFound,
    Partial,
    Unsupported,
)
from cnm.firewall import NetworkRules, PortRule
from cnm.ipam import DEFAULT_POOLS, NetworkAddresses, Pool, Taken, plan_subnets
from cnm.kernel import netns
from cnm.model import (
    PREDEFINED,
    ConnectSpec,
    Endpoint,
    Network,
    NetworkSpec,
    Sandbox,
    SandboxSpec,
    now,
)
from cnm.netfilter import Netfilter
from cnm.portspec import PortMapping
from cnm.store import Store

log = logging.getLogger("cnm.controller")


@dataclass(frozen=True)
class Config:
    state_dir: str = "/var/lib/cnm"
    run_dir: str = "/run/cnm"
    # Path of the host namespace to manage; None manages the daemon's own namespace.
    host_netns: str | None = None
    pools: tuple[Pool, ...] = DEFAULT_POOLS
    # None: 172.17.0.0/16 unless it overlaps something, then the pools.
    default_bridge_subnet: str | None = None
    default_bridge_name: str = "cnm0"
    resolv_conf: str = "/etc/resolv.conf"
    labels: dict[str, str] = field(default_factory=dict)


def _quietly(fn: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """An undo step: run it, log (never raise) its failure, so every undo gets its turn."""

    def run() -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - an undo must not mask the original error
            log.error("undo %s failed: %s", getattr(fn, "__name__", fn), e)

    return run


class Controller:
    def __init__(self, config: Config, store: Store, ctx: Context,
                 drivers: dict[str, Driver], netfilter: Netfilter | None = None,
                 dns: DnsServer | None = None) -> None:
        self.config = config
        self.store = store
        self.ctx = ctx
        self.drivers = drivers
        # None: no firewall (unit tests of other parts); -p is then refused.
        self.netfilter = netfilter
        if netfilter is not None:
            netfilter.repair = self._rebuild_table
        self._fw_built = False
        # Names are kept even without a server (unit tests); the server answers from them.
        self.records = dns.records if dns is not None else Records()
        self.dns = dns
        # Serialises every mutation (and the daemon's stop); reads take it briefly.
        self.lock = threading.RLock()
        self.networks: dict[str, Network] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self._addresses: dict[str, NetworkAddresses] = {}
        os.makedirs(os.path.join(config.run_dir, "netns"), mode=0o755, exist_ok=True)
        os.makedirs(os.path.join(config.run_dir, "sandboxes"), mode=0o755, exist_ok=True)

    # ----------------------------------------------------------------------- paths
    def host_netns_path(self) -> str:
        return self.config.host_netns or f"/proc/{os.getpid()}/ns/net"

    def netns_path(self, sb: Sandbox) -> str:
        if sb.kind == "host":
            return self.host_netns_path()
        return os.path.join(self.config.run_dir, "netns", sb.id)

    def files_dir(self, sb: Sandbox) -> str:
        return os.path.join(self.config.run_dir, "sandboxes", sb.id)

    # ----------------------------------------------------------------------- lookups
    def _find(self, table: dict[str, Any], ref: str, what: str) -> Any:
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
        with self.lock:
            net: Network = self._find(self.networks, ref, "network")
            return net

    def sandbox(self, ref: str) -> Sandbox:
        with self.lock:
            sb: Sandbox = self._find(self.sandboxes, ref, "sandbox")
            return sb

    def endpoints_of(self, *, network: str | None = None,
                     sandbox: str | None = None) -> list[Endpoint]:
        with self.lock:
            eps = [e for e in self.endpoints.values()
                   if (network is None or e.network_id == network)
                   and (sandbox is None or e.sandbox_id == sandbox)]
        return sorted(eps, key=lambda e: e.order)

    def list_networks(self) -> list[Network]:
        with self.lock:
            return sorted(self.networks.values(), key=lambda n: n.name)

    def list_sandboxes(self) -> list[Sandbox]:
        with self.lock:
            return sorted(self.sandboxes.values(), key=lambda s: s.name)

    # ----------------------------------------------------------------------- networks
    def _taken(self, exclude: str | None = None) -> tuple[list[Taken], list[Taken]]:
        """(networks and host addresses, host routes) that a new subnet may not overlap."""
        taken = [Taken(s.subnet, f'network "{n.name}" ({s.subnet})')
                 for n in self.networks.values() if n.id != exclude for s in n.subnets]
        routes: list[Taken] = []
        for o in self.ctx.host.occupied():
            (routes if o.kind == "route" else taken).append(Taken(o.cidr, o.holder, o.device))
        return taken, routes

    def create_network(self, spec: NetworkSpec) -> Network:
        with self.lock:
            if not names.valid_name(spec.name):
                raise InvalidArgument(
                    f"invalid network name {spec.name!r}: use 1-64 letters, digits, '_', '.' "
                    "and '-', starting with a letter or digit"
                )
            if spec.name in PREDEFINED:
                raise AlreadyExists(f"network {spec.name!r} is pre-defined")
            if any(n.name == spec.name for n in self.networks.values()):
                raise AlreadyExists(f'network "{spec.name}" already exists')
            driver = lookup(self.drivers, spec.driver)
            if not driver.user_creatable:
                raise InvalidArgument(
                    f"driver {spec.driver} has one pre-defined network only ({spec.driver!r}); "
                    "it cannot be created"
                )
            options = driver.parse_options(spec.options)
            self._check_bridge_name(options.get("bridge_name"))
            subnets: tuple[Any, ...] = ()
            if driver.needs_ipam:
                taken, routes = self._taken()
                if isinstance(driver, Validator):
                    taken, routes = _lan_addresses(taken, routes, driver.parent_link(options))
                subnets = plan_subnets(spec.subnets, spec.gateways, spec.ip_ranges,
                                       spec.aux_addresses, ipv6=spec.ipv6,
                                       pools=self.config.pools, taken=taken, routes=routes)
            elif spec.subnets or spec.gateways or spec.ip_ranges or spec.aux_addresses:
                raise InvalidArgument(f"driver {spec.driver} does not take IPAM options")
            net = Network(
                id=names.new_id(), name=spec.name, driver=driver.name, created=now(),
                subnets=subnets, ipv6=spec.ipv6, internal=spec.internal, options=options,
                labels=dict(spec.labels),
            )
            if isinstance(driver, Validator):
                driver.validate_network(net, list(self.networks.values()))
            self._add_network(net)
            return net

    def _check_bridge_name(self, bridge: str | None) -> None:
        if not bridge:
            return
        for n in self.networks.values():
            if n.options.get("bridge_name") == bridge or (
                    n.driver == "bridge" and names.bridge_name(n.id) == bridge):
                raise Conflict(f'bridge {bridge} is already used by network "{n.name}"')

    def _add_network(self, net: Network) -> None:
        driver = self.drivers[net.driver]
        with ExitStack() as undo:
            driver.create_network(net, self.ctx)
            undo.callback(_quietly(driver.delete_network, net, self.ctx))
            rules = self._fw_rules(net)
            # During start the table does not exist yet; its rebuild at the end covers this.
            if self.netfilter is not None and rules is not None and self._fw_built:
                others = self._all_fw_rules()
                self.netfilter.add_network(rules, others + [rules])
                undo.callback(_quietly(self.netfilter.remove_network, rules, others))
            with self.store.transaction() as tx:
                tx.put_network(net)
            undo.pop_all()
        self.networks[net.id] = net
        self._addresses[net.id] = NetworkAddresses(net.subnets)

    def remove_network(self, ref: str) -> Network:
        with self.lock:
            net = self.network(ref)
            if net.predefined:
                raise InvalidArgument(
                    f"{net.name} is a pre-defined network and cannot be removed"
                )
            eps = self.endpoints_of(network=net.id)
            if eps:
                holders = ", ".join(sorted(self.sandboxes[e.sandbox_id].name for e in eps))
                raise InUse(
                    f'network "{net.name}" has active endpoints ({holders})',
                    hint="disconnect them first",
                )
            rules = self._fw_rules(net)
            if self.netfilter is not None and rules is not None:
                self.netfilter.remove_network(rules, self._all_fw_rules(exclude=net.id))
            self.drivers[net.driver].delete_network(net, self.ctx)
            with self.store.transaction() as tx:
                tx.delete_network(net.id)
            del self.networks[net.id]
            self._addresses.pop(net.id, None)
            return net

    def prune_networks(self) -> list[str]:
        with self.lock:
            used = {e.network_id for e in self.endpoints.values()}
            gone = []
            for net in self.list_networks():
                if not net.predefined and net.id not in used:
                    self.remove_network(net.id)
                    gone.append(net.name)
            return gone

    # ----------------------------------------------------------------------- sandboxes
    def create_sandbox(self, spec: SandboxSpec) -> Sandbox:
        with self.lock:
            if not names.valid_name(spec.name):
                raise InvalidArgument(
                    f"invalid sandbox name {spec.name!r}: use 1-64 letters, digits, '_', '.' "
                    "and '-', starting with a letter or digit"
                )
            if any(s.name == spec.name for s in self.sandboxes.values()):
                raise AlreadyExists(f'sandbox "{spec.name}" already exists')
            hostname = spec.hostname or spec.name
            if not names.valid_name(hostname) or len(hostname) > 63:
                raise InvalidArgument(f"invalid hostname {hostname!r}")
            net = self.network(spec.network)
            self._check_aliases(net, spec.aliases)
            ports = self._check_ports(net, spec.ports)
            kind = "host" if net.driver == "host" else "netns"
            if kind == "host" and (spec.ip or spec.ip6 or spec.mac):
                raise InvalidArgument("a sandbox on the host network takes no --ip, --ip6 or "
                                      "--mac-address")
            sb = Sandbox(id=names.new_id(), name=spec.name, hostname=hostname, created=now(),
                         kind=kind, labels=dict(spec.labels))
            with ExitStack() as undo:
                path = self.netns_path(sb)
                if kind == "netns":
                    self.ctx.sandbox.create_netns(path)
                    undo.callback(_quietly(self.ctx.sandbox.delete_netns, path))
                os.makedirs(self.files_dir(sb), mode=0o755)
                undo.callback(_quietly(shutil.rmtree, self.files_dir(sb), True))
                ep = self._attach(net, sb, spec.ip, spec.ip6, spec.mac, [], undo, ports,
                                  spec.aliases)
                self._apply_sandbox(sb, [ep], [], undo)
                with self.store.transaction() as tx:
                    tx.put_sandbox(sb)
                    tx.put_endpoint(ep)
                undo.pop_all()
            self.sandboxes[sb.id] = sb
            self.endpoints[ep.id] = ep
            return sb

    def remove_sandbox(self, ref: str, force: bool = False) -> Sandbox:
        """Leave every network, then delete the namespace. With force, records are dropped
        even when a kernel step fails (the failures are still reported)."""
        with self.lock:
            sb = self.sandbox(ref)
            errors: list[CnmError] = []
            for ep in reversed(self.endpoints_of(sandbox=sb.id)):
                try:
                    self._detach(sb, ep, refresh=False)
                except CnmError as e:
                    errors.append(e)
            if errors and not force:
                raise Partial(f'removing sandbox "{sb.name}"', errors)
            if self.dns is not None:
                self.dns.remove(sb.id)
            try:
                self.ctx.host.reap()  # rm returns with every link of the sandbox gone
            except CnmError as e:
                errors.append(e)
            if sb.kind == "netns":
                try:
                    self.ctx.sandbox.delete_netns(self.netns_path(sb))
                except CnmError as e:
                    errors.append(e)
            shutil.rmtree(self.files_dir(sb), ignore_errors=True)
            with self.store.transaction() as tx:
                for ep in self.endpoints_of(sandbox=sb.id):
                    tx.delete_endpoint(ep.id)
                tx.delete_sandbox(sb.id)
            for ep in self.endpoints_of(sandbox=sb.id):
                self._forget_endpoint(ep)
            del self.sandboxes[sb.id]
            for err in errors:
                log.warning("sandbox %s removed by force despite: %s", sb.name, err.message)
            return sb

    # ----------------------------------------------------------------------- endpoints
    def connect(self, spec: ConnectSpec) -> Endpoint:
        with self.lock:
            net = self.network(spec.network)
            sb = self.sandbox(spec.sandbox)
            self._check_aliases(net, spec.aliases)
            ports = self._check_ports(net, spec.ports)
            current = self.endpoints_of(sandbox=sb.id)
            if any(e.network_id == net.id for e in current):
                raise AlreadyExists(f'sandbox "{sb.name}" is already connected to network '
                                    f'"{net.name}"')
            if sb.kind == "host" or net.driver == "host":
                raise InvalidArgument(
                    "a sandbox cannot be connected to or from the host network",
                    hint="the host network shares the host namespace; create a new sandbox",
                )
            drivers = {self.networks[e.network_id].driver for e in current}
            if "null" in drivers or (net.driver == "null" and current):
                raise InvalidArgument(
                    f'sandbox "{sb.name}" cannot be on the none network and another network',
                    hint="disconnect it from the other network first",
                )
            with ExitStack() as undo:
                ep = self._attach(net, sb, spec.ip, spec.ip6, spec.mac, current, undo, ports,
                                  spec.aliases)
                self._apply_sandbox(sb, current + [ep], current, undo)
                with self.store.transaction() as tx:
                    tx.put_endpoint(ep)
                undo.pop_all()
            self.endpoints[ep.id] = ep
            return ep

    def disconnect(self, network: str, sandbox: str) -> Endpoint:
        with self.lock:
            net = self.network(network)
            sb = self.sandbox(sandbox)
            ep = next((e for e in self.endpoints_of(sandbox=sb.id) if e.network_id == net.id),
                      None)
            if ep is None:
                raise NotFound(f'sandbox "{sb.name}" is not connected to network "{net.name}"')
            if sb.kind == "host":
                raise InvalidArgument(
                    f'sandbox "{sb.name}" is the host namespace; remove the sandbox instead'
                )
            self._detach(sb, ep, refresh=True)
            return ep

    def _attach(self, net: Network, sb: Sandbox, ip: str | None, ip6: str | None,
                mac: str | None, current: list[Endpoint], undo: ExitStack,
                ports: Sequence[portspec.PortSpec] = (),
                aliases: Sequence[str] = ()) -> Endpoint:
        """Reserve addresses and plumb one endpoint; every step's undo goes on ``undo``."""
        driver = self.drivers[net.driver]
        if mac is not None and not names.valid_unicast_mac(mac):
            raise InvalidArgument(f"invalid MAC address {mac!r}: expected a unicast "
                                  "xx:xx:xx:xx:xx:xx")
        if not driver.needs_ipam and (ip or ip6):
            raise InvalidArgument(f"network {net.name} assigns no addresses; --ip is not "
                                  "accepted")
        if ip6 and not net.ipv6:
            raise InvalidArgument(f'network "{net.name}" has no IPv6; --ip6 is not accepted')
        if isinstance(driver, Validator):
            driver.validate_endpoint(net, mac, [self.sandboxes[e.sandbox_id].name
                                                for e in self.endpoints_of(network=net.id)])
        eid = names.new_id()
        ipv4 = ipv6 = None
        if driver.needs_ipam:
            space = self._addresses[net.id]
            owner = f'sandbox "{sb.name}"'
            ipv4 = space.allocate(4, owner, ip)
            undo.callback(space.rollback, ipv4)
            if net.ipv6:
                ipv6 = space.allocate(6, owner, ip6)
                undo.callback(space.rollback, ipv6)
        ifname, ep_mac = "", ""
        if driver.needs_ipam:
            used = {e.ifname for e in current}
            ifname = next(names.sandbox_ifname(i) for i in range(len(used) + 1)
                          if names.sandbox_ifname(i) not in used)
            ep_mac = mac or names.random_mac()
        ep = Endpoint(id=eid, network_id=net.id, sandbox_id=sb.id, created=now(),
                      ifname=ifname, mac=ep_mac, ipv4=ipv4, ipv6=ipv6,
                      aliases=tuple(dict.fromkeys(a.lower() for a in aliases)),
                      order=max((e.order for e in current), default=0) + 1)
        path = self.netns_path(sb)
        info = driver.join(net, ep, path, self.ctx)
        undo.callback(_quietly(driver.leave, net, ep, path, self.ctx))
        gw = dict(info.gateways)
        ep = dataclasses.replace(ep, gateway4=gw.get(4), gateway6=gw.get(6),
                                 mac=info.mac or ep.mac)
        if info.interface:
            self.ctx.sandbox.configure(path, ep.ifname, [a for a in (ipv4, ipv6) if a])
        if ports:
            ep = dataclasses.replace(ep, ports=self._publish(net, sb, ep, ports, undo))
        if self._dns_net(net):
            # The name answers from the moment the operation returns.
            self.records.set(self._entry(net, sb, ep))
            undo.callback(self.records.remove, net.id, sb.id)
        return ep

    def _apply_sandbox(self, sb: Sandbox, eps: list[Endpoint], before: list[Endpoint],
                       undo: ExitStack | None, force: bool = False) -> None:
        """Make the sandbox's default routes and files match ``eps`` (it had ``before``;
        ``force`` sets the routes whatever it had, as reconcile must)."""
        if sb.kind == "netns":
            path = self.netns_path(sb)
            if undo is not None:
                # Registered first: a call that fails half way (IPv4 set, IPv6 not) is undone.
                undo.callback(_quietly(self.ctx.sandbox.set_default_routes, path,
                                       _default_routes(before)))
            self.ctx.sandbox.set_default_routes(
                path, _default_routes(eps), None if force else _default_routes(before))
        self._sync_listener(sb, eps, before, undo)
        if undo is not None:
            # Before the write: a half-written file is put back too.
            undo.callback(_quietly(self._write_files, sb, before))
        self._write_files(sb, eps)

    def _write_files(self, sb: Sandbox, eps: Iterable[Endpoint]) -> None:
        d = self.files_dir(sb)
        addrs = [a for e in eps for a in (e.ipv4, e.ipv6) if a]
        sandboxfile.write(os.path.join(d, "hosts"), sandboxfile.hosts(sb.hostname, addrs))
        try:
            with open(self.config.resolv_conf) as f:
                host_resolv = f.read()
        except OSError:
            host_resolv = ""
        # The host network's sandbox shares the host's resolvers, loopback ones included;
        # one on a user-defined network asks the embedded DNS.
        embedded = any(self._dns_net(self.networks[e.network_id]) for e in eps)
        resolv = host_resolv if sb.kind == "host" else sandboxfile.resolv_conf(
            host_resolv, embedded=embedded)
        sandboxfile.write(os.path.join(d, "resolv.conf"), resolv)
        sandboxfile.write(os.path.join(d, "hostname"), sb.hostname + "\n")

    def _detach(self, sb: Sandbox, ep: Endpoint, refresh: bool) -> None:
        """Leave and delete one endpoint. The record goes only once the kernel let go."""
        net = self.networks[ep.network_id]
        if ep.ports and self.netfilter is not None:
            # Unpublished first: no new connection may reach an endpoint on its way out.
            # The host ports stay reserved until the record goes (_forget_endpoint).
            self.netfilter.remove_ports(self._port_rules(ep, ep.ports))
            self.netfilter.remove_hairpin(*_addrs(ep))
        self.drivers[net.driver].leave(net, ep, self.netns_path(sb), self.ctx)
        # The name is gone when disconnect returns.
        self.records.remove(net.id, sb.id)
        with self.store.transaction() as tx:
            tx.delete_endpoint(ep.id)
        self._forget_endpoint(ep)
        if refresh:
            rest = self.endpoints_of(sandbox=sb.id)
            # What the sandbox had includes the endpoint that left: if it held the
            # default route, the route moves to the next network.
            self._apply_sandbox(sb, rest, rest + [ep], None)

    def _forget_endpoint(self, ep: Endpoint) -> None:
        self.endpoints.pop(ep.id, None)
        if self.netfilter is not None:
            for m in ep.ports:
                self.netfilter.ports.remove(m)
        space = self._addresses.get(ep.network_id)
        if space is not None:
            space.release(ep.ipv4)
            space.release(ep.ipv6)

    # ----------------------------------------------------------------------- start
    def start(self) -> None:
        """Load the store and make the kernel match it (reconcile)."""
        with self.lock:
            state = self.store.load()
            self.networks = {n.id: n for n in state.networks}
            self.sandboxes = {s.id: s for s in state.sandboxes}
            self.endpoints = {e.id: e for e in state.endpoints}
            self._addresses = {n.id: NetworkAddresses(n.subnets) for n in state.networks}
            for e in state.endpoints:
                net = self.networks[e.network_id]
                if self._dns_net(net):
                    self.records.set(self._entry(net, self.sandboxes[e.sandbox_id], e))
                space = self._addresses.get(e.network_id)
                owner = f'sandbox "{self.sandboxes[e.sandbox_id].name}"'
                for a in (e.ipv4, e.ipv6):
                    if space is not None and a:
                        space.mark(a, owner)
            self._ensure_predefined()
            self._reconcile()
            if self.netfilter is not None:
                self.reload_firewall()
                self._fw_built = True

    def _ensure_predefined(self) -> None:
        have = {n.name for n in self.networks.values()}
        for name, driver in (("none", "null"), ("host", "host")):
            if name not in have:
                self._add_network(Network(id=names.new_id(), name=name, driver=driver,
                                          created=now()))
        if "bridge" not in have:
            taken, routes = self._taken()
            want = self.config.default_bridge_subnet
            try:
                subnets = plan_subnets([want or "172.17.0.0/16"], [], [], {}, ipv6=False,
                                       pools=(), taken=taken + ([] if want else routes))
            except Conflict:
                if want:
                    raise
                subnets = plan_subnets([], [], [], {}, ipv6=False, pools=self.config.pools,
                                       taken=taken, routes=routes)
            self._add_network(Network(
                id=names.new_id(), name="bridge", driver="bridge", created=now(),
                subnets=subnets,
                options={"bridge_name": self.config.default_bridge_name},
            ))

    def _reconcile(self) -> None:
        errors: list[CnmError] = []

        def attempt(fn: Callable[..., Any], *args: Any) -> None:
            try:
                fn(*args)
            except CnmError as e:
                log.error("reconcile: %s", e.message)
                errors.append(e)

        attempt(self.ctx.host.reap)  # links retired before a crash or stop
        rebuilt: set[str] = set()
        for net in list(self.networks.values()):
            attempt(self._restore_network, net, rebuilt)
        for sb in list(self.sandboxes.values()):
            if sb.kind == "netns" and not netns.is_netns(self.netns_path(sb)):
                log.warning("sandbox %s lost its namespace; removing it", sb.name)
                attempt(self.remove_sandbox, sb.id, True)
                continue
            attempt(self._restore_sandbox, sb, rebuilt)
        known = set(self.networks) | set(self.endpoints)
        for link in self.ctx.host.links():
            parsed = names.parse_alias(link.alias)
            if parsed and parsed[1] not in known:
                log.warning("reconcile: removing stale link %s (%s %s)", link.name, *parsed)
                attempt(self.ctx.host.delete_link, link.name)
        ns_dir = os.path.join(self.config.run_dir, "netns")
        for entry in os.listdir(ns_dir):
            if entry not in self.sandboxes:
                log.warning("reconcile: removing stale namespace %s", entry)
                attempt(self.ctx.sandbox.delete_netns, os.path.join(ns_dir, entry))
        sb_dir = os.path.join(self.config.run_dir, "sandboxes")
        for entry in os.listdir(sb_dir):
            if entry not in self.sandboxes:
                shutil.rmtree(os.path.join(sb_dir, entry), ignore_errors=True)
        if errors:
            log.error("reconcile finished with %d error(s)", len(errors))

    def _restore_network(self, net: Network, rebuilt: set[str]) -> None:
        """Make the network's kernel links exist; note it in ``rebuilt`` if one was missing.

        A link deleted behind cnm's back (a bridge, say) let go of the endpoints hanging on
        it: they still exist, detached from its replacement, so they are re-plumbed too.
        """
        driver = self.drivers[net.driver]
        if not all(self.ctx.host.exists(name) for name in driver.kernel_links(net)):
            log.warning("reconcile: recreating the links of network %s", net.name)
            rebuilt.add(net.id)
        driver.create_network(net, self.ctx)

    def _restore_sandbox(self, sb: Sandbox, rebuilt: set[str]) -> None:
        eps = self.endpoints_of(sandbox=sb.id)
        path = self.netns_path(sb)
        for ep in eps:
            net = self.networks[ep.network_id]
            driver = self.drivers[net.driver]
            if net.id in rebuilt or not driver.endpoint_alive(net, ep, self.ctx):
                log.warning("reconcile: re-plumbing endpoint %s of %s", names.short(ep.id),
                            sb.name)
                if ep.ifname:
                    self.ctx.sandbox.remove(path, ep.ifname)
                info = driver.join(net, ep, path, self.ctx)
                if info.interface:
                    self.ctx.sandbox.configure(path, ep.ifname,
                                               [a for a in (ep.ipv4, ep.ipv6) if a])
                if ep.ports and isinstance(driver, Publisher):
                    driver.prepare_publish(net, ep, self.ctx)
        os.makedirs(self.files_dir(sb), exist_ok=True)
        self._apply_sandbox(sb, eps, eps, None, force=True)

    # ----------------------------------------------------------------------- DNS
    def _dns_net(self, net: Network) -> bool:
        """User-defined networks have embedded DNS; the default bridge has none (Docker)."""
        return bool(getattr(self.drivers[net.driver], "dns", False)) and not net.predefined

    def _check_aliases(self, net: Network, aliases: Sequence[str]) -> None:
        if not aliases:
            return
        if not self._dns_net(net):
            raise InvalidArgument(
                f'network "{net.name}" has no embedded DNS, so --alias means nothing there',
                hint="aliases work on user-defined networks",
            )
        for a in aliases:
            if not names.valid_dns_name(a):
                raise InvalidArgument(f"invalid alias {a!r}: a DNS name of letters, digits, "
                                      "'-', '_' and '.'")

    @staticmethod
    def _entry(net: Network, sb: Sandbox, ep: Endpoint) -> Entry:
        held = tuple(dict.fromkeys(n.lower() for n in (sb.name, sb.hostname, *ep.aliases)))
        return Entry(network_id=net.id, network_name=net.name, sandbox_id=sb.id,
                     sandbox_name=sb.name, names=held,
                     ipv4=ep.ipv4.split("/")[0] if ep.ipv4 else None,
                     ipv6=ep.ipv6.split("/")[0] if ep.ipv6 else None)

    def _sync_listener(self, sb: Sandbox, eps: list[Endpoint], before: list[Endpoint],
                       undo: ExitStack | None) -> None:
        """Serve DNS in the sandbox while it is on a user-defined network, for exactly the
        networks it is on (its view)."""
        if self.dns is None or sb.kind != "netns":
            return
        view = [e.network_id for e in eps if self._dns_net(self.networks[e.network_id])]
        was = [e.network_id for e in before if e.network_id in self.networks
               and self._dns_net(self.networks[e.network_id])]
        if view and not self.dns.serves(sb.id):
            udp, tcp = self.ctx.sandbox.open_dns(self.netns_path(sb))
            self.dns.add(sb.id, udp, tcp, view)
            if undo is not None:
                undo.callback(self.dns.remove, sb.id)
        elif view:
            self.dns.set_view(sb.id, view)
            if undo is not None:
                undo.callback(self.dns.set_view, sb.id, was)
        elif self.dns.serves(sb.id):
            self.dns.remove(sb.id)

    # ----------------------------------------------------------------------- firewall
    def _fw_rules(self, net: Network) -> NetworkRules | None:
        driver = self.drivers[net.driver]
        return driver.firewall_rules(net) if isinstance(driver, Publisher) else None

    def _all_fw_rules(self, exclude: str | None = None) -> list[NetworkRules]:
        out = []
        for net in sorted(self.networks.values(), key=lambda n: n.created):
            rules = self._fw_rules(net)
            if rules is not None and net.id != exclude:
                out.append(rules)
        return out

    @staticmethod
    def _port_rules(ep: Endpoint, mappings: Iterable[PortMapping]) -> list[PortRule]:
        a4, a6 = _addrs(ep)
        return [PortRule(m, a4, a6) for m in mappings]

    def _check_ports(self, net: Network, specs: Sequence[str]) -> list[portspec.PortSpec]:
        """Parse and vet -p specs before anything is touched."""
        parsed = [portspec.parse(p) for p in specs]
        if not parsed:
            return parsed
        if self.netfilter is None:
            raise Unsupported("this daemon runs without a firewall; it cannot publish ports")
        if not isinstance(self.drivers[net.driver], Publisher):
            raise InvalidArgument(f'network "{net.name}" (driver {net.driver}) cannot publish '
                                  "ports")
        if net.internal:
            raise InvalidArgument(f'network "{net.name}" is internal: its ports cannot be '
                                  "published")
        for p in parsed:
            if ":" in p.host_ip and not net.ipv6:
                raise InvalidArgument(f"host address {p.host_ip} is IPv6 but network "
                                      f'"{net.name}" has no IPv6')
        return parsed

    def _publish(self, net: Network, sb: Sandbox, ep: Endpoint,
                 specs: Sequence[portspec.PortSpec], undo: ExitStack) -> tuple[PortMapping, ...]:
        """Reserve host ports (refusing a clash), then add the map elements; undo both."""
        assert self.netfilter is not None
        driver = self.drivers[net.driver]
        default_ip = driver.host_binding(net) if isinstance(driver, Publisher) else ""
        mappings = []
        for spec in specs:
            m = self.netfilter.ports.resolve(spec, default_ip)
            self.netfilter.ports.add(m, f'sandbox "{sb.name}"')
            undo.callback(self.netfilter.ports.remove, m)
            mappings.append(m)
        rules = self._port_rules(ep, mappings)
        self.netfilter.add_ports(rules)
        undo.callback(_quietly(self.netfilter.remove_ports, rules))
        if not ep.ports:  # its first published port: it may reach its own ports too
            if isinstance(driver, Publisher):
                driver.prepare_publish(net, ep, self.ctx)
            self.netfilter.add_hairpin(*_addrs(ep))
            undo.callback(_quietly(self.netfilter.remove_hairpin, *_addrs(ep)))
        return tuple(mappings)

    def publish(self, sandbox: str, specs: Sequence[str],
                network: str | None = None) -> list[PortMapping]:
        """Publish more ports of a running sandbox (on one of its networks)."""
        with self.lock:
            sb = self.sandbox(sandbox)
            ep = self._publishing_endpoint(sb, network)
            net = self.networks[ep.network_id]
            parsed = self._check_ports(net, specs)
            with ExitStack() as undo:
                added = self._publish(net, sb, ep, parsed, undo)
                new = dataclasses.replace(ep, ports=ep.ports + added)
                with self.store.transaction() as tx:
                    tx.add_ports(ep.id, added)
                undo.pop_all()
            self.endpoints[ep.id] = new
            return list(added)

    def publishing_network(self, sandbox: str, network: str | None = None) -> str:
        """The name of the network ``publish`` would publish on."""
        with self.lock:
            ep = self._publishing_endpoint(self.sandbox(sandbox), network)
            return self.networks[ep.network_id].name

    def unpublish(self, sandbox: str, host_port: int, proto: str = "tcp") -> list[PortMapping]:
        """Withdraw the mappings of a sandbox that publish ``host_port``/``proto``."""
        with self.lock:
            sb = self.sandbox(sandbox)
            if proto not in portspec.PROTOCOLS:
                raise InvalidArgument(f"unknown protocol {proto!r}",
                                      hint="protocols: tcp, udp, sctp")
            gone: list[PortMapping] = []
            for ep in self.endpoints_of(sandbox=sb.id):
                hit = [m for m in ep.ports if m.proto == proto
                       and m.host_port <= host_port <= m.host_port_end]
                if not hit or self.netfilter is None:
                    continue
                self.netfilter.remove_ports(self._port_rules(ep, hit))
                for m in hit:
                    self.netfilter.ports.remove(m)
                new = dataclasses.replace(ep, ports=tuple(m for m in ep.ports if m not in hit))
                if not new.ports:
                    self.netfilter.remove_hairpin(*_addrs(ep))
                with self.store.transaction() as tx:
                    tx.delete_ports(ep.id, hit)
                self.endpoints[ep.id] = new
                gone.extend(hit)
            if not gone:
                raise NotFound(f'sandbox "{sb.name}" publishes no port {host_port}/{proto}')
            return gone

    def ports(self, sandbox: str) -> list[tuple[str, PortMapping]]:
        """(network name, mapping) of everything a sandbox publishes."""
        with self.lock:
            sb = self.sandbox(sandbox)
            return [(self.networks[ep.network_id].name, m)
                    for ep in self.endpoints_of(sandbox=sb.id) for m in ep.ports]

    def _publishing_endpoint(self, sb: Sandbox, network: str | None) -> Endpoint:
        eps = self.endpoints_of(sandbox=sb.id)
        if network is not None:
            net = self.network(network)
            ep = next((e for e in eps if e.network_id == net.id), None)
            if ep is None:
                raise NotFound(f'sandbox "{sb.name}" is not connected to network "{net.name}"')
            return ep
        for ep in eps:
            net = self.networks[ep.network_id]
            if isinstance(self.drivers[net.driver], Publisher) and not net.internal:
                return ep
        raise InvalidArgument(f'sandbox "{sb.name}" is on no network that can publish ports')

    def reload_firewall(self) -> dict[str, int]:
        """Rebuild cnm's table from the store (start, `cnm firewall reload`, after a flush)."""
        with self.lock:
            if self.netfilter is None:
                raise Unsupported("this daemon runs without a firewall")
            self.netfilter.ports = portspec.PortTable()
            for ep in self.endpoints.values():
                sb = self.sandboxes[ep.sandbox_id]
                for m in ep.ports:
                    self.netfilter.ports.add(m, f'sandbox "{sb.name}"')
            return self._rebuild_table()

    def _rebuild_table(self) -> dict[str, int]:
        """The table alone, from the records (the port index is left as it is: a repair in
        the middle of an operation keeps that operation's reservations)."""
        assert self.netfilter is not None
        nets = self._all_fw_rules()
        rules = [r for ep in self.endpoints.values() for r in self._port_rules(ep, ep.ports)]
        hairpins = [_addrs(ep) for ep in self.endpoints.values() if ep.ports]
        self.netfilter.rebuild(nets, rules, hairpins)
        return {"networks": len(nets), "ports": len(rules)}

    # ----------------------------------------------------------------------- views
    def network_view(self, net: Network) -> dict[str, Any]:
        with self.lock:  # a consistent picture while mutations run on other threads
            return self._network_view(net)

    def _network_view(self, net: Network) -> dict[str, Any]:
        out = net.to_dict()
        out["scope"] = "local"
        out["endpoints"] = [
            {"id": e.id, "sandbox": self.sandboxes[e.sandbox_id].name,
             "sandbox_id": e.sandbox_id, "ifname": e.ifname, "mac": e.mac,
             "ipv4": e.ipv4, "ipv6": e.ipv6}
            for e in self.endpoints_of(network=net.id)
        ]
        return out

    def sandbox_view(self, sb: Sandbox) -> dict[str, Any]:
        with self.lock:
            return self._sandbox_view(sb)

    def _sandbox_view(self, sb: Sandbox) -> dict[str, Any]:
        out = sb.to_dict()
        d = self.files_dir(sb)
        out["netns"] = self.netns_path(sb)
        out["hosts_path"] = os.path.join(d, "hosts")
        out["resolv_conf_path"] = os.path.join(d, "resolv.conf")
        out["endpoints"] = [
            {**e.to_dict(), "network": self.networks[e.network_id].name}
            for e in self.endpoints_of(sandbox=sb.id)
        ]
        return out

    def info(self) -> dict[str, Any]:
        with self.lock:
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


def _addrs(ep: Endpoint) -> tuple[str | None, str | None]:
    """An endpoint's IPv4 and IPv6 addresses, without their prefix lengths."""
    return (ep.ipv4.split("/")[0] if ep.ipv4 else None,
            ep.ipv6.split("/")[0] if ep.ipv6 else None)


def _lan_addresses(taken: list[Taken], routes: list[Taken],
                   link: str | None) -> tuple[list[Taken], list[Taken]]:
    """The host's addresses on a network's own parent link are on the LAN the network
    joins, not a clash: like routes, a requested subnet may overlap them (the driver then
    checks sandboxes cannot be given them) and an automatic one avoids them."""
    if not link:
        return taken, routes
    mine = [t for t in taken if t.device == link]
    return [t for t in taken if t not in mine], routes + mine


def _default_routes(eps: list[Endpoint]) -> list[tuple[int, str, str]]:
    """The first endpoint (in connection order) with a gateway gives each family's route."""
    out: list[tuple[int, str, str]] = []
    for version in (4, 6):
        for e in sorted(eps, key=lambda e: e.order):
            gw = e.gateway4 if version == 4 else e.gateway6
            if gw and e.ifname:
                out.append((version, gw, e.ifname))
                break
    return out



