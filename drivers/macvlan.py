"""macvlan: endpoints are macvlan slaves of a parent link, each with its own MAC.

Modes (``-o macvlan_mode``): ``bridge`` (default; slaves reach each other inside the
parent), ``private`` (never each other, not even through a hairpin switch), ``vepa`` (each
other only through an outside switch that sends frames back: hairpin) and ``passthru`` (the
parent's one slave, with the parent's MAC). See parent.py for the parent rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cnm import names
from cnm.drivers.base import Context
from cnm.drivers.parent import SlaveDriver, SlaveOptions, parent_name, parse_options
from cnm.errors import InUse, InvalidArgument
from cnm.kernel.ports import SlaveSpec
from cnm.model import Endpoint, Network

MODES = ("bridge", "private", "vepa", "passthru")


class MacvlanDriver(SlaveDriver):
    name = "macvlan"

    def parse_options(self, raw: Mapping[str, str]) -> SlaveOptions:
        return parse_options(self.name, raw, MODES)

    def shim_spec(self, net: Network, opts: SlaveOptions) -> SlaveSpec:
        # Bridge mode: the kernel delivers between two slaves only when both are in it.
        return SlaveSpec(ifname=names.shim_name(net.id), parent=parent_name(net),
                         kind=self.name, mode="bridge")

    def create_endpoint(self, net: Network, ep: Endpoint, mac: str | None,
                        holders: Callable[[], Sequence[str]], ctx: Context) -> None:
        if self.options(net).mode != "passthru":
            return
        if mac is not None:
            raise InvalidArgument(f'network "{net.name}" is macvlan passthru: its endpoint '
                                  "takes the parent's MAC, so --mac-address is not accepted")
        held = holders()
        if held:
            raise InUse(f'network "{net.name}" is macvlan passthru: its parent '
                        f'{parent_name(net)} takes one endpoint, and {held[0]} '
                        "holds it", hint="disconnect it first, or use macvlan_mode=bridge")
