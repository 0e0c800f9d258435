"""cnm doctor over the fake kernel: each thing broken behind cnm's back is reported with its
kind, --fix repairs it with reconcile's fixes (nothing is left after), and each fix, at
doctor's or at reconcile's hand, is a reconcile event on the bus."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cnm import names
from cnm.core import Controller
from cnm.core.doctor import _FIX, KINDS
from cnm.errors import KernelError
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.netfilter import Netfilter
from cnm.testing import FakeHostLinks, FakeNft, FakeSandboxLinks
from tests.unit.conftest import MakeController


@pytest.fixture
def nft() -> FakeNft:
    return FakeNft()


@pytest.fixture
def ctl(make_controller: MakeController, nft: FakeNft) -> Controller:
    c = make_controller(netfilter=Netfilter(nft))
    c.create_network(NetworkSpec("web", subnets=("10.8.0.0/24",)))
    c.create_sandbox(SandboxSpec("a", network="web", ports=("8080:80",)))
    c.create_sandbox(SandboxSpec("b", network="web"))
    return c


def kinds(c: Controller) -> list[tuple[str, str, str]]:
    return [(d.kind, d.object.type, d.object.name) for d in c.doctor()]


def reconcile_events(c: Controller) -> list[tuple[str, str, str, Any]]:
    sub = c.events.subscribe(since=0, filters={"type": ["reconcile"]})
    c.events.unsubscribe(sub)
    return [(e["action"], e["attributes"]["object"], e["name"], e["attributes"]["reason"])
            for e in sub.backlog]


def fixed(c: Controller) -> list[str]:
    found, left, errors = c.doctor_fix()
    assert (left, errors) == ([], []), (left, errors)
    assert kinds(c) == []
    return [d.kind for d in found]


def endpoint(c: Controller, sandbox: str) -> Any:
    return c.endpoints_of(sandbox=c.sandbox(sandbox).id)[0]


def test_every_kind_has_a_fix_and_words() -> None:
    assert set(_FIX) == set(KINDS)
    assert all(means and fix for means, fix in KINDS.values())


def test_nothing_broken_is_no_drift(ctl: Controller) -> None:
    ctl.connect(ConnectSpec("bridge", "b"))
    assert kinds(ctl) == []
    assert ctl.doctor_fix() == ([], [], [])
    assert reconcile_events(ctl) == []


def test_a_deleted_host_veth_is_reported_and_replumbed(ctl: Controller, host: FakeHostLinks,
                                                       sbx: FakeSandboxLinks) -> None:
    ep = endpoint(ctl, "a")
    host.delete_link(names.veth_name(ep.id))  # takes eth0 in the sandbox with it
    drift = ctl.doctor()
    # The sandbox's default route went with its interface.
    assert [(d.kind, d.object.name) for d in drift] == [("endpoint-link-missing", ep.name),
                                                         ("default-routes", "a")]
    d = drift[0].to_dict()
    assert d["object"] == {"type": "endpoint", "id": ep.id, "name": ep.name}
    assert names.veth_name(ep.id) in d["wrong"] and d["means"] and d["fix"]
    assert fixed(ctl) == ["endpoint-link-missing", "default-routes"]
    path = ctl.netns_path(ctl.sandbox("a"))
    assert sbx.interfaces(path)["eth0"].addresses == ["10.8.0.2/24"]
    assert sbx.default_routes(path) == {4: ("10.8.0.1", "eth0")}
    assert ("replumb", "endpoint", ep.name, "endpoint-link-missing") in reconcile_events(ctl)


def test_a_deleted_bridge_is_recreated_with_its_endpoints(ctl: Controller,
                                                          host: FakeHostLinks) -> None:
    net = ctl.network("web")
    host.delete_link(names.bridge_name(net.id))
    assert kinds(ctl)[0] == ("network-link-missing", "network", "web")
    fixed(ctl)
    bridge = host.link(names.bridge_name(net.id))
    assert bridge is not None and bridge.addresses == ["10.8.0.1/24"] and bridge.up
    for sb in ("a", "b"):
        veth = host.link(names.veth_name(endpoint(ctl, sb).id))
        assert veth is not None and veth.master is bridge
    actions = [(a, o) for a, o, _, _ in reconcile_events(ctl)]
    assert ("recreate", "network") in actions and actions.count(("replumb", "endpoint")) == 2


def test_a_bridge_down_and_a_lost_gateway(ctl: Controller, host: FakeHostLinks) -> None:
    bridge = host.link(names.bridge_name(ctl.network("web").id))
    assert bridge is not None
    bridge.up = False
    bridge.addresses.clear()
    assert {k for k, _, _ in kinds(ctl)} >= {"network-link-down", "gateway-address-missing"}
    fixed(ctl)
    assert bridge.up and bridge.addresses == ["10.8.0.1/24"]


def test_a_removed_address_inside_a_sandbox(ctl: Controller, sbx: FakeSandboxLinks) -> None:
    path = ctl.netns_path(ctl.sandbox("b"))
    eth0 = sbx.interfaces(path)["eth0"]
    eth0.addresses.clear()
    sbx.kernel.drop_routes(eth0)
    assert set(kinds(ctl)) == {("interface-addresses", "endpoint", endpoint(ctl, "b").name),
                               ("default-routes", "sandbox", "b")}
    fixed(ctl)
    assert sbx.interfaces(path)["eth0"].addresses == ["10.8.0.3/24"]
    assert sbx.default_routes(path) == {4: ("10.8.0.1", "eth0")}


def test_a_removed_resolv_conf_is_written_again(ctl: Controller) -> None:
    sb = ctl.sandbox("a")
    resolv = Path(ctl.files_dir(sb)) / "resolv.conf"
    want = resolv.read_text()
    resolv.unlink()
    (Path(ctl.files_dir(sb)) / "hosts").write_text("127.0.0.1 someone-else\n")
    drift = ctl.doctor()
    assert [(d.kind, d.object.name) for d in drift] == [("sandbox-file", "a")] * 2
    assert "resolv.conf is missing" in drift[0].wrong + drift[1].wrong
    fixed(ctl)
    assert resolv.read_text() == want
    assert ("refresh", "sandbox", "a", "sandbox-file") in reconcile_events(ctl)


def test_a_flushed_table_is_rebuilt(ctl: Controller, nft: FakeNft) -> None:
    nft.elements = {}
    nft.table = nft.bridge_table = False  # nft flush ruleset
    assert kinds(ctl) == [("firewall-table", "firewall", "inet cnm"),
                          ("guard-table", "firewall", "bridge cnm")]
    fixed(ctl)
    assert nft.table and nft.elements["pub4_any"]
    assert nft.bridge_table and len(nft.elements["bridge ports"]) == 2
    assert ("rebuild", "firewall", "inet cnm", "firewall-table") in reconcile_events(ctl)


def test_a_lost_port_guard_lets_a_sandbox_spoof_and_is_put_back(ctl: Controller,
                                                                nft: FakeNft) -> None:
    a = endpoint(ctl, "a")
    port = names.veth_name(a.id)
    macs = nft.elements["bridge macs"]
    lost = next(k for k in macs if port in k)
    del macs[lost]
    nft.elements["bridge addrs4"]['"cnmvnobody" . 10.8.0.77'] = ""
    assert kinds(ctl) == [("guard-table", "firewall", "bridge cnm")] * 2
    wrong = sorted(d.wrong for d in ctl.doctor())
    assert wrong == ["set addrs4 holds cnmvnobody . 10.8.0.77, which no record explains",
                     f"set macs lacks {port} . {a.mac.lower()}"]
    assert fixed(ctl) == ["guard-table"] * 2
    assert lost in nft.elements["bridge macs"]
    assert ("rebuild", "firewall", "bridge cnm", "guard-table") in reconcile_events(ctl)


def test_a_lost_element_is_reported_by_its_set(ctl: Controller, nft: FakeNft) -> None:
    nft.elements["pub4_any"].clear()
    drift = ctl.doctor()
    assert [d.wrong for d in drift] == ["map pub4_any lacks tcp . 8080 : 10.8.0.2 . 80"]
    fixed(ctl)


def test_a_port_dnatted_elsewhere_and_a_foreign_bridge(ctl: Controller,
                                                       nft: FakeNft) -> None:
    nft.elements["pub4_any"]["tcp . 8080"] = "10.8.0.99 . 80"
    nft.elements["bridges"]['"evil0"'] = ""
    assert sorted(d.wrong for d in ctl.doctor()) == [
        "map pub4_any holds tcp . 8080 : 10.8.0.99 . 80, which no record explains",
        "map pub4_any lacks tcp . 8080 : 10.8.0.2 . 80",
        "set bridges holds evil0, which no record explains"]
    fixed(ctl)
    assert nft.elements["pub4_any"] == {"tcp . 8080": "10.8.0.2 . 80"}


def test_leftover_links_namespaces_and_files(ctl: Controller, host: FakeHostLinks,
                                             sbx: FakeSandboxLinks, tmp_path: Path) -> None:
    ns = str(tmp_path / "run" / "netns" / "deadbeef")
    sbx.create_netns(ns)
    host.ensure_bridge("cnmbdeadbeef", names.alias("network", "deadbeef"), None, [],
                       names.random_mac())
    os.makedirs(tmp_path / "run" / "sandboxes" / "deadbeef")
    assert set(kinds(ctl)) == {("stale-link", "link", "cnmbdeadbeef"),
                               ("stale-namespace", "namespace", ns),
                               ("stale-files", "files",
                                str(tmp_path / "run" / "sandboxes" / "deadbeef"))}
    fixed(ctl)
    assert host.link("cnmbdeadbeef") is None and sbx.namespaces() == sorted(
        ctl.netns_path(s) for s in ctl.list_sandboxes() if s.kind == "netns")


def test_a_sandbox_whose_namespace_went_is_freed(ctl: Controller,
                                                 sbx: FakeSandboxLinks) -> None:
    sb = ctl.sandbox("b")
    sbx.delete_netns(ctl.netns_path(sb))
    assert ("namespace-gone", "sandbox", "b") in kinds(ctl)
    fixed(ctl)
    assert "b" not in [s.name for s in ctl.list_sandboxes()]
    assert ("free", "sandbox", "b", "namespace-gone") in reconcile_events(ctl)


def test_reconcile_at_start_publishes_its_fixes(make_controller: MakeController,
                                                ctl: Controller, host: FakeHostLinks,
                                                nft: FakeNft) -> None:
    ep = endpoint(ctl, "a")
    host.delete_link(names.veth_name(ep.id))
    again = make_controller(netfilter=Netfilter(nft))
    events = reconcile_events(again)
    assert ("replumb", "endpoint", ep.name, "start") in events
    # Refreshing every sandbox and building the table are what every start does: no news.
    assert {a for a, _, _, _ in events} == {"replumb"}
    assert kinds(again) == []


def test_a_failed_disconnect_keeps_the_published_ports(ctl: Controller, host: FakeHostLinks,
                                                       nft: FakeNft) -> None:
    """A regression doctor found: a disconnect whose link step failed left the endpoint
    joined with its ports withdrawn from the table."""
    before = {k: dict(v) for k, v in nft.elements.items()}
    host.fail_on("retire", KernelError("injected"))
    with pytest.raises(KernelError):
        ctl.disconnect("web", "a")
    assert ctl.endpoints_of(sandbox=ctl.sandbox("a").id)[0].joined
    assert nft.elements == before
    assert kinds(ctl) == []


def test_an_interface_down_inside_a_sandbox(ctl: Controller, sbx: FakeSandboxLinks) -> None:
    path = ctl.netns_path(ctl.sandbox("a"))
    eth0 = sbx.interfaces(path)["eth0"]
    eth0.up = False
    sbx.kernel.drop_routes(eth0)
    assert kinds(ctl) == [("interface-down", "endpoint", endpoint(ctl, "a").name),
                          ("default-routes", "sandbox", "a")]
    fixed(ctl)
    assert sbx.interfaces(path)["eth0"].up


def test_the_host_networks_sandbox_files_are_checked(ctl: Controller) -> None:
    sb = ctl.create_sandbox(SandboxSpec("h", network="host"))
    resolv = Path(ctl.files_dir(sb)) / "resolv.conf"
    want = resolv.read_text()
    resolv.write_text("nameserver 203.0.113.1\n")
    assert kinds(ctl) == [("sandbox-file", "sandbox", "h")]
    fixed(ctl)
    assert resolv.read_text() == want
