"""`cnm lab` itself: labs up at once do not collide, down is idempotent, Ctrl-C during up
leaves nothing, a check that must fail is reported FAIL with exit status 1, a malformed
lab creates nothing."""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.labrun import LabEnv, lab_env

TWIN = """\
name: {name}
networks:
  web: {{subnet: 10.42.0.0/24}}
sandboxes:
  a: {{networks: [{{network: web, ip: 10.42.0.10}}], serve: [tcp/80]}}
  b: {{networks: [web]}}
checks:
  - {{tcp: a, port: 80, from: b, seen_as: b}}
  - {{ping: a, from: b, expect: {expect}}}
"""


@pytest.fixture
def labs() -> Iterator[LabEnv]:
    with tempfile.TemporaryDirectory(prefix="cnmlt-") as d, lab_env(Path(d)) as e:
        yield e


def write(labs: LabEnv, name: str, expect: str = "reach") -> str:
    p = labs.root.parent / f"{name}.yaml"
    p.write_text(TWIN.format(name=name, expect=expect))
    return str(p)


def test_two_labs_up_at_once_with_the_same_addresses_do_not_collide(labs: LabEnv) -> None:
    one, two = write(labs, "one"), write(labs, "two")
    assert labs.cnm("up", one).returncode == 0
    try:
        assert labs.cnm("up", two).returncode == 0
        ls = labs.cnm("ls").stdout
        assert "one" in ls and "two" in ls
        for f in (one, two):
            r = labs.cnm("check", f)
            assert r.returncode == 0, r.stdout + r.stderr
        r = labs.cnm("up", one)
        assert r.returncode != 0 and "lab one is already up" in r.stderr
        assert labs.cnm("down", one).returncode == 0
        r = labs.cnm("check", two)
        assert r.returncode == 0, "down of one touched two: " + r.stdout
    finally:
        labs.cnm("down", one)
        labs.cnm("down", two)
    assert labs.leftovers() == []


def test_down_is_idempotent(labs: LabEnv) -> None:
    f = write(labs, "idem")
    assert labs.cnm("up", f).returncode == 0
    first = labs.cnm("down", f)
    assert first.returncode == 0 and "down in" in first.stdout
    again = labs.cnm("down", f)
    assert again.returncode == 0 and "was not up" in again.stdout
    assert labs.leftovers() == []


def test_a_check_that_must_fail_is_reported_fail_with_exit_status_1(labs: LabEnv) -> None:
    r = labs.cnm("run", write(labs, "wrong", expect="blocked"))
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ping b → a"))
    assert line.split()[-1] == "FAIL" and "blocked" in line and "reach" in line
    assert "1/2 checks passed" in r.stdout
    assert labs.leftovers() == [], "run must go down even when a check fails"


def test_ctrl_c_during_up_leaves_nothing(labs: LabEnv) -> None:
    f = write(labs, "intr")
    p = labs.popen("up", f)
    assert p.stdout is not None
    # Interrupt once the namespaces are made and the cnmd is starting.
    for line in p.stdout:
        if line.strip().startswith("links"):
            break
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out
    assert "tearing down" in out
    time.sleep(0.2)
    assert labs.leftovers() == []


def test_a_malformed_lab_creates_nothing(labs: LabEnv) -> None:
    p = labs.root.parent / "bad.yaml"
    p.write_text(TWIN.format(name="bad", expect="reach").replace("from: b", "from: c"))
    r = labs.cnm("up", str(p))
    assert r.returncode == 2
    assert f"{p}:8:" in r.stderr and "'c' is not a host or a sandbox" in r.stderr
    assert labs.leftovers() == []
