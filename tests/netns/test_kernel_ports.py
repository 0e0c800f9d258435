"""The real sandbox port's namespace checks, which no driver test reaches on its own."""

from __future__ import annotations

from pathlib import Path

from nstools import Stack

from cnm.model import SandboxSpec


def test_is_netns_tells_a_live_namespace_from_a_leftover_file(stack: Stack,
                                                              tmp_path: Path) -> None:
    c, sbx = stack.controller, stack.sandbox
    c.create_sandbox(SandboxSpec(name="a"))
    path = stack.netns("a")
    assert sbx.is_netns(path) and sbx.is_netns(stack.host_ns.path)
    c.remove_sandbox("a")
    assert not sbx.is_netns(path)
    leftover = tmp_path / "leftover"
    leftover.touch()
    assert not sbx.is_netns(str(leftover))
    assert not sbx.is_netns(str(tmp_path / "missing"))


def test_delete_netns_of_a_leftover_file_removes_it(stack: Stack, tmp_path: Path) -> None:
    # umount fails EINVAL (not a mount point): the namespace is gone already, the file goes.
    leftover = tmp_path / "leftover"
    leftover.touch()
    stack.sandbox.delete_netns(str(leftover))
    assert not leftover.exists()
