"""`cnm trace` on the isolation and ports labs: real probes, nftables' own tracing, and the
verdicts the labs' checks expect; nothing of the trace is left in cnm's table."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnm.testing.netns import run
from tests.lab.labrun import LABS, LabEnv, lab_env


class Lab:
    def __init__(self, env: LabEnv, name: str) -> None:
        self.env, self.name = env, name
        self.sock = env.root / name / "host" / "cnm.sock"
        self.host_ns = f"{env.prefix}-{name}-host"

    def trace(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cnm", "-H", f"unix://{self.sock}",
                               "trace", *args], capture_output=True, text=True, timeout=60)

    def json(self, sandbox: str, dest: str) -> tuple[int, dict[str, Any]]:
        r = self.trace("--format", "json", sandbox, dest)
        assert r.stderr == "", r.stderr
        return r.returncode, json.loads(r.stdout)

    def table(self) -> str:
        return run("ip", "netns", "exec", self.host_ns, "nft", "list", "table", "inet",
                   "cnm").stdout


def _up(name: str) -> Iterator[Lab]:
    with tempfile.TemporaryDirectory(prefix="cnmtr-") as d, lab_env(Path(d)) as env:
        path = str(LABS / f"{name}.yaml")
        r = env.cnm("up", path)
        assert r.returncode == 0, r.stdout + r.stderr
        try:
            yield Lab(env, name)
        finally:
            env.cnm("down", path)
        assert env.leftovers() == []


@pytest.fixture(scope="module")
def isolation() -> Iterator[Lab]:
    yield from _up("isolation")


@pytest.fixture(scope="module")
def ports() -> Iterator[Lab]:
    yield from _up("ports")


@pytest.fixture
def clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the test's traces, cnm's table is exactly as before: no trace chain left."""
    lab: Lab = request.getfixturevalue(request.param)
    before = lab.table()
    yield
    after = lab.table()
    assert "trace_" not in after and "nftrace" not in after
    assert after == before


def _drops(d: dict[str, Any]) -> str:
    assert d["verdict"] == "dropped", d
    meaning: str = d["by"]["meaning"]
    return meaning


@pytest.mark.parametrize("clean", ["isolation"], indirect=True)
def test_two_bridges_apart_are_dropped_by_the_isolation_rule(isolation: Lab,
                                                              clean: None) -> None:
    rc, d = isolation.json("red2", "10.51.0.2")
    assert rc == 1
    assert _drops(d) == "inter-network isolation"
    assert d["by"]["chain"] == "inet cnm forward"
    # The path up to the drop: the sandbox's route to its gateway, its veth on its bridge.
    assert (d["route"]["gateway"], d["route"]["dev"], d["network"]) == ("10.50.0.1", "eth0",
                                                                        "red")
    assert d["host_link"].startswith("cnmv") and d["bridge"].startswith("cnmb")
    assert d["neighbour"]["lladdr"] == d["fdb"]["mac"]
    rc, d = isolation.json("red1", "10.51.0.2:80")
    assert (rc, _drops(d)) == (1, "inter-network isolation")


