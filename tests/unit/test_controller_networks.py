"""Controller: networks, over the fake kernel."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from cnm import names
from cnm.core import Controller
from cnm.errors import AlreadyExists, Conflict, InUse, InvalidArgument, KernelError, NotFound
from cnm.model import NetworkSpec, SandboxSpec
from cnm.netfilter import Netfilter
from cnm.store import Store
from cnm.testing import FakeHostLinks, FakeNft

MakeController = Callable[..., Controller]


def stored_names(ctl: Controller) -> list[str]:
    return sorted(n.name for n in ctl.store.load().networks)


def test_start_creates_the_predefined_networks(ctl: Controller, host: FakeHostLinks) -> None:
    assert [(n.name, n.driver) for n in ctl.list_networks()] == [
        ("bridge", "bridge"), ("host", "host"), ("none", "null")]
    assert stored_names(ctl) == ["bridge", "host", "none"]
    bridge = ctl.network("bridge")
    assert [(s.subnet, s.gateway) for s in bridge.subnets] == [("172.17.0.0/16", "172.17.0.1")]
    cnm0 = host.link("cnm0")
    assert cnm0 is not None and cnm0.kind == "bridge" and cnm0.up
    assert cnm0.addresses == ["172.17.0.1/16"]
    assert names.parse_alias(cnm0.alias) == ("network", bridge.id)


def test_default_bridge_avoids_a_host_address(make_controller: MakeController,
                                              host: FakeHostLinks) -> None:
    host.add_address("eth0", "172.17.3.4/16")
    ctl = make_controller()
    assert ctl.network("bridge").subnets[0].subnet == "172.18.0.0/16"


def test_create_list_remove(ctl: Controller, host: FakeHostLinks) -> None:
    net = ctl.create_network(NetworkSpec("blue", subnets=("10.1.0.0/24",),
                                         labels={"team": "a"}))
    assert net.name == "blue" and net.driver == "bridge" and net.labels == {"team": "a"}
    assert [n.name for n in ctl.list_networks()] == ["blue", "bridge", "host", "none"]
    assert stored_names(ctl) == ["blue", "bridge", "host", "none"]
    assert ctl.network("blue") == net == ctl.network(net.id) == ctl.network(net.id[:12])
    link = host.link(names.bridge_name(net.id))
    assert link is not None
    assert link.addresses == ["10.1.0.1/24"]
    assert names.parse_alias(link.alias) == ("network", net.id)

    assert ctl.remove_network("blue") == net
    assert host.link(names.bridge_name(net.id)) is None
    assert stored_names(ctl) == ["bridge", "host", "none"]
    with pytest.raises(NotFound):
        ctl.network("blue")


def test_automatic_subnets_are_distinct(ctl: Controller) -> None:
    a = ctl.create_network(NetworkSpec("a"))
    b = ctl.create_network(NetworkSpec("b", ipv6=True))
    assert a.subnets[0].subnet == "172.18.0.0/16"
    assert [s.subnet for s in b.subnets] == ["172.19.0.0/16", "fd63:6e6d::/64"]


def test_automatic_subnet_avoids_host_routes_explicit_may_not_avoid(
        ctl: Controller, host: FakeHostLinks) -> None:
    host.add_route("172.18.0.0/16")
    assert ctl.create_network(NetworkSpec("a")).subnets[0].subnet == "172.19.0.0/16"
    assert ctl.create_network(NetworkSpec("b", subnets=("172.18.1.0/24",))).subnets[0].subnet \
        == "172.18.1.0/24"


def test_subnet_on_a_host_address_is_a_conflict(ctl: Controller, host: FakeHostLinks) -> None:
    host.add_address("eth0", "192.0.2.10/24")
    with pytest.raises(Conflict, match="address 192.0.2.10/24 on eth0"):
        ctl.create_network(NetworkSpec("a", subnets=("192.0.2.0/25",)))


@pytest.mark.parametrize("name", ["bridge", "host", "none"])
def test_predefined_cannot_be_removed(ctl: Controller, name: str) -> None:
    with pytest.raises(InvalidArgument, match="pre-defined"):
        ctl.remove_network(name)
    assert name in stored_names(ctl)


@pytest.mark.parametrize("name", ["bridge", "host", "none"])
def test_predefined_names_cannot_be_created(ctl: Controller, name: str) -> None:
    with pytest.raises(AlreadyExists, match="pre-defined"):
        ctl.create_network(NetworkSpec(name))


def test_duplicate_name(ctl: Controller) -> None:
    ctl.create_network(NetworkSpec("blue"))
    with pytest.raises(AlreadyExists, match='network "blue" already exists'):
        ctl.create_network(NetworkSpec("blue", subnets=("10.9.0.0/24",)))
    assert stored_names(ctl).count("blue") == 1


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "net\n"])
def test_invalid_name(ctl: Controller, name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid network name"):
        ctl.create_network(NetworkSpec(name))


def test_unknown_driver(ctl: Controller) -> None:
    with pytest.raises(InvalidArgument) as e:
        ctl.create_network(NetworkSpec("x", driver="weave"))
    assert "'weave'" in e.value.message
    assert e.value.hint == "drivers: bridge, host, ipvlan, macvlan, null, overlay"


def test_unknown_option(ctl: Controller, host: FakeHostLinks) -> None:
    with pytest.raises(InvalidArgument, match="'colour'"):
        ctl.create_network(NetworkSpec("x", options={"colour": "red"}))
    assert "x" not in stored_names(ctl)
    assert set(host.live()) == {"cnm0"}


@pytest.mark.parametrize("driver", ["host", "null"])
def test_users_cannot_create_host_or_null_networks(ctl: Controller, driver: str) -> None:
    with pytest.raises(InvalidArgument, match="cannot be created"):
        ctl.create_network(NetworkSpec("mine", driver=driver))
    assert "mine" not in stored_names(ctl)


def test_overlapping_subnet_names_the_other_network(ctl: Controller) -> None:
    ctl.create_network(NetworkSpec("blue", subnets=("10.1.0.0/16",)))
    with pytest.raises(Conflict) as e:
        ctl.create_network(NetworkSpec("green", subnets=("10.1.5.0/24",)))
    assert 'network "blue"' in e.value.message
    with pytest.raises(Conflict, match='network "bridge"'):
        ctl.create_network(NetworkSpec("red", subnets=("172.16.0.0/12",)))


def test_gateway_and_ip_range(ctl: Controller) -> None:
    net = ctl.create_network(NetworkSpec("blue", subnets=("10.1.0.0/24",),
                                         gateways=("10.1.0.254",),
                                         ip_ranges=("10.1.0.64/26",)))
    assert (net.subnets[0].gateway, net.subnets[0].ip_range) == ("10.1.0.254", "10.1.0.64/26")
    sb = ctl.create_sandbox(SandboxSpec("a", network="blue"))
    (ep,) = ctl.endpoints_of(sandbox=sb.id)
    assert (ep.ipv4, ep.gateway4) == ("10.1.0.64/24", "10.1.0.254")


def test_same_bridge_name_twice_is_a_conflict(ctl: Controller) -> None:
    ctl.create_network(NetworkSpec("a", options={"bridge_name": "br-a"}))
    with pytest.raises(Conflict, match='link br-a is already used by network "a"'):
        ctl.create_network(NetworkSpec("b", options={"com.docker.network.bridge.name": "br-a"}))


def test_bridge_name_of_a_foreign_link(ctl: Controller, host: FakeHostLinks) -> None:
    host.add_address("docker0", "192.0.2.1/24")
    with pytest.raises(AlreadyExists, match="docker0 already exists"):
        ctl.create_network(NetworkSpec("a", options={"bridge_name": "docker0"}))
    assert "a" not in stored_names(ctl)
    assert host.link("docker0") is not None  # not ours: left alone


def test_failed_bridge_creation_leaves_no_network(ctl: Controller, host: FakeHostLinks) -> None:
    host.fail_on("ensure_bridge", KernelError("bridge: boom"))
    with pytest.raises(KernelError, match="boom"):
        ctl.create_network(NetworkSpec("a", subnets=("10.1.0.0/24",)))
    assert "a" not in stored_names(ctl)
    assert [n.name for n in ctl.list_networks()] == ["bridge", "host", "none"]
    # The subnet is free again.
    assert ctl.create_network(NetworkSpec("a", subnets=("10.1.0.0/24",))).name == "a"


def test_remove_refused_while_endpoints_exist(ctl: Controller, host: FakeHostLinks) -> None:
    net = ctl.create_network(NetworkSpec("blue"))
    ctl.create_sandbox(SandboxSpec("web", network="blue"))
    ctl.create_sandbox(SandboxSpec("db", network="blue"))
    with pytest.raises(InUse) as e:
        ctl.remove_network("blue")
    assert "(db, web)" in e.value.message
    assert e.value.hint == "disconnect them first"
    assert "blue" in stored_names(ctl)
    assert host.link(names.bridge_name(net.id)) is not None
    ctl.remove_sandbox("web")
    ctl.remove_sandbox("db")
    ctl.remove_network("blue")
    assert host.link(names.bridge_name(net.id)) is None


class RefusesRemoval:
    """A store whose transactions refuse to delete a network, as the cluster's store does
    for one with endpoints on another host this host has not heard of yet."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[object]:
        with self.store.transaction() as tx:
            yield Refusing(tx)


