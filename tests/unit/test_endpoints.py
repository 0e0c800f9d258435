"""The endpoint life cycle (create → join → leave → delete), sandboxes a runtime made,
the driver contract (capabilities, typed options) and the store interface, over the fakes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cnm import names, wiring
from cnm.core import Config, Controller
from cnm.drivers.base import Capabilities, Driver
from cnm.drivers.bridge import BridgeDriver, BridgeOptions
from cnm.drivers.registry import builtin
from cnm.errors import AlreadyExists, Conflict, InUse, InvalidArgument, NotFound
from cnm.model import ConnectSpec, EndpointSpec, Network, NetworkSpec, SandboxSpec
from cnm.netfilter import Netfilter
from cnm.store import Store
from cnm.store.sqlite import SqliteStore
from cnm.testing import FakeHostLinks, FakeKernel, FakeNft, FakeSandboxLinks

MakeController = Callable[..., Controller]


@pytest.fixture
def ctl(make_controller: MakeController) -> Controller:
    c = make_controller(netfilter=Netfilter(FakeNft()))
    c.create_network(NetworkSpec("web", subnets=("10.10.0.0/24",)))
    c.create_network(NetworkSpec("db", subnets=("10.20.0.0/24",)))
    return c


def names_of(ctl: Controller, network: str) -> dict[str, str | None]:
    net = ctl.network(network)
    return {n: h.ipv4 for n in ("a", "b", "spare", "alias1")
            for h in ctl.records.lookup([net.id], n)}


def test_a_reserved_endpoint_holds_its_address_and_is_in_no_sandbox(
        ctl: Controller, sbx: FakeSandboxLinks) -> None:
    ep = ctl.create_endpoint(EndpointSpec("web", "spare", aliases=("alias1",)))
    assert (ep.sandbox_id, ep.ifname, ep.ipv4) == (None, "", "10.10.0.2/24")
    assert sbx.namespaces() == []  # nothing plumbed anywhere
    assert names_of(ctl, "web") == {}  # its names answer only while it is joined
    # Nobody else gets its address.
    ctl.create_sandbox(SandboxSpec("a", network="web"))
    assert ctl.endpoints_of(sandbox=ctl.sandbox("a").id)[0].ipv4 == "10.10.0.3/24"
    with pytest.raises(Conflict, match="already in use"):
        ctl.create_sandbox(SandboxSpec("b", network="web", ip="10.10.0.2"))
    with pytest.raises(AlreadyExists, match='endpoint "spare" already exists'):
        ctl.create_endpoint(EndpointSpec("web", "spare"))


def test_join_leave_rejoin_elsewhere_with_the_same_address_then_delete(
        ctl: Controller, sbx: FakeSandboxLinks) -> None:
    ep = ctl.create_endpoint(EndpointSpec("web", "spare", ip="10.10.0.77",
                                          aliases=("alias1",)))
    a = ctl.create_sandbox(SandboxSpec("a", network="db"))
    b = ctl.create_sandbox(SandboxSpec("b", network="db"))
    joined = ctl.join("spare", "a", ifname="lan0")
    assert (joined.sandbox_id, joined.ifname, joined.ipv4) == (a.id, "lan0", "10.10.0.77/24")
    assert sbx.interfaces(ctl.netns_path(a))["lan0"].addresses == ["10.10.0.77/24"]
    assert names_of(ctl, "web") == {"a": "10.10.0.77", "alias1": "10.10.0.77"}
    with pytest.raises(AlreadyExists, match="already joined"):
        ctl.join("spare", "b")
    with pytest.raises(InUse, match='endpoint "spare" is joined to sandbox "a"'):
        ctl.delete_endpoint("spare")

    left = ctl.leave("spare")
    assert (left.sandbox_id, left.ipv4) == (None, "10.10.0.77/24")
    assert "lan0" not in sbx.interfaces(ctl.netns_path(a))
    assert names_of(ctl, "web") == {}
    assert ctl.join(ep.id, "b").ipv4 == "10.10.0.77/24"  # Docker's start after stop
    assert "eth1" in sbx.interfaces(ctl.netns_path(b))
    assert names_of(ctl, "web") == {"b": "10.10.0.77", "alias1": "10.10.0.77"}

    # disconnect and sandbox rm leave a standalone endpoint reserved: its owner deletes it.
    ctl.disconnect("web", "b")
    assert ctl.endpoint("spare").sandbox_id is None
    ctl.join("spare", "b")
    ctl.remove_sandbox("b")
    assert ctl.endpoint("spare").sandbox_id is None
    ctl.delete_endpoint("spare")
    with pytest.raises(NotFound):
        ctl.endpoint("spare")
    ctl.create_sandbox(SandboxSpec("c", network="web", ip="10.10.0.77"))  # free again


def test_connect_is_create_and_join_and_disconnect_deletes(ctl: Controller) -> None:
    ctl.create_sandbox(SandboxSpec("a", network="db"))
    ep = ctl.connect(ConnectSpec("web", "a", ifname="web0"))
    assert (ep.name, ep.standalone, ep.ifname) == ("a", False, "web0")
    ctl.disconnect("web", "a")
    assert [e.network_id for e in ctl.endpoints.values()] == [ctl.network("db").id]


def test_a_reserved_endpoint_survives_a_restart_and_keeps_its_ports(
        make_controller: MakeController) -> None:
    ctl = make_controller(netfilter=Netfilter(FakeNft()))
    ctl.create_network(NetworkSpec("web", subnets=("10.10.0.0/24",)))
    ctl.create_endpoint(EndpointSpec("web", "spare", ports=("8080:80",)))
    again = make_controller(netfilter=Netfilter(FakeNft()))
    ep = again.endpoint("spare")
    assert (ep.ipv4, [m.host_port for m in ep.ports]) == ("10.10.0.2/24", [8080])
    again.create_sandbox(SandboxSpec("a", network="web"))
    assert again.endpoints_of(sandbox=again.sandbox("a").id)[0].ipv4 == "10.10.0.3/24"
    with pytest.raises(Conflict, match='endpoint "spare"'):
        again.publish("a", ["8080:80"])
    with pytest.raises(AlreadyExists, match="already connected"):  # one per network
        again.join("spare", "a")


def test_join_refusals_change_nothing(ctl: Controller, sbx: FakeSandboxLinks) -> None:
    ctl.create_endpoint(EndpointSpec("web", "spare"))
    a = ctl.create_sandbox(SandboxSpec("a", network="web"))
    with pytest.raises(AlreadyExists, match="already connected to network"):
        ctl.join("spare", "a")
    ctl.create_sandbox(SandboxSpec("b", network="db"))
    with pytest.raises(InvalidArgument, match="invalid interface name"):
        ctl.join("spare", "b", ifname="x" * 16)
    with pytest.raises(AlreadyExists, match="already has an interface eth0"):
        ctl.join("spare", "b", ifname="eth0")
    with pytest.raises(InvalidArgument, match="not joined"):
        ctl.leave("spare")
    assert ctl.endpoint("spare").sandbox_id is None
    assert list(sbx.interfaces(ctl.netns_path(a))) == ["eth0"]


# --------------------------------------------------------------------------- adopted


@pytest.fixture
def runtime_ns(tmp_path: Path, kernel: FakeKernel) -> str:
    """A namespace a runtime made (here: a file the fake kernel knows as a namespace)."""
    path = str(tmp_path / "container-netns")
    Path(path).touch()
    kernel.add_namespace(path)
    return path


def test_an_adopted_namespace_is_never_deleted(ctl: Controller, sbx: FakeSandboxLinks,
                                               kernel: FakeKernel, runtime_ns: str) -> None:
    sb = ctl.create_sandbox(SandboxSpec("ctr", network="web", netns=runtime_ns, ifname="net0"))
    assert (sb.kind, ctl.netns_path(sb)) == ("external", runtime_ns)
    ctl.connect(ConnectSpec("db", "ctr", ifname="net1"))
    assert set(sbx.interfaces(runtime_ns)) == {"net0", "net1"}
    with pytest.raises(Conflict, match='sandbox "ctr" already has this namespace'):
        ctl.create_sandbox(SandboxSpec("twice", network="web", netns=runtime_ns))
    ctl.remove_sandbox("ctr")
    assert runtime_ns in kernel.namespaces and Path(runtime_ns).exists()
    assert {n: link for n, link in sbx.interfaces(runtime_ns).items()
            if not link.retired} == {}
    assert [c.method for c in sbx.calls if c.method == "delete_netns"] == []
    assert ctl.endpoints == {}


def test_a_namespace_gone_behind_cnms_back_frees_its_endpoints(
        ctl: Controller, kernel: FakeKernel, runtime_ns: str,
        make_controller: MakeController) -> None:
    ctl.create_sandbox(SandboxSpec("ctr", network="web", netns=runtime_ns, ip="10.10.0.9"))
    kernel.delete_namespace(runtime_ns)  # the container exited
    Path(runtime_ns).unlink()
    with pytest.raises(NotFound, match="its endpoints were freed"):
        ctl.connect(ConnectSpec("db", "ctr"))
    assert [s.name for s in ctl.list_sandboxes()] == []
    ctl.create_sandbox(SandboxSpec("next", network="web", ip="10.10.0.9"))  # free again


def test_bad_netns_paths_are_refused(ctl: Controller, tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.touch()
    for path in (str(plain), str(tmp_path / "missing")):
        with pytest.raises(InvalidArgument, match="not a network namespace"):
            ctl.create_sandbox(SandboxSpec("x", network="web", netns=path))
    with pytest.raises(InvalidArgument, match="host network takes no"):
        ctl.create_sandbox(SandboxSpec("x", network="host", netns=str(plain)))
    assert ctl.list_sandboxes() == []


# --------------------------------------------------------------------------- contract


def test_every_driver_declares_its_capabilities() -> None:
    drivers: dict[str, Driver] = builtin()
    caps = {name: d.capabilities for name, d in drivers.items()}
    assert all(isinstance(c, Capabilities) for c in caps.values())
    assert caps["bridge"].publishes and caps["bridge"].link == "veth"
    assert caps["host"].host_namespace and not caps["host"].ipam
    assert caps["null"].exclusive and caps["null"].link == "none"
    assert caps["macvlan"].link == caps["ipvlan"].link == "slave"
    assert not caps["macvlan"].publishes
    with pytest.raises(AttributeError):
        caps["bridge"].dns = False  # type: ignore[misc]  # frozen


def test_options_are_parsed_once_into_a_typed_record(ctl: Controller,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    driver = ctl.drivers["bridge"]
    assert isinstance(driver, BridgeDriver)
    net = ctl.create_network(NetworkSpec("mtu", subnets=("10.30.0.0/24",),
                                         options={"com.docker.network.driver.mtu": "1400"}))
    calls = []
    real = BridgeOptions.parse
    monkeypatch.setattr(BridgeOptions, "parse",
                        classmethod(lambda cls, raw: calls.append(raw) or real(raw)))
    opts = driver.options(net)
    assert isinstance(opts, BridgeOptions) and opts.mtu == 1400
    for _ in range(3):
        ctl.create_sandbox(SandboxSpec(f"s{_}", network="mtu"))
    assert calls == []  # every join, firewall rule and publish used the kept record


def test_sqlite_implements_the_store_interface(tmp_path: Path) -> None:
    store: Store = SqliteStore(str(tmp_path))  # mypy checks the structure
    with store.transaction() as tx:
        tx.put_network(Network(id="n1", name="n", driver="bridge", created="t",
                               scope="global"))
    assert store.load().networks[0].scope == "global"
    store.close()


def test_a_second_networks_connect_and_disconnect_touch_no_route(
        ctl: Controller, sbx: FakeSandboxLinks) -> None:
    a = ctl.create_sandbox(SandboxSpec("a", network="web"))

    def route_calls() -> int:
        return sum(c.method == "set_default_routes" for c in sbx.calls)

    before = route_calls()
    ctl.connect(ConnectSpec("db", "a"))
    ctl.disconnect("db", "a")
    assert route_calls() == before
    ctl.connect(ConnectSpec("db", "a"))
    ctl.disconnect("web", "a")  # it held the default route: the route moves to db
    assert route_calls() == before + 1
    assert sbx.default_routes(ctl.netns_path(a)) == {4: ("10.20.0.1", "eth1")}


# --------------------------------------------------------------------------- shared store
def shared_store_host(tmp_path: Path,
                      name: str) -> tuple[wiring.Stack, FakeHostLinks, FakeSandboxLinks]:
    """A core with a fake kernel of its own on the SQLite store every such core shares:
    two of them stand in for two hosts on a global store."""
    resolv = tmp_path / "resolv.conf"
    if not resolv.exists():
        resolv.write_text("")
    kernel = FakeKernel()
    (tmp_path / f"{name}-netns").touch()
    cfg = Config(state_dir=str(tmp_path / "shared-state"), run_dir=str(tmp_path / name),
                 host_netns=str(tmp_path / f"{name}-netns"), resolv_conf=str(resolv))
    links, sbx = FakeHostLinks(kernel), FakeSandboxLinks(kernel)
    return wiring.build(cfg, wiring.Adapters(links, sbx)), links, sbx


def test_two_hosts_sharing_one_store_never_hand_out_one_address(tmp_path: Path) -> None:
    """Two cores on one SQLite store stand in for two hosts on a global one: each picks
    addresses from its own view, and the store's commit is where a race is lost."""
    a, _, _ = shared_store_host(tmp_path, "a")
    a.controller.create_network(NetworkSpec("shared", subnets=("10.70.0.0/24",)))
    # b loads the network; its view of the addresses is empty.
    b, _, b_sbx = shared_store_host(tmp_path, "b")
    try:
        a.controller.create_sandbox(SandboxSpec("on-a", network="shared"))
        assert a.controller.endpoint("on-a").ipv4 == "10.70.0.2/24"
        # b picks .2 as well; the store refuses it; b undoes, marks .2 and takes .3.
        sb = b.controller.create_sandbox(SandboxSpec("on-b", network="shared"))
        assert b.controller.endpoint("on-b").ipv4 == "10.70.0.3/24"
        (iface,) = b_sbx.interfaces(b.controller.netns_path(sb)).values()
        assert iface.addresses == ["10.70.0.3/24"]  # the lost attempt left nothing
        assert len(b_sbx.namespaces()) == 1
        # b knows .2 now; an address asked for that the other host holds is simply in use
        # (no second pick), and so is a name.
        with pytest.raises(Conflict, match="address 10.70.0.2 is already in use"):
            b.controller.create_endpoint(EndpointSpec("shared", "x", ip="10.70.0.2"))
        a.controller.create_endpoint(EndpointSpec("shared", "spare", ip="10.70.0.50"))
        with pytest.raises(Conflict, match="address 10.70.0.50 is already held"):
            b.controller.create_endpoint(EndpointSpec("shared", "x", ip="10.70.0.50"))
        with pytest.raises(Conflict, match="name spare is already held"):
            b.controller.create_endpoint(EndpointSpec("shared", "spare"))
        assert sorted(e.ipv4 or "" for e in a.store.load().endpoints) == [
            "10.70.0.2/24", "10.70.0.3/24", "10.70.0.50/24"]
    finally:
        a.close()
        b.close()


