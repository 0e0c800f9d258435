"""The fixes that make the kernel match the store, one function per kind of fix.

Reconcile (at start) and ``cnm doctor --fix`` call the same ones, and each fix made is
published as a ``reconcile`` event (action recreate, replumb, refresh, relisten, free,
remove, rebuild) naming the object it fixed and why (``reason``: "start", or the drift's
kind). What cnm made that no record explains is found here too (``stale_*``): reconcile
removes it, doctor reports it first.
"""

from __future__ import annotations

import logging
import os
import shutil

from cnm import names
from cnm.core.dnsview import DnsView
from cnm.core.publish import Publishing
from cnm.core.sandboxes import Sandboxes
from cnm.core.state import State
from cnm.events import EventBus
from cnm.model import Endpoint, Network, Sandbox

log = logging.getLogger("cnm.reconcile")


class Repairs:
    def __init__(self, state: State, sandboxes: Sandboxes, publishing: Publishing,
                 dns: DnsView, events: EventBus) -> None:
        self.s = state
        self.sbx = sandboxes
        self.pub = publishing
        self.dns = dns
        self.events = events

    def _done(self, action: str, kind: str, ident: str, name: str, reason: str,
              **attributes: str | None) -> None:
        self.events.publish("reconcile", action, ident, name, object=kind, reason=reason,
                            **attributes)

    # ----------------------------------------------------------------------- networks
    def links_missing(self, net: Network) -> list[str]:
        """The network's host links that do not exist."""
        return [n for n in self.s.driver(net).kernel_links(net) if not self.s.ctx.host.exists(n)]

    def recreate_network(self, net: Network, reason: str) -> None:
        """Make the network's links exist again, up, with their addresses (idempotent)."""
        log.warning("reconcile: recreating the links of network %s", net.name)
        self.s.driver(net).restore_network(net, self.s.ctx)
        self._done("recreate", "network", net.id, net.name, reason, driver=net.driver)

    # ----------------------------------------------------------------------- endpoints
    def replumb(self, sb: Sandbox, ep: Endpoint, reason: str) -> None:
        """Make a joined endpoint's link again: its interface in the sandbox goes, the
        driver joins it once more, its addresses and published-port readiness follow."""
        s = self.s
        net = s.networks[ep.network_id]
        driver = s.driver(net)
        path = s.netns_path(sb)
        log.warning("reconcile: re-plumbing endpoint %s of %s", names.short(ep.id), sb.name)
        if ep.ifname:
            s.ctx.sandbox.remove(path, ep.ifname)
        info = driver.join(net, ep, path, s.ctx)
        if info.interface:
            s.ctx.sandbox.configure(path, ep.ifname, ep.cidrs)
        if ep.ports:
            self.pub.ready(net, ep)
        self._done("replumb", "endpoint", ep.id, ep.name, reason, network=net.name,
                   sandbox=sb.name)

    # ----------------------------------------------------------------------- sandboxes
    def refresh(self, sb: Sandbox, reason: str) -> None:
        """The sandbox's default routes, DNS listener and files, as its endpoints say
        (written again even where cnm believes they are already)."""
        eps = self.s.endpoints_of(sandbox=sb.id)
        if sb.kind != "handover":  # the runtime writes its files
            os.makedirs(self.s.files_dir(sb), exist_ok=True)
            self.s.forget_files(self.s.files_dir(sb))
        self.sbx.apply(sb, eps, eps, None, force=True)
        if reason != "start":  # at start every sandbox is refreshed: no news in that
            self._done("refresh", "sandbox", sb.id, sb.name, reason)

    def relisten(self, sb: Sandbox, reason: str) -> None:
        """A new DNS listener and redirect for the sandbox (the old one's sockets close)."""
        if self.s.dns is not None and self.s.dns.serves(sb.id):
            self.s.dns.remove(sb.id)
        eps = self.s.endpoints_of(sandbox=sb.id)
        self.dns.sync_listener(sb, eps, eps, None)
        self._done("relisten", "sandbox", sb.id, sb.name, reason)

    def free(self, sb: Sandbox, reason: str) -> None:
        """Forget a sandbox whose namespace went away, and give back its endpoints."""
        log.warning("sandbox %s lost its namespace; freeing it", sb.name)
        self.sbx.remove(sb, True)
        self._done("free", "sandbox", sb.id, sb.name, reason)

    # ----------------------------------------------------------------------- leftovers
    def stale_links(self) -> list[tuple[str, str, str]]:
        """(link, kind, id) of the host links cnm made that no network or endpoint holds."""
        known = set(self.s.networks) | set(self.s.endpoints)
        out = []
        for link in self.s.ctx.host.links():
            parsed = names.parse_alias(link.alias)
            if parsed and parsed[1] not in known:
                out.append((link.name, *parsed))
        return out

    def stale_namespaces(self) -> list[str]:
        """Paths of the namespaces under the run dir that no sandbox holds."""
        ns_dir = os.path.join(self.s.config.run_dir, "netns")
        return [os.path.join(ns_dir, e) for e in sorted(os.listdir(ns_dir))
                if e not in self.s.sandboxes]

    def stale_files(self) -> list[str]:
        """Directories of sandbox files that no sandbox holds."""
        sb_dir = os.path.join(self.s.config.run_dir, "sandboxes")
        return [os.path.join(sb_dir, e) for e in sorted(os.listdir(sb_dir))
                if e not in self.s.sandboxes]

    def remove_link(self, name: str, reason: str) -> None:
        log.warning("reconcile: removing stale link %s", name)
        self.s.ctx.host.delete_link(name)
        self._done("remove", "link", name, name, reason)

    def remove_namespace(self, path: str, reason: str) -> None:
        log.warning("reconcile: removing stale namespace %s", os.path.basename(path))
        self.s.ctx.sandbox.delete_netns(path)
        self._done("remove", "namespace", os.path.basename(path), path, reason)

    def remove_files(self, path: str, reason: str) -> None:
        shutil.rmtree(path, ignore_errors=True)
        self._done("remove", "files", os.path.basename(path), path, reason)

    # ----------------------------------------------------------------------- firewall
    def rebuild_firewall(self, reason: str) -> None:
        """cnm's tables again, inet and bridge, from the records (and the port index with
        them). The event names the table the reason is about."""
        self.pub.reload()
        self.s.fw_built = True
        if reason != "start":  # start always builds it
            table = "bridge cnm" if reason == "guard-table" else "inet cnm"
            self._done("rebuild", "firewall", table, table, reason)
