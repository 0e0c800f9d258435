"""The null, host and bridge drivers against the real kernel, checked from the outside.

Every assertion looks at the kernel (`ip` inside the namespace) or sends real packets.
"""

from __future__ import annotations

import json
import os

from cnm import names
from cnm.drivers.bridge import bridge_of
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, addresses, can_ping, default_route, in_ns, links, run


def all_addresses(netns: str) -> list[str]:
    """Every address of every interface (any scope), as local/prefix."""
    out = in_ns(netns, "ip", "-j", "addr", "show").stdout
    return sorted(f"{a['local']}/{a['prefixlen']}" for x in json.loads(out)
                  for a in x.get("addr_info", []))


def default_route6(netns: str) -> str | None:
    out = in_ns(netns, "ip", "-6", "-j", "route", "show", "default").stdout
    routes = json.loads(out)
    return f"{routes[0]['gateway']} dev {routes[0]['dev']}" if routes else None


def host_end(stack: Stack, network: str, sandbox: str) -> str:
    """Name of the host-side veth of the sandbox's endpoint on ``network``."""
    c = stack.controller
    net = c.network(network)
    ep = next(e for e in c.endpoints_of(sandbox=c.sandbox(sandbox).id) if e.network_id == net.id)
    return names.veth_name(ep.id)


# --------------------------------------------------------------------------- null
def test_null_sandbox_has_loopback_only_and_no_path_either_way(stack: Stack) -> None:
    c = stack.controller
    c.create_sandbox(SandboxSpec(name="lonely", network="none"))
    c.create_sandbox(SandboxSpec(name="b", network="bridge"))
    lonely, b = stack.netns("lonely"), stack.netns("b")
    assert lonely != stack.host_ns.path
    assert list(links(lonely)) == ["lo"]
    assert "UP" in links(lonely)["lo"]["flags"]
    # Nothing but loopback addresses: there is no address for anyone to reach it on.
    assert all_addresses(lonely) == ["127.0.0.1/8", "::1/128"]
    assert default_route(lonely) is None
    # Loopback works (so a failure below is isolation, not a broken ping)...
    assert can_ping(lonely, "127.0.0.1")
    # ...but the bridge sandbox and its gateway are out of reach.
    b_ip = addresses(b, "eth0")[0].split("/")[0]
    assert can_ping(b, "172.17.0.1")  # positive control: b itself is wired
    assert not can_ping(lonely, b_ip)
    assert not can_ping(lonely, "172.17.0.1")
    # The host namespace got no interface for the null sandbox.
    assert not [n for n in links(stack.host_ns.path) if n.startswith("cnmv")
                and n != host_end(stack, "bridge", "b")]


def test_null_endpoint_has_no_interface_or_address(stack: Stack) -> None:
    c = stack.controller
    sb = c.create_sandbox(SandboxSpec(name="n", network="none"))
    (ep,) = c.endpoints_of(sandbox=sb.id)
    assert (ep.ifname, ep.ipv4, ep.ipv6, ep.gateway4) == ("", None, None, None)
    c.remove_sandbox("n")
    assert not os.path.exists(os.path.join(stack.config.run_dir, "netns", sb.id))


# --------------------------------------------------------------------------- host
def test_host_sandbox_is_the_host_namespace(stack: Stack) -> None:
    host = stack.host_ns
    # A marker only the host namespace has: a veth pair made behind cnm's back.
    run("ip", "-n", host.name, "link", "add", "mark0", "type", "veth", "peer", "name", "mark1")
    before = set(links(host.path))
    sb = stack.controller.create_sandbox(SandboxSpec(name="h", network="host"))
    path = stack.netns("h")
    assert path == host.path
    assert os.stat(path).st_ino == os.stat(host.path).st_ino
    seen = links(path)
    assert {"mark0", "mark1"} <= set(seen)
    assert set(seen) == before  # no interface was created for it
    assert not os.path.exists(os.path.join(stack.config.run_dir, "netns", sb.id))
    # Removing it must leave the host namespace (and the marker) alone.
    stack.controller.remove_sandbox("h")
    assert set(links(host.path)) == before
    assert run("ip", "netns", "list").stdout.count(host.name) == 1


