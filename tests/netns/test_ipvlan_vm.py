"""ipvlan, 802.1q parents and dummy parents: link types this machine's kernel lacks, so
these run in the VM tier (netns-lab/vm/run -m vm tests), with real packets.

The LANs are throwaway namespaces (lantools.py): a switch with a LAN host, or a far end
carrying VLANs 10 and 20 to a host each, both holding addresses of the same subnet so that
only the VLAN tells them apart.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from cnm import names
from cnm.errors import CnmError, Conflict, InUse, InvalidArgument, NotFound
from cnm.model import NetworkSpec, SandboxSpec
from cnm.testing.netns import HostNs, Stack, can_ping, in_ns, links
from tests.netns import lantools
from tests.netns.lantools import PARENT, Lan
from tests.netns.statecheck import snapshot

LAN = "10.77.0.0/24"
LAN_HOST = "10.77.0.200"
ROUTED = "10.89.0.0/24"  # the subnet of L3 sandboxes, routed by the host


def _kernel_has_them() -> bool:
    """ipvlan, 802.1q and dummy links, tried in a namespace that dies with the probe."""
    script = ("ip link add p0 type veth peer name p1 && "
              "ip link add link p0 name p2 type ipvlan mode l2 && "
              "ip link add link p0 name p3 type vlan id 3 && ip link add d0 type dummy")
    r = subprocess.run(["unshare", "--net", "--", "sh", "-c", script], capture_output=True,
                       timeout=30, check=False)
    return r.returncode == 0


# Skipped by tests/conftest.py on a kernel without these links; this skip is only a
# fallback for a tree without that hook. In the VM (CNM_VM=1) nothing is skipped.
pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.environ.get("CNM_VM") != "1" and not _kernel_has_them(),
                       reason="runs in the VM tier (netns-lab/vm/run)"),
]


@pytest.fixture
def lan(host_ns: HostNs) -> Iterator[Lan]:
    with lantools.lan(host_ns.name, f"{LAN_HOST}/24") as it:
        yield it


def routes(netns: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(in_ns(netns, "ip", "-j", "route", "show").stdout)
    return out


def eth(netns: str, ifname: str = "eth0") -> dict[str, Any]:
    return links(netns)[ifname]


def network(stack: Stack, name: str, driver: str, subnet: str = LAN,
            **options: str) -> None:
    stack.controller.create_network(NetworkSpec(
        name=name, driver=driver, subnets=(subnet,), aux_addresses={"lanhost": LAN_HOST}
        if subnet == LAN else {}, options=options))


def sandboxes(stack: Stack, network: str, *names_: str) -> list[str]:
    for n in names_:
        stack.controller.create_sandbox(SandboxSpec(name=n, network=network))
    return [stack.netns(n) for n in names_]


# --------------------------------------------------------------------------- ipvlan
def test_ipvlan_l2_reaches_neighbours_and_the_lan_with_the_parents_mac(
        stack: Stack, lan: Lan) -> None:
    network(stack, "l2", "ipvlan", parent=PARENT)
    a, b = sandboxes(stack, "l2", "a", "b")
    parent_mac = links(stack.host_ns.path)[PARENT]["address"]
    info = eth(a)["linkinfo"]
    assert info["info_kind"] == "ipvlan" and info["info_data"]["mode"] == "l2"
    assert eth(a)["address"] == eth(b)["address"] == parent_mac
    assert {e.mac for e in stack.controller.endpoints_of()} == {parent_mac}
    assert can_ping(a, "10.77.0.3")
    assert can_ping(a, LAN_HOST)
    assert can_ping(b, LAN_HOST)
    assert can_ping(lan.host, "10.77.0.2")
    # The LAN sees both sandboxes behind the parent's MAC.
    assert lan.neighbour_mac("10.77.0.2") == lan.neighbour_mac("10.77.0.3") == parent_mac
    assert not can_ping(a, "10.77.0.99", timeout_s=1)  # nobody there: the pings mean it


def test_ipvlan_private_flag_keeps_neighbours_apart(stack: Stack, lan: Lan) -> None:
    lan.hairpin(True)
    network(stack, "l2", "ipvlan", parent=PARENT, ipvlan_flag="private")
    a, b = sandboxes(stack, "l2", "a", "b")
    assert eth(a)["linkinfo"]["info_data"].get("private") is True
    assert can_ping(a, LAN_HOST)
    assert not can_ping(a, "10.77.0.3")
    assert not can_ping(b, "10.77.0.2")


@pytest.mark.parametrize("mode", ["l3", "l3s"])
def test_ipvlan_l3_routes_everything_through_the_interface(stack: Stack, lan: Lan,
                                                           mode: str) -> None:
    # The host routes for its L3 sandboxes: it holds an address on the LAN, and the LAN
    # host sends the sandboxes' subnet to it.
    lan.on_parent("addr", "add", "10.77.0.1/24", "dev", PARENT)
    lan.on_host("route", "add", ROUTED, "via", "10.77.0.1")
    network(stack, "routed", "ipvlan", subnet=ROUTED, parent=PARENT, ipvlan_mode=mode)
    a, b = sandboxes(stack, "routed", "a", "b")
    assert eth(a)["linkinfo"]["info_data"]["mode"] == mode
    assert "NOARP" in eth(a)["flags"]
    default = [r for r in routes(a) if r["dst"] == "default"]
    assert default == [{"dst": "default", "dev": "eth0", "protocol": "static",
                        "scope": "link", "flags": []}]
    assert stack.controller.endpoints_of()[0].gateway4 == "0.0.0.0"
    assert can_ping(a, "10.89.0.3")
    assert can_ping(b, "10.89.0.2")
    assert can_ping(a, LAN_HOST)  # off-subnet, with no gateway: the host routes it
    assert can_ping(lan.host, "10.89.0.3")
    assert not can_ping(a, "10.89.0.99", timeout_s=1)


def test_ipvlan_l3_dual_stack(stack: Stack, lan: Lan) -> None:
    stack.controller.create_network(NetworkSpec(
        name="routed", driver="ipvlan", subnets=(ROUTED, "fd00:89::/64"), ipv6=True,
        options={"parent": PARENT, "ipvlan_mode": "l3"}))
    a, b = sandboxes(stack, "routed", "a", "b")
    routes6 = json.loads(in_ns(a, "ip", "-6", "-j", "route", "show", "default").stdout)
    assert [(r.get("gateway"), r["dev"]) for r in routes6] == [(None, "eth0")]
    assert stack.controller.endpoints_of()[0].gateway6 == "::"
    assert can_ping(a, "fd00:89::3")
    assert can_ping(b, "fd00:89::2")
    assert not can_ping(a, "fd00:89::99", timeout_s=1)


def test_ipvlan_host_shim(stack: Stack, lan: Lan) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(
        name="l2", driver="ipvlan", subnets=(LAN,), aux_addresses={"host": "10.77.0.254",
                                                                  "lanhost": LAN_HOST},
        options={"parent": PARENT, "host_shim": "true"}))
    shim = names.shim_name(c.network("l2").id)
    assert links(stack.host_ns.path)[shim]["linkinfo"]["info_kind"] == "ipvlan"
    (a,) = sandboxes(stack, "l2", "a")
    assert can_ping(stack.host_ns.path, "10.77.0.2")
    assert can_ping(a, "10.77.0.254")
    c.remove_sandbox("a")
    c.remove_network("l2")
    assert shim not in links(stack.host_ns.path)


def test_macvlan_and_ipvlan_never_share_a_parent(stack: Stack, lan: Lan) -> None:
    network(stack, "mv", "macvlan", parent=PARENT)
    before = snapshot(stack)
    with pytest.raises(Conflict, match='already used by network "mv"'):
        network(stack, "iv", "ipvlan", subnet="10.78.0.0/24", parent=PARENT)
    assert snapshot(stack) == before
    # An ipvlan made outside cnm on the parent: the kernel refuses a macvlan beside it.
    lan.on_parent("link", "add", "link", PARENT, "name", "foreign", "type", "ipvlan")
    before = snapshot(stack)
    with pytest.raises(InUse, match="another kind of upper link"):
        sandboxes(stack, "mv", "a")
    assert snapshot(stack) == before


# --------------------------------------------------------------------------- 802.1q
@pytest.fixture
def vlans(host_ns: HostNs) -> Iterator[Lan]:
    # The same address space on both VLANs: only the tag keeps them apart.
    with lantools.vlan_lan(host_ns.name, {10: "10.90.0.200/24", 20: "10.90.0.201/24"}) as it:
        yield it


@pytest.mark.parametrize("driver", ["macvlan", "ipvlan"])
def test_a_vlan_parent_is_made_carries_its_vlan_only_and_goes(stack: Stack, vlans: Lan,
                                                             driver: str) -> None:
    c = stack.controller
    network(stack, "v10", driver, subnet="10.90.0.0/24", parent=f"{PARENT}.10")
    net = c.network("v10")
    sub = links(stack.host_ns.path)[f"{PARENT}.10"]
    assert sub["linkinfo"]["info_kind"] == "vlan" and sub["linkinfo"]["info_data"]["id"] == 10
    assert sub["link"] == PARENT and sub["ifalias"] == names.alias("network", net.id)
    assert "UP" in sub["flags"]
    (a,) = sandboxes(stack, "v10", "a")
    assert can_ping(a, "10.90.0.200")  # on VLAN 10
    assert not can_ping(a, "10.90.0.201")  # the same subnet, on VLAN 20: out of reach
    c.remove_sandbox("a")
    c.remove_network("v10")
    assert f"{PARENT}.10" not in links(stack.host_ns.path)
    assert PARENT in links(stack.host_ns.path)


def test_a_vlan_parent_the_user_made_stays(stack: Stack, vlans: Lan) -> None:
    vlans.on_parent("link", "add", "link", PARENT, "name", f"{PARENT}.20", "type", "vlan",
                    "id", "20")
    vlans.on_parent("link", "set", f"{PARENT}.20", "up")
    network(stack, "v20", "macvlan", subnet="10.90.0.0/24", parent=f"{PARENT}.20")
    network(stack, "v10", "ipvlan", subnet="10.91.0.0/24", parent=f"{PARENT}.10")
    (a,) = sandboxes(stack, "v20", "a")
    assert can_ping(a, "10.90.0.201")
    assert not can_ping(a, "10.90.0.200")
    stack.controller.remove_sandbox("a")
    stack.controller.remove_network("v20")
    stack.controller.remove_network("v10")
    host_links = links(stack.host_ns.path)
    assert f"{PARENT}.20" in host_links and "ifalias" not in host_links[f"{PARENT}.20"]
    assert f"{PARENT}.10" not in host_links


# --------------------------------------------------------------------------- no parent
@pytest.mark.parametrize("driver", ["macvlan", "ipvlan"])
def test_no_parent_makes_a_dummy_internal_to_the_host(stack: Stack, lan: Lan,
                                                      driver: str) -> None:
    c = stack.controller
    network(stack, "local", driver, subnet="10.66.0.0/24")
    net = c.network("local")
    dummy = names.dummy_name(net.id)
    link = links(stack.host_ns.path)[dummy]
    assert link["linkinfo"]["info_kind"] == "dummy"
    assert link["ifalias"] == names.alias("network", net.id)
    a, b = sandboxes(stack, "local", "a", "b")
    assert eth(a)["linkinfo"]["info_kind"] == driver
    assert [r for r in routes(a) if r["dst"] == "default"] == []
    assert can_ping(a, "10.66.0.3")
    assert not can_ping(a, LAN_HOST)
    c.remove_sandbox("a")
    c.remove_sandbox("b")
    c.remove_network("local")
    assert dummy not in links(stack.host_ns.path)


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("driver, options, error, words", [
    ("ipvlan", {"parent": PARENT, "ipvlan_mode": "l4"}, InvalidArgument,
     "option ipvlan_mode"),
    ("ipvlan", {"parent": PARENT, "ipvlan_flag": "passthru"}, InvalidArgument,
     "option ipvlan_flag"),
    ("ipvlan", {"parent": PARENT, "macvlan_mode": "bridge"}, InvalidArgument,
     "'macvlan_mode'"),
    ("ipvlan", {"parent": "eth9"}, NotFound, "parent link eth9 does not exist"),
    ("macvlan", {"parent": "eth9.10"}, NotFound, "eth9 (the base of parent eth9.10)"),
    ("ipvlan", {"parent": "eth9.10"}, NotFound, "eth9 (the base of parent eth9.10)"),
])
def test_bad_options_and_missing_parents_change_nothing(
        stack: Stack, lan: Lan, driver: str, options: dict[str, str],
        error: type[CnmError], words: str) -> None:
    before = snapshot(stack)
    with pytest.raises(error) as e:
        stack.controller.create_network(NetworkSpec(name="n", driver=driver, subnets=(LAN,),
                                                    options=options))
    assert words in e.value.message
    assert snapshot(stack) == before


def test_a_vlan_parent_on_a_down_base_changes_nothing(stack: Stack, lan: Lan) -> None:
    lan.on_parent("link", "set", PARENT, "down")
    before = snapshot(stack)
    with pytest.raises(Conflict, match=f"{PARENT} is down"):
        network(stack, "v10", "ipvlan", parent=f"{PARENT}.10")
    assert snapshot(stack) == before
