"""What other hosts of a cluster did, applied here: global networks they created or removed,
the addresses their endpoints hold, and their joined endpoints (peers), which this host's
DNS answers for and its driver's data plane reaches. cnm.cluster calls these from its watch
of the store, under the controller's lock; they touch nothing in the store."""

from __future__ import annotations

import logging

from cnm.core.dnsview import DnsView
from cnm.core.publish import Publishing
from cnm.core.state import State
from cnm.dns.records import Entry
from cnm.errors import CnmError
from cnm.ipam import NetworkAddresses
from cnm.model import Endpoint, Network, Peer

log = logging.getLogger("cnm.remote")


class Remote:
    def __init__(self, state: State, dns: DnsView, publishing: Publishing) -> None:
        self.s = state
        self.dns = dns
        self.pub = publishing
        # endpoint id -> the address(es) another host's endpoint holds, marked in the IPAM.
        self._held: dict[str, tuple[str, list[str]]] = {}

    def network(self, net: Network) -> None:
        """A global network another host created (or changed)."""
        if net.id in self.s.networks:
            return
        self.s.networks[net.id] = net
        self.s.addresses[net.id] = NetworkAddresses(net.subnets,
                                                     scatter=net.scope == "global")
        rules = self.pub.network_rules(net)
        nf = self.s.netfilter
        if nf is not None and rules is not None and self.s.fw_built:
            nf.add_network(rules, self.pub.all_network_rules())
        for network_id, cidrs in self._held.values():
            if network_id == net.id:
                for a in cidrs:
                    self.s.addresses[net.id].mark(a, "an endpoint on another host")
        for peer in list(self.s.peers.get(net.id, {}).values()):
            self.peer(peer, True)
        log.info("global network %s appeared", net.name)

    def network_gone(self, network_id: str) -> None:
        net = self.s.networks.get(network_id)
        if net is None or net.scope != "global":
            return
        if self.s.endpoints.of_network(network_id):
            log.error("global network %s was removed elsewhere while this host has "
                      "endpoints on it; keeping it here", net.name)
            return
        rules = self.pub.network_rules(net)
        nf = self.s.netfilter
        try:
            if nf is not None and rules is not None and self.s.fw_built:
                nf.remove_network(rules, self.pub.all_network_rules(exclude=net.id))
            self.s.driver(net).delete_network(net, self.s.ctx)
        except CnmError as e:
            log.error("removing the links of network %s: %s", net.name, e.message)
        del self.s.networks[network_id]
        self.s.addresses.pop(network_id, None)
        self.s.peers.pop(network_id, None)
        log.info("global network %s was removed", net.name)

    def endpoint(self, ep: Endpoint, present: bool) -> None:
        """Another host's endpoint holds its addresses (reserved or joined), or no longer."""
        old = self._held.pop(ep.id, None)
        space = self.s.addresses.get(ep.network_id)
        if old is not None and space is not None:
            for a in old[1]:
                space.release(a)
        if present:
            self._held[ep.id] = (ep.network_id, ep.cidrs)
            if space is not None:
                for a in ep.cidrs:
                    space.mark(a, f'endpoint "{ep.name}" on another host')

    def peer(self, peer: Peer, present: bool) -> None:
        """Another host's joined endpoint: its names answer here, the data plane reaches it."""
        known = self.s.peers.setdefault(peer.network_id, {})
        if present:
            known[peer.endpoint_id] = peer
        else:
            known.pop(peer.endpoint_id, None)
        net = self.s.networks.get(peer.network_id)
        if net is None:
            return  # its network's record comes first; then network() replays this
        if self.dns.named(net):
            if present:
                self.s.records.set(Entry(network_id=net.id, network_name=net.name,
                                         sandbox_id=peer.sandbox_id,
                                         sandbox_name=peer.sandbox_name, names=peer.names,
                                         ipv4=peer.ipv4.partition("/")[0] if peer.ipv4 else None,
                                         ipv6=peer.ipv6.partition("/")[0] if peer.ipv6 else None))
            else:
                self.s.records.remove(net.id, peer.sandbox_id)
        try:
            self.s.driver(net).remote(net, peer, present, self.s.ctx)
        except CnmError as e:
            log.error("peer %s of network %s on host %s: %s", peer.sandbox_name, net.name,
                      peer.host, e.message)
