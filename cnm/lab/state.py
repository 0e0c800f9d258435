"""Where a lab's things are: its namespaces' names, its state dir and state file, each
host's cnmd socket; and stopping a process the lab started. (`runner` makes and removes
the lab; `peers` its etcd and dockerds; `checks` reads it.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cnm.client import Client
from cnm.errors import CnmError, PermissionDenied

# Where labs keep their state, and the first word of their namespaces' names: a test
# suite sets both so its labs never meet a learner's (or another suite's) of the same name.
ROOT = Path(os.environ.get("CNM_LAB_DIR", "/run/cnm-lab"))
PREFIX = os.environ.get("CNM_LAB_PREFIX", "lab")


def netns_name(lab: str, node: str) -> str:
    return f"{PREFIX}-{lab}-{node}"


def netns_path(lab: str, node: str) -> str:
    return f"/run/netns/{netns_name(lab, node)}"


def state_dir(lab: str) -> Path:
    return ROOT / lab


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PermissionDenied(f"cnm lab {what} needs root (it makes network namespaces)",
                               hint=f"sudo cnm lab {what} …")


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise CnmError(f"{' '.join(cmd)}: {r.stderr.strip() or 'exit ' + str(r.returncode)}")
    return r


@dataclass
class State:
    """What a lab has made, written after every step (state.json)."""

    name: str
    file: str
    namespaces: list[str] = field(default_factory=list)
    daemons: dict[str, int] = field(default_factory=dict)  # host -> cnmd pid
    processes: list[int] = field(default_factory=list)  # process group leaders
    etcd: list[int] = field(default_factory=list)  # etcd members (group leaders)
    dockerd: dict[str, int] = field(default_factory=dict)  # host -> dockerd's wrapper pid
    up: bool = False

    @property
    def path(self) -> Path:
        return state_dir(self.name) / "state.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        tmp.replace(self.path)

    @classmethod
    def read(cls, name: str) -> State | None:
        try:
            data = json.loads((state_dir(name) / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(**data)


def socket_of(lab: str, host: str) -> str:
    return f"unix://{state_dir(lab) / host / 'cnm.sock'}"


def client(lab: str, host: str) -> Client:
    return Client(socket_of(lab, host), timeout=60)


def kill(pid: int, group: bool, wait: float) -> None:
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not ours (another `up` started it): poll for it
            if not os.path.exists(f"/proc/{pid}"):
                return
        time.sleep(0.02)
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def ours(pid: int, d: Path) -> bool:
    """Whether process ``pid`` names ``d`` on its command line: one of the lab's, not an
    unrelated process that got a recorded pid after the lab's exited."""
    try:
        return str(d).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
