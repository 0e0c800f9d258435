"""What the firewall keeps apart, checked with packets that must not arrive: icc=false,
separate bridge networks, internal networks, masquerade on and off; a flushed ruleset
and its repair; and that cnm touches no table but its own and leaves nothing behind.

Every "must fail" check is paired with a "must work" one on the same server, so a test
cannot pass because the server or the route was missing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from cnm import names
from cnm.errors import InvalidArgument
from cnm.model import NetworkSpec, SandboxSpec
from cnm.testing.netns import Daemon, HostNs, Stack, can_ping, in_ns
from tests.netns.fwtools import (
    HOST4,
    HOST6,
    OUT4,
    Outside,
    Servers,
    blocked,
    flush_ruleset,
    nft_table,
    outside,
    peer,
    ruleset,
)
from tests.netns.statecheck import guards


@pytest.fixture
def out(host_ns: HostNs) -> Iterator[Outside]:
    with outside(host_ns) as o:
        yield o


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as s:
        yield s


def test_icc_false_cuts_sandboxes_apart_but_not_from_the_gateway(
        stack: Stack, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="quiet", subnets=("10.80.0.0/24",),
                                 options={"icc": "false"}))
    c.create_sandbox(SandboxSpec(name="a", network="quiet"))  # 10.80.0.2
    c.create_sandbox(SandboxSpec(name="b", network="quiet"))  # 10.80.0.3
    a, b = stack.netns("a"), stack.netns("b")
    servers.start(b, 80)
    # The server is up and reachable from the host (not forwarded, so not filtered).
    assert peer(stack.host_ns.path, "tcp", "10.80.0.3", 80) == "10.80.0.1"
    assert can_ping(a, "10.80.0.1")
    assert can_ping(b, "10.80.0.1")
    assert not can_ping(a, "10.80.0.3")
    assert blocked(a, "tcp", "10.80.0.3", 80)


def test_bridge_networks_are_apart_but_a_published_port_is_reached_across(
        stack: Stack, out: Outside, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="a", subnets=("10.81.0.0/24",)))
    c.create_network(NetworkSpec(name="b", subnets=("10.82.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a1", network="a", ports=("8080:80", "8080:80/udp")))
    c.create_sandbox(SandboxSpec(name="b1", network="b"))  # 10.82.0.2
    a1, b1 = stack.netns("a1"), stack.netns("b1")
    servers.start(a1, 80)
    servers.start(b1, 80)
    for proto in ("tcp", "udp"):
        # Through the host's address or network a's gateway, with b1's own address.
        assert peer(b1, proto, HOST4, 8080) == "10.82.0.2", proto
        assert peer(b1, proto, "10.81.0.1", 8080) == "10.82.0.2", proto
    assert not can_ping(b1, "10.81.0.2")
    assert not can_ping(a1, "10.82.0.2")
    assert blocked(b1, "tcp", "10.81.0.2", 80)
    assert blocked(a1, "tcp", "10.82.0.2", 80)
    assert can_ping(b1, "10.82.0.1") and can_ping(a1, "10.81.0.1")


def test_internal_network_has_nothing_in_or_out_but_its_sandboxes_meet(
        stack: Stack, out: Outside, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="vault", subnets=("10.83.0.0/24",), internal=True))
    c.create_network(NetworkSpec(name="web", subnets=("10.84.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="i1", network="vault"))  # 10.83.0.2
    c.create_sandbox(SandboxSpec(name="i2", network="vault"))  # 10.83.0.3
    c.create_sandbox(SandboxSpec(name="w1", network="web"))    # 10.84.0.2
    with pytest.raises(InvalidArgument, match="internal"):
        c.publish("i1", ["8080:80"], network="vault")
    i1, i2, w1 = stack.netns("i1"), stack.netns("i2"), stack.netns("w1")
    # An internal sandbox has no default route; give it one, so that only the firewall
    # stands between it and the rest.
    in_ns(i1, "ip", "route", "add", "default", "via", "10.83.0.1")
    servers.start(i1, 80)
    servers.start(i2, 80)
    servers.start(out.path, 7000)
    assert can_ping(i2, "10.83.0.2")
    assert peer(i2, "tcp", "10.83.0.2", 80) == "10.83.0.3"
    assert peer(w1, "tcp", OUT4, 7000) == HOST4  # the outside server is there
    assert not can_ping(i1, OUT4)
    assert blocked(i1, "tcp", OUT4, 7000)
    assert blocked(i1, "udp", OUT4, 7000)
    assert not can_ping(out.path, "10.83.0.2")  # the outside routes 10.83/24 to the host
    assert blocked(out.path, "tcp", "10.83.0.2", 80)
    assert blocked(w1, "tcp", "10.83.0.2", 80)
    assert blocked(i1, "tcp", "10.84.0.2", 80)


def test_an_internal_sandbox_with_its_own_default_route_reaches_no_host_address(
        stack: Stack, out: Outside, servers: Servers) -> None:
    """The sandbox controls its routing table (CAP_NET_ADMIN inside): with a default route
    of its own, the host's addresses and other networks' gateways are one hop away, and
    only the firewall's input hook keeps them from it (finding 4 of issue 13)."""
    c = stack.controller
    c.create_network(NetworkSpec(name="vault", subnets=("10.87.0.0/24", "fd00:87::/64"),
                                 ipv6=True, internal=True))
    c.create_network(NetworkSpec(name="web", subnets=("10.88.0.0/24", "fd00:88::/64"),
                                 ipv6=True))
    c.create_sandbox(SandboxSpec(name="i1", network="vault"))
    c.create_sandbox(SandboxSpec(name="w1", network="web"))
    i1, w1 = stack.netns("i1"), stack.netns("w1")
    in_ns(i1, "ip", "route", "add", "default", "dev", "eth0")
    in_ns(i1, "ip", "-6", "route", "add", "default", "dev", "eth0")
    servers.start(stack.host_ns.path, 7100, v6=True)
    targets = [HOST4, HOST6, "10.88.0.1", "10.87.0.1", "fd00:88::1", "fd00:87::1"]
    for address in targets:
        # The server listens on every host address: the other network's sandbox gets in.
        if address not in ("10.87.0.1", "fd00:87::1"):
            assert peer(w1, "tcp", address, 7100) is not None, address
        assert blocked(i1, "tcp", address, 7100), address
        assert blocked(i1, "udp", address, 7100), address
        assert not can_ping(i1, address), address
    # The host still reaches into the internal network (replies are not dropped).
    servers.start(i1, 80)
    assert peer(stack.host_ns.path, "tcp", "10.87.0.2", 80) == "10.87.0.1"


