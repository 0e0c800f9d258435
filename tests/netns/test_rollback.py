"""A failure half way through an operation leaves nothing behind, on the real kernel.

A fault is injected in front of a real adapter (the kernel work before it really happens),
then the test checks every side: the error is the one raised, and the host namespace, the
sandbox's own interfaces and routes, the controller, the store and the run dir are as
before; the address that was being given out is free again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cnm.errors import CnmError, Internal, KernelError
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing import Faulty
from cnm.testing.netns import Stack, addresses, can_ping, default_route, links
from tests.netns.statecheck import snapshot, stored


@contextmanager
def failing(owner: Any, attr: str, method: str, exc: CnmError,
            after: int = 0) -> Iterator[Faulty[Any]]:
    """Put a Faulty in front of ``owner.attr`` for the duration; check that it fired."""
    real = getattr(owner, attr)
    proxy = Faulty(real).fail_on(method, exc, after=after)
    setattr(owner, attr, proxy)
    try:
        yield proxy
    finally:
        setattr(owner, attr, real)
    assert proxy.faults.pending() == 0, f"{method} was never called: no fault was injected"


# (adapter on the context, method): the kernel steps of a join, in order.
JOIN_STEPS = [("host", "add_veth"), ("sandbox", "configure"),
              ("sandbox", "set_default_routes")]
STEP_IDS = [m for _, m in JOIN_STEPS]


@pytest.mark.parametrize(("adapter", "method"), JOIN_STEPS, ids=STEP_IDS)
def test_failed_connect_leaves_nothing(stack: Stack, adapter: str, method: str) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.60.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="peer", network="web"))  # 10.60.0.2
    # First on an internal network (no gateway), so that the connect to web sets the
    # default route: every step of a join runs.
    c.create_network(NetworkSpec(name="quiet", subnets=("10.59.0.0/24",), internal=True))
    c.create_sandbox(SandboxSpec(name="a", network="quiet"))
    a = stack.netns("a")
    before = snapshot(stack)
    a_links, a_addrs, a_route = set(links(a)), addresses(a, "eth0"), default_route(a)
    assert a_links == {"lo", "eth0"}

    boom = KernelError(f"injected failure in {method}")
    with failing(c.ctx, adapter, method, boom), pytest.raises(KernelError) as info:
        c.connect(ConnectSpec(network="web", sandbox="a"))
    assert info.value is boom

    assert [e.network_id for e in c.endpoints_of(sandbox=c.sandbox("a").id)] == [
        c.network("quiet").id]
    assert snapshot(stack) == before  # reaps the host ns first: no veth is left there
    assert set(links(a)) == a_links
    assert addresses(a, "eth0") == a_addrs
    assert default_route(a) == a_route
    assert [d.to_dict() for d in c.doctor()] == []  # and cnm doctor agrees
    # The address is free: the retried connect gets the very one the failed one had.
    ep = c.connect(ConnectSpec(network="web", sandbox="a"))
    assert ep.ipv4 == "10.60.0.3/24"
    assert addresses(a, "eth1") == ["10.60.0.3/24"]
    assert can_ping(a, "10.60.0.2")


@pytest.mark.parametrize(("adapter", "method"),
                         [("sandbox", "create_netns"), *JOIN_STEPS],
                         ids=["create_netns", *STEP_IDS])
def test_failed_create_sandbox_leaves_nothing(stack: Stack, adapter: str,
                                              method: str) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.61.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="peer", network="web"))  # 10.61.0.2
    before = snapshot(stack)
    ns_dir = os.path.join(stack.config.run_dir, "netns")
    namespaces = sorted(os.listdir(ns_dir))

    boom = KernelError(f"injected failure in {method}")
    with failing(c.ctx, adapter, method, boom), pytest.raises(KernelError) as info:
        c.create_sandbox(SandboxSpec(name="b", network="web"))
    assert info.value is boom

    # Namespace unbound and its file gone, files dir gone, no veth, no record anywhere.
    assert sorted(os.listdir(ns_dir)) == namespaces
    assert snapshot(stack) == before
    assert [s.name for s in c.list_sandboxes()] == ["peer"]
    sb = c.create_sandbox(SandboxSpec(name="b", network="web"))
    assert addresses(stack.netns("b"), "eth0") == ["10.61.0.3/24"]
    assert can_ping(stack.netns("b"), "10.61.0.2")
    assert sb.name in {s["name"] for s in stored(stack)["sandboxes"]}


def test_failed_create_network_removes_its_bridge(stack: Stack) -> None:
    """The store refuses the commit after the bridge was made: the bridge must go."""
    c = stack.controller
    before = snapshot(stack)
    boom = Internal("injected: store commit failed")
    spec = NetworkSpec(name="web", subnets=("10.62.0.0/24",), options={"bridge_name": "br-web"})
    with failing(c, "store", "transaction", boom), pytest.raises(Internal) as info:
        c.create_network(spec)
    assert info.value is boom
    assert "br-web" not in links(stack.host_ns.path)
    assert snapshot(stack) == before
    # Nothing stale blocks a retry: same name, same subnet, same bridge name.
    c.create_network(spec)
    c.create_sandbox(SandboxSpec(name="a", network="web"))
    assert can_ping(stack.netns("a"), "10.62.0.1")


def test_failed_create_network_on_bridge_step_leaves_nothing(stack: Stack) -> None:
    c = stack.controller
    before = snapshot(stack)
    boom = KernelError("injected failure in ensure_bridge")
    with failing(c.ctx, "host", "ensure_bridge", boom), pytest.raises(KernelError):
        c.create_network(NetworkSpec(name="web", subnets=("10.63.0.0/24",)))
    assert snapshot(stack) == before


def test_store_failure_after_the_kernel_work_of_a_connect_undoes_it_all(stack: Stack) -> None:
    """The last step fails: the veth, address, default route and files were all done."""
    c = stack.controller
    c.create_network(NetworkSpec(name="priv", subnets=("10.64.0.0/24",), internal=True))
    c.create_network(NetworkSpec(name="web", subnets=("10.65.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="priv"))
    a = stack.netns("a")
    assert default_route(a) is None
    before = snapshot(stack)
    boom = Internal("injected: store commit failed")
    with failing(c, "store", "transaction", boom), pytest.raises(Internal):
        c.connect(ConnectSpec(network="web", sandbox="a"))
    assert default_route(a) is None  # the route the connect had set is gone again
    assert snapshot(stack) == before  # reaps the retired veth; the hosts file included
    assert set(links(a)) == {"lo", "eth0"}
    ep = c.connect(ConnectSpec(network="web", sandbox="a"))
    assert ep.ipv4 == "10.65.0.2/24"
    assert default_route(a) == "10.65.0.1 dev eth1"


def test_store_failure_after_the_kernel_work_of_create_sandbox_undoes_it_all(
        stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.66.0.0/24",)))
    before = snapshot(stack)
    boom = Internal("injected: store commit failed")
    with failing(c, "store", "transaction", boom), pytest.raises(Internal):
        c.create_sandbox(SandboxSpec(name="a", network="web"))
    assert snapshot(stack) == before
    c.create_sandbox(SandboxSpec(name="a", network="web"))
    assert addresses(stack.netns("a"), "eth0") == ["10.66.0.2/24"]
