"""A failure at any kernel step of a disconnect leaves nothing half-made: the sandbox is
either still connected as before (its interface, address, route and published port all
there, and it answers) or, once the disconnect is retried, disconnected with nothing left
(no link, no address, no element, no row): the kernel matches the store either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnm.errors import KernelError
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, can_ping
from tests.netns.kernelcheck import drift
from tests.netns.statecheck import snapshot
from tests.netns.test_rollback import failing

# (adapter on the context, method): the kernel steps of a disconnect, in order.
LEAVE_STEPS = [("host", "retire"), ("sandbox", "retire"), ("sandbox", "set_default_routes")]


@pytest.mark.parametrize(("adapter", "method"), LEAVE_STEPS, ids=[m for _, m in LEAVE_STEPS])
def test_a_failed_disconnect_leaves_nothing_half_made(stack: Stack, adapter: str,
                                                      method: str) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="back", subnets=("10.63.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="peer", network="back"))   # 10.63.0.2
    # First on an internal network (no gateway), so that back holds the default route and
    # its disconnect runs every step, the route's too.
    c.create_network(NetworkSpec(name="quiet", subnets=("10.64.0.0/24",), internal=True))
    c.create_sandbox(SandboxSpec(name="a", network="quiet"))
    before = snapshot(stack)
    c.connect(ConnectSpec(network="back", sandbox="a", ports=("8080:80",)))

    boom = KernelError(f"injected failure in {method}")
    with failing(c.ctx, adapter, method, boom):
        try:
            c.disconnect("back", "a")
        except KernelError as e:
            assert e is boom
    stack.host.reap()  # what was retired is on its way out: make that happen now
    cfg = stack.config
    assert drift(stack.host_ns.path, Path(cfg.state_dir), Path(cfg.run_dir)) == []
    assert [d.to_dict() for d in c.doctor()] == []  # and cnm doctor agrees
    still = [e for e in c.endpoints_of(sandbox=c.sandbox("a").id)
             if e.network_id == c.network("back").id]
    if still:  # still connected: then all of it works
        assert can_ping(stack.netns("a"), "10.63.0.2")
        c.disconnect("back", "a")
    assert snapshot(stack) == before
