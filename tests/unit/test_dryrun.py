"""--dry-run prints the plan and changes nothing: the kernel (fake), the firewall, the store,
the DNS names, the files and the records in memory are the same before and after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cnm.core import Controller, Plan
from cnm.errors import InUse
from cnm.model import ConnectSpec, EndpointSpec, NetworkSpec, SandboxSpec
from cnm.netfilter import Netfilter
from cnm.testing import FakeKernel, FakeNft

MakeController = Callable[..., Controller]


def link_state(kernel: FakeKernel) -> dict[str, Any]:
    return {key: ({n: (link.kind, link.master.name if link.master else None, link.up,
                       link.group, link.hairpin, tuple(link.addresses), link.mac)
                   for n, link in ns.links.items()},
                  {v: (gw, dev.name) for v, (gw, dev) in ns.routes.items()})
            for key, ns in kernel.namespaces.items()}


def files(root: Path) -> dict[str, str]:
    return {str(p): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()
            and p.suffix not in (".db", ".db-wal", ".db-shm") and "state" not in p.parts}


@pytest.fixture
def world(make_controller: MakeController, kernel: FakeKernel,
          tmp_path: Path) -> tuple[Controller, Callable[[], Any]]:
    nft = FakeNft()
    ctl = make_controller(netfilter=Netfilter(nft))
    ctl.create_network(NetworkSpec("web", subnets=("10.10.0.0/24",)))
    ctl.create_network(NetworkSpec("db", subnets=("10.20.0.0/24",)))
    ctl.create_sandbox(SandboxSpec("a", network="web", ports=("8080:80",)))
    ctl.create_sandbox(SandboxSpec("b", network="db"))
    ctl.create_endpoint(EndpointSpec("web", "spare", ports=("9090:90",)))

    def everything() -> Any:
        net = ctl.networks
        return (link_state(kernel), {k: dict(v) for k, v in nft.elements.items()},
                dict(nft.sysctls), ctl.store.load(), dict(ctl.records._entries),
                dict(net), dict(ctl.sandboxes), dict(ctl.endpoints),
                {n: ctl.state.addresses[n].holder("10.10.0.9/24") for n in net},
                files(tmp_path), dict(ctl.netfilter.ports._single) if ctl.netfilter else None)

    return ctl, everything


def steps(plan: Plan, kind: str) -> list[str]:
    return [w for k, w in plan.steps if k == kind]


@pytest.mark.parametrize("op", ["connect", "disconnect", "network create", "network rm",
                                "join", "leave"])
def test_a_dry_run_changes_nothing(world: tuple[Controller, Callable[[], Any]],
                                   op: str) -> None:
    ctl, everything = world
    if op == "leave":
        ctl.join("spare", "b")
    before = everything()
    call = {
        "connect": lambda: ctl.connect(ConnectSpec("web", "b", ip="10.10.0.9", ports=("81:80",),
                                                   aliases=("cache",))),
        "disconnect": lambda: ctl.disconnect("web", "a"),
        "network create": lambda: ctl.create_network(NetworkSpec("new", internal=True)),
        "network rm": lambda: ctl.remove_network("new0"),
        "join": lambda: ctl.join("spare", "b", ifname="lan0"),
        "leave": lambda: ctl.leave("spare"),
    }[op]
    if op == "network rm":
        ctl.create_network(NetworkSpec("new0", subnets=("10.50.0.0/24",)))
        before = everything()
    _, plan = ctl.dry_run(call)
    assert plan.steps, "a plan with no steps"
    assert everything() == before
    # And the real operation still works afterwards, as planned.
    call()


def test_the_plan_of_a_connect_names_its_links_addresses_routes_rules_and_names(
        world: tuple[Controller, Callable[[], Any]]) -> None:
    ctl, _ = world
    _, plan = ctl.dry_run(lambda: ctl.connect(ConnectSpec(
        "web", "b", ip="10.10.0.9", ports=("81:80",), aliases=("cache",), ifname="web0")))
    veth = steps(plan, "link")[0]
    assert "create veth" in veth and "web0" in veth
    assert any("web0" in s and "10.10.0.9/24" in s for s in steps(plan, "sandbox"))
    # b's first network keeps its default route: no route change is planned.
    assert not any(s.startswith("default routes in") for s in steps(plan, "sandbox"))
    assert any("81" in s and "10.10.0.9" in s for s in steps(plan, "firewall"))
    assert steps(plan, "dns")[0].startswith("b, cache -> 10.10.0.9 on network web")
    # Its hosts file gains the address; resolv.conf and hostname stay as they are.
    assert [s.rsplit("/", 1)[1] for s in steps(plan, "file")] == ["hosts"]
    assert any("endpoint b" in s for s in steps(plan, "store"))


def test_a_dry_run_refuses_what_the_operation_refuses(
        world: tuple[Controller, Callable[[], Any]]) -> None:
    ctl, everything = world
    before = everything()
    with pytest.raises(InUse):
        ctl.dry_run(lambda: ctl.remove_network("web"))
    assert everything() == before
