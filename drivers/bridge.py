"""bridge: a Linux bridge with the gateway addresses, one veth pair per endpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from cnm import names
from cnm.antispoof import PortGuard
from cnm.drivers.base import BaseDriver, Capabilities, Context, JoinInfo, parse_bool
from cnm.errors import AlreadyExists, CnmError, InvalidArgument
from cnm.firewall import NetworkRules
from cnm.ipam import parse_ip
from cnm.model import Endpoint, Network

log = logging.getLogger("cnm.drivers")

# Docker's option names, accepted as aliases of cnm's own.
ALIASES = {
    "com.docker.network.bridge.name": "bridge_name",
    "com.docker.network.driver.mtu": "mtu",
    "com.docker.network.bridge.enable_icc": "icc",
    "com.docker.network.bridge.enable_ip_masquerade": "masquerade",
    "com.docker.network.bridge.host_binding_ipv4": "host_binding_ipv4",
}
KEYS = ("bridge_name", "mtu", "icc", "masquerade", "host_binding_ipv4", "anti_spoofing")


@dataclass(frozen=True)
class BridgeOptions:
    bridge_name: str | None = None
    mtu: int | None = None
    icc: bool = True
    masquerade: bool = True
    host_binding_ipv4: str | None = None
    # A sandbox may send only with its own MAC and addresses (cnm.antispoof).
    anti_spoofing: bool = True

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> BridgeOptions:
        canon: dict[str, str] = {}
        for key, value in raw.items():
            name = ALIASES.get(key, key)
            if name not in KEYS:
                raise InvalidArgument(
                    f"unknown option {key!r} for driver bridge",
                    hint="bridge options: " + ", ".join(KEYS),
                )
            if name in canon:
                raise InvalidArgument(f"option {name} given twice ({key!r} is an alias)")
            canon[name] = value
        kw: dict[str, object] = {}
        if "bridge_name" in canon:
            bn = canon["bridge_name"]
            if not names.valid_ifname(bn):
                raise InvalidArgument(
                    f"invalid value {bn!r} for option bridge_name: an interface name is 1-15 "
                    "characters of letters, digits, '_', '-' and '.'"
                )
            kw["bridge_name"] = bn
        if "mtu" in canon:
            mtu = int(canon["mtu"]) if canon["mtu"].strip().isdecimal() else -1
            if not 68 <= mtu <= 65535:
                raise InvalidArgument(
                    f"invalid value {canon['mtu']!r} for option mtu: expected 68-65535"
                )
            kw["mtu"] = mtu
        for key in ("icc", "masquerade", "anti_spoofing"):
            if key in canon:
                kw[key] = parse_bool(key, canon[key])
        if "host_binding_ipv4" in canon:
            ip = parse_ip(canon["host_binding_ipv4"], "host_binding_ipv4")
            if ip.version != 4:
                raise InvalidArgument(f"invalid value {ip} for option host_binding_ipv4: not IPv4")
            kw["host_binding_ipv4"] = str(ip)
        return cls(**kw)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, str]:
        out = {}
        for key in KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


def bridge_of(net: Network) -> str:
    return net.options.get("bridge_name") or names.bridge_name(net.id)


class BridgeDriver(BaseDriver[BridgeOptions]):
    name = "bridge"
    # Its user-defined networks get embedded DNS (not the default "bridge").
    capabilities = Capabilities(publishes=True, link="veth")

    def parse_options(self, raw: Mapping[str, str]) -> BridgeOptions:
        return BridgeOptions.parse(raw)

    def create_network(self, net: Network, ctx: Context) -> None:
        ctx.host.ensure_bridge(bridge_of(net), names.alias("network", net.id),
                               self.options(net).mtu, self.gateway_links(net)[bridge_of(net)],
                               names.random_mac())

    def delete_network(self, net: Network, ctx: Context) -> None:
        ctx.host.delete_link(bridge_of(net))
        super().delete_network(net, ctx)

    def join(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> JoinInfo:
        args = (names.veth_name(ep.id), names.alias("endpoint", ep.id), ep.ifname, netns,
                ep.mac, bridge_of(net), self.options(net).mtu)
        try:
            ctx.host.add_veth(*args)
        except AlreadyExists:
            # An endpoint joined again (Docker's start after stop) may find the veth of its
            # last join still waiting for the reaper: reap it now, and try once more.
            ctx.host.reap()
            ctx.host.add_veth(*args)
        gateways: tuple[tuple[int, str], ...] = ()
        if not net.internal:
            gateways = tuple((s.version, s.gateway) for s in net.subnets if s.gateway)
        return JoinInfo(interface=True, gateways=gateways)

    def leave(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> None:
        # Off the bridge first, so no frame reaches the sandbox after this; the pair itself
        # is deleted by the reaper (the kernel's link delete is slow and serialises).
        ctx.host.retire(names.veth_name(ep.id))
        try:
            ctx.sandbox.retire(netns, ep.ifname, names.retired_name(ep.id),
                               [a for a in (ep.ipv4, ep.ipv6) if a])
        except CnmError as e:
            # Past the host side's retire the pair is off the bridge and in the graveyard:
            # the reaper deletes both ends, the sandbox's with them. Failing here would
            # leave a joined endpoint whose veth is on no bridge (issue 13, fault
            # injection); the rename only frees the ethN name sooner.
            log.warning("leaving %s: %s; the reaper removes its link", ep.ifname, e.message)

    def endpoint_alive(self, net: Network, ep: Endpoint, ctx: Context) -> bool:
        # Not just present: a veth someone detached from the bridge cuts the sandbox off.
        return ctx.host.attached(names.veth_name(ep.id), bridge_of(net))

    def kernel_links(self, net: Network) -> tuple[str, ...]:
        return (bridge_of(net),)

    def gateway_links(self, net: Network) -> dict[str, tuple[str, ...]]:
        return {bridge_of(net): tuple(f"{s.gateway}/{s.subnet.split('/')[1]}"
                                      for s in net.subnets if s.gateway)}

    def host_link(self, net: Network, ep: Endpoint) -> str | None:
        return names.veth_name(ep.id) if ep.sandbox_id else None

    def claims(self, net: Network) -> tuple[str, ...]:
        return (bridge_of(net),)

    def firewall_rules(self, net: Network) -> NetworkRules:
        opts = self.options(net)
        return NetworkRules(bridge=bridge_of(net), subnets=tuple(s.subnet for s in net.subnets),
                            internal=net.internal, icc=opts.icc, masquerade=opts.masquerade)

    def guard(self, net: Network, ep: Endpoint) -> PortGuard | None:
        if not self.options(net).anti_spoofing:
            return None
        return PortGuard(port=names.veth_name(ep.id), mac=ep.mac, ipv4=ep.ip4, ipv6=ep.ip6)

    def prepare_publish(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        # A sandbox reaching its own published port: br_netfilter DNATs the frame on the
        # bridge and bridges it back out the port it came in on, which hairpin mode allows.
        ctx.host.set_hairpin(names.veth_name(ep.id))

    def host_binding(self, net: Network) -> str:
        return self.options(net).host_binding_ipv4 or ""