@pytest.mark.parametrize("clean", ["isolation"], indirect=True)
def test_the_same_network_is_delivered(isolation: Lab, clean: None) -> None:
    r = isolation.trace("red2", "10.50.0.2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: delivered: the probe was answered" in r.stdout
    assert '(same network)' in r.stdout
    rc, d = isolation.json("red2", "10.50.0.2:80/tcp")
    assert (rc, d["verdict"], d["probe"], d["nat"]) == (0, "delivered", "answered", [])
    # One SYN traced, not the rest of the handshake: forward seen once.
    assert [h["chain"] for h in d["nftables"]].count("inet cnm forward") == 1
    # The next hop is the peer itself, learnt on its own bridge port.
    assert d["next_hop"] == "10.50.0.2"
    assert d["fdb"]["ifname"] not in (d["bridge"], d["host_link"])
    # Its own address: loopback inside the sandbox, nothing for the host to see.
    rc, d = isolation.json("red1", "10.50.0.2:80")
    assert (rc, d["verdict"], d["interface"], d["nftables"]) == (0, "delivered", "lo", [])


@pytest.mark.parametrize("clean", ["isolation"], indirect=True)
def test_icc_false_drops_inside_the_network(isolation: Lab, clean: None) -> None:
    rc, d = isolation.json("lone2", "10.52.0.2")
    assert (rc, _drops(d)) == (1, "icc=false: no traffic within the network")
    rc, d = isolation.json("lone2", "10.52.0.1")  # but its gateway answers
    assert (rc, d["verdict"]) == (0, "delivered")


@pytest.mark.parametrize("clean", ["isolation"], indirect=True)
def test_an_internal_network(isolation: Lab, clean: None) -> None:
    rc, d = isolation.json("safe1", "10.53.0.1:9000")
    assert (rc, _drops(d), d["by"]["chain"]) == (1, "internal network: not to the host",
                                                 "inet cnm input")
    rc, d = isolation.json("safe1", "192.168.61.2")
    assert (rc, d["verdict"]) == (1, "no-route")
    assert "Network is unreachable" in d["reason"]
    rc, d = isolation.json("safe2", "10.53.0.2:80")
    assert (rc, d["verdict"]) == (0, "delivered")
    # From the host itself (a sandbox on the host network): the output hook, and in.
    rc, d = isolation.json("echo", "10.53.0.2:80")
    assert (rc, d["verdict"], d["probe"]) == (0, "delivered", "answered")
    assert d["nftables"][0]["chain"] == "inet cnm output"


@pytest.mark.parametrize("clean", ["isolation"], indirect=True)
def test_the_way_out_is_masqueraded(isolation: Lab, clean: None) -> None:
    rc, d = isolation.json("red1", "192.168.61.2")
    assert (rc, d["verdict"]) == (0, "delivered")
    assert d["nat"] == ["masquerade of source 10.50.0.2 (masquerade)"]


@pytest.mark.parametrize("clean", ["isolation"], indirect=True)
def test_no_neighbour(isolation: Lab, clean: None) -> None:
    rc, d = isolation.json("red2", "10.50.0.99")
    assert (rc, d["verdict"]) == (1, "no-neighbour")
    assert d["nftables"] == []


@pytest.mark.parametrize("clean", ["isolation"], indirect=True)
@pytest.mark.parametrize("dest, words", [
    ("red1", "is not an IP address"), ("10.50.0.2:99999", "invalid port"),
    ("10.50.0.2:80/sctp", "invalid protocol"), ("10.50.0.2:80/icmp", "icmp takes no port"),
])
def test_a_bad_destination_is_refused_and_changes_nothing(isolation: Lab, clean: None,
                                                          dest: str, words: str) -> None:
    r = isolation.trace("red2", dest)
    assert r.returncode == 2 and words in r.stderr and r.stdout == "", r
    r = isolation.trace("nosuch", "10.50.0.2")
    assert r.returncode != 0 and "nosuch" in r.stderr


@pytest.mark.parametrize("clean", ["ports"], indirect=True)
def test_a_published_port_shows_its_dnat(ports: Lab, clean: None) -> None:
    rc, d = ports.json("peer", "192.168.60.1:8080")
    assert (rc, d["verdict"], d["probe"]) == (0, "delivered", "answered")
    assert d["nat"] == ["DNAT 192.168.60.1:8080 -> 10.42.0.10:80 (published port)"]
    forward = next(h for h in d["nftables"] if h["chain"] == "inet cnm forward")
    assert (forward["packet"]["daddr"], forward["packet"]["dport"]) == ("10.42.0.10", "80")
    rc, d = ports.json("stranger", "192.168.60.1:5353/udp")
    assert (rc, d["verdict"]) == (0, "delivered")
    assert d["nat"] == ["DNAT 192.168.60.1:5353 -> 10.42.0.10:53 (published port)"]
    # The sandbox's own address from another network: not published, isolated.
    rc, d = ports.json("stranger", "10.42.0.10:80")
    assert (rc, _drops(d)) == (1, "inter-network isolation")


@pytest.mark.parametrize("clean", ["ports"], indirect=True)
def test_an_unpublished_port_of_the_host_is_refused_there(ports: Lab, clean: None) -> None:
    r = ports.trace("peer", "192.168.60.1:8081")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing listens on that port" in r.stdout
    assert "inet cnm input" in r.stdout and "nat " not in r.stdout


@pytest.mark.parametrize("clean", ["isolation"], indirect=True)
def test_traces_at_once_each_see_their_own_probe(isolation: Lab, clean: None) -> None:
    """The monitor sees every traced packet of the namespace: traces run one at a time,
    so two asked together still answer each its own path."""
    from concurrent.futures import ThreadPoolExecutor

    asks = [("red2", "10.51.0.2"), ("red1", "10.50.0.3"), ("lone2", "10.52.0.2"),
            ("blue1", "10.51.0.1")]
    with ThreadPoolExecutor(len(asks)) as pool:
        got = list(pool.map(lambda a: isolation.json(*a), asks))
    assert [(rc, d["verdict"]) for rc, d in got] == [
        (1, "dropped"), (0, "delivered"), (1, "dropped"), (0, "delivered")]
    for (sandbox, dest), (_, d) in zip(asks, got, strict=True):
        first = d["nftables"][0]["packet"]
        assert (first["daddr"], d["sandbox"]) == (dest, sandbox)
