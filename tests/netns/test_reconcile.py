"""At start, a controller makes the kernel match the store: things changed behind cnm's
back are removed or rebuilt. A "restart" is a second Controller on the same store, config
and kernel adapters, as the daemon would build after a crash."""

from __future__ import annotations

import os

import pytest

from cnm import names
from cnm.core import Controller
from cnm.drivers.bridge import bridge_of
from cnm.drivers.registry import builtin
from cnm.model import NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, addresses, can_ping, default_route, in_ns, links, run
from tests.netns.statecheck import stored


def restart(stack: Stack) -> Controller:
    old = stack.controller
    new = Controller(stack.config, old.store, old.ctx, builtin(), old.netfilter)
    new.start()
    stack.controller = new
    return new


def veth_of(c: Controller, sandbox: str) -> str:
    (ep,) = c.endpoints_of(sandbox=c.sandbox(sandbox).id)
    return names.veth_name(ep.id)


def test_sandbox_whose_namespace_was_unmounted_is_removed_at_start(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.80.0.0/24",)))
    lost = c.create_sandbox(SandboxSpec(name="lost", network="web"))  # 10.80.0.2
    c.create_sandbox(SandboxSpec(name="kept", network="web"))  # 10.80.0.3
    lost_path, lost_veth = stack.netns("lost"), veth_of(c, "lost")
    run("umount", lost_path)  # behind cnm's back

    c = restart(stack)
    assert [s.name for s in c.list_sandboxes()] == ["kept"]
    state = stored(stack)
    assert [s["name"] for s in state["sandboxes"]] == ["kept"]
    assert lost.id not in {e["sandbox_id"] for e in state["endpoints"]}
    assert not os.path.exists(lost_path)
    assert not os.path.exists(os.path.join(stack.config.run_dir, "sandboxes", lost.id))
    stack.host.reap()
    assert lost_veth not in links(stack.host_ns.path)
    # Its address is free again: the next sandbox gets it.
    c.create_sandbox(SandboxSpec(name="next", network="web"))
    assert addresses(stack.netns("next"), "eth0") == ["10.80.0.2/24"]
    assert can_ping(stack.netns("next"), "10.80.0.3")


def test_stale_cnm_links_are_removed_at_start_and_foreign_ones_kept(stack: Stack) -> None:
    c = stack.controller
    c.create_sandbox(SandboxSpec(name="a"))
    host = stack.host_ns.name

    def ip(*args: str) -> None:
        run("ip", "-n", host, "link", *args)

    ip("add", "cnmvstale0", "type", "veth", "peer", "name", "cnmpstale0")
    ip("set", "cnmvstale0", "alias", "cnm:endpoint:deadbeef")
    ip("add", "cnmbstale0", "type", "bridge")
    ip("set", "cnmbstale0", "alias", "cnm:network:cafebabe")
    # Not cnm's: no alias, someone else's alias, and a malformed cnm-looking one.
    ip("add", "mine0", "type", "veth", "peer", "name", "mine1")
    ip("add", "theirs0", "type", "bridge")
    ip("set", "theirs0", "alias", "docker:network:deadbeef")
    ip("add", "odd0", "type", "bridge")
    ip("set", "odd0", "alias", "cnm:odd")
    before = set(links(stack.host_ns.path))

    restart(stack)
    after = set(links(stack.host_ns.path))
    assert before - after == {"cnmvstale0", "cnmpstale0", "cnmbstale0"}
    assert after == before - {"cnmvstale0", "cnmpstale0", "cnmbstale0"}
    assert can_ping(stack.netns("a"), "172.17.0.1")  # cnm's own links are untouched


def test_endpoint_whose_host_veth_was_deleted_is_replumbed_at_start(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.81.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web"))
    c.create_sandbox(SandboxSpec(name="b", network="web"))
    a, b = stack.netns("a"), stack.netns("b")
    (ep,) = c.endpoints_of(sandbox=c.sandbox("a").id)
    run("ip", "-n", stack.host_ns.name, "link", "del", names.veth_name(ep.id))
    assert "eth0" not in links(a)  # its peer went with it
    assert not can_ping(b, "10.81.0.2")

    c = restart(stack)
    assert addresses(a, "eth0") == ["10.81.0.2/24"]
    assert links(a)["eth0"]["address"] == ep.mac
    assert default_route(a) == "10.81.0.1 dev eth0"
    host_end = links(stack.host_ns.path)[names.veth_name(ep.id)]
    assert host_end["master"] == bridge_of(c.network("web"))
    assert can_ping(a, "10.81.0.3")
    assert can_ping(b, "10.81.0.2")


def test_endpoint_whose_veth_was_detached_from_its_bridge_is_replumbed_at_start(
        stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.86.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web"))
    c.create_sandbox(SandboxSpec(name="b", network="web"))
    a, b = stack.netns("a"), stack.netns("b")
    run("ip", "-n", stack.host_ns.name, "link", "set", veth_of(c, "a"), "nomaster")
    assert not can_ping(b, "10.86.0.2")

    c = restart(stack)
    host_end = links(stack.host_ns.path)[veth_of(c, "a")]
    assert host_end["master"] == bridge_of(c.network("web"))
    assert addresses(a, "eth0") == ["10.86.0.2/24"]
    assert can_ping(b, "10.86.0.2")


def test_stale_namespace_and_files_under_the_run_dir_are_removed_at_start(
        stack: Stack) -> None:
    c = stack.controller
    c.create_sandbox(SandboxSpec(name="a"))
    run_dir = stack.config.run_dir
    stale_ns = os.path.join(run_dir, "netns", "f" * 64)
    stale_files = os.path.join(run_dir, "sandboxes", "f" * 64)
    open(stale_ns, "w").close()
    run("unshare", f"--net={stale_ns}", "true")  # a throwaway namespace bound there
    os.makedirs(stale_files)
    open(os.path.join(stale_files, "hosts"), "w").close()
    assert in_ns(stale_ns, "ip", "link").returncode == 0

    restart(stack)
    assert os.listdir(os.path.join(run_dir, "netns")) == [c.sandbox("a").id]
    assert os.listdir(os.path.join(run_dir, "sandboxes")) == [c.sandbox("a").id]
    with open("/proc/self/mountinfo") as f:
        assert stale_ns not in f.read()
    assert can_ping(stack.netns("a"), "172.17.0.1")


@pytest.mark.parametrize("network", ["web", "bridge"])
def test_endpoints_of_a_bridge_deleted_behind_cnms_back_work_after_start(
        stack: Stack, network: str) -> None:
    """The bridge is recreated at start; its endpoints' veths, left without a master when
    it went, must be put back on it, or the sandboxes stay cut off."""
    c = stack.controller
    if network != "bridge":
        c.create_network(NetworkSpec(name=network, subnets=("10.82.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network=network))
    c.create_sandbox(SandboxSpec(name="b", network=network))
    net = c.network(network)
    gateway = net.subnets[0].gateway or ""
    b_ip = addresses(stack.netns("b"), "eth0")[0].split("/")[0]
    run("ip", "-n", stack.host_ns.name, "link", "del", bridge_of(net))
    assert not can_ping(stack.netns("a"), b_ip)

    c = restart(stack)
    host = links(stack.host_ns.path)
    for sb in ("a", "b"):
        assert host[veth_of(c, sb)].get("master") == bridge_of(net)
    assert default_route(stack.netns("a")) == f"{gateway} dev eth0"
    assert can_ping(stack.netns("a"), gateway)
    assert can_ping(stack.netns("a"), b_ip)
