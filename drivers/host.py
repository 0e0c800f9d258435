"""host: the sandbox is the host namespace itself; no isolation, no interfaces to make.

The core gives a sandbox on this network the host namespace instead of a new one (its
capabilities say so); the driver itself has nothing to plumb, exactly like null.
"""

from __future__ import annotations

from collections.abc import Mapping

from cnm.drivers.base import BaseDriver, Capabilities, NoOptions, refuse_options


class HostDriver(BaseDriver[NoOptions]):
    name = "host"
    capabilities = Capabilities(ipam=False, dns=False, link="none", user_creatable=False,
                                host_namespace=True)

    def parse_options(self, raw: Mapping[str, str]) -> NoOptions:
        return refuse_options(self.name, raw)
