"""The kernel ports, the real adapters and the fakes agree.

mypy checks the types (at the ends of cnm/kernel/link.py and cnm/testing.py); this checks
at run time that the port is exactly the real adapter's public methods and that all three
take the same parameters, so a method added to an adapter cannot miss the port or the fake.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cnm.kernel.link import HostLinks, SandboxLinks
from cnm.kernel.ports import HostPort, Occupied, SandboxPort
from cnm.testing import FakeHostLinks, FakeKernel, FakeSandboxLinks

PORTS = [(HostPort, HostLinks, FakeHostLinks), (SandboxPort, SandboxLinks, FakeSandboxLinks)]


def methods(cls: type) -> set[str]:
    """The public methods a class defines itself (not inherited)."""
    return {n for n, v in vars(cls).items() if not n.startswith("_") and callable(v)}


def parameters(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("port, real, fake", PORTS)
def test_the_port_is_every_public_method_of_the_real_adapter(port: type, real: type,
                                                             fake: type) -> None:
    assert methods(port) == methods(real)
    # The fake defines each itself: nothing falls through to code written for a kernel.
    assert methods(port) - methods(fake) == set()
    assert not issubclass(fake, real) and not issubclass(real, fake)


@pytest.mark.parametrize("port, real, fake", PORTS)
def test_adapter_and_fake_take_the_ports_parameters(port: type, real: type,
                                                    fake: type) -> None:
    for name in sorted(methods(port)):
        want = parameters(getattr(port, name))
        assert parameters(getattr(real, name)) == want, f"{real.__name__}.{name}"
        assert parameters(getattr(fake, name)) == want, f"{fake.__name__}.{name}"


def test_fake_identity_answers_from_the_fake_kernel(tmp_path: Path) -> None:
    sbx = FakeSandboxLinks(FakeKernel())
    path = str(tmp_path / "ns1")
    assert sbx.identity(path) is None
    sbx.create_netns(path)
    first = sbx.identity(path)
    assert first is not None
    # A file the fake kernel holds no namespace for is a leftover, as on a real host.
    leftover = tmp_path / "leftover"
    leftover.touch()
    assert sbx.identity(str(leftover)) is None
    sbx.delete_netns(path)
    assert sbx.identity(path) is None
    sbx.create_netns(path)  # a new namespace at the same path is another namespace
    assert sbx.identity(path) not in (None, first)
    assert sbx.faults.count("identity") == 5


def test_occupied_names_its_holder_as_before() -> None:
    assert Occupied("192.0.2.0/24", "address", "eth0", "192.0.2.10/24").holder == (
        "address 192.0.2.10/24 on eth0 in the host namespace")
    assert Occupied("10.0.0.0/8", "route", "eth1").holder == (
        "route 10.0.0.0/8 via eth1 in the host namespace")
    assert Occupied("10.0.0.0/8", "route", None).holder == (
        "route 10.0.0.0/8 via ? in the host namespace")
