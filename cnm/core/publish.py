"""Published ports, anti-spoofing guards and cnm's firewall tables.

An endpoint's host ports are reserved when the endpoint is created (no one else may take
them), programmed into the table (map elements) while it is joined, withdrawn when it
leaves, and released when it is deleted. Each endpoint's single ports are indexed by
(proto, host port), so withdrawing one of 10,000 costs what withdrawing the first did.
A joined endpoint's port guard (cnm.antispoof) is in the bridge table from before its link
exists until after the link is gone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from contextlib import ExitStack

from cnm import portspec
from cnm.antispoof import PortGuard
from cnm.core.state import State
from cnm.errors import InvalidArgument, NotFound, Unsupported
from cnm.firewall import NetworkRules, PortRule
from cnm.model import Endpoint, Network, Sandbox
from cnm.portspec import PortMapping
from cnm.undo import quietly


class EndpointPorts:
    """A joined endpoint's programmed mappings, in order, found by host port in O(1) and
    removed in O(1): withdrawing one of 10,000 touches one entry, not the 10,000."""

    def __init__(self, mappings: Iterable[PortMapping] = ()) -> None:
        self._all: dict[PortMapping, None] = {}
        self._single: dict[tuple[str, int], list[PortMapping]] = {}
        self._ranges: list[PortMapping] = []  # few: one mapping however many ports
        self.add(mappings)

    def add(self, mappings: Iterable[PortMapping]) -> None:
        for m in mappings:
            self._all[m] = None
            if m.is_range:
                self._ranges.append(m)
            else:
                self._single.setdefault((m.proto, m.host_port), []).append(m)

    def remove(self, mappings: Iterable[PortMapping]) -> None:
        for m in mappings:
            self._all.pop(m, None)
            if m.is_range:
                self._ranges.remove(m)
                continue
            held = self._single.get((m.proto, m.host_port), [])
            if m in held:
                held.remove(m)
            if not held:
                self._single.pop((m.proto, m.host_port), None)

    def hits(self, proto: str, host_port: int) -> list[PortMapping]:
        """The mappings that publish ``host_port``/``proto``."""
        return [*self._single.get((proto, host_port), ()),
                *(m for m in self._ranges if m.proto == proto
                  and m.host_port <= host_port <= m.host_port_end)]

    def as_tuple(self) -> tuple[PortMapping, ...]:
        return tuple(self._all)  # one C-level copy of the keys


class Publishing:
    def __init__(self, state: State) -> None:
        self.s = state
        # endpoint id -> its programmed mappings (joined endpoints: what is in the table)
        self.index: dict[str, EndpointPorts] = {}
        # endpoint id -> its port guard (what is in the bridge table)
        self.guards: dict[str, PortGuard] = {}

    # ----------------------------------------------------------------------- checks
    def check(self, net: Network, specs: Sequence[str]) -> list[portspec.PortSpec]:
        """Parse and vet -p specs before anything is touched."""
        parsed = [portspec.parse(p) for p in specs]
        if not parsed:
            return parsed
        if self.s.netfilter is None:
            raise Unsupported("this daemon runs without a firewall; it cannot publish ports")
        if not self.s.caps(net).publishes:
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

    # ----------------------------------------------------------------------- life cycle
    def reserve(self, net: Network, ep: Endpoint, specs: Sequence[portspec.PortSpec],
                holder: str, undo: ExitStack) -> tuple[PortMapping, ...]:
        """Take the host ports (refusing a clash); nothing in the kernel yet."""
        if not specs:
            return ()
        assert self.s.netfilter is not None
        default_ip = self.s.driver(net).host_binding(net)
        mappings = []
        for spec in specs:
            m = self.s.netfilter.ports.resolve(spec, default_ip)
            self.s.netfilter.ports.add(m, holder)
            undo.callback(self.s.netfilter.ports.remove, m)
            mappings.append(m)
        return tuple(mappings)

    def release(self, ep: Endpoint, mappings: Iterable[PortMapping] | None = None) -> None:
        """Give the host ports back (the endpoint's, or just ``mappings``)."""
        if self.s.netfilter is None:
            return
        for m in ep.ports if mappings is None else mappings:
            self.s.netfilter.ports.remove(m)
        if mappings is None:
            self.index.pop(ep.id, None)
            # An endpoint forgotten without leaving (a sandbox removed by force) takes its
            # guard with it.
            self.unguard(ep)

    def program(self, net: Network, ep: Endpoint, mappings: Sequence[PortMapping],
                first: bool, undo: ExitStack | None) -> None:
        """Add the map elements of a joined endpoint's ``mappings``; ``first``: it had none
        programmed before, so it is readied to reach its own ports (hairpin) too."""
        nf = self.s.netfilter
        if not mappings or nf is None:
            return
        rules = self.rules(ep, mappings)
        nf.add_ports(rules)
        if undo is not None:
            undo.callback(quietly(nf.remove_ports, rules))
        if first:
            self.ready(net, ep)
            nf.add_hairpin(ep.ip4, ep.ip6)
            if undo is not None:
                undo.callback(quietly(nf.remove_hairpin, ep.ip4, ep.ip6))
        self.index.setdefault(ep.id, EndpointPorts()).add(mappings)

    def ready(self, net: Network, ep: Endpoint) -> None:
        """A joined endpoint's link made ready for its published ports: the driver's part
        (hairpin on its port), and route_localnet on the network's bridge, which may have
        been made only by this join (an overlay's host side) or again since."""
        self.s.driver(net).prepare_publish(net, ep, self.s.ctx)
        rules = self.network_rules(net)
        if rules is not None and self.s.netfilter is not None:
            self.s.netfilter.localnet(rules)

    def withdraw(self, ep: Endpoint) -> None:
        """Take a leaving endpoint's elements out: no new connection may reach it. Its host
        ports stay reserved."""
        if ep.ports and self.s.netfilter is not None:
            self.s.netfilter.remove_ports(self.rules(ep, ep.ports))
            self.s.netfilter.remove_hairpin(ep.ip4, ep.ip6)
        self.index.pop(ep.id, None)

    def guard(self, net: Network, ep: Endpoint, undo: ExitStack) -> None:
        """Let only ``ep``'s own MAC and addresses in from its port; called before its link
        is made, so the link's first frame is already checked."""
        nf = self.s.netfilter
        g = self.s.driver(net).guard(net, ep)
        if nf is None or g is None:
            return
        nf.add_guard(g)
        self.guards[ep.id] = g
        undo.callback(quietly(self.unguard, ep))

    def unguard(self, ep: Endpoint) -> None:
        """Take the guard of an endpoint whose link is gone out (none is success)."""
        g = self.guards.pop(ep.id, None)
        if g is not None and self.s.netfilter is not None:
            self.s.netfilter.remove_guard(g)

    @staticmethod
    def rules(ep: Endpoint, mappings: Iterable[PortMapping]) -> list[PortRule]:
        return [PortRule(m, ep.ip4, ep.ip6) for m in mappings]

    # ----------------------------------------------------------------------- operations
    def publish(self, sb: Sandbox, specs: Sequence[str], network: str | None) -> list[PortMapping]:
        """Publish more ports of a running sandbox (on one of its networks)."""
        ep = self._publishing_endpoint(sb, network)
        net = self.s.networks[ep.network_id]
        parsed = self.check(net, specs)
        with ExitStack() as undo:
            added = self.reserve(net, ep, parsed, f'sandbox "{sb.name}"', undo)
            self.program(net, ep, added, not ep.ports, undo)
            with self.s.store.transaction() as tx:
                tx.add_ports(ep.id, added)
            undo.pop_all()
        self.s.endpoints[ep.id] = dataclasses.replace(ep, ports=ep.ports + added)
        return list(added)

    def publishing_network(self, sb: Sandbox, network: str | None) -> str:
        """The name of the network ``publish`` would publish on."""
        return self.s.networks[self._publishing_endpoint(sb, network).network_id].name

    def unpublish(self, sb: Sandbox, host_port: int, proto: str) -> list[PortMapping]:
        """Withdraw the mappings of a sandbox that publish ``host_port``/``proto``."""
        if proto not in portspec.PROTOCOLS:
            raise InvalidArgument(f"unknown protocol {proto!r}", hint="protocols: tcp, udp, sctp")
        nf = self.s.netfilter
        gone: list[PortMapping] = []
        for ep in self.s.endpoints_of(sandbox=sb.id):
            held = self.index.get(ep.id)
            if held is None or nf is None:
                continue
            hit = held.hits(proto, host_port)
            if not hit:
                continue
            nf.remove_ports(self.rules(ep, hit))
            for m in hit:
                nf.ports.remove(m)
            held.remove(hit)
            ports = held.as_tuple()
            if not ports:
                nf.remove_hairpin(ep.ip4, ep.ip6)
            with self.s.store.transaction() as tx:
                tx.delete_ports(ep.id, hit)
            self.s.endpoints[ep.id] = dataclasses.replace(ep, ports=ports)
            gone.extend(hit)
        if not gone:
            raise NotFound(f'sandbox "{sb.name}" publishes no port {host_port}/{proto}')
        return gone

    def ports(self, sb: Sandbox) -> list[tuple[str, PortMapping]]:
        """(network name, mapping) of everything a sandbox publishes."""
        return [(self.s.networks[ep.network_id].name, m)
                for ep in self.s.endpoints_of(sandbox=sb.id) for m in ep.ports]

    def _publishing_endpoint(self, sb: Sandbox, network: str | None) -> Endpoint:
        eps = self.s.endpoints_of(sandbox=sb.id)
        if network is not None:
            net = self.s.network(network)
            ep = next((e for e in eps if e.network_id == net.id), None)
            if ep is None:
                raise NotFound(f'sandbox "{sb.name}" is not connected to network "{net.name}"')
            return ep
        for ep in eps:
            net = self.s.networks[ep.network_id]
            if self.s.caps(net).publishes and not net.internal:
                return ep
        raise InvalidArgument(f'sandbox "{sb.name}" is on no network that can publish ports')

    # ----------------------------------------------------------------------- the table
    def network_rules(self, net: Network) -> NetworkRules | None:
        return self.s.driver(net).firewall_rules(net)

    def all_network_rules(self, exclude: str | None = None) -> list[NetworkRules]:
        out = []
        for net in sorted(self.s.networks.values(), key=lambda n: n.created):
            rules = self.network_rules(net)
            if rules is not None and net.id != exclude:
                out.append(rules)
        return out

    def reload(self) -> dict[str, int]:
        """Rebuild cnm's table from the records (start, `cnm firewall reload`, a flush)."""
        nf = self.s.netfilter
        if nf is None:
            raise Unsupported("this daemon runs without a firewall")
        nf.ports = portspec.PortTable()
        self.index.clear()
        self.guards.clear()
        for ep in self.s.endpoints.values():
            for m in ep.ports:
                nf.ports.add(m, self.s.holder(ep))
            if ep.joined:
                self.index[ep.id] = EndpointPorts(ep.ports)
                net = self.s.networks[ep.network_id]
                g = self.s.driver(net).guard(net, ep)
                if g is not None:
                    self.guards[ep.id] = g
        return self.rebuild_table()

    def rebuild_table(self) -> dict[str, int]:
        """The tables alone, from the records (the port index and the guards are left as
        they are: a repair in the middle of an operation keeps that operation's
        reservations and guard)."""
        assert self.s.netfilter is not None
        nets = self.all_network_rules()
        joined = [ep for ep in self.s.endpoints.values() if ep.joined]
        rules = [r for ep in joined for r in self.rules(ep, ep.ports)]
        hairpins = [(ep.ip4, ep.ip6) for ep in joined if ep.ports]
        self.s.netfilter.rebuild(nets, rules, hairpins, self.guards.values())
        return {"networks": len(nets), "ports": len(rules), "guards": len(self.guards)}