def test_masquerade_true_shows_the_host_false_the_sandbox(
        stack: Stack, out: Outside, servers: Servers) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="nat", subnets=("10.85.0.0/24", "fd00:85::/64"),
                                 ipv6=True))
    c.create_network(NetworkSpec(name="routed", subnets=("10.86.0.0/24", "fd00:86::/64"),
                                 ipv6=True, options={"masquerade": "false"}))
    c.create_sandbox(SandboxSpec(name="m", network="nat"))
    c.create_sandbox(SandboxSpec(name="r", network="routed"))
    servers.start(out.path, 7000, v6=True)
    m, r = stack.netns("m"), stack.netns("r")
    for proto in ("tcp", "udp"):
        assert peer(m, proto, OUT4, 7000) == HOST4, proto
        assert peer(r, proto, OUT4, 7000) == "10.86.0.2", proto
        assert peer(m, proto, "2001:db8:100::2", 7000) == HOST6, proto
        assert peer(r, proto, "2001:db8:100::2", 7000) == "fd00:86::2", proto


def _ok(d: Daemon, *args: str) -> str:
    r = d.cli(*args)
    assert r.returncode == 0, f"cnm {' '.join(args)} -> {r.returncode}: {r.stderr}"
    return r.stdout


def test_a_flush_breaks_ports_and_isolation_and_reload_restores_both(
        daemon: Daemon, host_ns: HostNs, out: Outside, servers: Servers) -> None:
    d = daemon
    _ok(d, "network", "create", "--subnet", "10.87.0.0/24", "a")
    _ok(d, "network", "create", "--subnet", "10.88.0.0/24", "b")
    _ok(d, "sandbox", "create", "--network", "a", "-p", "8080:80", "a1")
    _ok(d, "sandbox", "create", "--network", "b", "b1")
    _ok(d, "sandbox", "create", "--network", "b", "-p", "8081:80", "gone")
    c = d.client()
    a1, b1 = c.sandbox("a1")["netns"], c.sandbox("b1")["netns"]
    c.close()
    servers.start(a1, 80)
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4
    assert blocked(b1, "tcp", "10.87.0.2", 80)

    flush_ruleset(host_ns)
    assert ruleset(host_ns).strip() == ""
    assert blocked(out.path, "tcp", HOST4, 8080)
    assert peer(b1, "tcp", "10.87.0.2", 80) == "10.88.0.2"  # isolation is gone
    # Removing what published a port still works with the table gone.
    _ok(d, "sandbox", "rm", "gone")

    assert _ok(d, "firewall", "reload").strip() == ("rebuilt: 3 networks, 1 published ports, "
                                                     "2 guarded ports")
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4
    assert blocked(b1, "tcp", "10.87.0.2", 80)
    assert not can_ping(b1, "10.87.0.2")


