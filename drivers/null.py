"""null: a sandbox with loopback only."""

from __future__ import annotations

from collections.abc import Mapping

from cnm.drivers.base import BaseDriver, Capabilities, NoOptions, refuse_options


class NullDriver(BaseDriver[NoOptions]):
    name = "null"
    capabilities = Capabilities(ipam=False, dns=False, link="none", user_creatable=False,
                                exclusive=True)

    def parse_options(self, raw: Mapping[str, str]) -> NoOptions:
        return refuse_options(self.name, raw)