# --------------------------------------------------------------------------- bridge
def test_default_bridge_exists_after_start(stack: Stack) -> None:
    c = stack.controller
    net = c.network("bridge")
    assert net.driver == "bridge"
    assert [s.subnet for s in net.subnets] == ["172.17.0.0/16"]
    br = links(stack.host_ns.path)["cnm0"]
    assert br["linkinfo"]["info_kind"] == "bridge"
    assert br["ifalias"] == names.alias("network", net.id)
    assert addresses(stack.host_ns.path, "cnm0") == ["172.17.0.1/16"]
    c.create_sandbox(SandboxSpec(name="a"))
    c.create_sandbox(SandboxSpec(name="b"))
    assert addresses(stack.netns("a"), "eth0") == ["172.17.0.2/16"]
    assert default_route(stack.netns("a")) == "172.17.0.1 dev eth0"
    assert can_ping(stack.netns("a"), "172.17.0.3")
    assert can_ping(stack.netns("b"), "172.17.0.2")
    # The sandbox's host end sits on cnm0.
    veth = links(stack.host_ns.path)[host_end(stack, "bridge", "a")]
    assert veth["master"] == "cnm0"


def test_multi_homed_sandbox_interfaces_and_default_route_follow_connection_order(
        stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="front", subnets=("10.31.0.0/24",)))
    c.create_network(NetworkSpec(name="back", subnets=("10.32.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="m", network="front"))
    c.connect(ConnectSpec(network="back", sandbox="m"))
    c.create_sandbox(SandboxSpec(name="peer", network="back"))
    m = stack.netns("m")
    assert addresses(m, "eth0") == ["10.31.0.2/24"]
    assert addresses(m, "eth1") == ["10.32.0.2/24"]
    assert default_route(m) == "10.31.0.1 dev eth0"
    assert can_ping(m, "10.32.0.3")
    c.disconnect("front", "m")
    assert "eth0" not in links(m)
    assert default_route(m) == "10.32.0.1 dev eth1"
    assert can_ping(m, "10.32.0.1")
    # The old subnet is no longer on-link: it is reached through the new default route.
    route = json.loads(in_ns(m, "ip", "-j", "route", "get", "10.31.0.5").stdout)[0]
    assert (route["dev"], route.get("gateway")) == ("eth1", "10.32.0.1")


def test_internal_network_gives_no_default_route(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="priv", subnets=("10.33.0.0/24",), internal=True))
    c.create_sandbox(SandboxSpec(name="a", network="priv"))
    c.create_sandbox(SandboxSpec(name="b", network="priv"))
    a = stack.netns("a")
    assert addresses(a, "eth0") == ["10.33.0.2/24"]
    assert default_route(a) is None
    assert can_ping(a, "10.33.0.3")  # the subnet itself works
    # Connected later to a normal network, that one gives the default route.
    c.connect(ConnectSpec(network="bridge", sandbox="a"))
    assert default_route(a) == "172.17.0.1 dev eth1"


def test_bridge_name_option_names_the_bridge(stack: Stack) -> None:
    c = stack.controller
    net = c.create_network(NetworkSpec(name="x", subnets=("10.34.0.0/24",),
                                       options={"bridge_name": "br-x"}))
    host = links(stack.host_ns.path)
    assert host["br-x"]["linkinfo"]["info_kind"] == "bridge"
    assert host["br-x"]["ifalias"] == names.alias("network", net.id)
    assert names.bridge_name(net.id) not in host
    assert addresses(stack.host_ns.path, "br-x") == ["10.34.0.1/24"]
    c.create_sandbox(SandboxSpec(name="a", network="x"))
    assert links(stack.host_ns.path)[host_end(stack, "x", "a")]["master"] == "br-x"
    assert can_ping(stack.netns("a"), "10.34.0.1")
    c.remove_sandbox("a")
    c.remove_network("x")
    assert "br-x" not in links(stack.host_ns.path)


def test_docker_bridge_name_alias_is_accepted(stack: Stack) -> None:
    c = stack.controller
    net = c.create_network(NetworkSpec(
        name="d", subnets=("10.35.0.0/24",),
        options={"com.docker.network.bridge.name": "br-docker"}))
    assert net.options == {"bridge_name": "br-docker", "icc": "true", "masquerade": "true",
                           "anti_spoofing": "true"}
    assert links(stack.host_ns.path)["br-docker"]["linkinfo"]["info_kind"] == "bridge"


def test_mtu_option_sets_both_veth_ends(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="small", subnets=("10.36.0.0/24",),
                                 options={"mtu": "1400"}))
    c.create_sandbox(SandboxSpec(name="a", network="small"))
    c.create_sandbox(SandboxSpec(name="b", network="small"))
    assert links(stack.netns("a"))["eth0"]["mtu"] == 1400
    assert links(stack.host_ns.path)[host_end(stack, "small", "a")]["mtu"] == 1400
    # A 1400-byte packet does not fit (1372 of payload + 28 of headers does).
    a = stack.netns("a")
    ok = in_ns(a, "ping", "-c", "1", "-i", "0.2", "-w", "2", "-M", "do", "-s", "1372", "10.36.0.3",
               check=False)
    too_big = in_ns(a, "ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1373", "10.36.0.3",
                    check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert too_big.returncode != 0


def test_static_ip_is_honoured(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="s", subnets=("10.37.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="s", ip="10.37.0.77"))
    c.create_sandbox(SandboxSpec(name="b", network="bridge"))
    c.connect(ConnectSpec(network="s", sandbox="b", ip="10.37.0.99"))
    assert addresses(stack.netns("a"), "eth0") == ["10.37.0.77/24"]
    assert addresses(stack.netns("b"), "eth1") == ["10.37.0.99/24"]
    assert can_ping(stack.netns("a"), "10.37.0.99")


def test_static_mac_is_honoured(stack: Stack) -> None:
    c = stack.controller
    c.create_sandbox(SandboxSpec(name="a", mac="02:42:ac:11:00:99"))
    assert links(stack.netns("a"))["eth0"]["address"] == "02:42:ac:11:00:99"


def test_ipv6_network_with_explicit_subnet(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="v6", subnets=("10.38.0.0/24", "fd00:1::/64"),
                                 ipv6=True))
    c.create_sandbox(SandboxSpec(name="a", network="v6"))
    c.create_sandbox(SandboxSpec(name="b", network="v6"))
    a, b = stack.netns("a"), stack.netns("b")
    assert addresses(a, "eth0") == ["10.38.0.2/24", "fd00:1::2/64"]
    assert addresses(b, "eth0") == ["10.38.0.3/24", "fd00:1::3/64"]
    assert "fd00:1::1/64" in addresses(stack.host_ns.path, bridge_of(c.network("v6")))
    assert default_route6(a) == "fd00:1::1 dev eth0"
    assert can_ping(a, "fd00:1::3")
    assert can_ping(b, "fd00:1::2")
    assert can_ping(a, "fd00:1::1")


def test_ipv6_network_with_automatic_subnet(stack: Stack) -> None:
    c = stack.controller
    net = c.create_network(NetworkSpec(name="auto6", ipv6=True))
    v6 = [s for s in net.subnets if s.version == 6]
    assert len(v6) == 1 and v6[0].subnet.endswith("/64")
    c.create_sandbox(SandboxSpec(name="a", network="auto6"))
    c.create_sandbox(SandboxSpec(name="b", network="auto6"))
    a_v6 = [x for x in addresses(stack.netns("a"), "eth0") if ":" in x]
    b_v6 = [x for x in addresses(stack.netns("b"), "eth0") if ":" in x]
    assert len(a_v6) == 1 and len(b_v6) == 1
    assert can_ping(stack.netns("a"), b_v6[0].split("/")[0])
    assert can_ping(stack.netns("b"), v6[0].gateway or "")
