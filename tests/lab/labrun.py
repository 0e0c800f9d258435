"""Run `cnm lab` as a user would, scoped to the test: its own state dir and namespace
prefix, so nothing meets a learner's lab of the same name."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LABS = Path(__file__).resolve().parents[2] / "netns-lab" / "labs"


@dataclass
class LabEnv:
    root: Path
    prefix: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CNM_LAB_DIR": str(self.root), "CNM_LAB_PREFIX": self.prefix}

    def cnm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cnm", "lab", *args], capture_output=True,
                              text=True, env=self.env, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "cnm", "lab", *args], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env)

    def namespaces(self) -> list[str]:
        d = Path("/run/netns")
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def leftovers(self) -> list[str]:
        """Anything of this test's labs still there: namespaces, processes, state."""
        left = [f"netns {n}" for n in self.namespaces() if n.startswith(self.prefix + "-")]
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(self.root) in cmdline:
                left.append(f"process {proc.name}: {cmdline[:120]}")
        if self.root.exists() and any(self.root.iterdir()):
            left.append(f"state {sorted(p.name for p in self.root.iterdir())}")
        return left

    def cleanup(self) -> None:
        """Whatever a failed test left: down of every lab it may have made."""
        for f in self.root.glob("*/state.json"):
            import json

            self.cnm("down", json.loads(f.read_text())["file"])
        for n in self.namespaces():
            if n.startswith(self.prefix + "-"):
                subprocess.run(["ip", "netns", "del", n], capture_output=True)


@contextmanager
def lab_env(tmp: Path) -> Iterator[LabEnv]:
    e = LabEnv(tmp / "labs", f"lt{secrets.token_hex(3)}")
    e.root.mkdir()
    try:
        yield e
    finally:
        e.cleanup()