def test_two_hosts_sharing_one_store_never_hold_one_subnet_name_or_bridge(
        tmp_path: Path) -> None:
    """Subnets, names and the drivers' claims are held by the store too: a host whose view
    is stale loses at the commit, before it touches its kernel, and picks again when it
    chose the subnet itself."""
    a, _, _ = shared_store_host(tmp_path, "a")
    # b is loaded now: it will never hear of a's networks below.
    b, b_links, _ = shared_store_host(tmp_path, "b")
    try:
        one = a.controller.create_network(
            NetworkSpec("one", options={"bridge_name": "br-one"}))
        before = sorted(link.name for link in b_links.links())
        two = b.controller.create_network(NetworkSpec("two"))
        assert two.subnets[0].subnet != one.subnets[0].subnet
        taken = one.subnets[0].subnet
        with pytest.raises(Conflict, match=f'overlaps {taken} of network "one"'):
            b.controller.create_network(NetworkSpec("three", subnets=(taken,)))
        with pytest.raises(Conflict, match='network name "one" is already held'):
            b.controller.create_network(NetworkSpec("one"))
        with pytest.raises(Conflict, match='br-one is already used by network "one"'):
            b.controller.create_network(
                NetworkSpec("four", options={"bridge_name": "br-one"}))
        # The refused creates made no bridge on b and left nothing in its view.
        after = sorted(link.name for link in b_links.links())
        assert after == sorted([*before, names.bridge_name(two.id)])
        assert [n.name for n in b.controller.list_networks()] == ["bridge", "host", "none",
                                                                  "two"]
        assert sorted(n.name for n in a.store.load().networks) == [
            "bridge", "host", "none", "one", "two"]
    finally:
        a.close()
        b.close()