FOREIGN = """\
table inet keepme {
    set friends { type ipv4_addr; elements = { 192.0.2.7 } }
    chain keep_forward {
        type filter hook forward priority 10; policy accept;
        ip saddr @friends tcp dport 9999 accept
    }
}
"""


def test_cnm_changes_no_other_table_and_leaves_only_its_defaults(
        daemon: Daemon, host_ns: HostNs) -> None:
    d = daemon
    fresh, fresh_text = nft_table(host_ns), ruleset(host_ns, "table", "inet", "cnm")
    assert set(fresh["elements"]["bridges"]) == {'"cnm0"'}
    subprocess.run(["nsenter", f"--net={host_ns.path}", "nft", "-f", "-"], input=FOREIGN,
                   text=True, check=True)

    def foreign() -> str:
        return in_ns(host_ns.path, "nft", "-a", "list", "table", "inet", "keepme").stdout

    before = foreign()
    _ok(d, "network", "create", "--subnet", "10.89.0.0/24", "-o", "icc=false", "web")
    _ok(d, "network", "create", "--ipv6", "--subnet", "10.90.0.0/24", "--subnet",
        "fd00:90::/64", "dual")
    _ok(d, "network", "create", "--internal", "--subnet", "10.91.0.0/24", "vault")
    _ok(d, "network", "create", "-o", "masquerade=false", "--subnet", "10.92.0.0/24",
        "routed")
    _ok(d, "sandbox", "create", "--network", "web", "-p", "8080:80", "-p", "9000-9002", "a")
    _ok(d, "sandbox", "create", "--network", "dual", "-p", "[::]:8081:80/udp", "b")
    _ok(d, "sandbox", "create", "--network", "vault", "v")
    _ok(d, "network", "connect", "-p", "8082:80", "routed", "v")
    _ok(d, "port", "add", "b", "9100-9101:80-81")
    _ok(d, "port", "rm", "a", "8080")
    _ok(d, "firewall", "reload")
    grown = nft_table(host_ns)
    assert grown["chains"] == fresh["chains"]
    assert all(grown["elements"][k] for k in ("icc_off", "internal", "masq6", "pub4_range",
                                              "pub6_any")), grown
    _ok(d, "sandbox", "rm", "a")
    _ok(d, "network", "rm", "web")
    assert d.stop() == 0
    d.start()
    _ok(d, "sandbox", "rm", "b", "v")
    _ok(d, "network", "rm", "dual", "vault", "routed")

    assert foreign() == before
    tables = in_ns(host_ns.path, "nft", "list", "tables").stdout.split("\n")
    assert sorted(t for t in tables if t) == ["table bridge cnm", "table inet cnm",
                                              "table inet keepme"]
    assert not any(guards(host_ns.path).values())  # no port guard outlives its endpoint
    assert nft_table(host_ns) == fresh
    assert ruleset(host_ns, "table", "inet", "cnm") == fresh_text


