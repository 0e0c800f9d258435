"""Bad requests get the right error class, code and words, and change nothing at all.

"Nothing" is checked from every side cnm can touch: the host namespace's links and
addresses, the controller's tables, the store read through a fresh connection, and the
files and namespace mounts under the run dir.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from cnm.core import Controller
from cnm.errors import AlreadyExists, CnmError, Conflict, InUse, InvalidArgument, NotFound
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, run
from tests.netns.statecheck import snapshot

# A non-cnm bridge in the host namespace that a request may try to take over.
FOREIGN_BRIDGE = "br-foreign"


@dataclass(frozen=True)
class Case:
    request: Callable[[Controller], object]
    error: type[CnmError]
    code: str
    words: tuple[str, ...] = ()


def net(name: str, **kw: object) -> Callable[[Controller], object]:
    return lambda c: c.create_network(NetworkSpec(name=name, **kw))  # type: ignore[arg-type]


def sandbox(name: str, **kw: object) -> Callable[[Controller], object]:
    return lambda c: c.create_sandbox(SandboxSpec(name=name, **kw))  # type: ignore[arg-type]


def connect(network: str, sb: str, **kw: object) -> Callable[[Controller], object]:
    return lambda c: c.connect(ConnectSpec(network=network, sandbox=sb, **kw))  # type: ignore[arg-type]


INVALID, CONFLICT, EXISTS = "invalid-argument", "conflict", "already-exists"

CASES = {
    # networks
    "subnet-prefix-too-long": Case(net("n", subnets=("10.50.0.0/33",)), InvalidArgument,
                                   INVALID, ("10.50.0.0/33",)),
    "subnet-not-an-address": Case(net("n", subnets=("10.50.0.x/24",)), InvalidArgument,
                                  INVALID, ("10.50.0.x/24",)),
    "subnet-without-prefix": Case(net("n", subnets=("10.50.0.0",)), InvalidArgument, INVALID),
    "subnet-host-bits": Case(net("n", subnets=("10.50.0.1/24",)), InvalidArgument, INVALID,
                             ("host bits",)),
    "subnet-overlaps-network": Case(net("n", subnets=("10.40.0.128/25",)), Conflict, CONFLICT,
                                    ('"web"', "10.40.0.0/24")),
    "subnet-overlaps-default-bridge": Case(net("n", subnets=("172.17.5.0/24",)), Conflict,
                                           CONFLICT, ('"bridge"',)),
    "unknown-option": Case(net("n", options={"colour": "blue"}), InvalidArgument, INVALID,
                           ("'colour'",)),
    "bad-mtu": Case(net("n", options={"mtu": "9"}), InvalidArgument, INVALID, ("mtu",)),
    "unknown-driver": Case(net("n", driver="warpdrive"), InvalidArgument, INVALID,
                           ("warpdrive",)),
    "predefined-driver": Case(net("n", driver="host"), InvalidArgument, INVALID),
    "duplicate-network": Case(net("web", subnets=("10.51.0.0/24",)), AlreadyExists, EXISTS,
                              ('"web"',)),
    "predefined-network-name": Case(net("bridge"), AlreadyExists, EXISTS, ("bridge",)),
    "bad-network-name": Case(net("-bad"), InvalidArgument, INVALID, ("-bad",)),
    "bridge-name-is-foreign-link": Case(
        net("n", subnets=("10.52.0.0/24",), options={"bridge_name": FOREIGN_BRIDGE}),
        AlreadyExists, EXISTS, (FOREIGN_BRIDGE,)),
    "bridge-name-of-other-network": Case(
        net("n", subnets=("10.53.0.0/24",), options={"bridge_name": "cnm0"}),
        Conflict, CONFLICT, ("cnm0", '"bridge"')),
    "bridge-name-too-long": Case(net("n", options={"bridge_name": "x" * 16}), InvalidArgument,
                                 INVALID, ("bridge_name",)),
    "remove-network-in-use": Case(lambda c: c.remove_network("web"), InUse, "in-use",
                                  ('"web"', "(a)")),
    "remove-predefined-network": Case(lambda c: c.remove_network("bridge"), InvalidArgument,
                                      INVALID),
    # sandboxes and endpoints
    "duplicate-sandbox": Case(sandbox("a", network="web"), AlreadyExists, EXISTS, ('"a"',)),
    "sandbox-on-unknown-network": Case(sandbox("b", network="nope"), NotFound, "not-found",
                                       ("nope",)),
    "sandbox-ip-outside-subnet": Case(sandbox("b", network="web", ip="10.99.0.5"),
                                      InvalidArgument, INVALID, ("10.99.0.5", "10.40.0.0/24")),
    "sandbox-ip-taken": Case(sandbox("b", network="web", ip="10.40.0.2"), Conflict, CONFLICT,
                             ("10.40.0.2",)),
    "sandbox-ip-is-gateway": Case(sandbox("b", network="web", ip="10.40.0.1"), Conflict,
                                  CONFLICT, ("10.40.0.1",)),
    "sandbox-ip-not-an-address": Case(sandbox("b", network="web", ip="10.40.0.300"),
                                      InvalidArgument, INVALID),
    "sandbox-ip6-without-ipv6": Case(sandbox("b", network="web", ip6="fd00::5"),
                                     InvalidArgument, INVALID),
    "sandbox-multicast-mac": Case(sandbox("b", network="web", mac="01:00:5e:00:00:01"),
                                  InvalidArgument, INVALID, ("01:00:5e:00:00:01",)),
    "sandbox-malformed-mac": Case(sandbox("b", network="web", mac="02:42:zz:00:00:01"),
                                  InvalidArgument, INVALID, ("02:42:zz:00:00:01",)),
    "sandbox-ip-on-none": Case(sandbox("b", network="none", ip="10.40.0.9"), InvalidArgument,
                               INVALID),
    "sandbox-ip-on-host": Case(sandbox("b", network="host", ip="10.40.0.9"), InvalidArgument,
                               INVALID),
    "connect-ip-outside-subnet": Case(connect("web", "c", ip="10.41.0.5"), InvalidArgument,
                                      INVALID, ("10.41.0.5",)),
    "connect-ip-taken": Case(connect("web", "c", ip="10.40.0.2"), Conflict, CONFLICT,
                             ("10.40.0.2",)),
    "connect-bad-mac": Case(connect("web", "c", mac="ff:ff:ff:ff:ff:ff"), InvalidArgument,
                            INVALID, ("ff:ff:ff:ff:ff:ff",)),
    "connect-twice": Case(connect("web", "a"), AlreadyExists, EXISTS, ('"a"', '"web"')),
    "connect-to-host": Case(connect("host", "c"), InvalidArgument, INVALID),
    "connect-none-and-bridge": Case(connect("none", "c"), InvalidArgument, INVALID),
    "disconnect-not-connected": Case(lambda c: c.disconnect("web", "c"), NotFound,
                                     "not-found"),
}


@pytest.fixture
def populated(stack: Stack) -> Stack:
    """A network with a sandbox on it, a sandbox on the default bridge, a foreign bridge."""
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.40.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="web"))
    c.create_sandbox(SandboxSpec(name="c", network="bridge"))
    run("ip", "-n", stack.host_ns.name, "link", "add", FOREIGN_BRIDGE, "type", "bridge")
    return stack


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_request_is_refused_and_changes_nothing(populated: Stack, case: Case) -> None:
    before = snapshot(populated)
    with pytest.raises(CnmError) as info:
        case.request(populated.controller)
    err = info.value
    assert type(err) is case.error, err.message
    assert err.code == case.code
    for word in case.words:
        assert word in err.message + (err.hint or ""), (word, err.message, err.hint)
    assert snapshot(populated) == before


def test_snapshot_sees_a_change(populated: Stack) -> None:
    """The comparison above is only worth something if a real change shows up in it."""
    before = snapshot(populated)
    populated.controller.create_network(NetworkSpec(name="n", subnets=("10.54.0.0/24",)))
    after = snapshot(populated)
    changed = {k for k in before if before[k] != after[k]}
    assert {"host_links", "networks", "store"} <= changed
    populated.controller.create_sandbox(SandboxSpec(name="b", network="n"))
    again = snapshot(populated)
    assert {"sandboxes", "endpoints", "store", "run_dir", "mounts", "host_links"} <= {
        k for k in after if after[k] != again[k]}
