"""The table of drivers cnm knows."""

from __future__ import annotations

from cnm.drivers.base import Driver
from cnm.drivers.bridge import BridgeDriver
from cnm.drivers.host import HostDriver
from cnm.drivers.ipvlan import IpvlanDriver
from cnm.drivers.macvlan import MacvlanDriver
from cnm.drivers.null import NullDriver
from cnm.drivers.overlay import OverlayDriver
from cnm.drivers.remote import Drivers
from cnm.errors import InvalidArgument


def builtin() -> dict[str, Driver]:
    # overlay without a cluster store: it refuses every network, saying what is missing
    # (wiring gives a cnmd in a cluster one that works).
    return {d.name: d for d in (NullDriver(), HostDriver(), BridgeDriver(), MacvlanDriver(),
                                IpvlanDriver(), OverlayDriver())}


def lookup(drivers: dict[str, Driver], name: str) -> Driver:
    """A driver to create a network with: cnm's, or a Docker network plugin listening now
    under the plugin dir (``remote.Drivers``)."""
    found = drivers.find(name) if isinstance(drivers, Drivers) else drivers.get(name)
    if found is None:
        raise InvalidArgument(
            f"unknown driver {name!r}", hint="drivers: " + ", ".join(sorted(drivers)) + (
                f", or a Docker network plugin in {drivers.plugin_dir}"
                if isinstance(drivers, Drivers) and drivers.plugin_dir else ""))
    driver: Driver = found
    return driver
