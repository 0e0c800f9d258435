"""Controller: sandboxes and endpoints, over the fake kernel."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cnm import names
from cnm.core import Controller
from cnm.errors import (
    AlreadyExists,
    CnmError,
    Conflict,
    InvalidArgument,
    KernelError,
    NotFound,
    Unsupported,
)
from cnm.model import ConnectSpec, Endpoint, EndpointSpec, NetworkSpec, Sandbox, SandboxSpec
from cnm.testing import FakeHostLinks, FakeKernel, FakeSandboxLinks

MakeController = Callable[..., Controller]


def only_endpoint(ctl: Controller, sb: Sandbox) -> Endpoint:
    (ep,) = ctl.endpoints_of(sandbox=sb.id)
    return ep


def endpoint_links(host: FakeHostLinks) -> set[str]:
    """Host links of endpoints that are still in service."""
    return {n for n, link in host.live().items()
            if (names.parse_alias(link.alias) or ("",))[0] == "endpoint"}


@pytest.fixture
def blue(ctl: Controller) -> str:
    ctl.create_network(NetworkSpec("blue", subnets=("10.10.0.0/24",)))
    return "blue"


# --------------------------------------------------------------------------- create


def test_default_network_is_bridge_with_eth0_and_an_address(
        ctl: Controller, host: FakeHostLinks, sbx: FakeSandboxLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web"))
    assert sb.kind == "netns" and sb.hostname == "web"
    ep = only_endpoint(ctl, sb)
    assert ep.network_id == ctl.network("bridge").id
    assert (ep.ifname, ep.ipv4, ep.gateway4) == ("eth0", "172.17.0.2/16", "172.17.0.1")
    assert names.valid_unicast_mac(ep.mac)

    path = ctl.netns_path(sb)
    assert os.path.isfile(path)
    assert sbx.namespaces() == [path]
    eth0 = sbx.interfaces(path)["eth0"]
    assert (eth0.addresses, eth0.up, eth0.mac) == (["172.17.0.2/16"], True, ep.mac)
    assert sbx.default_routes(path) == {4: ("172.17.0.1", "eth0")}

    veth = host.link(names.veth_name(ep.id))
    assert veth is not None and veth.peer is eth0
    assert veth.master is host.link("cnm0")
    assert names.parse_alias(veth.alias) == ("endpoint", ep.id)

    state = ctl.store.load()
    assert [s.id for s in state.sandboxes] == [sb.id]
    assert state.endpoints == [ep]


def test_sandbox_files(ctl: Controller) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web", hostname="www"))
    d = ctl.files_dir(sb)
    with open(os.path.join(d, "hosts")) as f:
        assert "172.17.0.2\twww\n" in f.read()
    with open(os.path.join(d, "hostname")) as f:
        assert f.read() == "www\n"
    with open(os.path.join(d, "resolv.conf")) as f:
        resolv = f.read()
    assert "127.0.0.53" not in resolv
    assert "nameserver 192.0.2.53\n" in resolv and "search example.org\n" in resolv


def test_static_ip_and_mac(ctl: Controller, blue: str, sbx: FakeSandboxLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web", network=blue, ip="10.10.0.77",
                                        mac="02:42:0a:0a:00:4d"))
    ep = only_endpoint(ctl, sb)
    assert (ep.ipv4, ep.mac) == ("10.10.0.77/24", "02:42:0a:0a:00:4d")
    assert sbx.interfaces(ctl.netns_path(sb))["eth0"].mac == "02:42:0a:0a:00:4d"
    with pytest.raises(Conflict) as e:
        ctl.create_sandbox(SandboxSpec("db", network=blue, ip="10.10.0.77"))
    assert e.value.hint == 'by sandbox "web"'
    with pytest.raises(InvalidArgument, match="invalid MAC"):
        ctl.create_sandbox(SandboxSpec("db", network=blue, mac="01:00:5e:00:00:01"))


def test_ipv6_network(ctl: Controller, sbx: FakeSandboxLinks) -> None:
    ctl.create_network(NetworkSpec("six", ipv6=True))
    sb = ctl.create_sandbox(SandboxSpec("web", network="six"))
    ep = only_endpoint(ctl, sb)
    assert (ep.ipv4, ep.ipv6) == ("172.18.0.2/16", "fd63:6e6d::2/64")
    path = ctl.netns_path(sb)
    assert sbx.interfaces(path)["eth0"].addresses == ["172.18.0.2/16", "fd63:6e6d::2/64"]
    assert sbx.default_routes(path) == {4: ("172.18.0.1", "eth0"),
                                        6: ("fd63:6e6d::1", "eth0")}
    with pytest.raises(InvalidArgument, match="no IPv6"):
        ctl.create_sandbox(SandboxSpec("db", ip6="fd63:6e6d::9"))


def test_duplicate_and_invalid_sandbox_names(ctl: Controller) -> None:
    ctl.create_sandbox(SandboxSpec("web"))
    with pytest.raises(AlreadyExists, match='sandbox "web" already exists'):
        ctl.create_sandbox(SandboxSpec("web"))
    with pytest.raises(InvalidArgument, match="invalid sandbox name"):
        ctl.create_sandbox(SandboxSpec("web\n"))
    with pytest.raises(NotFound, match="'nope'"):
        ctl.create_sandbox(SandboxSpec("db", network="nope"))
    assert [s.name for s in ctl.list_sandboxes()] == ["web"]


def test_aliases_on_the_default_bridge_are_refused_it_has_no_dns(
        ctl: Controller, sbx: FakeSandboxLinks) -> None:
    with pytest.raises(InvalidArgument, match="has no embedded DNS"):
        ctl.create_sandbox(SandboxSpec("web", aliases=("www",)))
    assert ctl.list_sandboxes() == [] and sbx.namespaces() == []


def test_ports_are_unsupported_without_a_firewall(ctl: Controller,
                                                   sbx: FakeSandboxLinks) -> None:
    with pytest.raises(Unsupported):
        ctl.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    assert ctl.list_sandboxes() == [] and sbx.namespaces() == []


def test_aliases_on_a_user_network_are_names_of_the_endpoint(ctl: Controller,
                                                             blue: str) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web"))
    ep = ctl.connect(ConnectSpec(blue, "web", aliases=("WWW", "www", "api.v1")))
    assert ep.aliases == ("www", "api.v1")
    net = ctl.network(blue)
    holders = ctl.records.lookup([net.id], "api.v1")
    assert [h.sandbox_id for h in holders] == [sb.id]
    ctl.create_sandbox(SandboxSpec("other"))
    with pytest.raises(InvalidArgument, match="invalid alias"):
        ctl.connect(ConnectSpec(blue, "other", aliases=("bad name",)))


# --------------------------------------------------------------------------- connect


def test_connect_adds_eth1_default_route_stays(ctl: Controller, blue: str,
                                               sbx: FakeSandboxLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web"))
    ep = ctl.connect(ConnectSpec(blue, "web"))
    assert (ep.ifname, ep.ipv4, ep.gateway4) == ("eth1", "10.10.0.2/24", "10.10.0.1")
    path = ctl.netns_path(sb)
    assert set(sbx.interfaces(path)) == {"eth0", "eth1"}
    assert sbx.interfaces(path)["eth1"].addresses == ["10.10.0.2/24"]
    assert sbx.default_routes(path) == {4: ("172.17.0.1", "eth0")}
    with open(os.path.join(ctl.files_dir(sb), "hosts")) as f:
        hosts = f.read()
    assert "172.17.0.2\tweb\n" in hosts and "10.10.0.2\tweb\n" in hosts
    assert len(ctl.store.load().endpoints) == 2
    with pytest.raises(AlreadyExists, match="already connected"):
        ctl.connect(ConnectSpec(blue, "web"))


def test_disconnect_first_moves_the_default_route(ctl: Controller, blue: str,
                                                  host: FakeHostLinks,
                                                  sbx: FakeSandboxLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web"))
    first = only_endpoint(ctl, sb)
    ctl.connect(ConnectSpec(blue, "web"))
    path = ctl.netns_path(sb)
    assert ctl.disconnect("bridge", "web") == first
    assert sbx.default_routes(path) == {4: ("10.10.0.1", "eth1")}
    assert "eth0" not in sbx.interfaces(path)
    assert names.veth_name(first.id) not in endpoint_links(host)
    host.reap()
    assert set(sbx.interfaces(path)) == {"eth1"}
    assert host.link(names.veth_name(first.id)) is None
    assert [e.network_id for e in ctl.store.load().endpoints] == [ctl.network(blue).id]
    # eth0 is free again; the default route stays with the older endpoint.
    again = ctl.connect(ConnectSpec("bridge", "web"))
    assert again.ifname == "eth0"
    assert sbx.default_routes(path) == {4: ("10.10.0.1", "eth1")}


def test_disconnect_last_leaves_no_default_route(ctl: Controller, sbx: FakeSandboxLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web"))
    ctl.disconnect("bridge", "web")
    assert sbx.default_routes(ctl.netns_path(sb)) == {}
    assert ctl.endpoints_of(sandbox=sb.id) == []
    with pytest.raises(NotFound, match="not connected"):
        ctl.disconnect("bridge", "web")


def test_internal_network_gives_no_gateway_route(ctl: Controller, sbx: FakeSandboxLinks,
                                                 host: FakeHostLinks) -> None:
    net = ctl.create_network(NetworkSpec("secret", subnets=("10.20.0.0/24",), internal=True))
    sb = ctl.create_sandbox(SandboxSpec("web", network="secret"))
    ep = only_endpoint(ctl, sb)
    assert (ep.ipv4, ep.gateway4) == ("10.20.0.2/24", None)
    path = ctl.netns_path(sb)
    assert sbx.default_routes(path) == {}
    # The bridge still holds the gateway address; only the route is missing.
    bridge = host.link(names.bridge_name(net.id))
    assert bridge is not None and bridge.addresses == ["10.20.0.1/24"]
    # A later non-internal network gives the default route.
    ctl.connect(ConnectSpec("bridge", "web"))
    assert sbx.default_routes(path) == {4: ("172.17.0.1", "eth1")}


# --------------------------------------------------------------------------- none and host


def test_none_network(ctl: Controller, blue: str, sbx: FakeSandboxLinks,
                      host: FakeHostLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("quiet", network="none"))
    ep = only_endpoint(ctl, sb)
    assert (ep.ifname, ep.ipv4, ep.mac) == ("", None, "")
    path = ctl.netns_path(sb)
    assert sbx.interfaces(path) == {} and sbx.default_routes(path) == {}
    assert endpoint_links(host) == set()
    with pytest.raises(InvalidArgument, match="none network and another"):
        ctl.connect(ConnectSpec(blue, "quiet"))
    ctl.create_sandbox(SandboxSpec("web"))
    with pytest.raises(InvalidArgument, match="none network and another"):
        ctl.connect(ConnectSpec("none", "web"))
    with pytest.raises(InvalidArgument, match="assigns no addresses"):
        ctl.create_sandbox(SandboxSpec("x", network="none", ip="10.0.0.5"))
    # After leaving none, another network is fine.
    ctl.disconnect("none", "quiet")
    assert ctl.connect(ConnectSpec(blue, "quiet")).ifname == "eth0"


def test_host_network(ctl: Controller, blue: str, sbx: FakeSandboxLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("hosty", network="host"))
    assert sb.kind == "host"
    assert ctl.netns_path(sb) == ctl.config.host_netns
    assert sbx.namespaces() == []  # no namespace of its own
    assert only_endpoint(ctl, sb).ipv4 is None
    for spec in (SandboxSpec("x", network="host", ip="10.0.0.5"),
                 SandboxSpec("x", network="host", mac="02:00:00:00:00:01")):
        with pytest.raises(InvalidArgument, match="host network takes no"):
            ctl.create_sandbox(spec)
    with pytest.raises(InvalidArgument, match="host network"):
        ctl.connect(ConnectSpec(blue, "hosty"))
    ctl.create_sandbox(SandboxSpec("web"))
    with pytest.raises(InvalidArgument, match="host network"):
        ctl.connect(ConnectSpec("host", "web"))
    with pytest.raises(InvalidArgument, match="remove the sandbox instead"):
        ctl.disconnect("host", "hosty")
    ctl.remove_sandbox("hosty")
    assert ctl.config.host_netns is not None and os.path.exists(ctl.config.host_netns)
    assert [s.name for s in ctl.list_sandboxes()] == ["web"]


# --------------------------------------------------------------------------- remove


def test_remove_sandbox_leaves_nothing(ctl: Controller, blue: str, host: FakeHostLinks,
                                       sbx: FakeSandboxLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web"))
    ctl.connect(ConnectSpec(blue, "web"))
    path, files = ctl.netns_path(sb), ctl.files_dir(sb)
    seen = len(host.calls)
    ctl.remove_sandbox("web")
    # The links of retired endpoints are reaped before rm returns (with a real kernel the
    # namespace, and so the veths, may outlive its unmount for a while).
    assert "reap" in [c.method for c in host.calls[seen:]]
    assert not os.path.exists(path) and not os.path.exists(files)
    assert sbx.namespaces() == []
    assert set(host.live()) == {"cnm0", names.bridge_name(ctl.network(blue).id)}
    assert len(host.links()) == 3  # lo and the two bridges: nothing waits to be reaped
    state = ctl.store.load()
    assert state.sandboxes == [] and state.endpoints == []
    # Its addresses are free (a static request for them succeeds).
    again = ctl.create_sandbox(SandboxSpec("web2", network=blue, ip="10.10.0.2"))
    assert only_endpoint(ctl, again).ipv4 == "10.10.0.2/24"


def test_remove_sandbox_reports_kernel_failures_force_drops_records(
        ctl: Controller, host: FakeHostLinks) -> None:
    ctl.create_sandbox(SandboxSpec("web"))
    host.fail_on("retire", KernelError("retire: stuck"))
    with pytest.raises(CnmError, match="stuck") as e:
        ctl.remove_sandbox("web")
    assert e.value.code == "partial-failure"
    assert [s.name for s in ctl.list_sandboxes()] == ["web"]
    host.fail_on("retire", KernelError("retire: stuck"))
    ctl.remove_sandbox("web", force=True)
    assert ctl.list_sandboxes() == [] and ctl.store.load().sandboxes == []


# --------------------------------------------------------------------------- failures


def test_failure_at_configure_during_connect_leaves_no_trace(
        ctl: Controller, blue: str, host: FakeHostLinks, sbx: FakeSandboxLinks) -> None:
    sb = ctl.create_sandbox(SandboxSpec("web"))
    path = ctl.netns_path(sb)
    links_before = set(host.live())
    sbx.fail_on("configure", KernelError("configure eth1: boom"))
    with pytest.raises(KernelError, match="boom"):
        ctl.connect(ConnectSpec(blue, "web"))
    assert sbx.faults.pending() == 0  # the failure did fire
    assert [e.ifname for e in ctl.endpoints_of(sandbox=sb.id)] == ["eth0"]
    assert ctl.endpoints_of(network=ctl.network(blue).id) == []
    assert len(ctl.store.load().endpoints) == 1
    assert set(host.live()) == links_before
    host.reap()
    assert set(sbx.interfaces(path)) == {"eth0"}
    assert sbx.default_routes(path) == {4: ("172.17.0.1", "eth0")}
    # No address held: the same one is handed out again, and eth1 with it.
    ep = ctl.connect(ConnectSpec(blue, "web"))
    assert (ep.ifname, ep.ipv4) == ("eth1", "10.10.0.2/24")


@pytest.mark.parametrize("adapter, method", [
    ("host", "add_veth"),
    ("sandbox", "configure"),
    ("sandbox", "set_default_routes"),
])
def test_failed_connect_frees_a_static_address(ctl: Controller, blue: str, host: FakeHostLinks,
                                               sbx: FakeSandboxLinks, adapter: str,
                                               method: str) -> None:
    # On an internal network first (no gateway): the connect to blue sets the default route.
    ctl.create_network(NetworkSpec("quiet", internal=True))
    ctl.create_sandbox(SandboxSpec("web", network="quiet"))
    (host if adapter == "host" else sbx).fail_on(method, KernelError(f"{method}: boom"))
    with pytest.raises(KernelError):
        ctl.connect(ConnectSpec(blue, "web", ip="10.10.0.50"))
    host.reap()
    assert endpoint_links(host) == {names.veth_name(e.id) for e in ctl.endpoints.values()}
    ep = ctl.connect(ConnectSpec(blue, "web", ip="10.10.0.50"))
    assert ep.ipv4 == "10.10.0.50/24"


@pytest.mark.parametrize("adapter, method", [
    ("host", "add_veth"),
    ("sandbox", "configure"),
    ("sandbox", "set_default_routes"),
])
def test_failed_create_sandbox_leaves_no_trace(ctl: Controller, host: FakeHostLinks,
                                               sbx: FakeSandboxLinks, tmp_path: Path,
                                               adapter: str, method: str) -> None:
    (host if adapter == "host" else sbx).fail_on(method, KernelError(f"{method}: boom"))
    with pytest.raises(KernelError, match="boom"):
        ctl.create_sandbox(SandboxSpec("web"))
    assert ctl.list_sandboxes() == [] and ctl.endpoints == {}
    assert ctl.store.load().sandboxes == []
    assert sbx.namespaces() == []
    run = tmp_path / "run"
    assert os.listdir(run / "netns") == [] and os.listdir(run / "sandboxes") == []
    host.reap()
    assert endpoint_links(host) == set() and len(host.links()) == 2
    sb = ctl.create_sandbox(SandboxSpec("web"))
    assert only_endpoint(ctl, sb).ipv4 == "172.17.0.2/16"


# --------------------------------------------------------------------------- concurrency


def test_parallel_connects_get_distinct_addresses(ctl: Controller, blue: str,
                                                  sbx: FakeSandboxLinks) -> None:
    sandboxes = [ctl.create_sandbox(SandboxSpec(f"s{i}")) for i in range(50)]
    results, errors = run_together([
        (lambda sb=sb: ctl.connect(ConnectSpec(blue, sb.name))) for sb in sandboxes])
    assert errors == []
    addresses = {ep.ipv4 for ep in results}  # type: ignore[attr-defined]
    assert addresses == {f"10.10.0.{i}/24" for i in range(2, 52)}
    stored = [e for e in ctl.store.load().endpoints if e.network_id == ctl.network(blue).id]
    assert len(stored) == 50
    seen = {sbx.interfaces(ctl.netns_path(sb))["eth1"].addresses[0] for sb in sandboxes}
    assert seen == addresses


def run_together(fns: list[Callable[[], object]]) -> tuple[list[object], list[BaseException]]:
    """Run the calls on their own threads, released at once; (results, errors)."""
    results: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(fns))

    def run(fn: Callable[[], object]) -> None:
        start.wait()
        try:
            results.append(fn())
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_parallel_connects_of_one_sandbox_get_distinct_interfaces(
        ctl: Controller, sbx: FakeSandboxLinks) -> None:
    for i in range(10):
        ctl.create_network(NetworkSpec(f"n{i}", subnets=(f"10.50.{i}.0/24",)))
    sb = ctl.create_sandbox(SandboxSpec("web"))
    results, errors = run_together([
        (lambda i=i: ctl.connect(ConnectSpec(f"n{i}", "web"))) for i in range(10)])
    assert errors == []
    assert sorted(ep.ifname for ep in results) == sorted(f"eth{i}" for i in range(1, 11))
    assert len(sbx.interfaces(ctl.netns_path(sb))) == 11


def test_parallel_connects_to_one_network_only_one_wins(ctl: Controller, blue: str) -> None:
    ctl.create_sandbox(SandboxSpec("web"))
    results, errors = run_together([lambda: ctl.connect(ConnectSpec(blue, "web"))] * 10)
    assert len(results) == 1
    assert len(errors) == 9 and all(isinstance(e, AlreadyExists) for e in errors)
    assert len(ctl.store.load().endpoints) == 2


# --------------------------------------------------------------------------- restart


def test_restart_keeps_networks_sandboxes_and_addresses(
        make_controller: MakeController, host: FakeHostLinks, sbx: FakeSandboxLinks) -> None:
    ctl = make_controller()
    ctl.create_network(NetworkSpec("blue", subnets=("10.10.0.0/24",)))
    web = ctl.create_sandbox(SandboxSpec("web", network="blue"))
    ctl.create_sandbox(SandboxSpec("db", network="blue", ip="10.10.0.9"))
    ctl.connect(ConnectSpec("bridge", "web"))
    before = (ctl.list_networks(), ctl.list_sandboxes(), dict(ctl.endpoints))
    links = set(host.live())

    again = make_controller()
    assert (again.list_networks(), again.list_sandboxes(), again.endpoints) == before
    assert set(host.live()) == links
    assert len(sbx.namespaces()) == 2
    path = again.netns_path(web)
    assert sbx.default_routes(path) == {4: ("10.10.0.1", "eth0")}
    # Addresses are still held: neither reused nor available by request.
    sb = again.create_sandbox(SandboxSpec("new", network="blue"))
    assert only_endpoint(again, sb).ipv4 == "10.10.0.3/24"
    with pytest.raises(Conflict) as e:
        again.create_sandbox(SandboxSpec("x", network="blue", ip="10.10.0.9"))
    assert e.value.hint == 'by sandbox "db"'
    # The default bridge kept its subnet and name.
    assert again.network("bridge").id == before[0][1].id


def test_restart_keeps_the_allocators_position(make_controller: MakeController) -> None:
    """A just-freed address is not handed straight to a new sandbox after a restart (peers
    may still cache its old MAC): the position of the in-order allocator is stored."""
    ctl = make_controller()
    ctl.create_network(NetworkSpec("blue", subnets=("10.10.0.0/24", "fd00:10::/64"),
                                   ipv6=True))
    for name in ("a", "b", "c"):
        ctl.create_sandbox(SandboxSpec(name, network="blue"))
    ctl.remove_sandbox("c")  # held .4 and ::4, the latest picks
    ctl.create_endpoint(EndpointSpec("blue", "e"))  # .5 by endpoint create, then freed
    ctl.delete_endpoint("e")

    again = make_controller()
    sb = again.create_sandbox(SandboxSpec("d", network="blue"))
    ep = only_endpoint(again, sb)
    assert (ep.ipv4, ep.ipv6) == ("10.10.0.6/24", "fd00:10::6/64")
    # A third start goes on from there, not from the last stored endpoint.
    third = make_controller()
    assert only_endpoint(third, third.create_sandbox(
        SandboxSpec("x", network="blue"))).ipv4 == "10.10.0.7/24"


def test_restart_after_reboot_drops_lost_sandboxes_and_rebuilds_bridges(
        make_controller: MakeController, tmp_path: Path) -> None:
    ctl = make_controller()
    net = ctl.create_network(NetworkSpec("blue", subnets=("10.10.0.0/24",)))
    ctl.create_sandbox(SandboxSpec("web", network="blue"))

    rebooted = FakeKernel()
    again = make_controller(kernel=rebooted)
    assert again.list_sandboxes() == [] and again.endpoints == {}
    assert again.store.load().sandboxes == []
    assert os.listdir(tmp_path / "run" / "netns") == []
    host = FakeHostLinks(rebooted)
    bridge = host.link(names.bridge_name(net.id))
    assert bridge is not None and bridge.addresses == ["10.10.0.1/24"]
    assert host.link("cnm0") is not None
    # The address of the lost sandbox is free again.
    sb = again.create_sandbox(SandboxSpec("web", network="blue"))
    assert only_endpoint(again, sb).ipv4 == "10.10.0.2/24"


def test_restart_removes_stale_links_and_namespaces(make_controller: MakeController,
                                                    host: FakeHostLinks,
                                                    sbx: FakeSandboxLinks,
                                                    tmp_path: Path) -> None:
    make_controller()
    # Left behind by a crash: a link of an endpoint the store does not know, a namespace
    # of a sandbox it does not know. A link without cnm's alias is not cnm's to remove.
    sbx.create_netns(str(tmp_path / "run" / "netns" / "deadbeef"))
    host.add_veth("cnmvdeadbeef", names.alias("endpoint", "deadbeef"), "eth0",
                  str(tmp_path / "run" / "netns" / "deadbeef"), names.random_mac(), None, None)
    host.ensure_bridge("cnmbdeadbeef", names.alias("network", "deadbeef"), None, [],
                       names.random_mac())
    host.add_address("eth0", "192.0.2.1/24")
    make_controller()
    assert host.link("cnmvdeadbeef") is None
    assert host.link("cnmbdeadbeef") is None
    assert host.link("eth0") is not None
    assert sbx.namespaces() == []
    assert os.listdir(tmp_path / "run" / "netns") == []


def test_restart_replumbs_a_lost_endpoint(make_controller: MakeController,
                                          host: FakeHostLinks, sbx: FakeSandboxLinks) -> None:
    ctl = make_controller()
    sb = ctl.create_sandbox(SandboxSpec("web"))
    ep = only_endpoint(ctl, sb)
    host.delete_link(names.veth_name(ep.id))  # takes eth0 with it
    path = ctl.netns_path(sb)
    assert sbx.interfaces(path) == {}
    make_controller()
    assert sbx.interfaces(path)["eth0"].addresses == ["172.17.0.2/16"]
    assert sbx.default_routes(path) == {4: ("172.17.0.1", "eth0")}
    assert host.link(names.veth_name(ep.id)) is not None


def test_restart_replumbs_endpoints_of_a_deleted_bridge(make_controller: MakeController,
                                                        host: FakeHostLinks,
                                                        sbx: FakeSandboxLinks) -> None:
    ctl = make_controller()
    net = ctl.create_network(NetworkSpec("blue", subnets=("10.10.0.0/24",)))
    sb = ctl.create_sandbox(SandboxSpec("web", network="blue"))
    ep = only_endpoint(ctl, sb)
    bridge = names.bridge_name(net.id)
    host.delete_link(bridge)  # behind cnm's back: the veth stays, detached
    veth = host.link(names.veth_name(ep.id))
    assert veth is not None and veth.master is None
    make_controller()
    veth = host.link(names.veth_name(ep.id))
    assert veth is not None and veth.master is host.link(bridge) is not None
    path = ctl.netns_path(sb)
    assert sbx.interfaces(path)["eth0"].addresses == ["10.10.0.2/24"]
    assert sbx.default_routes(path) == {4: ("10.10.0.1", "eth0")}
