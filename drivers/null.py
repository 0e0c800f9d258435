"""null: a sandbox with loopback only."""

from __future__ import annotations

from collections.abc import Mapping

from cnm.drivers.base import Context, JoinInfo, refuse_options
from cnm.model import Endpoint, Network


class NullDriver:
    name = "null"
    needs_ipam = False
    user_creatable = False

    def parse_options(self, raw: Mapping[str, str]) -> dict[str, str]:
        return refuse_options(self.name, raw)

    def create_network(self, net: Network, ctx: Context) -> None:
        pass

    def delete_network(self, net: Network, ctx: Context) -> None:
        pass

    def join(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> JoinInfo:
        return JoinInfo(interface=False)

    def leave(self, net: Network, ep: Endpoint, netns: str, ctx: Context) -> None:
        pass

    def endpoint_alive(self, net: Network, ep: Endpoint, ctx: Context) -> bool:
        return True

    def kernel_links(self, net: Network) -> tuple[str, ...]:
        return ()
