"""Controller: published ports and the firewall, over the fake kernel and FakeNft."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cnm import firewall, names
from cnm.core import Controller
from cnm.errors import (
    CnmError,
    Conflict,
    Internal,
    InvalidArgument,
    KernelError,
    NotFound,
    Unsupported,
)
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.netfilter import Netfilter
from cnm.portspec import EPHEMERAL, PortMapping
from cnm.store.sqlite import Tx
from cnm.testing import FakeHostLinks, FakeKernel, FakeNft, FakeSandboxLinks

MakeController = Callable[..., Controller]
E0 = EPHEMERAL[0]


def snapshot(nft: FakeNft) -> dict[str, dict[str, str]]:
    """Every non-empty set and map of the table (an emptied map is as good as none)."""
    return {k: dict(v) for k, v in nft.elements.items() if v}


def published(nft: FakeNft) -> dict[str, dict[str, str]]:
    """The non-empty port maps of the table."""
    return {k: v for k, v in nft.elements.items() if k.startswith("pub") and v}


def network_sets(nft: FakeNft) -> dict[str, set[str]]:
    return {k: set(v) for k, v in nft.elements.items() if not k.startswith("pub") and v}


def pm(proto: str, ip: str, host: int, ctr: int, hend: int | None = None,
       cend: int | None = None) -> PortMapping:
    return PortMapping(proto, ip, host, host if hend is None else hend, ctr,
                       ctr if cend is None else cend)


@pytest.fixture
def nft() -> FakeNft:
    return FakeNft()


@pytest.fixture
def fw(make_controller: MakeController, nft: FakeNft) -> Controller:
    """A controller with a firewall (FakeNft)."""
    return make_controller(netfilter=Netfilter(nft))


@pytest.fixture
def dual(fw: Controller) -> str:
    fw.create_network(NetworkSpec("dual", subnets=("10.20.0.0/24", "fd00:20::/64"),
                                  ipv6=True))
    return "dual"


def free(fw: Controller, m: PortMapping) -> bool:
    assert fw.netfilter is not None
    return fw.netfilter.ports.clash(m) is None


# --------------------------------------------------------------------------- start


def test_start_builds_the_table_with_the_default_bridge(fw: Controller, nft: FakeNft) -> None:
    assert nft.transactions[0].startswith("add table inet cnm\ndelete table inet cnm\n")
    assert network_sets(nft) == {"bridges": {'"cnm0"'}, "same": {'"cnm0" . "cnm0"'},
                                 "masq4": {"172.17.0.0/16"}}
    assert published(nft) == {}
    assert nft.sysctls["net/ipv4/conf/cnm0/route_localnet"] == "1"
    assert nft.sysctls["net/ipv4/ip_forward"] == "1"


# --------------------------------------------------------------------------- -p


def test_create_sandbox_publishes_exactly_its_ports(fw: Controller, nft: FakeNft) -> None:
    sb = fw.create_sandbox(SandboxSpec("web", ports=(
        "8080:80", "127.0.0.1::81/udp", "9000-9002/sctp", "7000-7001:8000-8001")))
    (ep,) = fw.endpoints_of(sandbox=sb.id)
    assert ep.ipv4 == "172.17.0.2/16"
    assert published(nft) == {
        "pub4_any": {"tcp . 8080": "172.17.0.2 . 80",
                     "tcp . 7000": "172.17.0.2 . 8000", "tcp . 7001": "172.17.0.2 . 8001"},
        "pub4_addr": {f"udp . 127.0.0.1 . {E0}": "172.17.0.2 . 81"},
        "pub4_range": {"sctp . 0.0.0.0/0 . 9000-9002": "172.17.0.2"},
    }
    want = (pm("tcp", "", 8080, 80), pm("udp", "127.0.0.1", E0, 81),
            pm("sctp", "", 9000, 9000, 9002, 9002), pm("tcp", "", 7000, 8000, 7001, 8001))
    assert ep.ports == want
    assert fw.store.load().endpoints[0].ports == want
    assert fw.ports("web") == [("bridge", m) for m in want]
    assert not free(fw, pm("tcp", "", 8080, 1))


def test_connect_publishes_on_both_families(fw: Controller, nft: FakeNft, dual: str) -> None:
    fw.create_sandbox(SandboxSpec("web"))
    fw.connect(ConnectSpec(dual, "web", ports=("53:53/udp", "[2001:db8::1]:8443:443",
                                               "10.0.0.1:8080:80")))
    assert published(nft) == {
        "pub4_any": {"udp . 53": "10.20.0.2 . 53"},
        "pub6_any": {"udp . 53": "fd00:20::2 . 53"},
        "pub6_addr": {"tcp . 2001:db8::1 . 8443": "fd00:20::2 . 443"},
        "pub4_addr": {"tcp . 10.0.0.1 . 8080": "10.20.0.2 . 80"},
    }
    assert [n for n, _ in fw.ports("web")] == ["dual"] * 3


def test_conflict_names_the_holder_and_changes_nothing(fw: Controller, nft: FakeNft,
                                                       sbx: FakeSandboxLinks) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    before = snapshot(nft)
    spaces = sbx.namespaces()
    with pytest.raises(Conflict) as e:
        fw.create_sandbox(SandboxSpec("other", ports=("9090:90", "8080:81")))
    assert e.value.message == 'host port 8080/tcp is already published by sandbox "web"'
    assert snapshot(nft) == before
    assert sbx.namespaces() == spaces
    assert [s.name for s in fw.list_sandboxes()] == ["web"]
    # The port reserved before the clash was given back; the holder keeps its own.
    assert free(fw, pm("tcp", "", 9090, 1))
    assert not free(fw, pm("tcp", "", 8080, 1))


def test_conflict_on_connect_changes_nothing(fw: Controller, nft: FakeNft, dual: str) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("127.0.0.1:8080:80",)))
    fw.create_sandbox(SandboxSpec("db"))
    before = snapshot(nft)
    with pytest.raises(Conflict) as e:
        fw.connect(ConnectSpec(dual, "db", ports=("8080:80",)))
    assert e.value.message == 'host port 8080/tcp is already published by sandbox "web"'
    assert snapshot(nft) == before
    assert [fw.networks[ep.network_id].name for ep in fw.endpoints_of(sandbox=fw.sandbox("db").id)
            ] == ["bridge"]


def test_clash_within_one_request_names_the_sandbox_itself(fw: Controller,
                                                           nft: FakeNft) -> None:
    with pytest.raises(Conflict) as e:
        fw.create_sandbox(SandboxSpec("web", ports=("8080:80", "8080:81")))
    assert e.value.message == 'host port 8080/tcp is already published by sandbox "web"'
    assert published(nft) == {} and free(fw, pm("tcp", "", 8080, 1))


def test_failure_after_publish_withdraws_the_ports(fw: Controller, nft: FakeNft,
                                                   sbx: FakeSandboxLinks) -> None:
    sbx.fail_on("set_default_routes", KernelError("boom"))
    with pytest.raises(KernelError):
        fw.create_sandbox(SandboxSpec("web", ports=("8080:80", "53/udp")))
    assert published(nft) == {}
    assert free(fw, pm("tcp", "", 8080, 1)) and free(fw, pm("udp", "", E0, 1))
    assert fw.list_sandboxes() == [] and sbx.namespaces() == []
    # The port can be published again.
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    assert published(nft) == {"pub4_any": {"tcp . 8080": "172.17.0.2 . 80"}}


def test_store_failure_on_connect_withdraws_the_ports(fw: Controller, nft: FakeNft, dual: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    before = snapshot(nft)

    def broken(self: Tx, ep: Any) -> None:
        raise Internal("store commit failed: disk I/O error")

    monkeypatch.setattr(Tx, "put_endpoint", broken)
    with pytest.raises(Internal):
        fw.connect(ConnectSpec(dual, "web", ports=("9090:90", "[2001:db8::1]:9443:443")))
    assert snapshot(nft) == before
    assert free(fw, pm("tcp", "", 9090, 1)) and free(fw, pm("tcp", "2001:db8::1", 9443, 1))
    assert not free(fw, pm("tcp", "", 8080, 1))


def test_store_failure_on_publish_withdraws_the_ports(fw: Controller, nft: FakeNft,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fw.create_sandbox(SandboxSpec("web"))
    def broken(self: Tx, *args: Any) -> None:
        raise Internal("store commit failed: disk I/O error")

    monkeypatch.setattr(Tx, "add_ports", broken)
    with pytest.raises(Internal):
        fw.publish("web", ["8080:80"])
    assert published(nft) == {} and free(fw, pm("tcp", "", 8080, 1))
    assert fw.ports("web") == []


def test_disconnect_withdraws_the_ports(fw: Controller, nft: FakeNft, dual: str) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    fw.connect(ConnectSpec(dual, "web", ports=("53:53/udp", "9000-9001")))
    fw.disconnect(dual, "web")
    assert published(nft) == {"pub4_any": {"tcp . 8080": "172.17.0.2 . 80"}}
    assert free(fw, pm("udp", "", 53, 1)) and free(fw, pm("tcp", "", 9000, 1))
    assert not free(fw, pm("tcp", "", 8080, 1))


def test_sandbox_rm_withdraws_the_ports(fw: Controller, nft: FakeNft, dual: str) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    fw.connect(ConnectSpec(dual, "web", ports=("53:53/udp",)))
    fw.create_sandbox(SandboxSpec("db", ports=("5432:5432",)))
    fw.remove_sandbox("web")
    assert published(nft) == {"pub4_any": {"tcp . 5432": "172.17.0.3 . 5432"}}
    assert free(fw, pm("tcp", "", 8080, 1)) and free(fw, pm("udp", "", 53, 1))


def test_sandbox_rm_after_a_flush(fw: Controller, nft: FakeNft) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    nft.elements = {}
    fw.remove_sandbox("web")
    assert fw.list_sandboxes() == [] and free(fw, pm("tcp", "", 8080, 1))


# --------------------------------------------------------------------------- publish


def test_publish_on_a_running_sandbox(fw: Controller, nft: FakeNft, dual: str) -> None:
    fw.create_sandbox(SandboxSpec("web"))
    fw.connect(ConnectSpec(dual, "web"))
    # Without --network: the first network (in connection order) that can publish.
    assert fw.publish("web", ["8080:80"]) == [pm("tcp", "", 8080, 80)]
    assert fw.publish("web", ["53/udp"], network=dual) == [pm("udp", "", E0, 53)]
    assert published(nft) == {
        "pub4_any": {"tcp . 8080": "172.17.0.2 . 80", f"udp . {E0}": "10.20.0.2 . 53"},
        "pub6_any": {f"udp . {E0}": "fd00:20::2 . 53"},
    }
    assert fw.ports("web") == [("bridge", pm("tcp", "", 8080, 80)),
                               ("dual", pm("udp", "", E0, 53))]
    stored = {e.network_id: e.ports for e in fw.store.load().endpoints}
    assert stored == {fw.network("bridge").id: (pm("tcp", "", 8080, 80),),
                      fw.network(dual).id: (pm("udp", "", E0, 53),)}


def test_publish_skips_networks_that_cannot_publish(fw: Controller, nft: FakeNft) -> None:
    fw.create_network(NetworkSpec("inside", internal=True))
    fw.create_sandbox(SandboxSpec("web", network="inside"))
    with pytest.raises(InvalidArgument) as e:
        fw.publish("web", ["8080:80"])
    assert e.value.message == 'sandbox "web" is on no network that can publish ports'
    fw.connect(ConnectSpec("bridge", "web"))
    assert fw.publish("web", ["8080:80"]) == [pm("tcp", "", 8080, 80)]
    assert fw.ports("web") == [("bridge", pm("tcp", "", 8080, 80))]


@pytest.mark.parametrize("network", ["none", "host"])
def test_publish_refused_without_a_publishing_network(fw: Controller, network: str) -> None:
    fw.create_sandbox(SandboxSpec("web", network=network))
    with pytest.raises(InvalidArgument, match="on no network that can publish ports"):
        fw.publish("web", ["8080:80"])


def test_publish_on_a_network_the_sandbox_is_not_on(fw: Controller, dual: str) -> None:
    fw.create_sandbox(SandboxSpec("web"))
    with pytest.raises(NotFound) as e:
        fw.publish("web", ["8080:80"], network=dual)
    assert e.value.message == 'sandbox "web" is not connected to network "dual"'


def test_publish_conflict_changes_nothing(fw: Controller, nft: FakeNft) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    fw.create_sandbox(SandboxSpec("db"))
    before = snapshot(nft)
    with pytest.raises(Conflict, match='already published by sandbox "web"'):
        fw.publish("db", ["9090:90", "8080:80"])
    assert snapshot(nft) == before and fw.ports("db") == []
    assert free(fw, pm("tcp", "", 9090, 1))


def test_unpublish(fw: Controller, nft: FakeNft) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80", "8080:80/udp", "9000-9005")))
    # A port inside a range withdraws the whole range.
    assert fw.unpublish("web", 9003) == [pm("tcp", "", 9000, 9000, 9005, 9005)]
    assert fw.unpublish("web", 8080, "udp") == [pm("udp", "", 8080, 80)]
    assert published(nft) == {"pub4_any": {"tcp . 8080": "172.17.0.2 . 80"}}
    assert fw.ports("web") == [("bridge", pm("tcp", "", 8080, 80))]
    assert fw.store.load().endpoints[0].ports == (pm("tcp", "", 8080, 80),)
    assert free(fw, pm("udp", "", 8080, 1)) and free(fw, pm("tcp", "", 9003, 1))


def test_unpublish_what_is_not_published(fw: Controller, nft: FakeNft) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    before = snapshot(nft)
    with pytest.raises(NotFound) as e:
        fw.unpublish("web", 8080, "udp")
    assert e.value.message == 'sandbox "web" publishes no port 8080/udp'
    with pytest.raises(NotFound):
        fw.unpublish("web", 80)  # the container port is not the host port
    with pytest.raises(InvalidArgument, match="unknown protocol 'icmp'"):
        fw.unpublish("web", 8080, "icmp")
    assert snapshot(nft) == before


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("network, message", [
    ("none", 'network "none" (driver null) cannot publish ports'),
    ("host", 'network "host" (driver host) cannot publish ports'),
    ("inside", 'network "inside" is internal: its ports cannot be published'),
])
def test_p_refused_on_networks_that_cannot_publish(fw: Controller, nft: FakeNft, network: str,
                                                   message: str) -> None:
    fw.create_network(NetworkSpec("inside", internal=True))
    transactions = len(nft.transactions)
    with pytest.raises(InvalidArgument) as e:
        fw.create_sandbox(SandboxSpec("web", network=network, ports=("8080:80",)))
    assert e.value.message == message
    assert len(nft.transactions) == transactions
    fw.create_sandbox(SandboxSpec("web"))  # its port guard is the one change
    assert len(nft.transactions) == transactions + 1
    assert nft.transactions[-1].startswith("add element bridge cnm ports ")
    with pytest.raises(InvalidArgument) as e:
        fw.connect(ConnectSpec("inside", "web", ports=("8080:80",)))
    assert e.value.message == 'network "inside" is internal: its ports cannot be published'
    assert len(nft.transactions) == transactions + 1
    assert fw.list_sandboxes()[0].name == "web" and len(fw.endpoints) == 1


def test_ipv6_host_address_needs_an_ipv6_network(fw: Controller) -> None:
    with pytest.raises(InvalidArgument) as e:
        fw.create_sandbox(SandboxSpec("web", ports=("[2001:db8::1]:8080:80",)))
    assert e.value.message == 'host address 2001:db8::1 is IPv6 but network "bridge" has no IPv6'


def test_bad_spec_is_refused_before_anything_happens(fw: Controller,
                                                     sbx: FakeSandboxLinks) -> None:
    with pytest.raises(InvalidArgument, match="invalid port spec '80/icmp'"):
        fw.create_sandbox(SandboxSpec("web", ports=("80/icmp",)))
    assert sbx.calls == []


def test_p_refused_without_a_firewall(ctl: Controller) -> None:
    with pytest.raises(Unsupported) as e:
        ctl.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    assert e.value.message == "this daemon runs without a firewall; it cannot publish ports"
    ctl.create_sandbox(SandboxSpec("web"))
    with pytest.raises(Unsupported):
        ctl.publish("web", ["8080:80"])
    with pytest.raises(NotFound):
        ctl.unpublish("web", 8080)
    with pytest.raises(Unsupported):
        ctl.reload_firewall()


# --------------------------------------------------------------------------- host binding


def test_host_binding_ipv4_is_the_default_host_address(fw: Controller, nft: FakeNft) -> None:
    fw.create_network(NetworkSpec("lan", subnets=("10.30.0.0/24",),
                                  options={"host_binding_ipv4": "192.0.2.7"}))
    fw.create_sandbox(SandboxSpec("web", network="lan", ports=("8080:80", "127.0.0.1:8081:81",
                                                               "9000-9001")))
    assert published(nft) == {
        "pub4_addr": {"tcp . 192.0.2.7 . 8080": "10.30.0.2 . 80",
                      "tcp . 127.0.0.1 . 8081": "10.30.0.2 . 81"},
        "pub4_range": {"tcp . 192.0.2.7 . 9000-9001": "10.30.0.2"},
    }
    assert fw.ports("web")[0][1].host_ip == "192.0.2.7"
    # Another address may still publish 8080.
    fw.create_sandbox(SandboxSpec("db", ports=("127.0.0.2:8080:80",)))


# --------------------------------------------------------------------------- networks


def test_network_create_and_remove_change_its_set_elements(fw: Controller,
                                                           nft: FakeNft) -> None:
    base = network_sets(nft)
    net = fw.create_network(NetworkSpec("lan", subnets=("10.30.0.0/24", "fd00:30::/64"),
                                        ipv6=True, options={"icc": "false"}))
    br = f'"{names.bridge_name(net.id)}"'
    assert network_sets(nft) == {
        "bridges": base["bridges"] | {br},
        "same": base["same"] | {f"{br} . {br}"},
        "icc_off": {f"{br} . {br}"},
        "masq4": base["masq4"] | {"10.30.0.0/24"},
        "masq6": {"fd00:30::/64"},
    }
    assert nft.sysctls["net/ipv6/conf/all/forwarding"] == "1"
    inside = fw.create_network(NetworkSpec("inside", internal=True))
    ibr = f'"{names.bridge_name(inside.id)}"'
    assert network_sets(nft)["internal"] == {ibr}
    fw.remove_network("lan")
    fw.remove_network("inside")
    assert network_sets(nft) == base


def test_network_create_undoes_its_elements_when_the_store_fails(
        fw: Controller, nft: FakeNft, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(nft)

    def broken(self: Tx, net: Any, claims: Any = ()) -> None:
        raise Internal("store commit failed: disk I/O error")

    monkeypatch.setattr(Tx, "put_network", broken)
    with pytest.raises(Internal):
        fw.create_network(NetworkSpec("lan"))
    assert snapshot(nft) == before


def test_network_with_docker_next_door(make_controller: MakeController) -> None:
    nft = FakeNft()
    nft.docker_user = [{"rule": {"handle": 7, "comment": "cnm"}}]
    fw = make_controller(netfilter=Netfilter(nft))
    assert nft.transactions[-1] == firewall.docker_user(["cnm0"], [7])
    net = fw.create_network(NetworkSpec("lan"))
    assert nft.transactions[-1] == firewall.docker_user(
        ["cnm0", names.bridge_name(net.id)], [7])


# --------------------------------------------------------------------------- reload, restart


def _populate(fw: Controller, dual: str) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80", "127.0.0.1::81/udp")))
    fw.connect(ConnectSpec(dual, "web", ports=("[2001:db8::1]:8443:443", "9000-9002")))
    fw.create_sandbox(SandboxSpec("db", network=dual, ports=("7000-7001:8000-8001/sctp",)))
    fw.create_network(NetworkSpec("inside", internal=True, options={"icc": "false"}))


def test_reload_after_a_flush_restores_every_element(fw: Controller, nft: FakeNft,
                                                     dual: str) -> None:
    _populate(fw, dual)
    before = snapshot(nft)
    nft.elements = {}
    assert fw.reload_firewall() == {"networks": 3, "ports": 5, "guards": 3}
    assert snapshot(nft) == before
    # The port table is rebuilt too: clashes are still seen.
    with pytest.raises(Conflict, match='sandbox "web"'):
        fw.publish("db", ["8080:80"])


def test_restart_rebuilds_the_same_elements(make_controller: MakeController, fw: Controller,
                                            nft: FakeNft, dual: str) -> None:
    _populate(fw, dual)
    before = snapshot(nft)
    fresh = FakeNft()
    again = make_controller(netfilter=Netfilter(fresh))
    assert snapshot(fresh) == before
    assert fresh.sysctls == nft.sysctls
    with pytest.raises(Conflict, match='already published by sandbox "db"'):
        again.create_sandbox(SandboxSpec("x", ports=("7001:1/sctp",)))
    again.remove_sandbox("web")
    assert published(fresh) == {"pub4_any": {"sctp . 7000": "10.20.0.3 . 8000",
                                             "sctp . 7001": "10.20.0.3 . 8001"},
                                "pub6_any": {"sctp . 7000": "fd00:20::3 . 8000",
                                             "sctp . 7001": "fd00:20::3 . 8001"}}


def test_restart_after_reboot_forgets_lost_sandboxes_ports(
        make_controller: MakeController, fw: Controller, dual: str) -> None:
    _populate(fw, dual)
    fresh = FakeNft()
    again = make_controller(kernel=FakeKernel(), netfilter=Netfilter(fresh))
    assert again.list_sandboxes() == []
    assert published(fresh) == {}
    again.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    assert published(fresh) == {"pub4_any": {"tcp . 8080": "172.17.0.2 . 80"}}


# --------------------------------------------------------------------------- failed leave


def test_failed_disconnect_keeps_the_port_reserved(fw: Controller, host: FakeHostLinks,
                                                   nft: FakeNft, dual: str) -> None:
    # Regression: a leave that failed used to free the host port while the endpoint kept
    # the mapping, so another sandbox could take it and the next reload (or restart)
    # failed on two elements with one key.
    fw.create_sandbox(SandboxSpec("web"))
    fw.connect(ConnectSpec(dual, "web", ports=("8080:80",)))
    host.fail_on("retire", KernelError("boom"))
    with pytest.raises(KernelError):
        fw.disconnect(dual, "web")
    assert fw.ports("web") == [("dual", pm("tcp", "", 8080, 80))]
    with pytest.raises(Conflict, match='already published by sandbox "web"'):
        fw.create_sandbox(SandboxSpec("db", ports=("8080:80",)))
    # The retry finishes the job, though the element is already gone.
    fw.disconnect(dual, "web")
    assert published(nft) == {} and free(fw, pm("tcp", "", 8080, 1))


def test_failed_sandbox_rm_keeps_the_port_reserved_and_reload_works(
        fw: Controller, host: FakeHostLinks, nft: FakeNft) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    host.fail_on("retire", KernelError("boom"))
    with pytest.raises(CnmError):
        fw.remove_sandbox("web")
    with pytest.raises(Conflict):
        fw.create_sandbox(SandboxSpec("db", ports=("8080:80",)))
    assert fw.reload_firewall() == {"networks": 1, "ports": 1, "guards": 1}
    assert published(nft) == {"pub4_any": {"tcp . 8080": "172.17.0.2 . 80"}}


def test_forced_sandbox_rm_frees_the_port(fw: Controller, host: FakeHostLinks,
                                          nft: FakeNft) -> None:
    fw.create_sandbox(SandboxSpec("web", ports=("8080:80",)))
    host.fail_on("retire", KernelError("boom"))
    fw.remove_sandbox("web", force=True)
    assert published(nft) == {} and free(fw, pm("tcp", "", 8080, 1))
    fw.create_sandbox(SandboxSpec("db", ports=("8080:80",)))
