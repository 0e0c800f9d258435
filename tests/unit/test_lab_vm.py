"""`cnm lab run --vm`: the command handed to netns-lab/vm/run, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnm.errors import InvalidArgument, NotFound
from cnm.lab import vm


def test_run_in_the_vm_is_this_projects_cnm_on_the_files_absolute_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lab.yaml").write_text("name: x\n")
    monkeypatch.chdir(tmp_path)
    argv = vm.command("run", "lab.yaml", "--verbose")
    assert argv[:2] == [str(vm.TOP / "netns-lab" / "vm" / "run"), "--cmd"]
    assert argv[2:] == [str(vm.TOP / ".venv" / "bin" / "python"), "-m", "cnm", "lab", "run",
                        str(tmp_path / "lab.yaml"), "--verbose"]
    assert Path(argv[0]).is_file()


@pytest.mark.parametrize("action", ["up", "check", "down", "graph"])
def test_only_run_goes_to_the_vm(tmp_path: Path, action: str) -> None:
    (tmp_path / "lab.yaml").write_text("name: x\n")
    with pytest.raises(InvalidArgument, match=f"not '{action}'") as e:
        vm.command(action, str(tmp_path / "lab.yaml"))
    assert e.value.hint and "keeps nothing between boots" in e.value.hint


def test_a_missing_lab_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no-such.yaml"):
        vm.command("run", str(tmp_path / "no-such.yaml"))
