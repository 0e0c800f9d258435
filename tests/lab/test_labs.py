"""Every lab in netns-lab/labs/ runs green with `cnm lab run`, and leaves nothing behind.

Labs added later are picked up by the glob; a lab that needs a kernel feature this
machine lacks (`requires:` or implied: ipvlan networks, impairments) is marked vm and runs
in the VM tier."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnm.lab import schema
from tests.lab.labrun import LABS, LabEnv, lab_env


def _params() -> list[object]:
    out = []
    for f in sorted(LABS.glob("*.yaml")):
        lab = schema.load(str(f))
        marks = [pytest.mark.vm] if lab.needs_vm else []
        out.append(pytest.param(f, id=f.stem, marks=marks))
    return out


@pytest.fixture
def labs() -> Iterator[LabEnv]:
    with tempfile.TemporaryDirectory(prefix="cnmlt-") as d, lab_env(Path(d)) as e:
        yield e


@pytest.mark.parametrize("path", _params())
def test_lab_runs_green_and_leaves_nothing(labs: LabEnv, path: Path) -> None:
    lab = schema.load(str(path))
    assert lab.checks, f"{path.name} proves nothing: it has no checks"
    r = labs.cnm("run", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(lab.checks)}/{len(lab.checks)} checks passed" in r.stdout
    assert "FAIL" not in r.stdout
    assert labs.leftovers() == []


def test_every_lab_has_its_page() -> None:
    for f in LABS.glob("*.yaml"):
        page = f.with_suffix(".md")
        assert page.is_file(), f"{f.name} has no page {page.name}"
        text = page.read_text()  # a VM-tier lab's page shows the `--vm` form
        assert (f"cnm lab run netns-lab/labs/{f.name}" in text
                or f"cnm lab run --vm netns-lab/labs/{f.name}" in text), f"{page.name}"
