"""Automatic subnets avoid what the host namespace already uses; parallel creates never clash."""

from __future__ import annotations

import threading
from pathlib import Path

import netaddr
import pytest

from cnm.errors import CnmError, Conflict
from cnm.model import NetworkSpec
from cnm.testing.netns import Daemon, HostNs, Stack, run


def _host_veth(host: HostNs, cidr: str, route: str | None = None) -> None:
    """Give the throwaway host namespace an interface holding ``cidr`` (and a route)."""
    run("ip", "-n", host.name, "link", "add", "hostif0", "type", "veth", "peer", "name",
        "hostif1")
    run("ip", "-n", host.name, "addr", "add", cidr, "dev", "hostif0")
    run("ip", "-n", host.name, "link", "set", "hostif0", "up")
    run("ip", "-n", host.name, "link", "set", "hostif1", "up")
    if route:
        gw = str(netaddr.IPNetwork(cidr).ip + 1)
        run("ip", "-n", host.name, "route", "add", route, "via", gw)


def test_automatic_subnet_skips_host_address_and_route(stack: Stack) -> None:
    # 172.18.0.0/16 is the first automatic subnet after the default bridge's 172.17/16.
    _host_veth(stack.host_ns, "172.18.3.1/24", route="172.19.0.0/16")
    net = stack.controller.create_network(NetworkSpec(name="auto"))
    subnet = net.subnets[0].subnet
    assert subnet not in ("172.18.0.0/16", "172.19.0.0/16")
    assert subnet == "172.20.0.0/16"


def test_requested_subnet_overlapping_a_host_address_is_refused(stack: Stack) -> None:
    _host_veth(stack.host_ns, "10.77.0.1/24")
    with pytest.raises(Conflict, match=r"10\.77\.0\.1/24 on hostif0"):
        stack.controller.create_network(NetworkSpec(name="x", subnets=("10.77.0.0/16",)))
    assert [n.name for n in stack.controller.list_networks()] == ["bridge", "host", "none"]


def test_requested_subnet_may_overlap_a_host_route(stack: Stack) -> None:
    _host_veth(stack.host_ns, "10.78.0.1/24", route="10.200.0.0/16")
    net = stack.controller.create_network(NetworkSpec(name="vpnish",
                                                      subnets=("10.200.5.0/24",)))
    assert net.subnets[0].subnet == "10.200.5.0/24"


def test_default_bridge_moves_off_172_17_when_the_host_uses_it(host_ns: HostNs,
                                                                tmp_path: Path) -> None:
    _host_veth(host_ns, "172.17.9.1/24")
    d = Daemon(host_ns, tmp_path / "state", tmp_path / "run", str(tmp_path / "s.sock"),
               tmp_path / "log")
    try:
        d.start()
        bridge = d.client().network("bridge")
        assert bridge["subnets"][0]["subnet"] == "172.18.0.0/16"
    finally:
        d.stop()


def test_default_address_pool_replaces_the_pools(host_ns: HostNs, tmp_path: Path) -> None:
    d = Daemon(host_ns, tmp_path / "state", tmp_path / "run", str(tmp_path / "s.sock"),
               tmp_path / "log")
    try:
        d.start("--default-address-pool", "base=10.210.0.0/16,size=24")
        c = d.client()
        first = c.create_network(name="p1")["subnets"][0]["subnet"]
        second = c.create_network(name="p2")["subnets"][0]["subnet"]
        assert (first, second) == ("10.210.0.0/24", "10.210.1.0/24")
    finally:
        d.stop()


def test_parallel_network_creates_get_distinct_subnets(stack: Stack) -> None:
    subnets: list[str] = []
    errors: list[CnmError] = []

    def create(i: int) -> None:
        try:
            net = stack.controller.create_network(NetworkSpec(name=f"par{i}"))
            subnets.append(net.subnets[0].subnet)
        except CnmError as e:
            errors.append(e)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(subnets) == 20 and len(set(subnets)) == 20
    nets = [netaddr.IPNetwork(s) for s in subnets]
    for i, a in enumerate(nets):
        for b in nets[:i]:
            assert a.last < b.first or b.last < a.first, f"{a} overlaps {b}"
