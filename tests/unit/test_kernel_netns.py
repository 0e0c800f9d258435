"""netns.delete's reading of umount's errors (by errno, never by the words of a message)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from cnm.errors import CnmError, KernelError, from_errno
from cnm.kernel import netns


def failing_umount(err: CnmError) -> Callable[..., None]:
    def umount(target: str, flags: int = netns.MNT_DETACH) -> None:
        raise err

    return umount


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOENT])
def test_delete_of_a_path_not_mounted_removes_the_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      code: int) -> None:
    leftover = tmp_path / "ns"
    leftover.touch()
    monkeypatch.setattr(netns, "umount", failing_umount(from_errno(code, f"umount {leftover}")))
    netns.delete(str(leftover))
    assert not leftover.exists()


@pytest.mark.parametrize("err", [
    from_errno(errno.EPERM, "umount x"),
    from_errno(errno.EIO, "umount x"),
    # Only the errno counts: a message that merely says EINVAL is not "not mounted".
    KernelError("umount x: EINVAL (22)"),
])
def test_delete_raises_any_other_umount_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              err: CnmError) -> None:
    bound = tmp_path / "ns"
    bound.touch()
    monkeypatch.setattr(netns, "umount", failing_umount(err))
    with pytest.raises(type(err)) as info:
        netns.delete(str(bound))
    assert info.value is err and bound.exists()
