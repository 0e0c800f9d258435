"""Endpoints, as libnetwork has them: create (reserve addresses, MAC, names and host ports;
nothing in a sandbox yet) → join a sandbox (plumb the link, configure it, program its ports,
answer its names) → leave → delete. ``connect`` is create + join in one all-or-nothing step,
``disconnect`` leave + delete.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TypeVar

import netaddr

from cnm import names, portspec
from cnm.core.dnsview import DnsView
from cnm.core.publish import Publishing
from cnm.core.sandboxes import Sandboxes
from cnm.core.state import State
from cnm.errors import AlreadyExists, Exhausted, InUse, InvalidArgument, NotFound
from cnm.model import Endpoint, Network, Sandbox, now
from cnm.store import Held, Tx
from cnm.undo import quietly

log = logging.getLogger("cnm.core")
T = TypeVar("T")
# How many times an operation picks again after another host took its address.
RACES = 8


class Endpoints:
    def __init__(self, state: State, publishing: Publishing, dns: DnsView,
                 sandboxes: Sandboxes) -> None:
        self.s = state
        self.pub = publishing
        self.dns = dns
        self.sbx = sandboxes

    # ----------------------------------------------------------------------- create
    def reserve(self, net: Network, name: str, *, ip: str | None, ip6: str | None,
                mac: str | None, aliases: Sequence[str], ports: Sequence[portspec.PortSpec],
                standalone: bool, holder: str, undo: ExitStack) -> Endpoint:
        """A new endpoint on ``net`` with everything it holds reserved (checked first:
        aliases and ports by the caller); every step's undo goes on ``undo``."""
        caps = self.s.caps(net)
        driver = self.s.driver(net)
        if mac is not None and not names.valid_unicast_mac(mac):
            raise InvalidArgument(f"invalid MAC address {mac!r}: expected a unicast "
                                  "xx:xx:xx:xx:xx:xx")
        if not caps.ipam and (ip or ip6):
            raise InvalidArgument(f"network {net.name} assigns no addresses; --ip is not "
                                  "accepted")
        if ip6 and not net.ipv6:
            raise InvalidArgument(f'network "{net.name}" has no IPv6; --ip6 is not accepted')
        if self.s.endpoints.name_taken(net.id, name):
            raise AlreadyExists(f'endpoint "{name}" already exists on network "{net.name}"')
        ep = Endpoint(id=names.new_id(), network_id=net.id, sandbox_id=None, created=now(),
                      name=name, standalone=standalone,
                      mac=(mac or names.random_mac()) if caps.link != "none" else "",
                      aliases=tuple(dict.fromkeys(a.lower() for a in aliases)))
        ipv4 = ipv6 = None
        if caps.ipam:
            space = self.s.addresses[net.id]
            ipv4 = space.allocate(4, holder, ip)
            undo.callback(space.rollback, ipv4)
            if net.ipv6:
                ipv6 = space.allocate(6, holder, ip6)
                undo.callback(space.rollback, ipv6)
        # The driver sees the endpoint with its addresses (a remote plugin's CreateEndpoint
        # carries them, as Docker's does).
        ep = dataclasses.replace(ep, ipv4=ipv4, ipv6=ipv6)
        driver.create_endpoint(net, ep, mac, lambda: [self.s.holder(e) for e in
                                                      self.s.endpoints_of(network=net.id)],
                               self.s.ctx)
        undo.callback(quietly(driver.delete_endpoint, net, ep, self.s.ctx))
        return dataclasses.replace(ep, ports=self.pub.reserve(net, ep, ports, holder, undo))

    def create(self, network: str, name: str, *, ip: str | None = None,
               ip6: str | None = None, mac: str | None = None, aliases: Sequence[str] = (),
               ports: Sequence[str] = ()) -> Endpoint:
        """`cnm endpoint create`: reserve, and store; it joins a sandbox later."""
        net = self.s.network(network)
        if not names.valid_name(name):
            raise InvalidArgument(f"invalid endpoint name {name!r}: use 1-64 letters, digits, "
                                  "'_', '.' and '-', starting with a letter or digit")
        if self.s.caps(net).host_namespace:
            raise InvalidArgument("the host network has no endpoints of its own",
                                  hint="create a sandbox with --network host")
        self.dns.check_aliases(net, aliases)
        parsed = self.pub.check(net, ports)

        def once() -> Endpoint:
            with ExitStack() as undo:
                ep = self.reserve(net, name, ip=ip, ip6=ip6, mac=mac, aliases=aliases,
                                  ports=parsed, standalone=True, holder=f'endpoint "{name}"',
                                  undo=undo)
                with self.s.store.transaction() as tx:
                    tx.put_endpoint(ep)
                    self.save_positions(tx, net)
                undo.pop_all()
            self.s.endpoints[ep.id] = ep
            return ep

        return self.racing(net, (ip, ip6), once)

    def racing(self, net: Network, wanted: Sequence[str | None], once: Callable[[], T]) -> T:
        """Run ``once`` (an operation that picks addresses on ``net``) until its commit
        holds. Another host sharing the store may take the address this one picked between
        the pick and the commit; the store says which (Held), the operation was undone,
        and it runs again with that address marked taken. An address the user asked for
        (``wanted``) is simply in use."""
        for _ in range(RACES):
            try:
                return once()
            except Held as e:
                # (Past validation: every address asked for is well formed by now.)
                asked = {str(netaddr.IPAddress(a)) for a in wanted if a}
                if e.kind != "address" or e.network_id != net.id or e.value in asked:
                    raise
                log.info("address %s of network %s was taken elsewhere; picking another",
                         e.value, net.name)
                self.s.addresses[net.id].mark(e.value, "another host sharing the store")
        raise Exhausted(f'network "{net.name}": another host took the picked address '
                        f"{RACES} times in a row", hint="try again")

    # ----------------------------------------------------------------------- join
    def check_join(self, net: Network, sb: Sandbox, current: Sequence[Endpoint]) -> None:
        if any(e.network_id == net.id for e in current):
            raise AlreadyExists(f'sandbox "{sb.name}" is already connected to network '
                                f'"{net.name}"')
        if sb.kind == "host" or self.s.caps(net).host_namespace:
            raise InvalidArgument(
                "a sandbox cannot be connected to or from the host network",
                hint="the host network shares the host namespace; create a new sandbox",
            )
        exclusive = [e for e in current if self.s.caps(self.s.networks[e.network_id]).exclusive]
        if exclusive or (self.s.caps(net).exclusive and current):
            lone = self.s.networks[exclusive[0].network_id] if exclusive else net
            raise InvalidArgument(
                f'sandbox "{sb.name}" cannot be on the {lone.name} network and another network',
                hint="disconnect it from the other network first",
            )

    def _ifname(self, net: Network, sb: Sandbox, current: Sequence[Endpoint],
                wanted: str, ep_id: str) -> str:
        if self.s.caps(net).link == "none":
            if wanted:
                raise InvalidArgument(f'network "{net.name}" gives a sandbox no interface: '
                                      "--ifname means nothing there")
            return ""
        if sb.kind == "handover":
            # The link stays in the host namespace until the runtime moves it in: its name
            # must be unique there, and the runtime renames it (Docker's DstPrefix).
            return wanted or names.handover_name(ep_id)
        used = {e.ifname for e in current}
        if sb.kind == "external":  # a runtime's namespace may hold interfaces of its own
            used |= {link.name for link in self.s.ctx.sandbox.links(self.s.netns_path(sb))}
        if wanted:
            if not names.valid_ifname(wanted):
                raise InvalidArgument(f"invalid interface name {wanted!r}: 1-15 characters of "
                                      "letters, digits, '_', '-' and '.'")
            if wanted in used:
                raise AlreadyExists(f'sandbox "{sb.name}" already has an interface {wanted}')
            return wanted
        return next(names.sandbox_ifname(i) for i in range(len(used) + 1)
                    if names.sandbox_ifname(i) not in used)

    def plumb(self, ep: Endpoint, sb: Sandbox, current: Sequence[Endpoint], ifname: str,
              undo: ExitStack) -> Endpoint:
        """Join ``ep`` to ``sb`` in the kernel (checked by the caller); undo on ``undo``."""
        net = self.s.networks[ep.network_id]
        driver = self.s.driver(net)
        ep = dataclasses.replace(ep, sandbox_id=sb.id,
                                 ifname=self._ifname(net, sb, current, ifname, ep.id),
                                 order=max((e.order for e in current), default=0) + 1)
        path = self.s.netns_path(sb)
        self.pub.guard(net, ep, undo)
        info = driver.join(net, ep, path, self.s.ctx)
        undo.callback(quietly(driver.leave, net, ep, path, self.s.ctx))
        gw = dict(info.gateways)
        ep = dataclasses.replace(ep, gateway4=gw.get(4), gateway6=gw.get(6),
                                 mac=info.mac or ep.mac)
        if info.interface and sb.kind != "handover":  # the runtime configures its own
            self.s.ctx.sandbox.configure(path, ep.ifname, ep.cidrs)
        self.pub.program(net, ep, ep.ports, True, undo)
        self.dns.publish(net, sb, ep, undo)
        return ep

    def join(self, ref: str, sandbox: str, ifname: str = "") -> Endpoint:
        """`cnm endpoint join`: a reserved endpoint into a sandbox, with its address."""
        ep = self.s.endpoint(ref)
        sb = self.sbx.live(self.s.sandbox(sandbox))
        if ep.joined:
            raise AlreadyExists(f'endpoint "{ep.name}" is already joined to '
                                f'{self.s.holder(ep)}', hint="leave it first")
        net = self.s.networks[ep.network_id]
        current = self.s.endpoints_of(sandbox=sb.id)
        self.check_join(net, sb, current)
        with ExitStack() as undo:
            return self._join(ep, sb, current, ifname, undo)

    def _join(self, ep: Endpoint, sb: Sandbox, current: list[Endpoint], ifname: str,
              undo: ExitStack) -> Endpoint:
        """Plumb, bring the sandbox up to date, store; then nothing is undone any more."""
        ep = self.plumb(ep, sb, current, ifname, undo)
        self.sbx.apply(sb, [*current, ep], list(current), undo)
        with self.s.store.transaction() as tx:
            tx.put_endpoint(ep)
            self.save_positions(tx, self.s.networks[ep.network_id])
        undo.pop_all()
        self.s.endpoints[ep.id] = ep
        return ep

    def save_positions(self, tx: Tx, net: Network) -> None:
        """The IPAM's positions go into the same commit as the address they moved past."""
        space = self.s.addresses.get(net.id)
        if space is not None:
            for subnet, position in space.positions().items():
                tx.put_cursor(net.id, subnet, position)

    def connect(self, network: str, sandbox: str, *, ip: str | None = None,
                ip6: str | None = None, mac: str | None = None, aliases: Sequence[str] = (),
                ports: Sequence[str] = (), ifname: str = "") -> Endpoint:
        net = self.s.network(network)
        sb = self.sbx.live(self.s.sandbox(sandbox))
        self.dns.check_aliases(net, aliases)
        parsed = self.pub.check(net, ports)
        current = self.s.endpoints_of(sandbox=sb.id)
        self.check_join(net, sb, current)

        def once() -> Endpoint:
            with ExitStack() as undo:
                ep = self.reserve(net, self.name_for(net, sb), ip=ip, ip6=ip6, mac=mac,
                                  aliases=aliases, ports=parsed, standalone=False,
                                  holder=f'sandbox "{sb.name}"', undo=undo)
                return self._join(ep, sb, current, ifname, undo)

        return self.racing(net, (ip, ip6), once)

    def name_for(self, net: Network, sb: Sandbox) -> str:
        """An endpoint made by connect is named after its sandbox (Docker's container
        name), unless a reserved endpoint of the network already holds that name."""
        taken = self.s.endpoints.name_taken(net.id, sb.name)
        return f"{sb.name}-{names.new_id()[:6]}" if taken else sb.name

    # ----------------------------------------------------------------------- leave
    def unplumb(self, ep: Endpoint, sb: Sandbox) -> Endpoint:
        """Take ``ep`` out of ``sb`` in the kernel: its ports first (no new connection may
        reach an endpoint on its way out), then its link, then its port guard, then its
        names."""
        net = self.s.networks[ep.network_id]
        self.pub.withdraw(ep)
        try:
            self.s.driver(net).leave(net, ep, self.s.netns_path(sb), self.s.ctx)
        except BaseException:
            # Still joined (the record is unchanged): its ports are programmed again, or
            # it would stay connected with its published ports gone (cnm doctor saw it).
            quietly(self.pub.program, net, ep, ep.ports, True, None)()
            raise
        self.pub.unguard(ep)
        self.dns.withdraw(net, sb.id)
        return dataclasses.replace(ep, sandbox_id=None, ifname="", gateway4=None,
                                   gateway6=None, order=0)

    def leave(self, ref: str) -> Endpoint:
        """`cnm endpoint leave`: out of its sandbox; it keeps its address and ports."""
        ep = self.s.endpoint(ref)
        if ep.sandbox_id is None:
            raise InvalidArgument(f'endpoint "{ep.name}" is not joined to a sandbox')
        sb = self.sbx.live(self.s.sandboxes[ep.sandbox_id])
        if sb.kind == "host":
            raise InvalidArgument(f'sandbox "{sb.name}" is the host namespace; remove the '
                                  "sandbox instead")
        left = self.unplumb(ep, sb)
        with self.s.store.transaction() as tx:
            tx.put_endpoint(left)
        self.s.endpoints[ep.id] = left
        self._refresh(sb, ep)
        return left

    def disconnect(self, network: str, sandbox: str) -> Endpoint:
        """Leave, and delete the endpoint unless `endpoint create` made it (its owner
        deletes it)."""
        net = self.s.network(network)
        sb = self.sbx.live(self.s.sandbox(sandbox))
        ep = next((e for e in self.s.endpoints_of(sandbox=sb.id) if e.network_id == net.id),
                  None)
        if ep is None:
            raise NotFound(f'sandbox "{sb.name}" is not connected to network "{net.name}"')
        if sb.kind == "host":
            raise InvalidArgument(
                f'sandbox "{sb.name}" is the host namespace; remove the sandbox instead')
        self.detach(ep, sb)
        self._refresh(sb, ep)
        return ep

    def detach(self, ep: Endpoint, sb: Sandbox) -> None:
        """Leave, then delete (or keep reserved, if standalone). The record changes only
        once the kernel let go."""
        left = self.unplumb(ep, sb)
        if left.standalone:
            with self.s.store.transaction() as tx:
                tx.put_endpoint(left)
            self.s.endpoints[ep.id] = left
            return
        net = self.s.networks[ep.network_id]
        self.s.driver(net).delete_endpoint(net, left, self.s.ctx)
        with self.s.store.transaction() as tx:
            tx.delete_endpoint(ep.id)
        self.forget(left)

    def _refresh(self, sb: Sandbox, gone: Endpoint) -> None:
        rest = self.s.endpoints_of(sandbox=sb.id)
        # What the sandbox had includes the endpoint that left: if it held the default
        # route, the route moves to the next network.
        self.sbx.apply(sb, rest, [*rest, gone], None)

    # ----------------------------------------------------------------------- delete
    def delete(self, ref: str) -> Endpoint:
        ep = self.s.endpoint(ref)
        if ep.joined:
            raise InUse(f'endpoint "{ep.name}" is joined to {self.s.holder(ep)}',
                        hint="leave it first (cnm endpoint leave)")
        net = self.s.networks[ep.network_id]
        self.s.driver(net).delete_endpoint(net, ep, self.s.ctx)
        with self.s.store.transaction() as tx:
            tx.delete_endpoint(ep.id)
        self.forget(ep)
        return ep

    def forget(self, ep: Endpoint) -> None:
        """Drop the record from memory and give back what it held."""
        self.s.endpoints.pop(ep.id)
        self.pub.release(ep)
        space = self.s.addresses.get(ep.network_id)
        if space is not None:
            space.release(ep.ipv4)
            space.release(ep.ipv6)
