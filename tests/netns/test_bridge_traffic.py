"""Sandboxes on a bridge reach each other with real packets; the default route is right."""

from __future__ import annotations

from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, addresses, can_ping, default_route


def test_two_sandboxes_on_a_user_bridge_ping_each_other(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.20.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web"))
    c.create_sandbox(SandboxSpec(name="b", network="web"))
    assert addresses(stack.netns("a"), "eth0") == ["10.20.0.2/24"]
    assert addresses(stack.netns("b"), "eth0") == ["10.20.0.3/24"]
    assert default_route(stack.netns("a")) == "10.20.0.1 dev eth0"
    assert can_ping(stack.netns("a"), "10.20.0.3")
    assert can_ping(stack.netns("b"), "10.20.0.2")


def test_sandbox_is_unreachable_after_disconnect(stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.21.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web"))
    c.create_sandbox(SandboxSpec(name="b", network="web"))
    assert can_ping(stack.netns("a"), "10.21.0.3")
    c.disconnect("web", "b")
    assert not can_ping(stack.netns("a"), "10.21.0.3")
    # The name eth0 is free again at once (the retired interface was renamed away).
    c.connect(ConnectSpec(network="web", sandbox="b"))
    assert addresses(stack.netns("b"), "eth0") == ["10.21.0.4/24"]
    assert can_ping(stack.netns("a"), "10.21.0.4")
