"""What macvlan and ipvlan networks share: a parent link, its rules, the host shim.

A network's slaves hang on one parent link in the host namespace:

* ``-o parent=IF``: a link that must exist, be up, be Ethernet and be no bridge or bond
  port. cnm never changes it.
* ``-o parent=IF.VID``: the 802.1q sub-interface; made (and later removed) by cnm when it
  does not exist, marked as the network's with its ifalias like a bridge.
* no parent: a dummy link cnm makes, so the network is internal to the host (as Docker).

One parent carries one macvlan or ipvlan network, as in Docker: two networks on one link
would break each other (macvlan and ipvlan cannot share a parent, an ipvlan parent has one
mode for all its slaves, a passthru parent takes one slave) or silently join each other's
layer 2. Different 802.1q sub-interfaces of one link are different parents.

The kernel never delivers frames between a parent and its own slaves, so the host cannot
reach its sandboxes through the parent. ``-o host_shim=true`` gives the host a slave of its
own on the parent, holding the network's aux address ``host`` (``--aux-address host=IP``),
with a route through it to the network's ip range (or subnet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import netaddr

from cnm import names
from cnm.drivers.base import BaseDriver, Capabilities, Context, JoinInfo, parse_bool
from cnm.errors import CnmError, Conflict, InvalidArgument, NotFound, Partial
from cnm.kernel.ports import ParentInfo, SlaveSpec, unsupported
from cnm.model import Endpoint, Network
from cnm.undo import quietly

DRIVERS = ("macvlan", "ipvlan")
# The aux address (--aux-address NAME=IP) the host shim takes.
SHIM_AUX = "host"
_IFNAME_WORDS = "an interface name is 1-15 characters of letters, digits, '_', '-' and '.'"


@dataclass(frozen=True)
class Parent:
    """A parsed ``parent`` option: a link name, and for ``IF.VID`` its base and VLAN id."""

    name: str
    base: str | None = None
    vid: int | None = None

    @classmethod
    def parse(cls, value: str) -> Parent:
        if not names.valid_ifname(value):
            raise InvalidArgument(f"invalid value {value!r} for option parent: {_IFNAME_WORDS}")
        base, dot, tail = value.rpartition(".")
        if not (dot and base and tail.isdecimal()):
            return cls(value)
        vid = int(tail)
        if not 1 <= vid <= 4094:
            raise InvalidArgument(f"invalid value {value!r} for option parent: VLAN id {tail} "
                                  "is outside 1-4094")
        return cls(value, base, vid)


@dataclass(frozen=True)
class SlaveOptions:
    """The options of a macvlan or ipvlan network (``flag`` is ipvlan's only)."""

    driver: str
    parent: str | None
    mode: str
    flag: str
    host_shim: bool

    def to_dict(self) -> dict[str, str]:
        out = {f"{self.driver}_mode": self.mode}
        if self.parent:
            out["parent"] = self.parent
        if self.driver == "ipvlan":
            out[f"{self.driver}_flag"] = self.flag
        out["host_shim"] = "true" if self.host_shim else "false"
        return out


def parse_options(driver: str, raw: Mapping[str, str], modes: Sequence[str],
                  flags: Sequence[str] = ()) -> SlaveOptions:
    """Pure validation; every refusal names the option."""
    mode_key, flag_key = f"{driver}_mode", f"{driver}_flag"
    keys = ("parent", mode_key, *((flag_key,) if flags else ()), "host_shim")
    for key in raw:
        if key not in keys:
            raise InvalidArgument(f"unknown option {key!r} for driver {driver}",
                                  hint=f"{driver} options: " + ", ".join(keys))

    def choice(key: str, allowed: Sequence[str]) -> str:
        value = raw.get(key, allowed[0]).strip().lower()
        if value not in allowed:
            raise InvalidArgument(f"invalid value {raw[key]!r} for option {key}: expected "
                                  + ", ".join(allowed))
        return value

    parent = Parent.parse(raw["parent"].strip()).name if "parent" in raw else None
    opts = SlaveOptions(driver=driver, parent=parent, mode=choice(mode_key, modes),
                        flag=choice(flag_key, flags) if flags else "bridge",
                        host_shim=parse_bool("host_shim", raw.get("host_shim", "false")))
    if opts.host_shim and "passthru" in (opts.mode, opts.flag):
        raise InvalidArgument("option host_shim cannot be used with macvlan_mode=passthru: "
                              "the parent takes one slave only")
    if opts.host_shim and "private" in (opts.mode, opts.flag):
        key = mode_key if opts.mode == "private" else flag_key
        raise InvalidArgument(f"option host_shim cannot be used with {key}=private: private "
                              "slaves never reach the host's own")
    return opts


def parent_name(net: Network) -> str:
    return net.options.get("parent") or names.dummy_name(net.id)


def shim_plan(net: Network) -> tuple[list[str], list[str]]:
    """(host addresses, routed prefixes) of the host shim: the aux address ``host`` of each
    subnet that has one, and that subnet's ip range (or the subnet)."""
    addresses, routes = [], []
    for s in net.subnets:
        ip = s.aux_addresses.get(SHIM_AUX)
        if ip:
            addresses.append(f"{ip}/{128 if s.version == 6 else 32}")
            routes.append(s.ip_range or s.subnet)
    return addresses, routes


def validate_network(net: Network, others: Sequence[Network]) -> None:
    """Rules that need the network's subnets and the other networks (nothing touched)."""
    parent = net.options.get("parent")
    if parent and net.internal:
        raise InvalidArgument(
            f"an internal {net.driver} network has no parent link (cnm makes a dummy one): "
            f"option parent={parent} and --internal cannot go together",
            hint="drop -o parent for a network internal to this host",
        )
    for other in others:
        if parent and other.driver in DRIVERS and other.options.get("parent") == parent:
            p = Parent.parse(parent)
            other_vlan = f"another VLAN id (-o parent={p.base}.VID)" if p.base else \
                f"an 802.1q sub-interface (-o parent={parent}.VID)"
            raise Conflict(
                f'parent {parent} is already used by network "{other.name}" ({other.driver}): '
                "one macvlan or ipvlan network per parent link",
                hint=f'connect to "{other.name}", or give this network {other_vlan}',
            )
    if net.options.get("host_shim") == "true" and not shim_plan(net)[0]:
        raise InvalidArgument(
            f"option host_shim needs an address for the host: network {net.name!r} has no "
            f"aux address named {SHIM_AUX!r}",
            hint=f"add --aux-address {SHIM_AUX}=IP (an address of the subnet)",
        )


def _check_parent(info: ParentInfo, alias: str, what: str) -> None:
    owner = names.parse_alias(info.alias)
    if owner is not None and info.alias != alias:
        raise Conflict(f"{what}: link {info.name} is cnm's own ({owner[0]} "
                       f"{names.short(owner[1])}); it cannot be a parent")
    if not info.ether:
        raise InvalidArgument(f"{what}: link {info.name} is not an Ethernet link; macvlan and "
                              "ipvlan need one as parent")
    if info.master:
        raise Conflict(f"{what}: link {info.name} is a port of {info.master}; a parent cannot "
                       "be a bridge or bond port", hint=f"use {info.master} as the parent")
    if not info.up:
        raise Conflict(f"{what}: parent link {info.name} is down",
                       hint=f"bring it up first (ip link set {info.name} up)")


def _check_host_addresses(net: Network, info: ParentInfo, what: str) -> None:
    """The host's own address on the parent's LAN must be one no sandbox can be given."""
    for cidr in info.addresses:
        ip = netaddr.IPNetwork(cidr).ip
        for s in net.subnets:
            pool = netaddr.IPNetwork(s.ip_range or s.subnet)
            reserved = {s.gateway, *s.aux_addresses.values()}
            if ip.version == pool.version and ip in pool and str(ip) not in reserved:
                raise Conflict(
                    f"{what}: the host's address {ip} on {info.name} is in "
                    f"{pool}, where sandboxes get their addresses",
                    hint=f"reserve it (--aux-address {info.name}={ip}) or give an "
                    "--ip-range that leaves it out")


class SlaveDriver(BaseDriver[SlaveOptions]):
    """A network of macvlan or ipvlan slaves on one parent link."""

    capabilities = Capabilities(link="slave")

    def shim_spec(self, net: Network, opts: SlaveOptions) -> SlaveSpec:
        raise NotImplementedError

    def gateways(self, net: Network, opts: SlaveOptions) -> tuple[tuple[int, str], ...]:
        """The default routes of a sandbox: the LAN's gateways; none on a dummy parent."""
        if net.internal or not opts.parent:
            return ()
        return tuple((s.version, s.gateway) for s in net.subnets if s.gateway)

    # ---- the driver contract
    def validate_network(self, net: Network, others: Sequence[Network]) -> None:
        validate_network(net, others)

    def lan_link(self, net: Network) -> str | None:
        return self.options(net).parent

    def create_network(self, net: Network, ctx: Context) -> None:
        opts = self.options(net)
        alias = names.alias("network", net.id)
        what = f'{self.name} network "{net.name}"'
        if not ctx.host.supports(self.name):
            raise unsupported(self.name, f"cannot create {what}")
        with ExitStack() as undo:
            if opts.parent is None:
                dummy = names.dummy_name(net.id)
                if not ctx.host.supports("dummy"):
                    raise unsupported("dummy", f"{what} has no -o parent, so it needs a dummy "
                                      "parent link")
                if ctx.host.ensure_dummy(dummy, alias):
                    undo.callback(quietly(ctx.host.delete_owned, dummy, alias))
            else:
                self._ensure_parent(net, Parent.parse(opts.parent), alias, what, ctx, undo)
            if opts.host_shim:
                addresses, routes = shim_plan(net)
                spec = self.shim_spec(net, opts)
                if ctx.host.ensure_shim(spec, alias, addresses, routes):
                    undo.callback(quietly(ctx.host.delete_owned, spec.ifname, alias))
            undo.pop_all()

    def _ensure_parent(self, net: Network, p: Parent, alias: str, what: str, ctx: Context,
                       undo: ExitStack) -> None:
        info = ctx.host.parent_info(p.name)
        if info is not None and info.alias == alias and p.base and p.vid:
            ctx.host.ensure_vlan(p.name, p.base, p.vid, alias)  # ours: up again if it was down
            return
        if info is not None:
            _check_parent(info, alias, what)
            _check_host_addresses(net, info, what)
            return
        if p.base is None or p.vid is None:
            raise NotFound(f"{what}: parent link {p.name} does not exist in the host namespace")
        base = ctx.host.parent_info(p.base)
        if base is None:
            raise NotFound(f"{what}: link {p.base} (the base of parent {p.name}) does not exist "
                           "in the host namespace")
        _check_parent(base, alias, what)
        if not ctx.host.supports("vlan"):
            raise unsupported("vlan", f"cannot create parent {p.name} of {what}")
        if ctx.host.ensure_vlan(p.name, p.base, p.vid, alias):
            undo.callback(quietly(ctx.host.delete_owned, p.name, alias))

    def delete_network(self, net: Network, ctx: Context) -> None:
        """The shim, then the parent if cnm made it (its ifalias says so); idempotent."""
        alias = names.alias("network", net.id)
        errors: list[CnmError] = []
        for link in (names.shim_name(net.id), parent_name(net)):
            try:
                ctx.host.delete_owned(link, alias)
            except CnmError as e:
                errors.append(e)
        if errors:
            raise Partial(f'deleting {self.name} network "{net.name}"', errors)
        super().delete_network(net, ctx)

    def join(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> JoinInfo:
        opts = self.options(net)
        spec = SlaveSpec(ifname=ep.ifname, parent=parent_name(net), kind=self.name,
                         mode=opts.mode, flag=opts.flag, mac=ep.mac or None, netns=netns)
        mac = ctx.host.add_slave(spec)
        return JoinInfo(interface=True, gateways=self.gateways(net, opts), mac=mac)

    def leave(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> None:
        # The slave lives in the sandbox only; a namespace already gone took it along.
        with contextlib.suppress(NotFound):
            ctx.sandbox.remove(netns, ep.ifname)

    def delete_endpoint(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        # A slave handed over to a runtime comes back to the host namespace under its
        # handover name only after the runtime's Leave (Docker's order): it goes here.
        ctx.host.delete_link(names.handover_name(ep.id))

    def endpoint_alive(self, net: Network, ep: Endpoint, ctx: Context) -> bool:
        # The slave is inside the sandbox, out of the host's sight; it dies with its parent.
        return ctx.host.exists(parent_name(net))

    def kernel_links(self, net: Network) -> tuple[str, ...]:
        """The parent (made by cnm or not: without it every endpoint is gone) and the shim."""
        shim = (names.shim_name(net.id),) if self.options(net).host_shim else ()
        return (parent_name(net), *shim)
