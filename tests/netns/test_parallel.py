"""Many threads calling the controller at once get distinct, working endpoints."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from cnm.model import ConnectSpec, Endpoint, NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, addresses, can_ping
from tests.netns.statecheck import stored

N = 50


def test_fifty_parallel_connects_get_distinct_working_addresses(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="home", subnets=("10.70.0.0/24",)))
    net = c.create_network(NetworkSpec(name="many", subnets=("10.71.0.0/24",)))
    names = [f"s{i:02d}" for i in range(N)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: c.create_sandbox(SandboxSpec(name=n, network="home")), names))
        eps: list[Endpoint] = list(pool.map(
            lambda n: c.connect(ConnectSpec(network="many", sandbox=n)), names))

    got = [e.ipv4 or "" for e in eps]
    assert len(set(got)) == N, sorted(got)
    assert all(a.startswith("10.71.0.") and a != "10.71.0.1/24" for a in got)
    # The store agrees, and every sandbox's kernel carries the address its record says.
    rows = [e for e in stored(stack)["endpoints"] if e["network_id"] == net.id]
    assert sorted(r["ipv4"] for r in rows) == sorted(got)
    for name, ep in zip(names, eps, strict=True):
        assert ep.ifname == "eth1"
        assert addresses(stack.netns(name), "eth1") == [ep.ipv4]

    def reaches_gateway(name: str) -> bool:
        return can_ping(stack.netns(name), "10.71.0.1", timeout_s=2)

    with ThreadPoolExecutor(16) as pool:
        reached = dict(zip(names, pool.map(reaches_gateway, names), strict=True))
    assert [n for n, ok in reached.items() if not ok] == []
