"""cnm doctor: compare the store with the kernel, and repair what differs.

``Doctor.check`` reads the managed host namespace, every sandbox and cnm's nftables table
(it writes nothing but the reaper's pending deletes), and says each difference as a
``Drift``: its kind, the object, what is wrong, what it means, and the fix. ``Doctor.fix``
repairs them with reconcile's own fixes (``core/repair.py``), each published as a
reconcile event, then checks again.

Kinds, and the fix each takes:

    network-link-missing, network-link-down, gateway-address-missing   recreate
    endpoint-link-missing, endpoint-link-detached,
    interface-missing, interface-down, interface-addresses             replumb
    default-routes, sandbox-file                                       refresh
    dns-listener                                                       relisten
    namespace-gone                                                     free
    firewall-table                                                     rebuild
    stale-link, stale-namespace, stale-files                           remove
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import netaddr

from cnm import names
from cnm.core.dnsview import DnsView
from cnm.core.repair import Repairs
from cnm.core.sandboxes import Sandboxes, default_routes
from cnm.core.state import State
from cnm.errors import CnmError, NotFound
from cnm.kernel.ports import DefaultRoute, SandboxState
from cnm.model import Endpoint, Network, Sandbox

log = logging.getLogger("cnm.doctor")

# kind -> (what it means, the fix), in the words the report gives.
KINDS: dict[str, tuple[str, str]] = {
    "network-link-missing": (
        "the network's sandboxes are cut off from each other, the gateway and the outside",
        "recreate the network's links and re-plumb its endpoints"),
    "network-link-down": (
        "nothing passes the network's link: its sandboxes are cut off",
        "recreate the network's links (brings them up) and re-plumb its endpoints"),
    "gateway-address-missing": (
        "the sandboxes' default route leads nowhere: no traffic leaves the network",
        "recreate the network's links (gives back their addresses)"),
    "endpoint-link-missing": (
        "the sandbox is cut off from the network",
        "re-plumb the endpoint (a new link, its addresses)"),
    "endpoint-link-detached": (
        "the endpoint's link is down or on no bridge: the sandbox is cut off from the network",
        "re-plumb the endpoint (a new link, its addresses)"),
    "interface-missing": (
        "the sandbox has no interface on the network",
        "re-plumb the endpoint (a new link, its addresses)"),
    "interface-down": (
        "nothing passes the sandbox's interface on the network",
        "re-plumb the endpoint (a new link, its addresses)"),
    "interface-addresses": (
        "the sandbox answers on other addresses than the ones the network gave it (and DNS "
        "names)", "re-plumb the endpoint (a new link, its addresses)"),
    "default-routes": (
        "the sandbox's traffic out of its subnets goes another way, or nowhere",
        "set the sandbox's default routes again"),
    "sandbox-file": (
        "processes in the sandbox resolve names or their own addresses wrongly",
        "write the sandbox's files again"),
    "dns-listener": (
        "names of the sandbox's networks do not resolve inside it",
        "open the sandbox's DNS listener and redirect again"),
    "namespace-gone": (
        "the sandbox's processes are gone; its endpoints still hold addresses and ports",
        "free the sandbox and its endpoints"),
    "firewall-table": (
        "published ports, masquerading or network isolation do not work as the records say",
        "rebuild cnm's nftables table from the records"),
    "guard-table": (
        "sandboxes may send with addresses that are not theirs (anti-spoofing), or a port "
        "nobody holds is guarded",
        "rebuild cnm's nftables tables from the records"),
    "stale-link": (
        "a link cnm made is left over: it holds a name (and maybe addresses)",
        "delete the link"),
    "stale-namespace": (
        "a namespace cnm made is left over", "delete the namespace"),
    "stale-files": (
        "sandbox files cnm wrote are left over", "delete the files"),
}


# kind -> the fix (a method of Repairs, named by its event's action).
_FIX = {
    "network-link-missing": "recreate", "network-link-down": "recreate",
    "gateway-address-missing": "recreate",
    "endpoint-link-missing": "replumb", "endpoint-link-detached": "replumb",
    "interface-missing": "replumb", "interface-down": "replumb",
    "interface-addresses": "replumb",
    "default-routes": "refresh", "sandbox-file": "refresh",
    "dns-listener": "relisten", "namespace-gone": "free", "firewall-table": "rebuild",
    "guard-table": "rebuild",
    "stale-link": "remove", "stale-namespace": "remove", "stale-files": "remove",
}

@dataclass(frozen=True)
class Ref:
    """The object a drift is about: network, endpoint, sandbox, firewall, link, namespace
    or files."""

    type: str
    id: str
    name: str


@dataclass(frozen=True)
class Drift:
    kind: str
    object: Ref
    wrong: str

    @property
    def means(self) -> str:
        return KINDS[self.kind][0]

    @property
    def fix(self) -> str:
        return KINDS[self.kind][1]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind,
                "object": {"type": self.object.type, "id": self.object.id,
                           "name": self.object.name},
                "wrong": self.wrong, "means": self.means, "fix": self.fix}


def _same_addresses(a: list[str] | tuple[str, ...], b: list[str] | tuple[str, ...]) -> bool:
    return sorted(str(netaddr.IPNetwork(x)) for x in a) == \
        sorted(str(netaddr.IPNetwork(x)) for x in b)


def _same_routes(have: tuple[DefaultRoute, ...], want: list[DefaultRoute]) -> bool:
    def norm(rs: Any) -> list[tuple[int, str, str]]:
        return sorted((v, str(netaddr.IPAddress(gw)), dev) for v, gw, dev in rs)

    return norm(have) == norm(want)


def _routes_text(routes: Any) -> str:
    return ", ".join(f"IPv{v} via {gw} dev {dev}" for v, gw, dev in routes) or "none"


class Doctor:
    def __init__(self, state: State, sandboxes: Sandboxes, dns: DnsView,
                 repairs: Repairs) -> None:
        self.s = state
        self.sbx = sandboxes
        self.dns = dns
        self.repair = repairs

    # ----------------------------------------------------------------------- check
    def check(self) -> list[Drift]:
        """Every difference between the records and the kernel (none: they agree). Links
        cnm retired are deleted first (the reaper's pending work, as reconcile does): they
        are on their way out, not left over."""
        self.s.ctx.host.reap()
        out: list[Drift] = []
        for net in sorted(self.s.networks.values(), key=lambda n: n.name):
            out += self._network(net)
        for sb in sorted(self.s.sandboxes.values(), key=lambda x: x.name):
            out += self._sandbox(sb)
        out += self._firewall()
        out += self._leftovers()
        return out

    def _network(self, net: Network) -> list[Drift]:
        ref = Ref("network", net.id, net.name)
        out = [Drift("network-link-missing", ref, f"link {name} is missing in the host "
                     "namespace") for name in self.repair.links_missing(net)]
        if out:
            return out
        for link, addresses in self.s.driver(net).gateway_links(net).items():
            st = self.s.ctx.host.link_state(link)
            if st is None:
                out.append(Drift("network-link-missing", ref, f"link {link} is missing in "
                                 "the host namespace"))
                continue
            if not st.up:
                out.append(Drift("network-link-down", ref, f"link {link} is down"))
            have = {str(netaddr.IPNetwork(a)) for a in st.addresses}
            lost = [a for a in addresses if str(netaddr.IPNetwork(a)) not in have]
            if lost:
                out.append(Drift("gateway-address-missing", ref,
                                 f"link {link} lacks {', '.join(lost)}"))
        return out

    def _sandbox(self, sb: Sandbox) -> list[Drift]:
        s = self.s
        ref = Ref("sandbox", sb.id, sb.name)
        if not self.sbx.alive(sb):
            return [Drift("namespace-gone", ref,
                          f"its namespace {s.netns_path(sb)} no longer exists")]
        eps = s.endpoints_of(sandbox=sb.id)
        out: list[Drift] = []
        if sb.kind == "handover":  # its links, routes and files are the runtime's
            return out
        inside: SandboxState | None = None
        if sb.kind in ("netns", "external"):
            try:
                inside = s.ctx.sandbox.inspect(s.netns_path(sb))
            except NotFound:  # it went just now
                return [Drift("namespace-gone", ref,
                              f"its namespace {s.netns_path(sb)} no longer exists")]
        for ep in eps:
            out += self._endpoint(sb, ep, inside)
        out += self._files(sb, eps, ref)
        if inside is None:  # the host network's: the host's routes, no listener
            return out
        want = default_routes(eps)
        if not _same_routes(inside.routes, want):
            out.append(Drift("default-routes", ref, f"the default routes are "
                             f"{_routes_text(inside.routes)}, the records say "
                             f"{_routes_text(want)}"))
        out += self._listener(sb, eps, inside, ref)
        return out

    def _endpoint(self, sb: Sandbox, ep: Endpoint, inside: SandboxState | None) -> list[Drift]:
        s = self.s
        net = s.networks[ep.network_id]
        driver = s.driver(net)
        ref = Ref("endpoint", ep.id, ep.name)
        host_end = driver.host_link(net, ep)
        if host_end is not None and s.ctx.host.link_state(host_end) is None:
            return [Drift("endpoint-link-missing", ref, f"its link {host_end} is missing in "
                          f"the host namespace (sandbox {sb.name}, network {net.name})")]
        if not self.repair.links_missing(net) and not driver.endpoint_alive(net, ep, s.ctx):
            where = f"its link {host_end}" if host_end else "its link"
            return [Drift("endpoint-link-detached", ref, f"{where} is down or not on the "
                          f"network's link (sandbox {sb.name}, network {net.name})")]
        if inside is None or not ep.ifname:
            return []
        st = inside.links.get(ep.ifname)
        if st is None:
            return [Drift("interface-missing", ref, f"interface {ep.ifname} is missing in "
                          f"sandbox {sb.name}")]
        if not _same_addresses(st.addresses, ep.cidrs):
            return [Drift("interface-addresses", ref, f"{ep.ifname} in sandbox {sb.name} has "
                          f"{', '.join(st.addresses) or 'no address'}, the records say "
                          f"{', '.join(ep.cidrs) or 'none'}")]
        if not st.up:
            return [Drift("interface-down", ref, f"interface {ep.ifname} is down in "
                          f"sandbox {sb.name}")]
        return []

    def _files(self, sb: Sandbox, eps: list[Endpoint], ref: Ref) -> list[Drift]:
        out = []
        for path, text in self.sbx.files(sb, eps).items():
            try:
                with open(path) as f:
                    have: str | None = f.read()
            except OSError:
                have = None
            if have is None:
                out.append(Drift("sandbox-file", ref, f"{path} is missing"))
            elif have != text:
                out.append(Drift("sandbox-file", ref, f"{path} differs from what the "
                                 "records make"))
        return out

    def _listener(self, sb: Sandbox, eps: list[Endpoint], inside: SandboxState,
                  ref: Ref) -> list[Drift]:
        dns = self.s.dns
        if dns is None or not any(self.dns.named(self.s.networks[e.network_id]) for e in eps):
            return []
        port = dns.port(sb.id)
        if port is None:
            return [Drift("dns-listener", ref, "cnmd serves no DNS in the sandbox")]
        if inside.dns_port != port:
            redirect = (f"leads to port {inside.dns_port}" if inside.dns_port is not None
                        else "is missing")
            return [Drift("dns-listener", ref, f"the redirect of 127.0.0.11:53 {redirect}, "
                          f"the listener is on port {port}")]
        return []

    def _firewall(self) -> list[Drift]:
        nf = self.s.netfilter
        if nf is None or not self.s.fw_built:
            return []
        joined = [ep for ep in self.s.endpoints.values() if ep.joined]
        wrong = nf.drift(self.repair.pub.all_network_rules(),
                         [r for ep in joined for r in self.repair.pub.rules(ep, ep.ports)],
                         [(ep.ip4, ep.ip6) for ep in joined if ep.ports])
        ref = Ref("firewall", "inet cnm", "inet cnm")
        out = [Drift("firewall-table", ref, w) for w in wrong]
        guards = []
        for ep in joined:
            net = self.s.networks.get(ep.network_id)
            g = self.s.driver(net).guard(net, ep) if net is not None else None
            if g is not None:
                guards.append(g)
        ref = Ref("firewall", "bridge cnm", "bridge cnm")
        return out + [Drift("guard-table", ref, w) for w in nf.drift_guards(guards)]

    def _leftovers(self) -> list[Drift]:
        out = [Drift("stale-link", Ref("link", name, name),
                     f"link {name} belongs to {kind} {names.short(ident)}, which no record "
                     "holds") for name, kind, ident in self.repair.stale_links()]
        out += [Drift("stale-namespace", Ref("namespace", p.rsplit("/", 1)[-1], p),
                      f"namespace {p} belongs to no sandbox")
                for p in self.repair.stale_namespaces()]
        out += [Drift("stale-files", Ref("files", p.rsplit("/", 1)[-1], p),
                      f"{p} belongs to no sandbox") for p in self.repair.stale_files()]
        return out

    # ----------------------------------------------------------------------- fix
    def fix(self) -> tuple[list[Drift], list[Drift], list[CnmError]]:
        """Repair every drift: (what was found, what is left after, the fixes' errors).

        Networks first (their endpoints are re-plumbed with them), then endpoints, then
        each touched sandbox's routes and files, its listener, the firewall (rebuilt too
        after a recreated network: its switches are per link), and leftovers last."""
        found = self.check()
        errors: list[CnmError] = []

        def attempt(fn: Callable[..., None], *args: Any) -> None:
            try:
                fn(*args)
            except CnmError as e:
                log.error("doctor: %s", e.message)
                errors.append(e)

        by_kind: dict[str, list[Drift]] = {}
        for d in found:
            by_kind.setdefault(_FIX[d.kind], []).append(d)
        s, r = self.s, self.repair
        recreated: dict[str, str] = {}  # network id -> the reason
        for d in by_kind.get("recreate", []):
            if d.object.id not in recreated and d.object.id in s.networks:
                recreated[d.object.id] = d.kind
                attempt(r.recreate_network, s.networks[d.object.id], d.kind)
        replumb: dict[str, str] = {}  # endpoint id -> the reason
        for nid, reason in recreated.items():
            for ep in s.endpoints_of(network=nid):
                if ep.sandbox_id is not None:
                    replumb.setdefault(ep.id, reason)
        for d in by_kind.get("replumb", []):
            replumb.setdefault(d.object.id, d.kind)
        refresh: dict[str, str] = {}  # sandbox id -> the reason
        for eid, reason in replumb.items():
            found_ep = s.endpoints.get(eid)
            if found_ep is None or found_ep.sandbox_id is None:
                continue
            sb = s.sandboxes[found_ep.sandbox_id]
            if sb.kind == "handover":
                continue
            attempt(r.replumb, sb, found_ep, reason)
            refresh.setdefault(sb.id, reason)
        for d in by_kind.get("refresh", []):
            refresh.setdefault(d.object.id, d.kind)
        for sid, reason in refresh.items():
            if sid in s.sandboxes:
                attempt(r.refresh, s.sandboxes[sid], reason)
        for d in by_kind.get("relisten", []):
            if d.object.id in s.sandboxes:
                attempt(r.relisten, s.sandboxes[d.object.id], d.kind)
        for d in by_kind.get("free", []):
            if d.object.id in s.sandboxes:
                attempt(r.free, s.sandboxes[d.object.id], d.kind)
        if s.netfilter is not None and (by_kind.get("rebuild") or recreated):
            attempt(r.rebuild_firewall, by_kind["rebuild"][0].kind if by_kind.get("rebuild")
                    else next(iter(recreated.values())))
        for d in by_kind.get("remove", []):
            if d.kind == "stale-link":
                attempt(r.remove_link, d.object.name, d.kind)
            elif d.kind == "stale-namespace":
                attempt(r.remove_namespace, d.object.name, d.kind)
            else:
                attempt(r.remove_files, d.object.name, d.kind)
        return found, self.check(), errors

