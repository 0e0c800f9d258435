"""Lab impairments (cnm.lab.netem) on a sandbox's interface, with real packets: netem is a
module this machine's kernel lacks, so this runs in the VM tier (netns-lab/vm/run -m vm)."""

from __future__ import annotations

import re

import pytest

from cnm.errors import NotFound
from cnm.lab import netem
from cnm.lab.model import Impairment
from cnm.model import NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, can_ping, in_ns

pytestmark = pytest.mark.vm


def rtt_min_ms(netns: str, address: str, count: int = 3) -> float:
    r = in_ns(netns, "ping", "-n", "-c", str(count), "-i", "0.2", "-w", "10", "-q", address,
              check=False, timeout=30)
    m = re.search(r"= ([\d.]+)/", r.stdout)
    assert r.returncode == 0 and m, r.stdout + r.stderr
    return float(m.group(1))


def two_sandboxes(stack: Stack) -> tuple[str, str]:
    c = stack.controller
    c.create_network(NetworkSpec(name="slow", subnets=("10.66.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="a", network="slow"))
    c.create_sandbox(SandboxSpec(name="b", network="slow"))
    assert can_ping(stack.netns("a"), "10.66.0.3")
    return stack.netns("a"), stack.netns("b")


def tc_qdisc(netns: str) -> str:
    return in_ns(netns, "tc", "qdisc", "show", "dev", "eth0").stdout


def test_delay_on_a_sandbox_interface_shows_in_the_round_trip(stack: Stack) -> None:
    a, _ = two_sandboxes(stack)
    netem.apply(a, "eth0", Impairment(delay_ms=300))
    assert "netem" in tc_qdisc(a) and "delay 300ms" in tc_qdisc(a)
    assert rtt_min_ms(a, "10.66.0.3") >= 300.0
    netem.clear(a, "eth0")
    assert "netem" not in tc_qdisc(a)
    assert rtt_min_ms(a, "10.66.0.3") < 300.0


def test_total_loss_stops_pings_and_clearing_brings_them_back(stack: Stack) -> None:
    a, b = two_sandboxes(stack)
    netem.apply(b, "eth0", Impairment(loss_pct=100))
    assert not can_ping(a, "10.66.0.3")  # echoes reach b, its replies are all dropped
    netem.apply(b, "eth0", Impairment(loss_pct=100))  # replace: idempotent
    netem.clear(b, "eth0")
    netem.clear(b, "eth0")  # nothing left to clear: no error
    assert can_ping(a, "10.66.0.3")


def test_rate_and_jitter_are_what_tc_shows(stack: Stack) -> None:
    a, _ = two_sandboxes(stack)
    netem.apply(a, "eth0", Impairment(delay_ms=20, jitter_ms=5, rate="1mbit"))
    shown = tc_qdisc(a)
    assert "delay 20ms  5ms" in shown or "delay 20ms 5ms" in shown, shown
    assert "rate 1Mbit" in shown, shown


def test_an_interface_that_is_not_there_is_named(stack: Stack) -> None:
    a, _ = two_sandboxes(stack)
    with pytest.raises(NotFound, match="no interface 'eth9'"):
        netem.apply(a, "eth9", Impairment(delay_ms=1))
