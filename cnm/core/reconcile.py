"""Start: load the store and make the kernel match it. Links retired before a crash are
reaped, networks' links recreated, sandboxes whose namespace went away while cnm was down
freed, endpoints whose link is gone re-plumbed, and what cnm made but no record holds (links,
namespaces, files) removed."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

from cnm import names
from cnm.core.dnsview import DnsView
from cnm.core.networks import Networks
from cnm.core.publish import Publishing
from cnm.core.sandboxes import Sandboxes
from cnm.core.state import EndpointTable, State
from cnm.errors import CnmError
from cnm.ipam import NetworkAddresses
from cnm.model import Network, Sandbox

log = logging.getLogger("cnm.reconcile")


class Reconciler:
    def __init__(self, state: State, networks: Networks, sandboxes: Sandboxes,
                 publishing: Publishing, dns: DnsView) -> None:
        self.s = state
        self.nets = networks
        self.sbx = sandboxes
        self.pub = publishing
        self.dns = dns

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
            self.pub.reload()
            s.fw_built = True

    def reconcile(self) -> None:
        errors: list[CnmError] = []

        def attempt(fn: Callable[..., Any], *args: Any) -> None:
            try:
                fn(*args)
            except CnmError as e:
                log.error("reconcile: %s", e.message)
                errors.append(e)

        s = self.s
        attempt(s.ctx.host.reap)  # links retired before a crash or stop
        rebuilt: set[str] = set()
        for net in list(s.networks.values()):
            attempt(self._restore_network, net, rebuilt)
        for sb in list(s.sandboxes.values()):
            if not self.sbx.alive(sb):
                log.warning("sandbox %s lost its namespace; freeing it", sb.name)
                attempt(self.sbx.remove, sb, True)
                continue
            attempt(self._restore_sandbox, sb, rebuilt)
        known = set(s.networks) | set(s.endpoints)
        for link in s.ctx.host.links():
            parsed = names.parse_alias(link.alias)
            if parsed and parsed[1] not in known:
                log.warning("reconcile: removing stale link %s (%s %s)", link.name, *parsed)
                attempt(s.ctx.host.delete_link, link.name)
        ns_dir = os.path.join(s.config.run_dir, "netns")
        for entry in os.listdir(ns_dir):
            if entry not in s.sandboxes:
                log.warning("reconcile: removing stale namespace %s", entry)
                attempt(s.ctx.sandbox.delete_netns, os.path.join(ns_dir, entry))
        sb_dir = os.path.join(s.config.run_dir, "sandboxes")
        for entry in os.listdir(sb_dir):
            if entry not in s.sandboxes:
                shutil.rmtree(os.path.join(sb_dir, entry), ignore_errors=True)
        if errors:
            log.error("reconcile finished with %d error(s)", len(errors))

    def _restore_network(self, net: Network, rebuilt: set[str]) -> None:
        """Make the network's kernel links exist; note it in ``rebuilt`` if one was missing.

        A link deleted behind cnm's back (a bridge, say) let go of the endpoints hanging on
        it: they still exist, detached from its replacement, so they are re-plumbed too.
        """
        driver = self.s.driver(net)
        if not all(self.s.ctx.host.exists(name) for name in driver.kernel_links(net)):
            log.warning("reconcile: recreating the links of network %s", net.name)
            rebuilt.add(net.id)
        driver.restore_network(net, self.s.ctx)

    def _restore_sandbox(self, sb: Sandbox, rebuilt: set[str]) -> None:
        s = self.s
        eps = s.endpoints_of(sandbox=sb.id)
        path = s.netns_path(sb)
        for ep in eps:
            net = s.networks[ep.network_id]
            driver = s.driver(net)
            if net.id in rebuilt or not driver.endpoint_alive(net, ep, s.ctx):
                if sb.kind == "handover":
                    # Its link is in the runtime's namespace, out of cnm's reach: a new
                    # one made here would stay in the host namespace, unused.
                    log.warning("reconcile: endpoint %s of %s lost its link; the runtime "
                                "must join it again", names.short(ep.id), sb.name)
                    continue
                log.warning("reconcile: re-plumbing endpoint %s of %s", names.short(ep.id),
                            sb.name)
                if ep.ifname:
                    s.ctx.sandbox.remove(path, ep.ifname)
                info = driver.join(net, ep, path, s.ctx)
                if info.interface:
                    s.ctx.sandbox.configure(path, ep.ifname, ep.cidrs)
                if ep.ports:
                    driver.prepare_publish(net, ep, s.ctx)
        if sb.kind != "handover":  # the runtime writes its files
            os.makedirs(s.files_dir(sb), exist_ok=True)
        self.sbx.apply(sb, eps, eps, None, force=True)
