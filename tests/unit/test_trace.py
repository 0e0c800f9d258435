"""`cnm trace` on fixed inputs: real observations, captured from the isolation and ports
labs and from two dual-stack bridges (tests/unit/golden/trace_NAME.json: the route,
neighbour, FDB entry, the `nft monitor trace` lines and the probe's outcome), rendered
against tests/unit/golden/trace_NAME.txt.
After an intended change to the rendering, regenerate and review the diff:

    CNM_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_trace.py

The verdict of each is asserted here too, so a regenerated file cannot make a wrong one
pass. tests/netns/test_trace.py traces the same paths for real.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cnm import trace
from cnm.core import Controller
from cnm.errors import InvalidArgument, NotFound, Unsupported
from cnm.trace import Observed, Target

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CNM_UPDATE_GOLDEN") == "1"

# name -> (verdict, the meaning of the rule that dropped it or "", the NAT seen)
EXPECTED: dict[str, tuple[str, str, list[str]]] = {
    "isolation": ("dropped", "inter-network isolation", []),
    "icc_off": ("dropped", "icc=false: no traffic within the network", []),
    "internal_to_host": ("dropped", "internal network: not to the host", []),
    "internal_no_route": ("no-route", "", []),
    "masquerade": ("delivered", "", ["masquerade of source 10.50.0.2 (masquerade)"]),
    "same_network": ("delivered", "", []),
    "same_network_tcp": ("delivered", "", []),
    "published_port": ("delivered", "",
                       ["DNAT 192.168.60.1:8080 -> 10.42.0.10:80 (published port)"]),
    "published_from_another_network": (
        "delivered", "", ["DNAT 192.168.60.1:8080 -> 10.42.0.10:80 (published port)"]),
    "no_neighbour": ("no-neighbour", "", []),
    # Captured from a lab of two dual-stack bridges (the labs have no IPv6 network yet).
    "ipv6_isolation": ("dropped", "inter-network isolation", []),
    "ipv6_same_network_tcp": ("delivered", "", []),
}


def _observed(name: str) -> Observed:
    d: dict[str, Any] = json.loads((GOLDEN / f"trace_{name}.json").read_text())
    d["target"] = Target(**d["target"])
    return Observed(**d)


def test_every_golden_trace_has_an_expectation() -> None:
    assert sorted(p.stem[len("trace_"):] for p in GOLDEN.glob("trace_*.json")) == sorted(
        EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trace_renders_as_the_golden_file(name: str) -> None:
    result = trace.result(_observed(name))
    verdict, meaning, nat = EXPECTED[name]
    assert result["verdict"] == verdict
    assert result.get("by", {}).get("meaning", "") == meaning
    assert result["nat"] == nat
    # What the API answers is JSON: render what a client would get back.
    text = trace.render_text(json.loads(json.dumps(result)))
    path = GOLDEN / f"trace_{name}.txt"
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), (
        f"rendering differs from {path.name}; if intended, regenerate with "
        "CNM_UPDATE_GOLDEN=1 and review the diff")


def test_the_drop_names_the_rule_its_chain_and_meaning() -> None:
    result = trace.result(_observed("isolation"))
    assert result["by"] == {"chain": "inet cnm forward",
                            "rule": "iifname @bridges oifname @bridges drop",
                            "meaning": "inter-network isolation"}
    assert result["reason"] == ('dropped by rule "iifname @bridges oifname @bridges drop" in '
                                "inet cnm forward (inter-network isolation)")


def test_the_trace_chain_itself_is_not_part_of_the_path() -> None:
    o = _observed("published_port")
    assert o.chain in o.events
    chains = [h["chain"] for h in trace.result(o)["nftables"]]
    assert chains == ["inet cnm prerouting", "inet cnm published", "inet cnm forward",
                      "inet cnm postrouting"]


def test_the_sandbox_own_address_never_leaves_it() -> None:
    route = {"dst": "10.45.0.2", "dev": "lo", "prefsrc": "10.45.0.2"}
    o = Observed("web1", Target("10.45.0.2", "icmp"), route, None, "lo", None, None, None,
                 None, None, None, "", "trace_x", "answered")
    assert trace.render_text(trace.result(o)) == (
        "trace web1 -> 10.45.0.2 (icmp)\n"
        "  route      in web1: 10.45.0.2 dev lo src 10.45.0.2\n"
        "  loopback   an address of the sandbox itself: the packet never leaves it\n"
        "  probe      answered\n"
        "verdict: delivered: the probe was answered\n")


# ------------------------------------------------------------------ parsing lines
def test_monitor_lines_parse_into_events() -> None:
    p = trace.parse_event('trace id 1a2b inet cnm forward packet: iif "br0" oif "br1" '
                          "ip saddr 10.0.0.2 ip daddr 10.1.0.2 ip protocol tcp "
                          "tcp sport 40000 tcp dport 80 tcp flags == syn")
    assert p is not None and (p.kind, p.where) == ("packet", "inet cnm forward")
    assert trace.packet_fields(p.text) == {"iif": "br0", "oif": "br1", "saddr": "10.0.0.2",
                                           "daddr": "10.1.0.2", "proto": "tcp",
                                           "sport": "40000", "dport": "80"}
    r = trace.parse_event('trace id 1a2b inet cnm forward rule iifname @bridges oifname '
                          '@bridges drop comment "inter-network isolation" (verdict drop)')
    assert r is not None and (r.kind, r.verdict, r.comment) == (
        "rule", "drop", "inter-network isolation")
    pol = trace.parse_event("trace id 1a2b ip filter FORWARD policy drop ")
    assert pol is not None and (pol.kind, pol.verdict, pol.where) == (
        "policy", "drop", "ip filter FORWARD")
    unknown = trace.parse_event("trace id 1 inet cnm x unknown rule handle 61 (verdict "
                                "continue)")
    assert unknown is not None and (unknown.text, unknown.verdict) == ("handle 61", "continue")
    assert trace.parse_event("some other output") is None


def test_a_chain_policy_drop_is_a_drop() -> None:
    """Another table's chain (a host firewall's) dropping by policy is named as such."""
    lines = ('trace id 1 ip filter FORWARD packet: iif "br0" oif "eth0" ip saddr 10.0.0.2 '
             "ip daddr 192.0.2.1 ip protocol icmp\n"
             "trace id 1 ip filter FORWARD policy drop \n")
    o = Observed("s", Target("192.0.2.1", "icmp"), {"dst": "192.0.2.1", "dev": "eth0"}, None,
                 "eth0", "n", "v", "br0", "10.0.0.1", None, None, lines, "trace_x",
                 "no answer")
    r = trace.result(o)
    assert (r["verdict"], r["by"]["chain"], r["by"]["rule"]) == (
        "dropped", "ip filter FORWARD", "policy drop")


# ------------------------------------------------------------------ the destination
@pytest.mark.parametrize("text, target", [
    ("10.0.0.2", Target("10.0.0.2", "icmp")),
    ("10.0.0.2:80", Target("10.0.0.2", "tcp", 80)),
    ("10.0.0.2:53/udp", Target("10.0.0.2", "udp", 53)),
    ("10.0.0.2/icmp", Target("10.0.0.2", "icmp")),
    ("fd00::2", Target("fd00::2", "icmp")),
    ("[fd00::2]:443/tcp", Target("fd00::2", "tcp", 443)),
    ("[fd00::2]", Target("fd00::2", "icmp")),
])
def test_destinations_parse(text: str, target: Target) -> None:
    assert trace.parse_target(text) == target


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("web", "'web' is not an IP address"),
    ("10.0.0.300", "not an IP address"),
    ("10.0.0.2:0", "invalid port '0'"),
    ("10.0.0.2:65536", "invalid port"),
    ("10.0.0.2:http", "invalid port 'http'"),
    ("10.0.0.2:", "empty port"),
    ("10.0.0.2:80/sctp", "invalid protocol 'sctp'"),
    ("10.0.0.2:80/icmp", "icmp takes no port"),
    ("10.0.0.2/udp", "udp needs a port"),
    ("[fd00::2]x", "invalid destination"),
    ("0.0.0.0", "not a single destination"),
    ("224.0.0.1", "not a single destination"),
])
def test_a_bad_destination_is_refused_by_name(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match="trace: ") as e:
        trace.parse_target(text)
    assert words in e.value.message


def test_the_trace_rule_marks_exactly_the_probe_flow() -> None:
    t = trace.parse_target("10.1.0.2:80")
    assert trace.trace_chain("trace_ab", "prerouting", "br0", "10.0.0.2", t) == (
        "add chain inet cnm trace_ab { type filter hook prerouting priority -350; "
        "policy accept; }\n"
        'add rule inet cnm trace_ab iifname "br0" ip saddr 10.0.0.2 ip daddr 10.1.0.2 '
        "meta l4proto tcp th dport 80 tcp flags & (syn | ack) == syn meta nftrace set 1 "
        'comment "cnm trace"\n')
    six = trace.trace_chain("trace_ab", "output", None, "fd00::2", trace.parse_target("fd00::1"))
    assert "ip6 saddr fd00::2 ip6 daddr fd00::1 meta l4proto icmpv6 meta nftrace" in six
    assert "iifname" not in six and "hook output" in six


# ------------------------------------------------------------------ the core's refusals
def test_the_core_refuses_before_it_touches_anything(ctl: Controller) -> None:
    from cnm.model import SandboxSpec

    ctl.create_sandbox(SandboxSpec(name="s"))
    with pytest.raises(InvalidArgument, match="invalid port"):
        ctl.trace("s", "10.0.0.2:0")
    with pytest.raises(NotFound, match="nosuch"):
        ctl.trace("nosuch", "10.0.0.2")
    ctl.create_handover_sandbox("docker-x", {})
    with pytest.raises(Unsupported, match="handover"):
        ctl.trace("docker-x", "10.0.0.2")
    # Over the fakes there is no kernel side to probe with.
    with pytest.raises(Unsupported, match="real kernel"):
        ctl.trace("s", "10.0.0.2")


def test_a_monitor_that_cannot_start_is_an_error_naming_why(tmp_path: Path) -> None:
    from cnm.errors import KernelError
    from cnm.kernel.trace import _monitor

    with pytest.raises(KernelError, match="nft monitor trace did not start in .*nope"):
        _monitor(str(tmp_path / "nope"))
