"""Link impairments for labs: delay, jitter, loss and rate with the kernel's netem qdisc.

A lab names an interface in one of its namespaces (an underlay link end, a sandbox's
interface) and what to do to the packets that leave it; ``parse`` checks the mapping once,
``apply`` replaces the interface's root qdisc with netem (``tc qdisc replace``, so applying
twice is the same as once) and ``clear`` puts the default back. netem is a module this
machine's kernel lacks: the labs that use it run in the VM tier (netns-lab/vm/run).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from cnm.errors import InvalidArgument, KernelError, NotFound

KEYS = ("delay_ms", "jitter_ms", "loss_pct", "rate")
# tc's rate units (tc-netem(8), tc(8)): bits per second with a decimal or binary prefix.
RATE = re.compile(r"^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps|"
                  r"kibit|mibit|gibit|tibit|kibps|mibps|gibps|tibps)$")


@dataclass(frozen=True)
class Impairment:
    """What netem does to the packets leaving one interface."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate: str | None = None  # "10mbit"

    def tc_args(self) -> list[str]:
        """The netem part of `tc qdisc replace dev IF root netem …`."""
        args: list[str] = []
        if self.delay_ms or self.jitter_ms:
            args += ["delay", f"{self.delay_ms:g}ms"]
            if self.jitter_ms:
                args += [f"{self.jitter_ms:g}ms"]
        if self.loss_pct:
            args += ["loss", f"{self.loss_pct:g}%"]
        if self.rate:
            args += ["rate", self.rate]
        return args


def _number(where: str, key: str, value: object, top: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{where}: {key} must be a number, not {value!r}")
    if value < 0 or (top is not None and value > top):
        bound = f"between 0 and {top:g}" if top is not None else "0 or more"
        raise InvalidArgument(f"{where}: {key} must be {bound}, not {value!r}")
    return float(value)


def parse(where: str, data: Mapping[str, object]) -> Impairment:
    """An Impairment from a lab file's mapping; ``where`` names it in errors."""
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InvalidArgument(f"{where}: unknown key {unknown[0]!r}",
                              hint=f"the keys allowed are {', '.join(KEYS)}")
    if not data:
        raise InvalidArgument(f"{where}: an impairment needs at least one of "
                              f"{', '.join(KEYS)}")
    delay = _number(where, "delay_ms", data.get("delay_ms", 0), 60_000)
    jitter = _number(where, "jitter_ms", data.get("jitter_ms", 0), 60_000)
    loss = _number(where, "loss_pct", data.get("loss_pct", 0), 100)
    if jitter and not delay:
        raise InvalidArgument(f"{where}: jitter_ms needs a delay_ms to vary around")
    rate = data.get("rate")
    if rate is not None and (not isinstance(rate, str) or not RATE.match(rate)):
        raise InvalidArgument(f"{where}: rate must be a tc rate such as '10mbit' or "
                              f"'512kbit', not {rate!r}")
    return Impairment(delay, jitter, loss, rate)


def _tc(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={netns}", "tc", *args], capture_output=True,
                          text=True, timeout=30)


def apply(netns: str, ifname: str, imp: Impairment) -> None:
    """Make ``imp`` the root qdisc of ``ifname`` in the namespace at path ``netns``."""
    r = _tc(netns, "qdisc", "replace", "dev", ifname, "root", "netem", *imp.tc_args())
    if r.returncode != 0:
        err = r.stderr.strip()
        if "Cannot find device" in err:
            raise NotFound(f"impairment: no interface {ifname!r} in {netns}")
        if "Specified qdisc kind is unknown" in err or "No such file" in err:
            raise KernelError(f"impairment on {ifname}: this kernel has no netem",
                              hint="run the lab in the VM tier: cnm lab run --vm FILE")
        raise KernelError(f"impairment on {ifname} in {netns}: tc: {err}")


def clear(netns: str, ifname: str) -> None:
    """The default qdisc back on ``ifname``; nothing to do when it has gone or has none."""
    _tc(netns, "qdisc", "del", "dev", ifname, "root")
