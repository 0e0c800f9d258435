"""Published ports with real TCP and UDP connections: who reaches them, what the server
sees, ranges, conflicts, host_binding_ipv4, and what a failed or removed publish leaves.

The outside client is a namespace of its own on a veth to the test's host namespace
(HOST4/HOST6 on the host side). Servers run inside the sandboxes and answer with the
address they saw the connection come from.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from cnm.errors import Conflict, KernelError
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing import Faulty
from cnm.testing.netns import Daemon, HostNs, Stack
from tests.netns.fwtools import (
    HOST4,
    HOST4_OTHER,
    HOST6,
    OUT4,
    OUT6,
    Outside,
    Servers,
    blocked,
    nft_table,
    outside,
    peer,
    probe,
)
from tests.netns.statecheck import snapshot


@pytest.fixture
def out(host_ns: HostNs) -> Iterator[Outside]:
    with outside(host_ns) as o:
        yield o


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as s:
        yield s


def published(stack: Stack) -> dict[str, list[str]]:
    """The port maps' elements, nothing else."""
    return {k: v for k, v in nft_table(stack.host_ns)["elements"].items()
            if k.startswith("pub")}


def test_published_port_is_reached_from_everywhere_with_the_real_source(
        stack: Stack, out: Outside, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.70.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="srv", network="web", ports=("8080:80", "8080:80/udp")))
    c.create_sandbox(SandboxSpec(name="cli", network="web"))  # 10.70.0.3
    servers.start(stack.netns("srv"), 80)
    host = stack.host_ns.path
    for proto in ("tcp", "udp"):
        assert peer(out.path, proto, HOST4, 8080) == OUT4, proto
        # The host itself, through its own address: that address is the source.
        assert peer(host, proto, HOST4, 8080) == HOST4, proto
        # Through 127.0.0.1 the source must be rewritten (masquerade to the bridge's
        # address): the sandbox cannot send a reply to a loopback address.
        assert peer(host, proto, "127.0.0.1", 8080) == "10.70.0.1", proto
        # Hairpin: another sandbox through the host's address and through its gateway,
        # and the server still sees that sandbox's own address.
        assert peer(stack.netns("cli"), proto, HOST4, 8080) == "10.70.0.3", proto
        assert peer(stack.netns("cli"), proto, "10.70.0.1", 8080) == "10.70.0.3", proto
    # Nothing else is published.
    assert blocked(out.path, "tcp", HOST4, 8081)


def test_ipv6_mapping_is_reached_from_outside_over_ipv6(stack: Stack, out: Outside,
                                                        servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="dual", subnets=("10.71.0.0/24", "fd00:71::/64"),
                                 ipv6=True))
    c.create_sandbox(SandboxSpec(name="srv", network="dual",
                                 ports=("8086:80", "8086:80/udp")))
    servers.start(stack.netns("srv"), 80, v6=True)
    assert published(stack)["pub6_any"], "no IPv6 element for a dual-stack endpoint"
    for proto in ("tcp", "udp"):
        assert peer(out.path, proto, HOST6, 8086) == OUT6, proto
        assert peer(out.path, proto, HOST4, 8086) == OUT4, proto
    # An explicit 0.0.0.0 or [::] is one family only, so the two share a host port.
    c.create_sandbox(SandboxSpec(name="four", network="dual", ports=("0.0.0.0:8088:80",)))
    c.create_sandbox(SandboxSpec(name="six", network="dual", ports=("[::]:8088:81",)))
    servers.start(stack.netns("four"), 80, v6=True)
    servers.start(stack.netns("six"), 81, v6=True)
    assert probe(out.path, "tcp", HOST4, 8088) == f"{OUT4} 80"
    assert probe(out.path, "tcp", HOST6, 8088) == f"{OUT6} 81"


def test_a_conflict_names_the_holder_and_changes_nothing(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.72.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web",
                                 ports=("8080:80", f"{HOST4}:8081:81", "9000-9002:9000-9002")))
    c.create_sandbox(SandboxSpec(name="b", network="web"))
    before_fw, before = published(stack), snapshot(stack)
    clashes = [
        ("8080:80", "8080/tcp"),
        ("8080:8080", "8080/tcp"),              # another container port, same host port
        ("8081:80", "8081/tcp"),                 # every address vs a specific one
        (f"{HOST4}:8080:80", "8080/tcp"),        # a specific address vs every one
        ("9001:80", "9001/tcp"),                 # inside a range
        ("8999-9000:8999-9000", "8999-9000/tcp"),  # a range overlapping one
        ("7000:70", None),                       # fine, but in the same request as a clash
    ]
    for spec, port in clashes[:-1]:
        for how in ("connect", "create"):
            with pytest.raises(Conflict) as info:
                if how == "connect":
                    c.connect(ConnectSpec(network="bridge", sandbox="b", ports=(spec,)))
                else:
                    c.create_sandbox(SandboxSpec(name="c", network="web", ports=(spec,)))
            assert f'host port {port}' in info.value.message, spec
            assert 'sandbox "a"' in info.value.message, spec
            assert published(stack) == before_fw, spec
            assert snapshot(stack) == before, spec
    with pytest.raises(Conflict):
        c.publish("b", ["7000:70", "8080:80"])
    assert published(stack) == before_fw
    assert snapshot(stack) == before
    # Not conflicts: another protocol, and another specific address.
    c.publish("b", ["8080:80/udp", "8080:80/sctp", f"{HOST4_OTHER}:8081:81", "9001:80/udp"])
    assert [str(m) for _, m in c.ports("b")] == [
        "8080:80/udp", "8080:80/sctp", f"{HOST4_OTHER}:8081:81/tcp", "9001:80/udp"]


