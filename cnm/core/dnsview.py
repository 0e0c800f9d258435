"""The embedded DNS's view: which networks have names, what a joined endpoint answers as,
and which sandboxes get a listener for which networks."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

from cnm import names
from cnm.core.state import State
from cnm.dns.records import Entry
from cnm.errors import InvalidArgument
from cnm.model import Endpoint, Network, Peer, Sandbox
from cnm.undo import quietly


class DnsView:
    def __init__(self, state: State) -> None:
        self.s = state

    def named(self, net: Network) -> bool:
        """User-defined networks have embedded DNS; the default bridge has none (Docker)."""
        return self.s.caps(net).dns and not net.predefined

    def check_aliases(self, net: Network, aliases: Sequence[str]) -> None:
        if not aliases:
            return
        if not self.named(net):
            raise InvalidArgument(
                f'network "{net.name}" has no embedded DNS, so --alias means nothing there',
                hint="aliases work on user-defined networks",
            )
        for a in aliases:
            if not names.valid_dns_name(a):
                raise InvalidArgument(f"invalid alias {a!r}: a DNS name of letters, digits, "
                                      "'-', '_' and '.'")

    @staticmethod
    def entry(net: Network, sb: Sandbox, ep: Endpoint) -> Entry:
        held = tuple(dict.fromkeys(n.lower() for n in (sb.name, sb.hostname, *ep.aliases)))
        return Entry(network_id=net.id, network_name=net.name, sandbox_id=sb.id,
                     sandbox_name=sb.name, names=held, ipv4=ep.ip4, ipv6=ep.ip6)

    def publish(self, net: Network, sb: Sandbox, ep: Endpoint, undo: ExitStack | None) -> None:
        """The joined endpoint's names answer from the moment the operation returns; on a
        global network, on every host of the cluster (and its data plane reaches it)."""
        entry = self.entry(net, sb, ep)
        if self.named(net):
            self.s.records.set(entry)
            if undo is not None:
                undo.callback(self.s.records.remove, net.id, sb.id)
        cluster = self.s.cluster
        if net.scope == "global" and cluster is not None:
            cluster.announce(Peer(network_id=net.id, endpoint_id=ep.id, sandbox_id=sb.id,
                                  host="", mac=ep.mac, ipv4=ep.ipv4, ipv6=ep.ipv6,
                                  sandbox_name=sb.name, names=entry.names, name=ep.name))
            if undo is not None:
                undo.callback(quietly(cluster.withdraw, net.id, sb.id))

    def withdraw(self, net: Network, sb_id: str) -> None:
        self.s.records.remove(net.id, sb_id)
        if net.scope == "global" and self.s.cluster is not None:
            self.s.cluster.withdraw(net.id, sb_id)

    def sync_listener(self, sb: Sandbox, eps: list[Endpoint], before: list[Endpoint],
                      undo: ExitStack | None) -> None:
        """Serve DNS in the sandbox while it is on a user-defined network, for exactly the
        networks it is on (its view)."""
        dns = self.s.dns
        if dns is None or sb.kind == "host":
            return
        nets = self.s.networks
        view = [e.network_id for e in eps if self.named(nets[e.network_id])]
        was = [e.network_id for e in before if e.network_id in nets
               and self.named(nets[e.network_id])]
        if view and not dns.serves(sb.id):
            udp, tcp = self.s.ctx.sandbox.open_dns(self.s.netns_path(sb))
            dns.add(sb.id, udp, tcp, view)
            if undo is not None:
                undo.callback(dns.remove, sb.id)
        elif view:
            dns.set_view(sb.id, view)
            if undo is not None:
                undo.callback(dns.set_view, sb.id, was)
        elif dns.serves(sb.id):
            dns.remove(sb.id)
