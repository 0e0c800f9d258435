"""Sandboxes: cnm's own namespaces, namespaces a runtime made (adopted by path: cnm adds and
removes only its own interfaces, addresses, routes, DNS listener and firewall elements there,
never the namespace), and the host namespace; their default routes and files."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import TYPE_CHECKING

from cnm import names, sandboxfile
from cnm.core.dnsview import DnsView
from cnm.core.publish import Publishing
from cnm.core.state import State
from cnm.errors import AlreadyExists, CnmError, Conflict, InvalidArgument, NotFound, Partial
from cnm.model import Endpoint, Network, Sandbox, SandboxSpec, now
from cnm.portspec import PortSpec
from cnm.undo import quietly

if TYPE_CHECKING:
    from cnm.core.endpoints import Endpoints

log = logging.getLogger("cnm.core")


class Sandboxes:
    def __init__(self, state: State, publishing: Publishing, dns: DnsView) -> None:
        self.s = state
        self.pub = publishing
        self.dns = dns
        self.eps: Endpoints  # set by the facade (endpoints need sandboxes and back)

    # ----------------------------------------------------------------------- create
    def create(self, spec: SandboxSpec) -> Sandbox:
        if not names.valid_name(spec.name):
            raise InvalidArgument(
                f"invalid sandbox name {spec.name!r}: use 1-64 letters, digits, '_', '.' "
                "and '-', starting with a letter or digit"
            )
        if any(s.name == spec.name for s in self.s.sandboxes.values()):
            raise AlreadyExists(f'sandbox "{spec.name}" already exists')
        hostname = spec.hostname or spec.name
        if not names.valid_name(hostname) or len(hostname) > 63:
            raise InvalidArgument(f"invalid hostname {hostname!r}")
        net = self.s.network(spec.network)
        self.dns.check_aliases(net, spec.aliases)
        ports = self.pub.check(net, spec.ports)
        on_host = self.s.caps(net).host_namespace
        if on_host and (spec.ip or spec.ip6 or spec.mac or spec.netns or spec.ifname):
            raise InvalidArgument("a sandbox on the host network takes no --ip, --ip6, "
                                  "--mac-address, --netns or --ifname")
        kind, path, ident = "netns", "", ""
        if on_host:
            kind = "host"
        elif spec.netns is not None:
            kind, path, ident = "external", os.path.abspath(spec.netns), self._adoptable(spec)
        sb = Sandbox(id=names.new_id(), name=spec.name, hostname=hostname, created=now(),
                     kind=kind, labels=dict(spec.labels), netns=path, netns_id=ident)
        return self.eps.racing(net, (spec.ip, spec.ip6),
                               lambda: self._create(spec, sb, net, ports))

    def _create(self, spec: SandboxSpec, sb: Sandbox, net: Network,
                ports: list[PortSpec]) -> Sandbox:
        with ExitStack() as undo:
            if sb.kind == "netns":
                path = self.s.netns_path(sb)
                self.s.ctx.sandbox.create_netns(path)
                undo.callback(quietly(self.s.ctx.sandbox.delete_netns, path))
            os.makedirs(self.s.files_dir(sb), mode=0o755)
            undo.callback(quietly(shutil.rmtree, self.s.files_dir(sb), True))
            ep = self.eps.reserve(net, self.eps.name_for(net, sb), ip=spec.ip,
                                  ip6=spec.ip6, mac=spec.mac, aliases=spec.aliases, ports=ports,
                                  standalone=False, holder=f'sandbox "{sb.name}"', undo=undo)
            ep = self.eps.plumb(ep, sb, [], spec.ifname, undo)
            self.apply(sb, [ep], [], undo)
            with self.s.store.transaction() as tx:
                tx.put_sandbox(sb)
                tx.put_endpoint(ep)
            undo.pop_all()
        self.s.sandboxes[sb.id] = sb
        self.s.endpoints[ep.id] = ep
        return sb

    def create_handover(self, name: str, labels: dict[str, str]) -> Sandbox:
        """A sandbox the runtime plumbs itself, on no network yet: its endpoints join it
        one by one (Docker's Join), each leaving its link in the host namespace for the
        runtime to move in. cnm makes no namespace, files, routes or DNS listener for it."""
        if not names.valid_name(name):
            raise InvalidArgument(f"invalid sandbox name {name!r}")
        if any(s.name == name for s in self.s.sandboxes.values()):
            raise AlreadyExists(f'sandbox "{name}" already exists')
        sb = Sandbox(id=names.new_id(), name=name, hostname=name, created=now(),
                     kind="handover", labels=dict(labels))
        with self.s.store.transaction() as tx:
            tx.put_sandbox(sb)
        self.s.sandboxes[sb.id] = sb
        return sb

    def _adoptable(self, spec: SandboxSpec) -> str:
        """The identity of the namespace ``spec.netns`` names, refusing one that is not a
        network namespace, is the host's, or another sandbox already has."""
        assert spec.netns is not None
        ident = self.s.ctx.sandbox.identity(spec.netns)
        if ident is None:
            raise InvalidArgument(f"--netns {spec.netns}: not a network namespace",
                                  hint="give /proc/PID/ns/net or a bind mount of one")
        if ident == self.s.ctx.sandbox.identity(self.s.host_netns_path()):
            raise InvalidArgument(f"--netns {spec.netns} is the host namespace",
                                  hint="use --network host for a sandbox that shares it")
        for other in self.s.sandboxes.values():
            if other.kind == "external" and other.netns_id == ident and self.alive(other):
                raise Conflict(f'--netns {spec.netns}: sandbox "{other.name}" already has '
                               "this namespace")
        return ident

    # ----------------------------------------------------------------------- life
    def alive(self, sb: Sandbox) -> bool:
        """Whether the sandbox's namespace still exists (an adopted one: still the very
        namespace it adopted; a /proc/PID path may name another process's by now)."""
        if sb.kind in ("host", "handover"):  # the runtime says when a handover one goes
            return True
        path = self.s.netns_path(sb)
        if sb.kind == "external":
            return self.s.ctx.sandbox.identity(path) == sb.netns_id
        return self.s.ctx.sandbox.identity(path) is not None

    def live(self, sb: Sandbox) -> Sandbox:
        """``sb``, if its namespace is still there. If it went away behind cnm's back (the
        container exited), its endpoints are freed, the sandbox is forgotten, and the
        operation that asked is refused."""
        if self.alive(sb):
            return sb
        log.warning("sandbox %s lost its namespace %s; freeing its endpoints", sb.name,
                    self.s.netns_path(sb))
        self.remove(sb, force=True)
        raise NotFound(f'sandbox "{sb.name}" is gone: its namespace {self.s.netns_path(sb)} '
                       "no longer exists (its container exited?); its endpoints were freed")

    def remove(self, sb: Sandbox, force: bool = False) -> None:
        """Leave every network, then delete the namespace if cnm made it. With force,
        records are dropped even when a kernel step fails (the failures are still
        reported in the log)."""
        errors: list[CnmError] = []
        eps = self.s.endpoints_of(sandbox=sb.id)
        for ep in reversed(eps):
            try:
                self.eps.detach(ep, sb)
            except CnmError as e:
                errors.append(e)
        if errors and not force:
            raise Partial(f'removing sandbox "{sb.name}"', errors)
        path = self.s.netns_path(sb)
        if self.s.dns is not None and self.s.dns.serves(sb.id):
            self.s.dns.remove(sb.id)
        try:
            self.s.ctx.host.reap()  # rm returns with every link of the sandbox gone
        except CnmError as e:
            errors.append(e)
        try:
            if sb.kind == "netns":
                self.s.ctx.sandbox.delete_netns(path)
            elif sb.kind == "external":
                self.s.ctx.sandbox.release(path)  # cnm's own handles and DNS redirect only
        except CnmError as e:
            errors.append(e)
        shutil.rmtree(self.s.files_dir(sb), ignore_errors=True)
        self.s.forget_files(self.s.files_dir(sb))
        left = self.s.endpoints_of(sandbox=sb.id)  # those whose detach failed
        for ep in left:  # still programmed (a failed leave puts its ports back): no more
            try:
                self.pub.withdraw(ep)
            except CnmError as e:
                errors.append(e)
        with self.s.store.transaction() as tx:
            for ep in left:
                tx.delete_endpoint(ep.id)
            tx.delete_sandbox(sb.id)
        for ep in left:
            self.eps.forget(ep)
        del self.s.sandboxes[sb.id]
        for err in errors:
            log.warning("sandbox %s removed by force despite: %s", sb.name, err.message)

    # ----------------------------------------------------------------------- routes, files
    def apply(self, sb: Sandbox, eps: list[Endpoint], before: list[Endpoint],
              undo: ExitStack | None, force: bool = False) -> None:
        """Make the sandbox's default routes and files match ``eps`` (it had ``before``;
        ``force`` sets the routes whatever it had, as reconcile must)."""
        if sb.kind == "handover":
            return  # the runtime sets its routes, resolver and files itself
        want, had = default_routes(eps), default_routes(before)
        errors: list[CnmError] = []

        def step(fn: Callable[[], None]) -> None:
            # Without an undo stack (bringing a sandbox up to date after a leave, when the
            # endpoint is gone already) every part runs whatever another did: a failed
            # route must not leave the files naming an address the sandbox no longer has.
            if undo is not None:
                fn()
                return
            try:
                fn()
            except CnmError as e:
                errors.append(e)

        # A second network's connect (or its disconnect) changes no route: no trip into the
        # sandbox at all (each costs a hop to the visitor thread, ~0.1 ms).
        if sb.kind != "host" and (force or want != had):
            path = self.s.netns_path(sb)
            if undo is not None:
                # Registered first: a call that fails half way (IPv4 set, IPv6 not) is undone.
                undo.callback(quietly(self.s.ctx.sandbox.set_default_routes, path, had))
            step(lambda: self.s.ctx.sandbox.set_default_routes(path, want,
                                                               None if force else had))
        step(lambda: self.dns.sync_listener(sb, eps, before, undo))
        if undo is not None:
            # Before the write: a half-written file is put back too.
            undo.callback(quietly(self.write_files, sb, before))
        step(lambda: self.write_files(sb, eps))
        if errors:
            raise errors[0]

    def write_files(self, sb: Sandbox, eps: Iterable[Endpoint]) -> None:
        for path, text in self.files(sb, eps).items():
            self.s.write_file(path, text)

    def files(self, sb: Sandbox, eps: Iterable[Endpoint]) -> dict[str, str]:
        """The sandbox's files (hosts, resolv.conf, hostname) as ``eps`` make them: path ->
        text."""
        d = self.s.files_dir(sb)
        eps = list(eps)
        addrs = [a for e in eps for a in e.cidrs]
        try:
            with open(self.s.config.resolv_conf) as f:
                host_resolv = f.read()
        except OSError:
            host_resolv = ""
        # The host network's sandbox shares the host's resolvers, loopback ones included;
        # one on a user-defined network asks the embedded DNS.
        embedded = any(self.dns.named(self.s.networks[e.network_id]) for e in eps)
        resolv = host_resolv if sb.kind == "host" else sandboxfile.resolv_conf(
            host_resolv, embedded=embedded)
        return {os.path.join(d, "hosts"): sandboxfile.hosts(sb.hostname, addrs),
                os.path.join(d, "resolv.conf"): resolv,
                os.path.join(d, "hostname"): sb.hostname + "\n"}


def default_routes(eps: list[Endpoint]) -> list[tuple[int, str, str]]:
    """The first endpoint (in connection order) with a gateway gives each family's route."""
    out: list[tuple[int, str, str]] = []
    for version in (4, 6):
        for e in sorted(eps, key=lambda e: e.order):
            gw = e.gateway4 if version == 4 else e.gateway6
            if gw and e.ifname:
                out.append((version, gw, e.ifname))
                break
    return out
