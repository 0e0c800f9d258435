"""`cnm lab … --vm`: the same lab command, run inside the qemu VM of netns-lab/vm/run.

The VM boots Debian's own kernel (ipvlan, 802.1q, netem are modules there) with no network
device; it sees this machine's / read-only (under a throwaway overlay) and the project's
.venv, so the command is this project's own `python -m cnm lab …`, and the lab file is
passed by its absolute path. A learner's machine is left untouched: every namespace the lab
makes lives and dies in the VM. The exit status is the command's (124: it ran past
CNM_VM_TIMEOUT, 125: the VM could not run it).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cnm.errors import InvalidArgument, NotFound

TOP = Path(__file__).resolve().parent.parent.parent
RUNNER = TOP / "netns-lab" / "vm" / "run"
# Only `run`: each VM boot starts from nothing and everything in it is gone when it stops,
# so a lab brought `up` in one VM could not be checked or taken down by the next.
ACTIONS = ("run",)


def command(action: str, lab_file: str, *extra: str) -> list[str]:
    """The argv that runs `cnm lab ACTION FILE EXTRA…` in the VM."""
    if action not in ACTIONS:
        raise InvalidArgument(
            f"--vm works with `cnm lab run` only, not {action!r}",
            hint="a VM keeps nothing between boots: `run` brings the lab up, checks it and "
                 "takes it down in one")
    path = Path(lab_file).resolve()
    if not path.is_file():
        raise NotFound(f"lab file {lab_file!r} not found")
    python = TOP / ".venv" / "bin" / "python"
    return [str(RUNNER), "--cmd", str(python), "-m", "cnm", "lab", action, str(path), *extra]


def run(action: str, lab_file: str, *extra: str) -> int:
    """Run it, its output passed through; the command's exit status."""
    argv = command(action, lab_file, *extra)
    if os.geteuid() != 0:
        raise InvalidArgument("cnm lab --vm needs root (the VM runner reads / for the guest)")
    return subprocess.run(argv, check=False).returncode
