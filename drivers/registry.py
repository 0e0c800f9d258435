"""The table of drivers cnm knows."""

from __future__ import annotations

from cnm.drivers.base import Driver
from cnm.drivers.bridge import BridgeDriver
from cnm.drivers.host import HostDriver
from cnm.drivers.ipvlan import IpvlanDriver
from cnm.drivers.macvlan import MacvlanDriver
from cnm.drivers.null import NullDriver
from cnm.errors import InvalidArgument


def builtin() -> dict[str, Driver]:
    return {d.name: d for d in (NullDriver(), HostDriver(), BridgeDriver(), MacvlanDriver(),
                                IpvlanDriver())}


def lookup(drivers: dict[str, Driver], name: str) -> Driver:
    try:
        return drivers[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown driver {name!r}", hint="drivers: " + ", ".join(sorted(drivers))
        ) from None
