"""Published ports of an overlay endpoint, on two hosts (a 1-member etcd): a port published
on 127.0.0.1 reaches the sandbox from its own host's loopback, as on a bridge (the overlay's
bridge appears only with the first local join, so its route_localnet is set then); a
published port answers only on its own host; one published on every address is reached on
the host's underlay address from the other host, with the client's real address, and one
published on 127.0.0.1 is not."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from cnm.testing.cluster import Host, Lab, ok, wait_for
from cnm.testing.netns import run
from tests.netns.fwtools import Servers, blocked, probe


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    made = Lab.make(2, members=1)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as s:
        yield s


def localnet(h: Host, bridge: str) -> str:
    return run("ip", "netns", "exec", h.ns.name, "sysctl", "-n",
               f"net.ipv4.conf.{bridge}.route_localnet").stdout.strip()


def test_a_port_published_on_127_0_0_1_reaches_the_overlay_sandbox_on_its_host_only(
        lab: Lab, servers: Servers) -> None:
    h1, h2 = lab.hosts
    ok(h1, "network", "create", "-d", "overlay", "pub")
    wait_for("pub on host 2", lambda: h2.cli("network", "inspect", "pub").returncode == 0)
    gw = json.loads(ok(h1, "network", "inspect", "pub"))[0]["subnets"][0]["gateway"]
    # Host 2 has the overlay's host side too, and a sandbox listening on the same port,
    # but publishes nothing.
    ok(h2, "sandbox", "create", "--network", "pub", "b")
    servers.start(h2.netns("b"), 81)
    ok(h1, "sandbox", "create", "--network", "pub", "-p", "127.0.0.1:8080:80",
       "-p", "8081:80", "a")
    servers.start(h1.netns("a"), 80)
    b_ip = h2.client().sandbox("b")["endpoints"][0]["ipv4"].split("/")[0]
    assert probe(h1.netns("a"), "tcp", b_ip, 81) is not None  # the overlay carries TCP
    # From host 1's loopback: sandbox a's listener (port 80) answers; the connection leaves
    # loopback masqueraded to the gateway, as on a bridge.
    for port in (8080, 8081):
        assert probe(h1.ns.path, "tcp", "127.0.0.1", port) == f"{gw} 80", port
    bridge = "cnmo" + json.loads(ok(h1, "network", "inspect", "pub"))[0]["id"][:11]
    assert localnet(h1, bridge) == "1"
    # The same ports on host 2 answer nothing: a port is published on its own host only.
    assert blocked(h2.ns.path, "tcp", "127.0.0.1", 8080)
    assert blocked(h2.ns.path, "tcp", "127.0.0.1", 8081)
    assert blocked(h1.ns.path, "tcp", h2.addr, 8081)
    # Host 1's underlay address from host 2: the port published everywhere answers, with
    # host 2's own address as the source; the one on 127.0.0.1 does not.
    assert probe(h2.ns.path, "tcp", h1.addr, 8081) == f"{h2.addr} 80"
    assert blocked(h2.ns.path, "tcp", h1.addr, 8080)


def test_the_bridge_made_again_by_a_later_join_gets_route_localnet_too(
        lab: Lab, servers: Servers) -> None:
    h1, _ = lab.hosts
    ok(h1, "network", "create", "-d", "overlay", "again")
    ok(h1, "sandbox", "create", "--network", "again", "-p", "127.0.0.1:8090:80", "x")
    ok(h1, "sandbox", "rm", "x")  # the last local endpoint: the host side goes
    bridge = "cnmo" + json.loads(ok(h1, "network", "inspect", "again"))[0]["id"][:11]
    assert bridge not in run("ip", "-n", h1.ns.name, "link").stdout
    ok(h1, "sandbox", "create", "--network", "again", "-p", "127.0.0.1:8090:80", "y")
    servers.start(h1.netns("y"), 80)
    gw = json.loads(ok(h1, "network", "inspect", "again"))[0]["subnets"][0]["gateway"]
    assert probe(h1.ns.path, "tcp", "127.0.0.1", 8090) == f"{gw} 80"
    assert localnet(h1, bridge) == "1"
