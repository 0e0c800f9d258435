"""Anti-spoofing: the port guards' elements (pure), and the controller keeping them in step
with joined bridge endpoints over FakeNft (join, leave, rollback, reload, restart, dry run,
the anti_spoofing option). The table's rules are in the golden file port_guards.nft."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cnm import antispoof, names
from cnm.antispoof import PortGuard
from cnm.core import Controller
from cnm.errors import InvalidArgument, KernelError
from cnm.model import ConnectSpec, Endpoint, EndpointSpec, NetworkSpec, SandboxSpec
from cnm.netfilter import Netfilter
from cnm.testing import FakeHostLinks, FakeNft, FakeSandboxLinks

MakeController = Callable[..., Controller]
DUAL = PortGuard("cnmv0000000000a", "02:42:0A:00:00:02", "10.0.0.2", "fd00::2")


def test_elements_of_a_dual_stack_port() -> None:
    assert antispoof.elements(DUAL) == [
        ("ports", '"cnmv0000000000a"'),
        ("macs", '"cnmv0000000000a" . 02:42:0a:00:00:02'),  # lower case, as nft lists it
        ("addrs4", '"cnmv0000000000a" . 10.0.0.2'),
        ("addrs6", '"cnmv0000000000a" . fd00::2'),
        ("targets6", '"cnmv0000000000a" . 0xfd000000000000000000000000000002'),
        # the EUI-64 link-local of its MAC, which the sandbox's kernel gives eth0
        ("addrs6", '"cnmv0000000000a" . fe80::42:aff:fe00:2'),
        ("targets6", '"cnmv0000000000a" . 0xfe8000000000000000420afffe000002'),
    ]


def test_an_ipv4_only_port_may_still_use_its_link_local_but_no_other_ipv6() -> None:
    g = PortGuard("p", "02:00:00:00:00:01", "10.0.0.9", None)
    assert g.addresses6 == ("fe80::ff:fe00:1",)
    assert [s for s, _ in antispoof.elements(g)] == ["ports", "macs", "addrs4", "addrs6",
                                                     "targets6"]


def test_an_ipv6_only_port_has_no_ipv4_source() -> None:
    g = PortGuard("p", "02:00:00:00:00:01", None, "fd00::9")
    assert "addrs4" not in {s for s, _ in antispoof.elements(g)}


def test_add_and_delete_are_the_same_elements() -> None:
    add, delete = antispoof.add(DUAL).splitlines(), antispoof.delete(DUAL).splitlines()
    assert [line.replace("add ", "delete ", 1) for line in add] == delete
    assert all(line.startswith("add element bridge cnm ") for line in add)


def test_the_table_is_cnms_own_and_replaced_whole() -> None:
    text = antispoof.table([DUAL])
    assert text.startswith("add table bridge cnm\ndelete table bridge cnm\ntable bridge cnm {")
    assert "inet" not in text and "table ip " not in text
    assert text.endswith(antispoof.add(DUAL))


# ----------------------------------------------------------------------- the controller
@pytest.fixture
def nft() -> FakeNft:
    return FakeNft()


@pytest.fixture
def fw(make_controller: MakeController, nft: FakeNft) -> Controller:
    return make_controller(netfilter=Netfilter(nft))


def guarded(nft: FakeNft) -> set[str]:
    """The guarded ports."""
    return {k.strip('"') for k in nft.elements.get("bridge ports", {})}


def guard_elements(nft: FakeNft) -> dict[str, set[str]]:
    return {k: set(v) for k, v in nft.elements.items() if k.startswith("bridge ") and v}


def port(ep: Endpoint) -> str:
    return names.veth_name(ep.id)


def test_join_guards_the_port_and_leave_releases_it(fw: Controller, nft: FakeNft) -> None:
    fw.create_network(NetworkSpec("web", subnets=("10.5.0.0/24",)))
    fw.create_sandbox(SandboxSpec("a", network="web"))
    ep = fw.endpoints_of(sandbox=fw.sandbox("a").id)[0]
    assert guarded(nft) == {port(ep)}
    assert f'"{port(ep)}" . {ep.mac}' in nft.elements["bridge macs"]
    assert f'"{port(ep)}" . 10.5.0.2' in nft.elements["bridge addrs4"]
    fw.disconnect("web", "a")
    assert guard_elements(nft) == {}


def test_standalone_endpoint_is_guarded_only_while_joined(fw: Controller,
                                                          nft: FakeNft) -> None:
    fw.create_network(NetworkSpec("web", subnets=("10.5.0.0/24",)))
    ep = fw.create_endpoint(EndpointSpec("web", "lone"))
    fw.create_sandbox(SandboxSpec("a"))
    before = guarded(nft)
    assert port(ep) not in before
    fw.join(ep.id, "a")
    assert guarded(nft) == before | {port(ep)}
    fw.leave(ep.id)
    assert guarded(nft) == before


def test_anti_spoofing_false_guards_nothing(fw: Controller, nft: FakeNft) -> None:
    net = fw.create_network(NetworkSpec("lab", subnets=("10.6.0.0/24",),
                                        options={"anti_spoofing": "false"}))
    assert net.options["anti_spoofing"] == "false"
    fw.create_sandbox(SandboxSpec("a", network="lab"))
    assert guard_elements(nft) == {}
    assert fw.reload_firewall()["guards"] == 0


def test_anti_spoofing_is_on_by_default_and_stored(fw: Controller) -> None:
    net = fw.create_network(NetworkSpec("web", subnets=("10.5.0.0/24",)))
    assert net.options["anti_spoofing"] == "true"
    assert fw.network("bridge").options.get("anti_spoofing", "true") == "true"


@pytest.mark.parametrize("value", ["maybe", "", "2", "truee"])
def test_a_bad_value_is_refused_with_the_option_named_and_changes_nothing(
        fw: Controller, nft: FakeNft, value: str) -> None:
    networks, transactions = fw.list_networks(), len(nft.transactions)
    with pytest.raises(InvalidArgument) as e:
        fw.create_network(NetworkSpec("web", options={"anti_spoofing": value}))
    assert e.value.message == (f"invalid value {value!r} for option anti_spoofing: "
                               "expected true or false")
    assert fw.list_networks() == networks and len(nft.transactions) == transactions


@pytest.mark.parametrize("step", ["add_veth", "configure", "set_default_routes"])
def test_a_failed_join_leaves_no_guard(fw: Controller, nft: FakeNft, host: FakeHostLinks,
                                       sbx: FakeSandboxLinks, step: str) -> None:
    fw.create_sandbox(SandboxSpec("peer"))
    before = guard_elements(nft)
    (host if step == "add_veth" else sbx).fail_on(step, KernelError("boom"))
    with pytest.raises(KernelError):
        fw.create_sandbox(SandboxSpec("a"))
    assert guard_elements(nft) == before
    assert fw.reload_firewall()["guards"] == 1  # and none is remembered


def test_a_failed_leave_keeps_the_guard_and_a_forced_rm_drops_it(
        fw: Controller, nft: FakeNft, host: FakeHostLinks) -> None:
    fw.create_sandbox(SandboxSpec("a"))
    ep = fw.endpoints_of(sandbox=fw.sandbox("a").id)[0]
    host.fail_on("retire", KernelError("boom"))
    with pytest.raises(KernelError):
        fw.disconnect("bridge", "a")
    assert guarded(nft) == {port(ep)}  # still joined: its link may still be on the bridge
    host.fail_on("retire", KernelError("boom"))
    fw.remove_sandbox("a", force=True)
    assert guard_elements(nft) == {}


def test_reload_and_restart_rebuild_the_guards(make_controller: MakeController,
                                               fw: Controller, nft: FakeNft) -> None:
    fw.create_network(NetworkSpec("dual", subnets=("10.7.0.0/24", "fd00:7::/64"), ipv6=True))
    fw.create_sandbox(SandboxSpec("a", network="dual"))
    fw.create_sandbox(SandboxSpec("b"))
    fw.connect(ConnectSpec("dual", "b"))
    before = guard_elements(nft)
    assert len(before["bridge ports"]) == 3
    nft.elements = {}  # a flushed ruleset
    assert fw.reload_firewall()["guards"] == 3
    assert guard_elements(nft) == before
    fresh = FakeNft()
    make_controller(netfilter=Netfilter(fresh))
    assert guard_elements(fresh) == before


def test_a_dry_run_plans_the_guard_and_changes_nothing(fw: Controller, nft: FakeNft) -> None:
    fw.create_sandbox(SandboxSpec("a"))
    before = guard_elements(nft)
    _, plan = fw.dry_run(lambda: fw.create_sandbox(SandboxSpec("b")))
    assert any("element bridge cnm ports" in what for _, what in plan.steps), plan.steps
    assert guard_elements(nft) == before
    assert fw.reload_firewall()["guards"] == 1
