"""macvlan and ipvlan: option parsing, and the controller over the fake kernel (parents,
their ownership, clashes between networks, dummy parents, passthru, the host shim)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cnm import names
from cnm.core import Controller
from cnm.drivers.ipvlan import IpvlanDriver
from cnm.drivers.macvlan import MacvlanDriver
from cnm.drivers.parent import Parent
from cnm.errors import (
    AlreadyExists,
    CnmError,
    Conflict,
    InUse,
    InvalidArgument,
    KernelError,
    NotFound,
    Unsupported,
)
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing import FakeHostLinks, FakeKernel, FakeSandboxLinks

MakeController = Callable[..., Controller]
MACVLAN, IPVLAN = MacvlanDriver(), IpvlanDriver()


# --------------------------------------------------------------------------- options
def test_defaults_are_stored_explicitly() -> None:
    assert MACVLAN.parse_options({}).to_dict() == {"macvlan_mode": "bridge", "host_shim": "false"}
    assert IPVLAN.parse_options({}).to_dict() == {"ipvlan_mode": "l2", "ipvlan_flag": "bridge",
                                        "host_shim": "false"}


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru", "VEPA "])
def test_macvlan_modes(mode: str) -> None:
    stored = MACVLAN.parse_options({"parent": "eth0", "macvlan_mode": mode}).to_dict()
    assert stored == {"macvlan_mode": mode.strip().lower(), "parent": "eth0",
                      "host_shim": "false"}
    assert MACVLAN.parse_options(stored).to_dict() == stored


@pytest.mark.parametrize("mode", ["l2", "l3", "l3s"])
@pytest.mark.parametrize("flag", ["bridge", "private", "vepa"])
def test_ipvlan_modes_and_flags(mode: str, flag: str) -> None:
    stored = IPVLAN.parse_options({"parent": "eth0.10", "ipvlan_mode": mode,
                                   "ipvlan_flag": flag}).to_dict()
    assert stored == {"ipvlan_mode": mode, "parent": "eth0.10", "ipvlan_flag": flag,
                      "host_shim": "false"}
    assert IPVLAN.parse_options(stored).to_dict() == stored


def test_host_shim_round_trips() -> None:
    assert MACVLAN.parse_options({"host_shim": "yes"}).to_dict()["host_shim"] == "true"
    shim = IPVLAN.parse_options({"host_shim": "1", "ipvlan_mode": "l3"}).to_dict()["host_shim"]
    assert shim == "true"


@pytest.mark.parametrize("driver, raw, words", [
    (MACVLAN, {"colour": "red"}, ("'colour'", "macvlan")),
    (MACVLAN, {"ipvlan_mode": "l2"}, ("'ipvlan_mode'",)),
    (MACVLAN, {"ipvlan_flag": "bridge"}, ("'ipvlan_flag'",)),
    (IPVLAN, {"macvlan_mode": "bridge"}, ("'macvlan_mode'",)),
    (MACVLAN, {"macvlan_mode": "l2"}, ("option macvlan_mode", "'l2'")),
    (MACVLAN, {"macvlan_mode": ""}, ("option macvlan_mode",)),
    (MACVLAN, {"macvlan_mode": "source"}, ("option macvlan_mode",)),
    (IPVLAN, {"ipvlan_mode": "l4"}, ("option ipvlan_mode", "'l4'")),
    (IPVLAN, {"ipvlan_mode": "bridge"}, ("option ipvlan_mode",)),
    (IPVLAN, {"ipvlan_flag": "passthru"}, ("option ipvlan_flag", "'passthru'")),
    (MACVLAN, {"parent": ""}, ("option parent",)),
    (MACVLAN, {"parent": "eth 0"}, ("option parent",)),
    (IPVLAN, {"parent": "a-very-long-link0"}, ("option parent",)),
    (MACVLAN, {"parent": "eth0.0"}, ("option parent", "VLAN id 0", "1-4094")),
    (IPVLAN, {"parent": "eth0.4095"}, ("option parent", "VLAN id 4095")),
    (MACVLAN, {"parent": "eth0/1"}, ("option parent",)),
    (MACVLAN, {"host_shim": "maybe"}, ("option host_shim",)),
    (MACVLAN, {"host_shim": "true", "macvlan_mode": "passthru"},
     ("option host_shim", "passthru")),
    (MACVLAN, {"host_shim": "true", "macvlan_mode": "private"},
     ("option host_shim", "macvlan_mode=private")),
    (IPVLAN, {"host_shim": "true", "ipvlan_flag": "private"},
     ("option host_shim", "ipvlan_flag=private")),
])
def test_bad_options_are_refused_by_name(driver: Any, raw: dict[str, str],
                                         words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgument) as e:
        driver.parse_options(raw)
    for w in words:
        assert w in e.value.message


def test_unknown_option_hint_lists_the_options() -> None:
    with pytest.raises(InvalidArgument) as e:
        IPVLAN.parse_options({"mode": "l3"}).to_dict()
    assert e.value.hint == "ipvlan options: parent, ipvlan_mode, ipvlan_flag, host_shim"


@pytest.mark.parametrize("value, parsed", [
    ("eth0", Parent("eth0")),
    ("eth0.10", Parent("eth0.10", "eth0", 10)),
    ("bond0.4094", Parent("bond0.4094", "bond0", 4094)),
    ("br.lan", Parent("br.lan")),  # not a VLAN id: an ordinary link name
    ("v.1.2", Parent("v.1.2", "v.1", 2)),
])
def test_parent_names_and_vlan_sub_interfaces(value: str, parsed: Parent) -> None:
    assert Parent.parse(value) == parsed


# --------------------------------------------------------------------------- helpers
def state(ctl: Controller, host: FakeHostLinks) -> dict[str, Any]:
    """Everything a refused request must leave alone."""
    return {
        "links": {n: (link.kind, link.alias, link.up, list(link.addresses))
                  for n, link in host.live().items()},
        "routes": list(host.kernel.host_routes),
        "networks": [n.to_dict() for n in ctl.list_networks()],
        "stored": sorted(n.name for n in ctl.store.load().networks),
        "sandboxes": [s.name for s in ctl.list_sandboxes()],
        "endpoints": sorted(e.id for e in ctl.endpoints_of()),
    }


def refused(ctl: Controller, host: FakeHostLinks, fn: Callable[[], object],
            error: type[CnmError], *words: str) -> CnmError:
    before = state(ctl, host)
    with pytest.raises(error) as e:
        fn()
    assert state(ctl, host) == before
    for w in words:
        assert w in e.value.message or w in (e.value.hint or ""), (w, e.value.message)
    return e.value


def create(ctl: Controller, name: str, driver: str = "macvlan", subnet: str = "10.50.0.0/24",
           **kw: Any) -> Any:
    return ctl.create_network(NetworkSpec(name, driver=driver, subnets=(subnet,), **kw))


def sandbox_link(sbx: FakeSandboxLinks, ctl: Controller, sandbox: str, ifname: str = "eth0"
                 ) -> Any:
    return sbx.interfaces(ctl.netns_path(ctl.sandbox(sandbox)))[ifname]


# --------------------------------------------------------------------------- parents
def test_macvlan_on_a_parent_the_host_has(ctl: Controller, host: FakeHostLinks,
                                          sbx: FakeSandboxLinks) -> None:
    parent = host.add_parent("eth1")
    before = set(host.live())
    net = create(ctl, "lan", options={"parent": "eth1"})
    assert net.options == {"macvlan_mode": "bridge", "parent": "eth1", "host_shim": "false"}
    assert set(host.live()) == before  # nothing new in the host: the parent is the user's
    ctl.create_sandbox(SandboxSpec("a", network="lan", mac="02:00:00:00:00:0a"))
    ctl.create_sandbox(SandboxSpec("b", network="lan"))
    a, b = sandbox_link(sbx, ctl, "a"), sandbox_link(sbx, ctl, "b")
    assert a.kind == b.kind == "macvlan" and a.lower is parent and a.mode == "bridge"
    assert a.mac == "02:00:00:00:00:0a" and b.mac not in (a.mac, parent.mac)
    assert a.addresses == ["10.50.0.2/24"] and a.up
    path = ctl.netns_path(ctl.sandbox("a"))
    assert sbx.default_routes(path) == {4: ("10.50.0.1", "eth0")}
    assert [e.mac for e in ctl.endpoints_of(network=net.id)] == [a.mac, b.mac]
    # The slave lives in the sandbox only: leaving deletes it there.
    ctl.disconnect("lan", "a")
    assert "eth0" not in sbx.interfaces(path)
    ctl.remove_sandbox("b")
    ctl.remove_network("lan")
    assert host.link("eth1") is parent and parent.up  # never the user's to remove


def test_ipvlan_endpoints_have_the_parents_mac(ctl: Controller, host: FakeHostLinks,
                                               sbx: FakeSandboxLinks) -> None:
    parent = host.add_parent("eth1")
    create(ctl, "l2", driver="ipvlan", options={"parent": "eth1"})
    ctl.create_sandbox(SandboxSpec("a", network="l2"))
    link = sandbox_link(sbx, ctl, "a")
    assert link.kind == "ipvlan" and link.mode == "l2" and link.mac == parent.mac
    assert ctl.endpoints_of(sandbox=ctl.sandbox("a").id)[0].mac == parent.mac
    refused(ctl, host, lambda: ctl.create_sandbox(SandboxSpec(
        "b", network="l2", mac="02:00:00:00:00:0b")), InvalidArgument, "--mac-address",
        "parent's MAC")


@pytest.mark.parametrize("mode", ["l3", "l3s"])
def test_ipvlan_l3_routes_everything_out_of_the_interface(
        mode: str, ctl: Controller, host: FakeHostLinks, sbx: FakeSandboxLinks) -> None:
    host.add_parent("eth1")
    create(ctl, "routed", driver="ipvlan", options={"parent": "eth1", "ipvlan_mode": mode})
    sb = ctl.create_sandbox(SandboxSpec("a", network="routed"))
    assert sbx.default_routes(ctl.netns_path(sb)) == {4: ("0.0.0.0", "eth0")}
    ep = ctl.endpoints_of(sandbox=sb.id)[0]
    assert ep.gateway4 == "0.0.0.0"


def test_parent_missing_down_foreign_or_a_port_is_refused(ctl: Controller,
                                                          host: FakeHostLinks) -> None:
    host.add_parent("down0", up=False)
    host.add_parent("port0", master="br-lan")
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "eth9"}), NotFound,
            "parent link eth9 does not exist")
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "down0"}), Conflict,
            "down0 is down", "ip link set down0 up")
    refused(ctl, host, lambda: create(ctl, "n", driver="ipvlan", options={"parent": "port0"}),
            Conflict, "port of br-lan")
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "cnm0"}), Conflict,
            "cnm0 is cnm's own")
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "lo"}), InvalidArgument,
            "not an Ethernet link")


def test_a_kernel_without_the_link_type_is_unsupported(ctl: Controller, host: FakeHostLinks,
                                                       kernel: FakeKernel) -> None:
    host.add_parent("eth1")
    kernel.features.discard("ipvlan")
    e = refused(ctl, host, lambda: create(ctl, "n", driver="ipvlan",
                                          options={"parent": "eth1"}), Unsupported,
                "no ipvlan links", "module ipvlan")
    assert e.code == "unsupported"
    kernel.features.discard("vlan")
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "eth1.10"}), Unsupported,
            "no vlan links", "module 8021q", "eth1.10")
    kernel.features.discard("dummy")
    refused(ctl, host, lambda: create(ctl, "n"), Unsupported, "no dummy links", "-o parent")


# --------------------------------------------------------------------------- 802.1q
def test_vlan_parent_is_made_and_removed_with_the_network(ctl: Controller,
                                                          host: FakeHostLinks,
                                                          sbx: FakeSandboxLinks) -> None:
    eth1 = host.add_parent("eth1")
    net = create(ctl, "v10", options={"parent": "eth1.10"})
    vlan = host.link("eth1.10")
    assert vlan is not None and vlan.kind == "vlan" and vlan.lower is eth1 and vlan.up
    assert names.parse_alias(vlan.alias) == ("network", net.id)
    ctl.create_sandbox(SandboxSpec("a", network="v10"))
    assert sandbox_link(sbx, ctl, "a").lower is vlan
    ctl.remove_sandbox("a")
    ctl.remove_network("v10")
    assert host.link("eth1.10") is None and host.link("eth1") is eth1


def test_an_existing_vlan_parent_is_the_users_and_stays(ctl: Controller,
                                                        host: FakeHostLinks) -> None:
    host.add_parent("eth1.20")
    create(ctl, "v20", options={"parent": "eth1.20"})
    ctl.remove_network("v20")
    assert host.link("eth1.20") is not None


def test_vlan_parent_on_a_missing_or_down_base(ctl: Controller, host: FakeHostLinks) -> None:
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "eth9.10"}), NotFound,
            "eth9 (the base of parent eth9.10) does not exist")
    host.add_parent("eth2", up=False)
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "eth2.10"}), Conflict,
            "eth2 is down")


def test_a_failed_create_removes_the_vlan_it_made(ctl: Controller, host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    host.fail_on("ensure_shim", KernelError("boom"))
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "eth1.30", "host_shim": "1"},
                                      aux_addresses={"host": "10.50.0.254"}), KernelError,
            "boom")
    assert host.link("eth1.30") is None


# --------------------------------------------------------------------------- clashes
def test_one_network_per_parent(ctl: Controller, host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    create(ctl, "lan", options={"parent": "eth1"})
    # Another subnet does not make it another parent (Docker refuses this too).
    e = refused(ctl, host, lambda: create(ctl, "lan2", subnet="10.51.0.0/24",
                                          options={"parent": "eth1"}), Conflict,
                'parent eth1 is already used by network "lan" (macvlan)')
    assert e.hint is not None and "-o parent=eth1.VID" in e.hint and '"lan"' in e.hint
    # macvlan and ipvlan cannot share a parent at all.
    refused(ctl, host, lambda: create(ctl, "ip", driver="ipvlan", subnet="10.52.0.0/24",
                                      options={"parent": "eth1"}), Conflict,
            'network "lan" (macvlan)')
    # Its 802.1q sub-interfaces are other parents; each is one network's.
    create(ctl, "v10", subnet="10.53.0.0/24", options={"parent": "eth1.10"})
    create(ctl, "v11", driver="ipvlan", subnet="10.54.0.0/24", options={"parent": "eth1.11"})
    e = refused(ctl, host, lambda: create(ctl, "again", driver="ipvlan",
                                          subnet="10.55.0.0/24",
                                          options={"parent": "eth1.10"}), Conflict,
                '"v10"')
    assert e.hint is not None and "another VLAN id (-o parent=eth1.VID)" in e.hint
    # Once a network is gone its parent is free again.
    ctl.remove_network("lan")
    create(ctl, "ip", driver="ipvlan", subnet="10.52.0.0/24", options={"parent": "eth1"})


def test_another_networks_own_links_are_no_parents(ctl: Controller, host: FakeHostLinks) -> None:
    net = create(ctl, "internal")
    dummy = names.dummy_name(net.id)
    refused(ctl, host, lambda: create(ctl, "n", subnet="10.51.0.0/24",
                                      options={"parent": dummy}), Conflict, "cnm's own")


def test_internal_and_a_parent_do_not_go_together(ctl: Controller, host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    refused(ctl, host, lambda: create(ctl, "n", internal=True, options={"parent": "eth1"}),
            InvalidArgument, "--internal", "parent=eth1")


# --------------------------------------------------------------------------- dummy parent
@pytest.mark.parametrize("driver", ["macvlan", "ipvlan"])
def test_no_parent_makes_a_dummy_the_network_owns(driver: str, ctl: Controller,
                                                  host: FakeHostLinks,
                                                  sbx: FakeSandboxLinks) -> None:
    net = create(ctl, "local", driver=driver)
    assert "parent" not in net.options
    dummy = host.link(names.dummy_name(net.id))
    assert dummy is not None and dummy.kind == "dummy" and dummy.up
    assert names.parse_alias(dummy.alias) == ("network", net.id)
    ctl.create_sandbox(SandboxSpec("a", network="local"))
    ctl.create_sandbox(SandboxSpec("b", network="local"))
    assert sandbox_link(sbx, ctl, "a").lower is dummy
    # Internal to the host: no gateway, no default route.
    assert sbx.default_routes(ctl.netns_path(ctl.sandbox("a"))) == {}
    assert ctl.endpoints_of(sandbox=ctl.sandbox("a").id)[0].gateway4 is None
    with pytest.raises(InUse):
        ctl.remove_network("local")
    ctl.remove_sandbox("a")
    ctl.remove_sandbox("b")
    ctl.remove_network("local")
    assert host.link(names.dummy_name(net.id)) is None


def test_restart_rebuilds_a_lost_dummy_and_replumbs_its_endpoints(
        make_controller: MakeController, host: FakeHostLinks, sbx: FakeSandboxLinks,
        kernel: FakeKernel) -> None:
    ctl = make_controller()
    net = create(ctl, "local")
    ctl.create_sandbox(SandboxSpec("a", network="local"))
    path = ctl.netns_path(ctl.sandbox("a"))
    dummy = host.link(names.dummy_name(net.id))
    assert dummy is not None
    with kernel.lock:
        kernel.delete_link(dummy)  # someone deleted it: the kernel took the slave along
    assert "eth0" not in sbx.interfaces(path)
    ctl = make_controller()
    new = host.link(names.dummy_name(net.id))
    assert new is not None and new is not dummy
    link = sbx.interfaces(path)["eth0"]
    assert link.lower is new and link.addresses == ["10.50.0.2/24"] and link.up


def test_restart_keeps_the_vlan_parent_it_made_and_brings_it_up(make_controller: MakeController,
                                               host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    ctl = make_controller()
    create(ctl, "v10", options={"parent": "eth1.10"})
    vlan = host.link("eth1.10")
    assert vlan is not None
    vlan.up = False  # someone took cnm's own sub-interface down
    ctl = make_controller()
    assert host.link("eth1.10") is vlan and vlan.up
    ctl.remove_network("v10")
    assert host.link("eth1.10") is None


# --------------------------------------------------------------------------- passthru
def test_passthru_takes_one_endpoint_with_the_parents_mac(ctl: Controller,
                                                          host: FakeHostLinks,
                                                          sbx: FakeSandboxLinks) -> None:
    parent = host.add_parent("eth1")
    create(ctl, "pt", options={"parent": "eth1", "macvlan_mode": "passthru"})
    refused(ctl, host, lambda: ctl.create_sandbox(SandboxSpec(
        "a", network="pt", mac="02:00:00:00:00:0a")), InvalidArgument, "--mac-address")
    ctl.create_sandbox(SandboxSpec("a", network="pt"))
    assert sandbox_link(sbx, ctl, "a").mac == parent.mac
    ctl.create_sandbox(SandboxSpec("b", network="bridge"))
    refused(ctl, host, lambda: ctl.connect(ConnectSpec("pt", "b")), InUse,
            'sandbox "a" holds it', "passthru")
    refused(ctl, host, lambda: ctl.create_sandbox(SandboxSpec("c", network="pt")), InUse,
            'sandbox "a"')
    ctl.disconnect("pt", "a")
    ctl.connect(ConnectSpec("pt", "b"))
    assert sandbox_link(sbx, ctl, "b", "eth1").mac == parent.mac


def test_the_kernels_passthru_rule_is_a_clear_error(ctl: Controller, host: FakeHostLinks,
                                                    kernel: FakeKernel,
                                                    sbx: FakeSandboxLinks) -> None:
    """A macvlan made outside cnm on the parent: the kernel refuses passthru; nothing stays."""
    parent = host.add_parent("eth1")
    with kernel.lock:
        kernel.add_link("host", "foreign", "macvlan", "foreign", lower=parent, mode="bridge")
    create(ctl, "pt", options={"parent": "eth1", "macvlan_mode": "passthru"})
    refused(ctl, host, lambda: ctl.create_sandbox(SandboxSpec("a", network="pt")), InUse,
            "passthru one must be its only one")
    assert sbx.namespaces() == []


# --------------------------------------------------------------------------- host shim
def test_host_shim_needs_an_address(ctl: Controller, host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "eth1", "host_shim": "true"}),
            InvalidArgument, "option host_shim", "--aux-address host=IP")


@pytest.mark.parametrize("driver, kind_mode", [("macvlan", "bridge"), ("ipvlan", "l3")])
def test_host_shim_is_made_and_removed_with_the_network(driver: str, kind_mode: str,
                                                        ctl: Controller,
                                                        host: FakeHostLinks) -> None:
    parent = host.add_parent("eth1")
    mode_key = f"{driver}_mode"
    opts = {"parent": "eth1", "host_shim": "true"}
    if driver == "ipvlan":
        opts[mode_key] = "l3"
    else:
        opts[mode_key] = "vepa"  # the shim is in bridge mode all the same
    net = ctl.create_network(NetworkSpec("lan", driver=driver, subnets=("10.50.0.0/24",),
                                         ip_ranges=("10.50.0.64/26",),
                                         aux_addresses={"host": "10.50.0.254"}, options=opts))
    shim = host.link(names.shim_name(net.id))
    assert shim is not None and shim.kind == driver and shim.mode == kind_mode
    assert shim.lower is parent and shim.up
    assert shim.addresses == ["10.50.0.254/32"]
    assert names.parse_alias(shim.alias) == ("network", net.id)
    assert (("10.50.0.64/26", shim.name)) in host.kernel.host_routes
    ctl.remove_network("lan")
    assert host.link(names.shim_name(net.id)) is None
    assert not [r for r in host.kernel.host_routes if r[1] == shim.name]


def test_host_shim_routes_the_subnet_without_an_ip_range(ctl: Controller,
                                                         host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    net = create(ctl, "lan", options={"parent": "eth1", "host_shim": "true"},
                 aux_addresses={"host": "10.50.0.254"})
    assert ("10.50.0.0/24", names.shim_name(net.id)) in host.kernel.host_routes


def test_a_foreign_link_with_the_shims_name_is_left_alone(ctl: Controller,
                                                          host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    net = create(ctl, "lan", options={"parent": "eth1"})
    # delete_owned removes only what carries the network's alias.
    host.add_parent(names.shim_name(net.id))
    ctl.remove_network("lan")
    assert host.link(names.shim_name(net.id)) is not None


def test_name_clash_of_a_slave_in_the_sandbox(ctl: Controller, host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    create(ctl, "lan", options={"parent": "eth1"})
    host.fail_on("add_slave", AlreadyExists("an interface eth0 already exists there"))
    refused(ctl, host, lambda: ctl.create_sandbox(SandboxSpec("a", network="lan")),
            AlreadyExists, "eth0")


# --------------------------------------------------------------------------- the LAN
def test_the_hosts_address_on_the_parent_is_its_lan_not_a_clash(ctl: Controller,
                                                                 host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    host.add_address("eth1", "10.50.0.10/24")
    host.add_parent("eth2")
    # Not on its own parent, and not for a bridge: the host's address is a clash.
    refused(ctl, host, lambda: create(ctl, "n", options={"parent": "eth2"}), Conflict,
            "overlaps address 10.50.0.10/24 on eth1")
    refused(ctl, host, lambda: create(ctl, "n", driver="bridge"), Conflict,
            "overlaps address 10.50.0.10/24 on eth1")
    # On its parent it is the LAN; but no sandbox may be given the host's address.
    e = refused(ctl, host, lambda: create(ctl, "n", options={"parent": "eth1"}), Conflict,
                "the host's address 10.50.0.10 on eth1 is in 10.50.0.0/24")
    assert e.hint == ("reserve it (--aux-address eth1=10.50.0.10) or give an --ip-range "
                      "that leaves it out")
    create(ctl, "ranged", options={"parent": "eth1"}, ip_ranges=("10.50.0.128/25",))
    ctl.remove_network("ranged")
    create(ctl, "aux", driver="ipvlan", options={"parent": "eth1"},
           aux_addresses={"eth1": "10.50.0.10"})
    ctl.remove_network("aux")
    net = create(ctl, "routed", options={"parent": "eth1"}, gateways=("10.50.0.10",))
    assert net.subnets[0].gateway == "10.50.0.10"  # the host is the LAN's router


def test_an_automatic_subnet_avoids_the_parents_lan(ctl: Controller,
                                                    host: FakeHostLinks) -> None:
    host.add_parent("eth1")
    host.add_address("eth1", "172.18.0.10/16")
    net = ctl.create_network(NetworkSpec("auto", driver="macvlan",
                                         options={"parent": "eth1"}))
    assert net.subnets[0].subnet not in ("172.17.0.0/16", "172.18.0.0/16")