class Refusing:
    def __init__(self, tx: object) -> None:
        self.tx = tx

    def __getattr__(self, name: str) -> object:
        return getattr(self.tx, name)

    def delete_network(self, network_id: str) -> None:
        raise Conflict('store refused the change: network "blue" still has endpoints '
                       "(web on host 192.0.2.2)")


def test_a_removal_the_store_refuses_changes_nothing(make_controller: MakeController,
                                                      host: FakeHostLinks) -> None:
    nft = FakeNft()
    ctl = make_controller(netfilter=Netfilter(nft))
    net = ctl.create_network(NetworkSpec("blue"))
    elements = {k: dict(v) for k, v in nft.elements.items()}
    ctl.store = RefusesRemoval(ctl.store)  # type: ignore[assignment]
    with pytest.raises(Conflict, match="web on host 192.0.2.2"):
        ctl.remove_network("blue")
    # The store refused before anything else changed: the bridge and the firewall stay.
    assert host.link(names.bridge_name(net.id)) is not None
    assert nft.elements == elements
    assert [n.name for n in ctl.list_networks()].count("blue") == 1


def test_prune_removes_only_unused_user_networks(ctl: Controller) -> None:
    ctl.create_network(NetworkSpec("idle"))
    ctl.create_network(NetworkSpec("busy"))
    ctl.create_network(NetworkSpec("idle2"))
    ctl.create_sandbox(SandboxSpec("web", network="busy"))
    assert sorted(ctl.prune_networks()) == ["idle", "idle2"]
    assert stored_names(ctl) == ["bridge", "busy", "host", "none"]
    assert ctl.prune_networks() == []
