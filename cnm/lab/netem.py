"""Link impairments for labs: delay, jitter, loss and rate with the kernel's netem qdisc.

A lab names an interface in one of its namespaces (an underlay link end, a sandbox's
interface) and what to do to the packets that leave it (cnm.lab.schema parses the `impair`
mapping into a model.Impairment); ``apply`` replaces the interface's root qdisc with netem
(``tc qdisc replace``, so applying twice is the same as once) and ``clear`` puts the
default back. netem is a module this
machine's kernel lacks: the labs that use it run in the VM tier (netns-lab/vm/run).
"""

from __future__ import annotations

import subprocess

from cnm.errors import KernelError, NotFound
from cnm.lab.model import Impairment


def tc_args(imp: Impairment) -> list[str]:
    """The netem part of `tc qdisc replace dev IF root netem …`."""
    args: list[str] = []
    if imp.delay_ms or imp.jitter_ms:
        args += ["delay", f"{imp.delay_ms or 0:g}ms"]
        if imp.jitter_ms:
            args += [f"{imp.jitter_ms:g}ms"]
    if imp.loss_pct:
        args += ["loss", f"{imp.loss_pct:g}%"]
    if imp.rate:
        args += ["rate", imp.rate]
    return args


def _tc(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={netns}", "tc", *args], capture_output=True,
                          text=True, timeout=30)


def apply(netns: str, ifname: str, imp: Impairment) -> None:
    """Make ``imp`` the root qdisc of ``ifname`` in the namespace at path ``netns``."""
    r = _tc(netns, "qdisc", "replace", "dev", ifname, "root", "netem", *tc_args(imp))
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
