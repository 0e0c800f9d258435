"""The real sandbox port's namespace checks, which no driver test reaches on its own."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cnm.model import SandboxSpec
from cnm.testing.netns import Stack


def test_identity_tells_namespaces_apart_and_from_a_leftover_file(stack: Stack,
                                                                  tmp_path: Path) -> None:
    c, sbx = stack.controller, stack.sandbox
    c.create_sandbox(SandboxSpec(name="a"))
    path = stack.netns("a")
    mine, host = sbx.identity(path), sbx.identity(stack.host_ns.path)
    assert mine is not None and host is not None and mine != host
    # The same namespace through another path: /proc/PID/ns/net of a process inside it.
    here = subprocess.Popen(["nsenter", f"--net={path}", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while sbx.identity(f"/proc/{here.pid}/ns/net") != mine and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sbx.identity(f"/proc/{here.pid}/ns/net") == mine
    finally:
        here.kill()
        here.wait()
    c.remove_sandbox("a")
    assert sbx.identity(path) is None
    leftover = tmp_path / "leftover"
    leftover.touch()
    assert sbx.identity(str(leftover)) is None
    assert sbx.identity(str(tmp_path / "missing")) is None


def test_delete_netns_of_a_leftover_file_removes_it(stack: Stack, tmp_path: Path) -> None:
    # umount fails EINVAL (not a mount point): the namespace is gone already, the file goes.
    leftover = tmp_path / "leftover"
    leftover.touch()
    stack.sandbox.delete_netns(str(leftover))
    assert not leftover.exists()