def test_protocols_do_not_clash_and_each_reaches_its_own_sandbox(
        stack: Stack, out: Outside, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.73.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="t", network="web", ports=("8080:80/tcp",)))  # .2
    c.create_sandbox(SandboxSpec(name="u", network="web", ports=("8080:80/udp",)))  # .3
    servers.start(stack.netns("t"), 80)
    servers.start(stack.netns("u"), 81)  # not 80: a TCP answer from "u" would be wrong
    assert probe(out.path, "tcp", HOST4, 8080) == f"{OUT4} 80"
    assert blocked(out.path, "udp", HOST4, 8080)  # DNATed to u:80, where nobody listens
    c.unpublish("u", 8080, "udp")
    c.publish("u", ["8080:81/udp"])
    assert probe(out.path, "udp", HOST4, 8080) == f"{OUT4} 81"
    assert probe(out.path, "tcp", HOST4, 8080) == f"{OUT4} 80"


def test_ranges_one_interval_element_or_one_element_per_shifted_port(
        stack: Stack, out: Outside, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.74.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web",
                                 ports=("9000-9005:9000-9005", "9100-9102:80-82/udp")))
    fw = published(stack)
    assert fw["pub4_any"] == sorted(
        json.dumps([{"concat": ["udp", 9100 + i]}, {"concat": ["10.74.0.2", 80 + i]}],
                   sort_keys=True) for i in range(3))
    assert len(fw["pub4_range"]) == 1, fw["pub4_range"]
    assert not fw["pub4_addr"]
    servers.start(stack.netns("a"), *range(9000, 9006), 80, 81, 82)
    for port in range(9000, 9006):
        assert probe(out.path, "tcp", HOST4, port) == f"{OUT4} {port}"
    for i in range(3):
        assert probe(out.path, "udp", HOST4, 9100 + i) == f"{OUT4} {80 + i}"
    assert blocked(out.path, "tcp", HOST4, 9006)
    assert blocked(out.path, "udp", HOST4, 9103)
    # Removing any port of a range withdraws the whole range.
    assert [str(m) for m in c.unpublish("a", 9003)] == ["9000-9005:9000-9005/tcp"]
    assert blocked(out.path, "tcp", HOST4, 9000)
    assert published(stack)["pub4_range"] == []


def test_host_binding_ipv4_publishes_on_that_address_only(
        stack: Stack, out: Outside, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.75.0.0/24",),
                                 options={"host_binding_ipv4": HOST4}))
    c.create_sandbox(SandboxSpec(name="a", network="web", ports=("8080:80",)))
    assert [str(m) for _, m in c.ports("a")] == [f"{HOST4}:8080:80/tcp"]
    servers.start(stack.netns("a"), 80)
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4
    assert blocked(out.path, "tcp", HOST4_OTHER, 8080)
    assert blocked(stack.host_ns.path, "tcp", "127.0.0.1", 8080)
    # Another address may publish the same port to another sandbox.
    c.create_sandbox(SandboxSpec(name="b", network="bridge",
                                 ports=(f"{HOST4_OTHER}:8080:80",)))
    servers.start(stack.netns("b"), 80)
    assert peer(out.path, "tcp", HOST4_OTHER, 8080) == OUT4
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4


