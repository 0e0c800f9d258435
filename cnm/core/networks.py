"""Networks: create (validate, plan the subnets, the driver's links, the firewall), remove,
prune, and the three pre-defined ones."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from contextlib import ExitStack

from cnm import names
from cnm.core.publish import Publishing
from cnm.core.state import State
from cnm.drivers.registry import lookup
from cnm.errors import AlreadyExists, Conflict, Exhausted, InUse, InvalidArgument
from cnm.ipam import NetworkAddresses, Taken, parse_cidr, plan_subnets
from cnm.model import PREDEFINED, Network, NetworkSpec, Subnet, now
from cnm.store import Held
from cnm.undo import quietly

log = logging.getLogger("cnm.core")
# How many times a create plans again after another host took its subnet.
RACES = 8


class Networks:
    def __init__(self, state: State, publishing: Publishing) -> None:
        self.s = state
        self.pub = publishing

    def taken(self, lan_link: str | None = None) -> tuple[list[Taken], list[Taken]]:
        """(networks and host addresses, host routes) that a new subnet may not overlap.

        The host's addresses on a network's own parent link (``lan_link``) are on the LAN
        the network joins, not a clash: like routes, a requested subnet may overlap them
        (the driver then checks sandboxes cannot be given them) and an automatic one avoids
        them."""
        taken = [Taken(s.subnet, f'network "{n.name}" ({s.subnet})')
                 for n in self.s.networks.values() for s in n.subnets]
        routes: list[Taken] = []
        for o in self.s.ctx.host.occupied():
            mine = lan_link is not None and o.kind == "address" and o.device == lan_link
            (routes if o.kind == "route" or mine else taken).append(
                Taken(o.cidr, o.holder, o.device))
        return taken, routes

    def pick_subnet(self, cidr: str | None, version: int, elsewhere: Sequence[Taken]) -> str:
        """A subnet for a runtime's IPAM (Docker's RequestPool), before any network holds
        it: ``cidr`` checked against what a new network may not overlap (and ``elsewhere``:
        pools the runtime holds already), or a free one of the pools. Pure: nothing is held."""
        taken, routes = self.taken()
        taken += elsewhere
        if cidr is not None:
            net = parse_cidr(cidr)
            if net.version != version:
                raise InvalidArgument(f"subnet {cidr} is not an IPv{version} subnet")
        subnets = plan_subnets([cidr] if cidr else [], [], [], {}, ipv6=version == 6,
                               pools=self.s.config.pools, taken=taken, routes=routes)
        return next(s.subnet for s in subnets if s.version == version)

    def plan(self, spec: NetworkSpec, elsewhere: Sequence[Taken] = ()) -> Network:
        """Everything about a new network that can be known before touching the kernel."""
        if not names.valid_name(spec.name):
            raise InvalidArgument(
                f"invalid network name {spec.name!r}: use 1-64 letters, digits, '_', '.' "
                "and '-', starting with a letter or digit"
            )
        if spec.name in PREDEFINED:
            raise AlreadyExists(f"network {spec.name!r} is pre-defined")
        if any(n.name == spec.name for n in self.s.networks.values()):
            raise AlreadyExists(f'network "{spec.name}" already exists')
        driver = lookup(self.s.drivers, spec.driver)
        caps = driver.capabilities
        if not caps.user_creatable:
            raise InvalidArgument(
                f"driver {spec.driver} has one pre-defined network only ({spec.driver!r}); "
                "it cannot be created"
            )
        options = driver.parse_options(spec.options).to_dict()
        net = Network(id=names.new_id(), name=spec.name, driver=driver.name, created=now(),
                      ipv6=spec.ipv6, internal=spec.internal, options=options,
                      labels=dict(spec.labels), scope=caps.scope)
        subnets: tuple[Subnet, ...] = ()
        if caps.ipam:
            taken, routes = self.taken(driver.lan_link(net))
            taken += elsewhere
            subnets = plan_subnets(spec.subnets, spec.gateways, spec.ip_ranges,
                                   spec.aux_addresses, ipv6=spec.ipv6,
                                   pools=self.s.config.global_pools if caps.scope == "global"
                                   else self.s.config.pools, taken=taken, routes=routes)
        elif spec.subnets or spec.gateways or spec.ip_ranges or spec.aux_addresses:
            raise InvalidArgument(f"driver {spec.driver} does not take IPAM options")
        net = dataclasses.replace(net, subnets=subnets)
        driver.validate_network(net, list(self.s.networks.values()))
        self._check_links(net)
        return net

    def _check_links(self, net: Network) -> None:
        """No two networks may own one host link (a bridge named twice with -o)."""
        mine = set(self.s.driver(net).claims(net))
        for other in self.s.networks.values():
            for link in mine.intersection(self.s.driver(other).claims(other)):
                raise Conflict(f'link {link} is already used by network "{other.name}"')

    def add(self, net: Network) -> None:
        """Store the network, then make its links and firewall part; all or nothing.

        The store goes first: it holds the name, the subnets and the driver's claims (a
        bridge, a VNI) atomically, so an operation that lost a race to another host sharing
        the store stops before touching the kernel (and never adopts the winner's bridge).
        A crash after the commit leaves a stored network whose links reconcile makes."""
        driver = self.s.driver(net)
        with ExitStack() as undo:
            with self.s.store.transaction() as tx:
                tx.put_network(net, driver.claims(net))
            undo.callback(quietly(self._unstore, net.id))
            driver.create_network(net, self.s.ctx)
            undo.callback(quietly(driver.delete_network, net, self.s.ctx))
            rules = self.pub.network_rules(net)
            nf = self.s.netfilter
            # During start the table does not exist yet; its rebuild at the end covers this.
            if nf is not None and rules is not None and self.s.fw_built:
                others = self.pub.all_network_rules()
                nf.add_network(rules, others + [rules])
            undo.pop_all()
        self.s.networks[net.id] = net
        self.s.addresses[net.id] = NetworkAddresses(net.subnets,
                                                     scatter=net.scope == "global")

    def _unstore(self, network_id: str) -> None:
        with self.s.store.transaction() as tx:
            tx.delete_network(network_id)

    def create(self, spec: NetworkSpec) -> Network:
        """Plan and add; an automatic subnet another host sharing the store took between
        the plan and the commit (Held) is marked taken and the plan made again."""
        elsewhere: list[Taken] = []
        for _ in range(RACES):
            net = self.plan(spec, elsewhere)
            try:
                self.add(net)
                return net
            except Held as e:
                if e.kind == "claim" and e.value not in self.s.driver(net).claims(
                        self.plan(spec, elsewhere)):
                    # A claim the driver picked at random (an overlay's VNI) was taken
                    # elsewhere: a plan made again picks another.
                    log.info("%s was taken elsewhere; picking another", e.value)
                    continue
                if e.kind != "subnet" or spec.subnets:
                    raise
                log.info("subnet %s was taken elsewhere; picking another", e.value)
                elsewhere.append(Taken(e.value, f"a network in the store ({e.value})"))
        raise Exhausted(f'network "{spec.name}": another host took the picked subnet '
                        f"{RACES} times in a row", hint="try again")

    def check_removable(self, net: Network) -> None:
        if net.predefined:
            raise InvalidArgument(f"{net.name} is a pre-defined network and cannot be removed")
        eps = self.s.endpoints_of(network=net.id)
        if eps:
            holders = ", ".join(sorted(
                self.s.sandboxes[e.sandbox_id].name if e.sandbox_id else f"endpoint {e.name}"
                for e in eps))
            raise InUse(f'network "{net.name}" has active endpoints ({holders})',
                        hint="disconnect them first" if all(e.joined for e in eps) else
                        "disconnect them, and remove reserved ones (cnm endpoint rm), first")
        # A global network's joined endpoints on the other hosts, as the watch reported
        # them (one joined since is refused by the store, below).
        remote = sorted(f"{p.sandbox_name} on host {p.host}"
                        for p in self.s.peers.get(net.id, {}).values())
        if remote:
            raise InUse(f'network "{net.name}" has active endpoints on other hosts '
                        f"({', '.join(remote)})", hint="disconnect them there first")

    def remove(self, net: Network) -> None:
        """The store first, as in ``add``: it refuses a network that another host has taken
        an endpoint on since this host last heard, before anything here has changed. A
        crash after the commit leaves links that reconcile removes as stale."""
        self.check_removable(net)
        with self.s.store.transaction() as tx:
            tx.delete_network(net.id)
        try:
            rules = self.pub.network_rules(net)
            if self.s.netfilter is not None and rules is not None:
                self.s.netfilter.remove_network(rules,
                                                self.pub.all_network_rules(exclude=net.id))
            self.s.driver(net).delete_network(net, self.s.ctx)
        finally:
            # The store no longer has it: neither may the core (a link left over is
            # stale, for doctor and reconcile).
            del self.s.networks[net.id]
            self.s.addresses.pop(net.id, None)

    def prune(self) -> list[str]:
        used = {e.network_id for e in self.s.endpoints.values()}
        gone = []
        for net in sorted(self.s.networks.values(), key=lambda n: n.name):
            if not net.predefined and net.id not in used:
                self.remove(net)
                gone.append(net.name)
        return gone

    def ensure_predefined(self) -> None:
        have = {n.name for n in self.s.networks.values()}
        for name, driver in (("none", "null"), ("host", "host")):
            if name not in have:
                self.add(Network(id=names.new_id(), name=name, driver=driver, created=now()))
        if "bridge" not in have:
            taken, routes = self.taken()
            want = self.s.config.default_bridge_subnet
            try:
                subnets = plan_subnets([want or "172.17.0.0/16"], [], [], {}, ipv6=False,
                                       pools=(), taken=taken + ([] if want else routes))
            except Conflict:
                if want:
                    raise
                subnets = plan_subnets([], [], [], {}, ipv6=False, pools=self.s.config.pools,
                                       taken=taken, routes=routes)
            self.add(Network(
                id=names.new_id(), name="bridge", driver="bridge", created=now(),
                subnets=subnets, options={"bridge_name": self.s.config.default_bridge_name},
            ))
