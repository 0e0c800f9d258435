"""Start: load the store and make the kernel match it. Links retired before a crash are
reaped, networks' links recreated, sandboxes whose namespace went away while cnm was down
freed, endpoints whose link is gone re-plumbed, and what cnm made but no record holds (links,
namespaces, files) removed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cnm import names
from cnm.core.dnsview import DnsView
from cnm.core.networks import Networks
from cnm.core.publish import Publishing
from cnm.core.repair import Repairs
from cnm.core.sandboxes import Sandboxes
from cnm.core.state import EndpointTable, State
from cnm.errors import CnmError
from cnm.ipam import NetworkAddresses
from cnm.model import Network, Sandbox

log = logging.getLogger("cnm.reconcile")


START = "start"  # the reason of reconcile's fixes (doctor's name the drift)


class Reconciler:
    def __init__(self, state: State, networks: Networks, sandboxes: Sandboxes,
                 publishing: Publishing, dns: DnsView, repairs: Repairs) -> None:
        self.s = state
        self.nets = networks
        self.sbx = sandboxes
        self.pub = publishing
        self.dns = dns
        self.fix = repairs

    def start(self) -> None:
        s = self.s
        state = s.store.load()
        s.networks = {n.id: n for n in state.networks}
        s.sandboxes = {x.id: x for x in state.sandboxes}
        s.endpoints = EndpointTable(state.endpoints)
        s.addresses = {n.id: NetworkAddresses(n.subnets, scatter=n.scope == "global")
                       for n in state.networks}
        # The store holds each local network's driver claims (a store written by an older
        # cnm has none yet): put them again, which changes nothing when they are there.
        with s.store.transaction() as tx:
            for n in state.networks:
                if n.scope == "local":
                    tx.put_network(n, s.driver(n).claims(n))
        for e in state.endpoints:
            net = s.networks[e.network_id]
            if e.sandbox_id is not None:
                self.dns.publish(net, s.sandboxes[e.sandbox_id], e, None)
            space = s.addresses.get(e.network_id)
            for a in e.cidrs:
                if space is not None:
                    space.mark(a, s.holder(e))
        for nid, positions in state.cursors.items():
            if nid in s.addresses:
                s.addresses[nid].restore(positions)
        self.nets.ensure_predefined()
        self.reconcile()
        if s.netfilter is not None:
            self.fix.rebuild_firewall(START)

    def reconcile(self) -> None:
        """Each fix is one of ``Repairs``' (the same as ``cnm doctor --fix``'s), each
        published as a reconcile event."""
        errors: list[CnmError] = []

        def attempt(fn: Callable[..., Any], *args: Any) -> None:
            try:
                fn(*args)
            except CnmError as e:
                log.error("reconcile: %s", e.message)
                errors.append(e)

        s, fix = self.s, self.fix
        attempt(s.ctx.host.reap)  # links retired before a crash or stop
        rebuilt: set[str] = set()
        for net in list(s.networks.values()):
            attempt(self._restore_network, net, rebuilt)
        for sb in list(s.sandboxes.values()):
            if not self.sbx.alive(sb):
                attempt(fix.free, sb, START)
                continue
            attempt(self._restore_sandbox, sb, rebuilt)
        for name, _kind, _ident in fix.stale_links():
            attempt(fix.remove_link, name, START)
        for path in fix.stale_namespaces():
            attempt(fix.remove_namespace, path, START)
        for path in fix.stale_files():
            fix.remove_files(path, START)
        if errors:
            log.error("reconcile finished with %d error(s)", len(errors))

    def _restore_network(self, net: Network, rebuilt: set[str]) -> None:
        """Make the network's kernel links exist; note it in ``rebuilt`` if one was missing.

        A link deleted behind cnm's back (a bridge, say) let go of the endpoints hanging on
        it: they still exist, detached from its replacement, so they are re-plumbed too.
        """
        if self.fix.links_missing(net):
            rebuilt.add(net.id)
            self.fix.recreate_network(net, START)
        else:  # cnm's drivers bring existing links in line; a remote plugin is not asked
            self.s.driver(net).restore_network(net, self.s.ctx)

    def _restore_sandbox(self, sb: Sandbox, rebuilt: set[str]) -> None:
        s = self.s
        for ep in s.endpoints_of(sandbox=sb.id):
            net = s.networks[ep.network_id]
            if net.id in rebuilt or not s.driver(net).endpoint_alive(net, ep, s.ctx):
                if sb.kind == "handover":
                    # Its link is in the runtime's namespace, out of cnm's reach: a new
                    # one made here would stay in the host namespace, unused.
                    log.warning("reconcile: endpoint %s of %s lost its link; the runtime "
                                "must join it again", names.short(ep.id), sb.name)
                    continue
                self.fix.replumb(sb, ep, START)
        self.fix.refresh(sb, START)