def test_a_loopback_mapping_is_reached_from_the_host_only(
        stack: Stack, out: Outside, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.78.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web", ports=("127.0.0.1:8080:80",)))
    c.create_sandbox(SandboxSpec(name="b", network="web"))
    servers.start(stack.netns("a"), 80)
    assert peer(stack.host_ns.path, "tcp", "127.0.0.1", 8080) == "10.78.0.1"
    assert blocked(stack.host_ns.path, "tcp", HOST4, 8080)
    assert blocked(out.path, "tcp", HOST4, 8080)
    assert blocked(stack.netns("b"), "tcp", "10.78.0.1", 8080)


def test_a_sandbox_reaches_its_own_published_port(stack: Stack, out: Outside,
                                                  servers: Servers) -> None:
    """Hairpin mode on its bridge port and a masquerade for traffic from an endpoint to
    itself (Docker without the userland proxy does both)."""
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.79.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web", ports=("8080:80",)))
    c.create_sandbox(SandboxSpec(name="b", network="web"))
    servers.start(stack.netns("a"), 80)
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4
    # Its own address cannot be the source it sees (a packet from itself is a martian).
    assert peer(stack.netns("a"), "tcp", HOST4, 8080) == "10.79.0.1"
    assert peer(stack.netns("a"), "tcp", "10.79.0.1", 8080) == "10.79.0.1"
    # Only self-traffic is masqueraded: another sandbox is still seen as itself.
    assert peer(stack.netns("b"), "tcp", HOST4, 8080) == "10.79.0.3"
    # With its last port withdrawn, the hairpin element goes too.
    c.unpublish("a", 8080)
    assert nft_table(stack.host_ns)["elements"].get("hairpin4", []) == []


@pytest.mark.parametrize("method", ["configure", "set_default_routes"])
def test_failed_connect_with_ports_leaves_no_element_and_frees_the_port(
        stack: Stack, out: Outside, servers: Servers, method: str) -> None:
    """``configure`` fails before the ports are published, ``set_default_routes`` after
    (so the publish itself is undone)."""
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.76.0.0/24",)))
    # First on an internal network (no gateway): the connect to web sets the default route.
    c.create_network(NetworkSpec(name="quiet", subnets=("10.75.9.0/24",), internal=True))
    c.create_sandbox(SandboxSpec(name="a", network="quiet"))
    before_fw, before = nft_table(stack.host_ns), snapshot(stack)
    real = c.ctx.sandbox
    boom = KernelError(f"injected failure in {method}")
    c.ctx.sandbox = Faulty(real).fail_on(method, boom)  # type: ignore[assignment]
    try:
        with pytest.raises(KernelError) as info:
            c.connect(ConnectSpec(network="web", sandbox="a", ports=("8080:80", "8080:80/udp")))
        assert info.value is boom
    finally:
        c.ctx.sandbox = real
    assert nft_table(stack.host_ns) == before_fw
    assert snapshot(stack) == before
    assert c.ports("a") == []
    # The host port is free: another sandbox gets it, and it leads there.
    c.create_sandbox(SandboxSpec(name="b", network="web", ports=("8080:80",)))
    servers.start(stack.netns("b"), 80)
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4


def _ok(d: Daemon, *args: str) -> str:
    r = d.cli(*args)
    assert r.returncode == 0, f"cnm {' '.join(args)} -> {r.returncode}: {r.stderr}"
    return r.stdout


def _fails(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    r = d.cli(*args)
    assert r.returncode != 0, f"cnm {' '.join(args)} succeeded: {r.stdout}"
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return r


def test_cli_publish_ls_rm_and_a_restart(daemon: Daemon, host_ns: HostNs, out: Outside,
                                         servers: Servers) -> None:
    d = daemon
    _ok(d, "network", "create", "--subnet", "10.77.0.0/24", "web")
    _ok(d, "sandbox", "create", "--network", "web", "-p", "80", "a")
    _ok(d, "sandbox", "create", "--network", "bridge", "b")
    _ok(d, "network", "connect", "-p", "8080:80/udp", "web", "b")
    ports = json.loads(_ok(d, "port", "ls", "a", "--format", "json"))
    assert len(ports) == 1
    eph = ports[0]["host_port"]
    assert 32768 <= eph <= 60999
    assert ports[0]["host_port_end"] == eph and ports[0]["container_port"] == 80
    assert _ok(d, "port", "ls", "a").startswith(f"80/tcp -> 0.0.0.0:{eph}")
    r = _fails(d, "port", "add", "a", "8080:80/udp")
    assert 'sandbox "b"' in r.stderr
    _ok(d, "port", "add", "a", "8080:80")
    c = d.client()
    a_ns, b_ns = c.sandbox("a")["netns"], c.sandbox("b")["netns"]
    c.close()
    servers.start(a_ns, 80)
    servers.start(b_ns, 80)
    assert peer(out.path, "tcp", HOST4, eph) == OUT4
    assert probe(out.path, "tcp", HOST4, 8080) == f"{OUT4} 80"
    assert peer(out.path, "udp", HOST4, 8080) == OUT4

    _ok(d, "port", "rm", "a", str(eph))
    assert blocked(out.path, "tcp", HOST4, eph)
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4  # the other mapping stays
    assert "error: " in _fails(d, "port", "rm", "a", str(eph)).stderr

    # A restart rebuilds the table from the store, even when it was lost meanwhile.
    assert d.stop() == 0
    subprocess.run(["nsenter", f"--net={host_ns.path}", "nft", "delete", "table", "inet",
                    "cnm"], check=True)
    assert blocked(out.path, "tcp", HOST4, 8080)
    d.start()
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4
    assert peer(out.path, "udp", HOST4, 8080) == OUT4
    assert blocked(out.path, "tcp", HOST4, eph)
    # The port table came back too: a clash is still a clash.
    assert 'sandbox "a"' in _fails(d, "port", "add", "b", "8080:80").stderr
