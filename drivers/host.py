"""host: the sandbox is the host namespace itself; no isolation, no interfaces to make.

The controller gives a sandbox on this network the host namespace instead of a new one;
the driver itself has nothing to plumb, exactly like null.
"""

from __future__ import annotations

from cnm.drivers.null import NullDriver


class HostDriver(NullDriver):
    name = "host"
