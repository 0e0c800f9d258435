"""ipvlan: endpoints are ipvlan slaves of a parent link, all with the parent's MAC.

Modes (``-o ipvlan_mode``): ``l2`` (default; the slaves are on the parent's LAN), ``l3``
and ``l3s`` (the host routes for them: a sandbox sends everything out of its interface,
no gateway and no ARP; LAN hosts reach the subnet through a route via the host; l3s also
passes the host's netfilter). Flags (``-o ipvlan_flag``): ``bridge`` (default), ``private``
(slaves never reach each other), ``vepa`` (only through an outside hairpin switch). See
parent.py for the parent rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cnm import names
from cnm.drivers.base import Context
from cnm.drivers.parent import SlaveDriver, SlaveOptions, parent_name, parse_options
from cnm.errors import InvalidArgument
from cnm.kernel.ports import SlaveSpec
from cnm.model import Endpoint, Network

MODES = ("l2", "l3", "l3s")
FLAGS = ("bridge", "private", "vepa")
# The default route of an L3 sandbox: out of its interface, with no gateway.
ON_LINK = {4: "0.0.0.0", 6: "::"}


class IpvlanDriver(SlaveDriver):
    name = "ipvlan"

    def parse_options(self, raw: Mapping[str, str]) -> SlaveOptions:
        return parse_options(self.name, raw, MODES, FLAGS)

    def shim_spec(self, net: Network, opts: SlaveOptions) -> SlaveSpec:
        # One parent has one ipvlan mode: the shim takes the network's.
        return SlaveSpec(ifname=names.shim_name(net.id), parent=parent_name(net),
                         kind=self.name, mode=opts.mode, flag=opts.flag)

    def gateways(self, net: Network, opts: SlaveOptions) -> tuple[tuple[int, str], ...]:
        if opts.mode == "l2" or net.internal or not opts.parent:
            return super().gateways(net, opts)
        return tuple(sorted({(s.version, ON_LINK[s.version]) for s in net.subnets}))

    def create_endpoint(self, net: Network, ep: Endpoint, mac: str | None,
                        holders: Callable[[], Sequence[str]], ctx: Context) -> None:
        if mac is not None:
            raise InvalidArgument(f'network "{net.name}" is ipvlan: its endpoints share the '
                                  "parent's MAC, so --mac-address is not accepted")
