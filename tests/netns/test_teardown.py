"""Removing everything a user made leaves the host as a fresh start leaves it."""

from __future__ import annotations

import os

from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, addresses, links
from tests.netns.statecheck import mounts_under, stored


def test_removing_all_sandboxes_and_user_networks_leaves_only_lo_and_cnm0(
        stack: Stack) -> None:
    c = stack.controller
    host = stack.host_ns.path
    assert set(links(host)) == {"lo", "cnm0"}
    c.create_network(NetworkSpec(name="u1", subnets=("10.90.0.0/24",),
                                 options={"bridge_name": "br-u1", "mtu": "1400"}))
    c.create_network(NetworkSpec(name="u2", ipv6=True))
    c.create_network(NetworkSpec(name="unused", subnets=("10.91.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="plain"))
    c.create_sandbox(SandboxSpec(name="multi", network="u1"))
    c.connect(ConnectSpec(network="u2", sandbox="multi"))
    c.connect(ConnectSpec(network="bridge", sandbox="multi"))
    c.disconnect("u2", "multi")  # one retired endpoint on the way
    c.create_sandbox(SandboxSpec(name="v6", network="u2"))
    c.create_sandbox(SandboxSpec(name="lonely", network="none"))
    c.create_sandbox(SandboxSpec(name="hostly", network="host"))
    assert len(links(host)) > 2 + 3  # three more bridges and the veths

    for sb in c.list_sandboxes():
        c.remove_sandbox(sb.id)
    assert sorted(c.prune_networks()) == ["u1", "u2", "unused"]

    # No reap here: remove_sandbox returns with every link of the sandbox gone.
    assert set(links(host)) == {"lo", "cnm0"}
    assert addresses(host, "cnm0") == ["172.17.0.1/16"]
    run = stack.config.run_dir
    assert os.listdir(os.path.join(run, "netns")) == []
    assert os.listdir(os.path.join(run, "sandboxes")) == []
    assert mounts_under(run) == []
    state = stored(stack)
    assert sorted(n["name"] for n in state["networks"]) == ["bridge", "host", "none"]
    assert state["sandboxes"] == [] and state["endpoints"] == []
    assert [n.name for n in c.list_networks()] == ["bridge", "host", "none"]
