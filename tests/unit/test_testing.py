"""The fakes and the fault injection the other tests rely on."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cnm import names
from cnm.core import Controller
from cnm.drivers.base import Context
from cnm.errors import AlreadyExists, KernelError, NotFound
from cnm.kernel.ports import Occupied
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing import FakeHostLinks, FakeKernel, FakeSandboxLinks, Faulty

MakeController = Callable[..., Controller]


# --------------------------------------------------------------------------- faults


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.label = "counter"

    def bump(self, by: int = 1) -> int:
        self.n += by
        return self.n

    def other(self) -> str:
        return "ok"


def test_faulty_fails_the_nth_call_before_it_runs() -> None:
    c = Counter()
    f = Faulty(c).fail_on("bump", KernelError("boom"), after=2)
    assert f.bump() == 1 and f.bump(by=2) == 3
    with pytest.raises(KernelError, match="boom"):
        f.bump()
    assert c.n == 3  # the failing call did nothing
    assert f.bump() == 4  # one-shot by default
    assert f.other() == "ok" and f.label == "counter"
    assert [(x.method, x.args, x.kwargs) for x in f.calls[:2]] == [("bump", (), {}),
                                                                   ("bump", (), {"by": 2})]


def test_faulty_times_and_several_armed() -> None:
    f = Faulty(Counter())
    f.fail_on("bump", KernelError("first"), times=2)
    f.fail_on("bump", KernelError("later"), after=3)
    with pytest.raises(KernelError, match="first"):
        f.bump()
    with pytest.raises(KernelError, match="first"):
        f.bump()
    assert f.bump() == 1
    with pytest.raises(KernelError, match="later"):
        f.bump()
    assert f.faults.pending() == 0
    assert f.bump() == 2


def test_fail_on_an_unknown_method_is_a_test_bug() -> None:
    with pytest.raises(ValueError, match="bunp"):
        Faulty(Counter()).fail_on("bunp", KernelError("x"))
    with pytest.raises(ValueError, match="configur"):
        FakeSandboxLinks().fail_on("configur", KernelError("x"))


def test_fake_fault_fires_before_any_state_changes() -> None:
    kernel = FakeKernel()
    host = FakeHostLinks(kernel)
    host.fail_on("ensure_bridge", KernelError("boom"), after=1)
    assert host.ensure_bridge("br1", "cnm:network:1", None, ["10.1.0.1/24"], "02:00:00:00:00:01")
    with pytest.raises(KernelError):
        host.ensure_bridge("br2", "cnm:network:2", None, [], "02:00:00:00:00:02")
    assert host.link("br2") is None
    assert host.faults.count("ensure_bridge") == 2


def test_faulty_real_style_adapter_in_a_controller(make_controller: MakeController,
                                                   host: FakeHostLinks,
                                                   sbx: FakeSandboxLinks) -> None:
    """The root tier wraps the real adapters so; here the wrapped ones are the fakes."""
    ctl = make_controller()
    ctl.create_network(NetworkSpec("blue", subnets=("10.10.0.0/24",)))
    # On an internal network first (no gateway): the connect to blue sets the default route.
    ctl.create_network(NetworkSpec("quiet", internal=True))
    ctl.create_sandbox(SandboxSpec("web", network="quiet"))
    wrapped = Faulty(sbx).fail_on("set_default_routes", KernelError("halfway"))
    ctl.ctx = Context(host, wrapped)  # type: ignore[arg-type]
    with pytest.raises(KernelError, match="halfway"):
        ctl.connect(ConnectSpec("blue", "web"))
    # The routes' undo is registered before the call, so a call that fails half way is
    # put back too; then the endpoint's own steps are undone.
    assert [c.method for c in wrapped.calls] == [
        "identity", "configure", "set_default_routes", "set_default_routes", "retire"]
    assert len(ctl.endpoints) == 1
    assert ctl.connect(ConnectSpec("blue", "web")).ipv4 == "10.10.0.2/24"


# --------------------------------------------------------------------------- kernel rules


@pytest.fixture
def pair(tmp_path: Path) -> tuple[FakeHostLinks, FakeSandboxLinks, str]:
    kernel = FakeKernel()
    host, sbx = FakeHostLinks(kernel), FakeSandboxLinks(kernel)
    path = str(tmp_path / "ns1")
    sbx.create_netns(path)
    host.ensure_bridge("br0", "cnm:network:n", None, ["10.1.0.1/24"], "02:00:00:00:00:01")
    host.add_veth("cnmvaaaa", "cnm:endpoint:aaaa", "eth0", path, "02:00:00:00:00:02", "br0",
                  None)
    return host, sbx, path


def test_create_netns_makes_a_file_delete_removes_it(pair: tuple[FakeHostLinks,
                                                                 FakeSandboxLinks, str]) -> None:
    host, sbx, path = pair
    assert os.path.isfile(path) and host.kernel.is_netns(path)
    with pytest.raises(AlreadyExists):
        sbx.create_netns(path)
    sbx.delete_netns(path)
    assert not os.path.exists(path) and not host.kernel.is_netns(path)
    sbx.delete_netns(path)  # gone is success
    # The veth died with the namespace, both ends.
    assert host.link("cnmvaaaa") is None


def test_veth_pair_and_its_rules(pair: tuple[FakeHostLinks, FakeSandboxLinks, str]) -> None:
    host, sbx, path = pair
    outer, inner = host.link("cnmvaaaa"), sbx.interfaces(path)["eth0"]
    assert outer is not None and outer.peer is inner and outer.master is host.link("br0")
    assert [i.name for i in host.links()] == ["lo", "br0", "cnmvaaaa"]
    assert host.links()[2].master == host.links()[1].index
    with pytest.raises(AlreadyExists):
        host.add_veth("cnmvbbbb", "a", "eth0", path, "02:00:00:00:00:03", "br0", None)
    assert host.link("cnmvbbbb") is None  # no half-made pair
    with pytest.raises(NotFound, match="bridge nope"):
        host.add_veth("cnmvcccc", "a", "eth1", path, "02:00:00:00:00:03", "nope", None)
    with pytest.raises(NotFound):
        host.add_veth("cnmvcccc", "a", "eth1", path + "x", "02:00:00:00:00:03", None, None)
    with pytest.raises(KernelError, match="EINVAL"):
        host.add_veth("x" * 16, "a", "eth1", path, "02:00:00:00:00:03", None, None)
    with pytest.raises(AlreadyExists, match="not this network's bridge"):
        host.ensure_bridge("br0", "cnm:network:other", None, [], "02:00:00:00:00:09")


def test_routes_need_an_on_link_gateway_and_go_with_the_device(
        pair: tuple[FakeHostLinks, FakeSandboxLinks, str]) -> None:
    host, sbx, path = pair
    with pytest.raises(KernelError, match="unreachable"):
        sbx.set_default_routes(path, [(4, "10.1.0.1", "eth0")])  # no address yet
    sbx.configure(path, "eth0", ["10.1.0.2/24"])
    with pytest.raises(KernelError, match="unreachable"):
        sbx.set_default_routes(path, [(4, "10.9.0.1", "eth0")])
    sbx.set_default_routes(path, [(4, "10.1.0.1", "eth0")])
    assert sbx.default_routes(path) == {4: ("10.1.0.1", "eth0")}
    sbx.retire(path, "eth0", names.retired_name("a" * 64))
    assert sbx.default_routes(path) == {}
    assert set(sbx.interfaces(path)) == {names.retired_name("a" * 64)}
    host.retire("cnmvaaaa")
    assert host.live().keys() == {"br0"}
    host.reap()
    assert sbx.interfaces(path) == {} and host.link("cnmvaaaa") is None


def test_sandbox_calls_on_a_missing_namespace(tmp_path: Path) -> None:
    sbx = FakeSandboxLinks()
    missing = str(tmp_path / "gone")
    for call in (lambda: sbx.configure(missing, "eth0", []),
                 lambda: sbx.set_default_routes(missing, []),
                 lambda: sbx.links(missing),
                 lambda: sbx.remove(missing, "eth0")):
        with pytest.raises(NotFound):
            call()
    sbx.retire(missing, "eth0", "x")  # a namespace already gone took it along


def test_occupied_lists_addresses_and_routes() -> None:
    host = FakeHostLinks()
    host.add_address("eth0", "192.0.2.10/24")
    host.add_address("eth0", "fe80::1/64")
    host.add_route("198.51.100.0/24", "eth1")
    found = host.occupied()
    assert found == [Occupied("192.0.2.0/24", "address", "eth0", "192.0.2.10/24"),
                     Occupied("198.51.100.0/24", "route", "eth1")]
    assert [o.holder for o in found] == [
        "address 192.0.2.10/24 on eth0 in the host namespace",
        "route 198.51.100.0/24 via eth1 in the host namespace",
    ]
