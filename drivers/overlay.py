"""overlay: one L2 network across hosts, over VXLAN, with etcd as the only thing between them.

The network is global (the cluster store holds it, its subnets, its VNI and its endpoints).
On a host, its data plane exists only while a local endpoint is joined: a bridge holding
the gateway address (every host has the same one: each sandbox's gateway is its own host,
which NATs its egress unless the network is internal) and a VXLAN device on it, with no
learning and no flooding. Each joined endpoint of another host (a ``Peer``, from the store's
watch) is a permanent FDB entry (its MAC via its host's VTEP) and a permanent neighbour
entry, so the device's proxy answers ARP and ND locally: no broadcast or multicast ever
crosses the underlay. The host side appears with the first local join and goes with the
last leave.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cnm import esp, names
from cnm.antispoof import PortGuard
from cnm.drivers.base import BaseDriver, Capabilities, Context, JoinInfo, parse_bool
from cnm.errors import AlreadyExists, InvalidArgument
from cnm.esp import EncryptedNetwork, EspPlan, KeyRing
from cnm.firewall import NetworkRules
from cnm.kernel.ports import VxlanSpec
from cnm.model import Endpoint, Network, Peer

VNI_MIN, VNI_MAX = 4096, 2**24 - 1
KEYS = ("vni", "vxlan_port", "mtu", "encrypted", "anti_spoofing")
# VXLAN's own header, UDP, the outer IP header and Ethernet: 50 bytes over IPv4, 70 over IPv6.
OVERHEAD = {4: 50, 6: 70}
# ESP in transport mode with rfc4106(gcm(aes)): its header (8), IV (8), trailer (2 and up
# to 3 of padding) and ICV (16): 37, and a 1500-byte underlay fits a full inner frame
# without fragments (tests/netns/test_overlay_esp_vm.py sends one with DF set).
ESP_OVERHEAD = 38


def _int(key: str, value: str, low: int, high: int) -> int:
    n = int(value) if value.strip().isdecimal() else -1
    if not low <= n <= high:
        raise InvalidArgument(f"invalid value {value!r} for option {key}: expected {low}-{high}")
    return n


@dataclass(frozen=True)
class OverlayOptions:
    vni: int
    vxlan_port: int = 4789
    mtu: int | None = None
    encrypted: bool = False
    anti_spoofing: bool = True  # as on a bridge: a sandbox sends only as itself

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> OverlayOptions:
        for key in raw:
            if key not in KEYS:
                raise InvalidArgument(f"unknown option {key!r} for driver overlay",
                                      hint="overlay options: " + ", ".join(KEYS))
        encrypted = parse_bool("encrypted", raw["encrypted"]) if "encrypted" in raw else False
        # A network created without -o vni gets one at random (16.7 million of them): the
        # cluster store's claim on "vni:N" makes two hosts picking the same one impossible,
        # and the core plans again when it was taken.
        vni = (_int("vni", raw["vni"], VNI_MIN, VNI_MAX) if "vni" in raw
               else VNI_MIN + secrets.randbelow(VNI_MAX - VNI_MIN + 1))
        return cls(vni=vni,
                   vxlan_port=_int("vxlan_port", raw["vxlan_port"], 1, 65535)
                   if "vxlan_port" in raw else 4789,
                   mtu=_int("mtu", raw["mtu"], 68, 65535) if "mtu" in raw else None,
                   encrypted=encrypted,
                   anti_spoofing=parse_bool("anti_spoofing", raw["anti_spoofing"])
                   if "anti_spoofing" in raw else True)

    def to_dict(self) -> dict[str, str]:
        out = {"vni": str(self.vni), "vxlan_port": str(self.vxlan_port)}
        if self.mtu is not None:
            out["mtu"] = str(self.mtu)
        if self.encrypted:
            out["encrypted"] = "true"
        if not self.anti_spoofing:
            out["anti_spoofing"] = "false"
        return out


def bridge_of(net: Network) -> str:
    return f"{names.PREFIX}o{net.id[:11]}"


def vxlan_of(net: Network) -> str:
    return f"{names.PREFIX}x{net.id[:11]}"


class OverlayDriver(BaseDriver[OverlayOptions]):
    name = "overlay"
    capabilities = Capabilities(scope="global", publishes=True, link="veth")

    def __init__(self, advertise: str | None = None, keys: KeyRing | None = None) -> None:
        """``advertise``: this host's underlay address (its VTEP); None when cnmd has no
        cluster store, and then the driver refuses every network. ``keys``: the cluster's
        key as this host knows it (cnm.cluster keeps it), for encrypted networks."""
        super().__init__()
        self.advertise = advertise
        self.keys = keys
        # The encrypted networks this host has seen (their host side may exist or not).
        self.encrypted: dict[str, Network] = {}
        # network id -> endpoint id -> the peers of other hosts, kept while the host side
        # does not exist so that the first local join programs them all.
        self.peers: dict[str, dict[str, Peer]] = {}
        # network id -> the MTU its host side was made with, by this process (a join
        # finding it still attached needs no other request).
        self.made: dict[str, int] = {}

    def parse_options(self, raw: Mapping[str, str]) -> OverlayOptions:
        return OverlayOptions.parse(raw)

    def validate_network(self, net: Network, others: object) -> None:
        if self.advertise is None:
            raise InvalidArgument(
                "overlay networks need a cluster store, and cnmd was started without one",
                hint="start cnmd with --cluster-store etcd://ADDR:PORT[,ADDR:PORT…] "
                     "--advertise-addr IP")

    def mtu(self, net: Network, ctx: Context) -> int:
        """The network's MTU on this host: ``-o mtu``, or the underlay's less VXLAN's."""
        opts = self.options(net)
        if opts.mtu is not None:
            return opts.mtu
        assert self.advertise is not None
        version = 6 if ":" in self.advertise else 4
        return ctx.host.mtu_towards(self.advertise) - OVERHEAD[version] - (
            ESP_OVERHEAD if opts.encrypted else 0)

    def _host_side(self, net: Network, ctx: Context) -> int:
        """Bridge and VXLAN device, with every known peer programmed; the MTU."""
        if self.advertise is None:
            raise InvalidArgument("this cnmd has no cluster store: it cannot join overlay "
                                  f'network "{net.name}"')
        opts = self.options(net)
        vx = vxlan_of(net)
        mtu = self.made.get(net.id)
        if mtu is not None and ctx.host.attached(vx, bridge_of(net)):
            # Made by an earlier join and still in place (one raw link request): nothing to
            # make. Through ensure_bridge and ensure_vxlan's checks, every join paid ~30 %
            # of its time here (py-spy, 3 hosts); drift is doctor's and reconcile's job.
            if opts.encrypted:
                self.encrypted[net.id] = net
                self.refresh_esp(ctx)
            return mtu
        mtu = self.mtu(net, ctx)
        alias = names.alias("network", net.id)
        addrs = [f"{s.gateway}/{s.subnet.split('/')[1]}" for s in net.subnets if s.gateway]
        ctx.host.ensure_bridge(bridge_of(net), alias, mtu, addrs, names.random_mac())
        created = ctx.host.ensure_vxlan(VxlanSpec(vx, alias, opts.vni, opts.vxlan_port,
                                                  self.advertise, bridge_of(net), mtu))
        self.made[net.id] = mtu
        if created:
            for peer in self.peers.get(net.id, {}).values():
                ctx.host.set_peer(vx, peer.mac, peer.cidrs, peer.host, True)
        if opts.encrypted:
            self.encrypted[net.id] = net
            try:
                self.refresh_esp(ctx)
            except BaseException:
                if created:
                    self._drop_host_side(net, ctx)
                raise
        return mtu

    def _drop_host_side(self, net: Network, ctx: Context) -> None:
        self.made.pop(net.id, None)
        ctx.host.delete_link(vxlan_of(net))
        ctx.host.delete_link(bridge_of(net))
        if net.id in self.encrypted:
            self.refresh_esp(ctx)

    def delete_network(self, net: Network, ctx: Context) -> None:
        self._drop_host_side(net, ctx)
        self.peers.pop(net.id, None)
        if self.encrypted.pop(net.id, None) is not None:
            self.refresh_esp(ctx)
        super().delete_network(net, ctx)

    def restore_network(self, net: Network, ctx: Context) -> None:
        super().restore_network(net, ctx)
        if self.options(net).encrypted:
            self.encrypted[net.id] = net
            self.refresh_esp(ctx)

    def esp_plan(self, ctx: Context, now: float | None = None) -> EspPlan:
        """ESP for each encrypted network whose host side exists here, towards the VTEPs
        of its peers (cnm.esp.plan); ``now`` on the KeyRing's clock (monotonic)."""
        if self.advertise is None or self.keys is None:
            return EspPlan()
        now = time.monotonic() if now is None else now
        nets = []
        for net in self.encrypted.values():
            if ctx.host.exists(vxlan_of(net)):
                opts = self.options(net)
                vteps = frozenset(p.host for p in self.peers.get(net.id, {}).values())
                nets.append(EncryptedNetwork(opts.vni, opts.vxlan_port, vteps))
        return esp.plan(self.advertise, self.keys.keys(now), self.keys.outbound(now), nets)

    def refresh_esp(self, ctx: Context) -> None:
        """Make this host's SAs, policies and ESP nft table what ``esp_plan`` says (also
        when the cluster key changes, and to remove what is left from before a restart)."""
        if self.keys is not None:
            ctx.host.apply_esp(self.esp_plan(ctx))

    def join(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> JoinInfo:
        mtu = self._host_side(net, ctx)
        args = (names.veth_name(ep.id), names.alias("endpoint", ep.id), ep.ifname, netns,
                ep.mac, bridge_of(net), mtu)
        try:
            ctx.host.add_veth(*args)
        except AlreadyExists:
            ctx.host.reap()  # a veth of its last join still waiting for the reaper
            ctx.host.add_veth(*args)
        except BaseException:
            self._leave_host_side(net, ctx)
            raise
        gateways: tuple[tuple[int, str], ...] = ()
        if not net.internal:
            gateways = tuple((s.version, s.gateway) for s in net.subnets if s.gateway)
        return JoinInfo(interface=True, gateways=gateways)

    def leave(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> None:
        ctx.host.retire(names.veth_name(ep.id))
        ctx.sandbox.retire(netns, ep.ifname, names.retired_name(ep.id),
                           [a for a in (ep.ipv4, ep.ipv6) if a])
        self._leave_host_side(net, ctx)

    def _leave_host_side(self, net: Network, ctx: Context) -> None:
        """The last local endpoint gone: the host side goes too."""
        if not [p for p in ctx.host.ports_of(bridge_of(net)) if p != vxlan_of(net)]:
            self._drop_host_side(net, ctx)

    def endpoint_alive(self, net: Network, ep: Endpoint, ctx: Context) -> bool:
        return (ctx.host.attached(names.veth_name(ep.id), bridge_of(net))
                and ctx.host.attached(vxlan_of(net), bridge_of(net)))

    def claims(self, net: Network) -> tuple[str, ...]:
        return (f"vni:{self.options(net).vni}",)

    def firewall_rules(self, net: Network) -> NetworkRules:
        return NetworkRules(bridge=bridge_of(net), subnets=tuple(s.subnet for s in net.subnets),
                            internal=net.internal, icc=True, masquerade=True)

    def guard(self, net: Network, ep: Endpoint) -> PortGuard | None:
        """The same port guard as a bridge's: what the sandbox sends into the overlay (and
        so to every host) carries its own MAC and addresses only."""
        if not self.options(net).anti_spoofing:
            return None
        return PortGuard(port=names.veth_name(ep.id), mac=ep.mac, ipv4=ep.ip4, ipv6=ep.ip6)

    def prepare_publish(self, net: Network, ep: Endpoint, ctx: Context) -> None:
        ctx.host.set_hairpin(names.veth_name(ep.id))

    def remote(self, net: Network, peer: Peer, present: bool, ctx: Context) -> None:
        known = self.peers.setdefault(net.id, {})
        old = known.pop(peer.endpoint_id, None)
        vx = vxlan_of(net)
        if old is not None and (not present or old != peer):
            ctx.host.set_peer(vx, old.mac, old.cidrs, old.host, False)
        if present:
            known[peer.endpoint_id] = peer
            ctx.host.set_peer(vx, peer.mac, peer.cidrs, peer.host, True)
        if self.options(net).encrypted:
            self.encrypted[net.id] = net
            if old is None or not present or old.host != peer.host:
                self.refresh_esp(ctx)