# What dockerd leaves in a host: FORWARD drops whatever DOCKER-USER does not accept.
DOCKERD = """\
table ip filter {
    chain DOCKER-USER {
        ip saddr 192.0.2.66 drop
        return
    }
    chain FORWARD {
        type filter hook forward priority filter; policy drop;
        jump DOCKER-USER
    }
}
"""


def test_next_to_dockerd_only_cnms_own_accepts_in_docker_user_change(
        stack: Stack, out: Outside, servers: Servers) -> None:
    def docker_user() -> list[str]:
        text = ruleset(stack.host_ns, "chain", "ip", "filter", "DOCKER-USER")
        # nft lists an anonymous set's elements in an order of its own: sort them.
        return [re.sub(r"\{ ([^}]*) \}",
                       lambda m: "{ " + ", ".join(sorted(m[1].split(", "))) + " }",
                       line.strip())
                for line in text.splitlines()
                if "accept" in line or "drop" in line or "return" in line]

    subprocess.run(["nsenter", f"--net={stack.host_ns.path}", "nft", "-f", "-"],
                   input=DOCKERD, text=True, check=True)
    c = stack.controller
    c.reload_firewall()  # as at a start next to a running dockerd
    c.create_network(NetworkSpec(name="web", subnets=("10.93.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web", ports=("8080:80",)))
    bridge = names.bridge_name(c.network("web").id)
    servers.start(stack.netns("a"), 80)
    servers.start(out.path, 7000)
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4
    assert peer(stack.netns("a"), "tcp", OUT4, 7000) == HOST4
    def accepts(b: str) -> list[str]:
        return [f'iifname "{b}" oifname "{b}" accept comment "cnm"',
                f'oifname "{b}" ct state established,related accept comment "cnm"',
                f'oifname "{b}" ct status dnat accept comment "cnm"',
                f'iifname "{b}" oifname != {{ ' + ", ".join(sorted([f'"{b}"', '"docker0"']))
                + ' } oifname != "br-*" accept comment "cnm"']

    mine = accepts(bridge) + accepts("cnm0")
    rules = docker_user()
    assert sorted(rules[:-2]) == sorted(mine)
    assert rules[-2:] == ["ip saddr 192.0.2.66 drop", "return"]
    c.reload_firewall()
    assert sorted(docker_user()[:-2]) == sorted(mine)  # replaced, not added again
    c.remove_sandbox("a")
    c.remove_network("web")
    assert docker_user() == [*accepts("cnm0"), "ip saddr 192.0.2.66 drop", "return"]


def test_a_change_after_a_flush_repairs_the_whole_table_by_itself(
        daemon: Daemon, host_ns: HostNs, out: Outside, servers: Servers) -> None:
    d = daemon
    _ok(d, "network", "create", "--subnet", "10.89.0.0/24", "a")
    _ok(d, "network", "create", "--subnet", "10.90.0.0/24", "b")
    _ok(d, "sandbox", "create", "--network", "a", "-p", "8080:80", "a1")
    _ok(d, "sandbox", "create", "--network", "b", "b1")
    c = d.client()
    a1, b1 = c.sandbox("a1")["netns"], c.sandbox("b1")["netns"]
    c.close()
    servers.start(a1, 80)
    flush_ruleset(host_ns)
    assert blocked(out.path, "tcp", HOST4, 8080)
    # The next addition finds cnm's table gone, rebuilds it from the store and goes on:
    # no "No such file" for the user, and everything published before is back too.
    _ok(d, "port", "add", "a1", "9090:80")
    assert peer(out.path, "tcp", HOST4, 9090) == OUT4
    assert peer(out.path, "tcp", HOST4, 8080) == OUT4
    assert blocked(b1, "tcp", "10.89.0.2", 80)
