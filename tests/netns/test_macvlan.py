"""macvlan on the real kernel, in its four modes, with real packets.

The parent is one end of a veth pair in the throwaway host namespace; the other end is a
port of a switch (a bridge) in a second throwaway namespace, on which a third namespace is
a LAN host (10.77.0.200). The switch's port can be put in hairpin mode, as a VEPA switch
needs (lantools.py). Every namespace is deleted when the test ends, even when it fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cnm import names
from cnm.errors import CnmError, Conflict, InUse, InvalidArgument, NotFound, Unsupported
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing.netns import Daemon, HostNs, Stack, can_ping, default_route, in_ns, links, run
from tests.netns import lantools
from tests.netns.lantools import PARENT, Lan
from tests.netns.statecheck import snapshot

SUBNET = "10.77.0.0/24"
LAN_HOST = "10.77.0.200"


@pytest.fixture
def lan(host_ns: HostNs) -> Iterator[Lan]:
    with lantools.lan(host_ns.name, f"{LAN_HOST}/24") as it:
        yield it


def macvlan(stack: Stack, mode: str, name: str = "lan", **opts: str) -> None:
    stack.controller.create_network(NetworkSpec(
        name=name, driver="macvlan", subnets=(SUBNET,), aux_addresses={"lanhost": LAN_HOST},
        options={"parent": PARENT, "macvlan_mode": mode, **opts}))


def sandboxes(stack: Stack, *names_: str, network: str = "lan") -> list[str]:
    for n in names_:
        stack.controller.create_sandbox(SandboxSpec(name=n, network=network))
    return [stack.netns(n) for n in names_]


def eth0(netns: str) -> dict[str, Any]:
    return links(netns)["eth0"]


# --------------------------------------------------------------------------- modes
def test_bridge_mode_reaches_neighbours_and_the_lan_each_with_its_own_mac(
        stack: Stack, lan: Lan) -> None:
    host_links = set(links(stack.host_ns.path))
    macvlan(stack, "bridge")
    a, b = sandboxes(stack, "a", "b")
    # Made inside the sandbox: the host namespace got no link at all.
    assert set(links(stack.host_ns.path)) == host_links
    info = eth0(a)["linkinfo"]
    assert info["info_kind"] == "macvlan" and info["info_data"]["mode"] == "bridge"
    assert default_route(a) == "10.77.0.1 dev eth0"
    assert can_ping(a, "10.77.0.3")
    assert can_ping(b, "10.77.0.2")
    assert can_ping(a, LAN_HOST)
    assert can_ping(b, LAN_HOST)
    # Each endpoint has its own MAC, the one cnm recorded, and the LAN sees it.
    c = stack.controller
    recorded = {c.sandboxes[e.sandbox_id].name: e.mac for e in c.endpoints_of()}
    assert eth0(a)["address"] == recorded["a"] and eth0(b)["address"] == recorded["b"]
    assert len({recorded["a"], recorded["b"], links(stack.host_ns.path)[PARENT]["address"]}) == 3
    assert lan.neighbour_mac("10.77.0.2") == recorded["a"]
    assert lan.neighbour_mac("10.77.0.3") == recorded["b"]
    # The LAN host reaches them too (the switch knows their MACs).
    assert can_ping(lan.host, "10.77.0.2")
    # Bridge mode switches inside the parent: no hairpin needed, none was on.
    assert not can_ping(a, "10.77.0.99", timeout_s=1)  # nobody there: the pings mean it


def test_dual_stack_macvlan(stack: Stack, lan: Lan) -> None:
    stack.controller.create_network(NetworkSpec(
        name="lan", driver="macvlan", subnets=(SUBNET, "fd00:77::/64"), ipv6=True,
        aux_addresses={"lanhost": LAN_HOST}, options={"parent": PARENT}))
    a, b = sandboxes(stack, "a", "b")
    routes6 = json.loads(in_ns(a, "ip", "-6", "-j", "route", "show", "default").stdout)
    assert [(r["gateway"], r["dev"]) for r in routes6] == [("fd00:77::1", "eth0")]
    assert can_ping(a, "fd00:77::3")
    assert can_ping(b, "fd00:77::2")
    assert not can_ping(a, "fd00:77::99", timeout_s=1)


def test_a_chosen_mac_is_the_interfaces(stack: Stack, lan: Lan) -> None:
    macvlan(stack, "bridge")
    stack.controller.create_sandbox(SandboxSpec(name="a", network="lan",
                                                mac="02:42:0a:4d:00:77"))
    a = stack.netns("a")
    assert eth0(a)["address"] == "02:42:0a:4d:00:77"
    assert can_ping(a, LAN_HOST)
    assert lan.neighbour_mac("10.77.0.2") == "02:42:0a:4d:00:77"


def test_private_mode_never_reaches_neighbours_not_even_through_a_hairpin(
        stack: Stack, lan: Lan) -> None:
    lan.hairpin(True)
    macvlan(stack, "private")
    a, b = sandboxes(stack, "a", "b")
    assert eth0(a)["linkinfo"]["info_data"]["mode"] == "private"
    assert can_ping(a, LAN_HOST)
    assert can_ping(b, LAN_HOST)
    assert not can_ping(a, "10.77.0.3")
    assert not can_ping(b, "10.77.0.2")


def test_vepa_reaches_neighbours_only_through_a_hairpin_switch(stack: Stack, lan: Lan) -> None:
    macvlan(stack, "vepa")
    a, b = sandboxes(stack, "a", "b")
    assert eth0(a)["linkinfo"]["info_data"]["mode"] == "vepa"
    assert can_ping(a, LAN_HOST)
    # Every frame leaves by the parent; a switch does not send it back the way it came...
    assert not can_ping(a, "10.77.0.3")
    # ...unless its port is in hairpin mode (a VEPA-capable switch).
    lan.hairpin(True)
    assert can_ping(a, "10.77.0.3")
    assert can_ping(b, "10.77.0.2")
    lan.hairpin(False)
    run("ip", "-n", lan.switch, "neigh", "flush", "all", check=False)
    in_ns(a, "ip", "neigh", "flush", "all")
    assert not can_ping(a, "10.77.0.3")


def test_passthru_takes_the_parent_for_one_endpoint(stack: Stack, lan: Lan) -> None:
    macvlan(stack, "passthru")
    (a,) = sandboxes(stack, "a")
    parent_mac = links(stack.host_ns.path)[PARENT]["address"]
    assert eth0(a)["linkinfo"]["info_data"]["mode"] == "passthru"
    assert eth0(a)["address"] == parent_mac  # the parent's MAC, and the record says so
    assert [e.mac for e in stack.controller.endpoints_of()
            if e.sandbox_id == stack.controller.sandbox("a").id] == [parent_mac]
    assert can_ping(a, LAN_HOST)
    # A second endpoint is refused, clearly, and nothing changes.
    stack.controller.create_sandbox(SandboxSpec(name="b", network="bridge"))
    before = snapshot(stack)
    with pytest.raises(InUse) as e:
        stack.controller.connect(ConnectSpec(network="lan", sandbox="b"))
    assert 'sandbox "a" holds it' in e.value.message and "passthru" in e.value.message
    with pytest.raises(InUse):
        stack.controller.create_sandbox(SandboxSpec(name="c", network="lan"))
    assert snapshot(stack) == before
    assert can_ping(a, LAN_HOST)
    # Freed, the parent takes the next one.
    stack.controller.disconnect("lan", "a")
    stack.controller.connect(ConnectSpec(network="lan", sandbox="b"))
    b = stack.netns("b")
    assert links(b)["eth1"]["address"] == parent_mac
    assert can_ping(b, LAN_HOST)


# --------------------------------------------------------------------------- the host
def test_the_host_reaches_its_sandboxes_only_through_a_shim(stack: Stack, lan: Lan) -> None:
    c = stack.controller
    # The host is on the parent's LAN itself: its address there is no clash for the
    # network's subnet, as long as no sandbox can be given it.
    lan.on_parent("addr", "add", "10.77.0.250/24", "dev", PARENT)
    refused(stack, spec(parent=PARENT), Conflict, "the host's address 10.77.0.250 on par0",
            "--ip-range")
    c.create_network(NetworkSpec(
        name="lan", driver="macvlan", subnets=(SUBNET,), ip_ranges=("10.77.0.0/25",),
        aux_addresses={"lanhost": LAN_HOST}, options={"parent": PARENT}))
    (a,) = sandboxes(stack, "a")
    assert can_ping(a, LAN_HOST)
    assert can_ping(stack.host_ns.path, LAN_HOST)  # the parent itself works
    # Still, the host cannot reach its own macvlans, nor they the host: the kernel never
    # passes frames between a parent and its slaves.
    assert not can_ping(stack.host_ns.path, "10.77.0.2")
    assert not can_ping(a, "10.77.0.250")
    c.remove_sandbox("a")
    c.remove_network("lan")

    c.create_network(NetworkSpec(
        name="lan", driver="macvlan", subnets=(SUBNET,), ip_ranges=("10.77.0.0/25",),
        aux_addresses={"host": "10.77.0.254", "lanhost": LAN_HOST},
        options={"parent": PARENT, "host_shim": "true"}))
    net = c.network("lan")
    shim = names.shim_name(net.id)
    host_links = links(stack.host_ns.path)
    assert host_links[shim]["linkinfo"]["info_kind"] == "macvlan"
    assert host_links[shim]["ifalias"] == names.alias("network", net.id)
    routes = json.loads(in_ns(stack.host_ns.path, "ip", "-j", "route", "show", "dev",
                              shim).stdout)
    assert [r["dst"] for r in routes] == ["10.77.0.0/25"]
    (a,) = sandboxes(stack, "a")
    assert can_ping(stack.host_ns.path, "10.77.0.2")  # through the shim's route
    assert can_ping(a, "10.77.0.254")
    assert can_ping(a, LAN_HOST)
    c.remove_sandbox("a")
    c.remove_network("lan")
    assert shim not in links(stack.host_ns.path)
    assert "10.77.0.0/25" not in in_ns(stack.host_ns.path, "ip", "route").stdout


def test_a_shim_route_the_host_already_has_is_refused_with_nothing_changed(
        stack: Stack, lan: Lan) -> None:
    lan.on_parent("addr", "add", "10.77.0.250/24", "dev", PARENT)
    e = refused(stack, NetworkSpec(
        name="lan", driver="macvlan", subnets=(SUBNET,),
        aux_addresses={"host": "10.77.0.254", PARENT: "10.77.0.250"},
        options={"parent": PARENT, "host_shim": "true"}), Conflict,
        "already routes 10.77.0.0/24 elsewhere")
    assert e.hint is not None and "--ip-range" in e.hint


# --------------------------------------------------------------------------- refusals
def refused(stack: Stack, request: NetworkSpec | SandboxSpec, error: type[CnmError],
            *words: str) -> CnmError:
    before = snapshot(stack)
    with pytest.raises(error) as e:
        if isinstance(request, NetworkSpec):
            stack.controller.create_network(request)
        else:
            stack.controller.create_sandbox(request)
    assert snapshot(stack) == before
    for w in words:
        assert w in e.value.message or w in (e.value.hint or ""), (w, e.value.message)
    return e.value


def spec(name: str = "n", driver: str = "macvlan", **options: str) -> NetworkSpec:
    return NetworkSpec(name=name, driver=driver, subnets=(SUBNET,), options=options)


@pytest.mark.parametrize("options, error, words", [
    ({"parent": PARENT, "macvlan_mode": "l2"}, InvalidArgument, ("option macvlan_mode",)),
    ({"parent": PARENT, "ipvlan_mode": "l2"}, InvalidArgument, ("'ipvlan_mode'",)),
    ({"parent": PARENT, "colour": "red"}, InvalidArgument, ("'colour'",)),
    ({"parent": "a-very-long-link0"}, InvalidArgument, ("option parent",)),
    ({"parent": f"{PARENT}.5000"}, InvalidArgument, ("option parent", "1-4094")),
    ({"parent": PARENT, "host_shim": "true"}, InvalidArgument, ("--aux-address host=IP",)),
    ({"parent": PARENT, "host_shim": "true", "macvlan_mode": "private"}, InvalidArgument,
     ("option host_shim",)),
    ({"parent": "eth9"}, NotFound, ("parent link eth9 does not exist",)),
    ({"parent": "eth9.10"}, NotFound, ("eth9 (the base of parent eth9.10)",)),
    ({"parent": "lo"}, InvalidArgument, ("not an Ethernet link",)),
    ({"parent": "cnm0"}, Conflict, ("cnm0 is cnm's own",)),
], ids=["mode", "ipvlan-key", "unknown", "long-parent", "vid", "shim-no-address",
        "shim-private", "missing", "missing-base", "loopback", "cnm-bridge"])
def test_bad_options_and_parents_change_nothing(stack: Stack, lan: Lan,
                                                options: dict[str, str],
                                                error: type[CnmError],
                                                words: tuple[str, ...]) -> None:
    refused(stack, spec(**options), error, *words)


def test_a_down_parent_is_refused_at_create_and_at_join(stack: Stack, lan: Lan) -> None:
    lan.on_parent("link", "set", PARENT, "down")
    refused(stack, spec(parent=PARENT), Conflict, f"{PARENT} is down",
            f"ip link set {PARENT} up")
    lan.on_parent("link", "set", PARENT, "up")
    macvlan(stack, "bridge")
    lan.on_parent("link", "set", PARENT, "down")
    refused(stack, SandboxSpec(name="a", network="lan"), Conflict, f"{PARENT} is down")
    lan.on_parent("link", "set", PARENT, "up")
    (a,) = sandboxes(stack, "a")
    assert can_ping(a, LAN_HOST)
    assert [e.ipv4 for e in stack.controller.endpoints_of()] == ["10.77.0.2/24"]


def test_a_parent_that_is_a_bridge_port_is_refused(stack: Stack, lan: Lan) -> None:
    lan.on_parent("link", "add", "br-lan", "type", "bridge")
    lan.on_parent("link", "set", PARENT, "master", "br-lan")
    refused(stack, spec(parent=PARENT), Conflict, "port of br-lan", "use br-lan")


def test_a_parent_gone_after_create_fails_the_join_cleanly(stack: Stack, lan: Lan) -> None:
    macvlan(stack, "bridge")
    run("ip", "-n", lan.switch, "link", "del", "port0")  # the parent goes with its peer
    refused(stack, SandboxSpec(name="a", network="lan"), NotFound,
            f"parent link {PARENT} does not exist")


def test_one_macvlan_network_per_parent(stack: Stack, lan: Lan) -> None:
    macvlan(stack, "bridge")
    e = refused(stack, NetworkSpec(name="other", driver="macvlan", subnets=("10.78.0.0/24",),
                                   options={"parent": PARENT}), Conflict,
                f'parent {PARENT} is already used by network "lan"')
    assert e.hint is not None and f"-o parent={PARENT}.VID" in e.hint


@pytest.mark.parametrize("driver, kind, module, options", [
    ("ipvlan", "ipvlan", "ipvlan", {"parent": PARENT}),
    ("macvlan", "vlan", "8021q", {"parent": f"{PARENT}.10"}),
    ("macvlan", "dummy", "dummy", {}),
])
def test_a_link_type_this_kernel_lacks_is_unsupported(stack: Stack, lan: Lan, driver: str,
                                                      kind: str, module: str,
                                                      options: dict[str, str]) -> None:
    if stack.host.supports(kind):
        pytest.skip(f"this kernel has {kind} links: tests/netns/test_ipvlan_vm.py uses them")
    e = refused(stack, spec(driver=driver, **options), Unsupported,
                f"this kernel has no {kind} links (module {module})")
    assert e.code == "unsupported"


# --------------------------------------------------------------------------- cnmd
def test_cli_macvlan_names_and_a_restart(daemon: Daemon, lan: Lan) -> None:
    d = daemon

    def ok(*args: str) -> str:
        r = d.cli(*args)
        assert r.returncode == 0, f"cnm {' '.join(args)}: {r.stderr}"
        return r.stdout

    def fails(*args: str, code: int = 1) -> str:
        r = d.cli(*args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr + r.stdout
        return r.stderr

    assert "parent link eth9 does not exist" in fails(
        "network", "create", "-d", "macvlan", "-o", "parent=eth9", "--subnet", SUBNET, "n")
    ok("network", "create", "-d", "macvlan", "-o", f"parent={PARENT}", "--subnet", SUBNET,
       "--aux-address", f"lanhost={LAN_HOST}", "lan")
    ok("sandbox", "create", "--network", "lan", "a")
    ok("sandbox", "create", "--network", "lan", "b")
    assert "cannot publish ports" in fails("sandbox", "create", "--network", "lan", "-p",
                                           "8080:80", "c", code=2)
    # A user-defined macvlan network has the embedded DNS.
    out = ok("sandbox", "exec", "a", "--", "getent", "hosts", "b")
    assert out.split() == ["10.77.0.3", "b"]
    assert d.stop() == 0
    d.start()
    a = json.loads(ok("sandbox", "inspect", "a"))[0]["netns"]
    assert can_ping(a, "10.77.0.3")
    assert can_ping(a, LAN_HOST)
    ok("sandbox", "rm", "a", "b")
    ok("network", "rm", "lan")
    assert PARENT in links(d.host_ns.path)
