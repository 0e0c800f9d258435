"""kill -9 of cnmd at random instants of a loop of create network / create sandbox /
connect / publish / disconnect / rm, each followed by a restart; after every restart the
kernel matches the store (tests/netns/kernelcheck.py, and the daemon's own cnm doctor), no
address is held twice, and the sandboxes of a network reach each other.

Seeded and counted. CI runs CNM_KILLS (default 10) kills; the campaign once run by hand
with more is in bench/README.md (RELIABILITY):

    CNM_KILLS=100 CNM_KILL_SEED=13 .venv/bin/python -m pytest -s tests/netns/test_kill_campaign.py
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cnm import names
from cnm.client import Client
from cnm.errors import CnmError, Unavailable
from cnm.testing.netns import Daemon, can_ping, in_ns
from tests.netns.kernelcheck import doctor, drift, duplicates

KILLS = int(os.environ.get("CNM_KILLS", "10"))
SEED = int(os.environ.get("CNM_KILL_SEED", "13"))
NETWORKS = [f"k{i}" for i in range(3)]
SANDBOXES = [f"s{i}" for i in range(6)]


def operation(rng: random.Random) -> tuple[str, Callable[[Client], Any]]:
    net = rng.choice(NETWORKS)
    sb = rng.choice(SANDBOXES)
    subnet = f"10.{70 + NETWORKS.index(net)}.0.0/24"
    ops: list[tuple[str, Callable[[Client], Any]]] = [
        ("create network", lambda c: c.create_network(name=net, subnets=[subnet])),
        ("create sandbox", lambda c: c.create_sandbox(name=sb, network=net)),
        ("create sandbox", lambda c: c.create_sandbox(name=sb, network=net)),
        ("connect", lambda c: c.connect(net, sb)),
        ("publish", lambda c: c.publish(sb, [f"{rng.randrange(20000, 30000)}:80"])),
        ("disconnect", lambda c: c.disconnect(net, sb)),
        ("rm sandbox", lambda c: c.remove_sandbox(sb, force=True)),
        ("rm network", lambda c: c.remove_network(net)),
    ]
    return rng.choice(ops)


def kill_during_start(d: Daemon, delay: float) -> bool:
    """Start cnmd and kill -9 it ``delay`` s later; True when that was before it was ready
    (while it reconciled)."""
    failed: list[BaseException] = []

    def start() -> None:
        try:
            d.start()
        except RuntimeError as e:  # "cnmd exited -9": killed before it was ready
            failed.append(e)

    t = threading.Thread(target=start)
    t.start()
    while d.proc is None and t.is_alive():
        time.sleep(0.01)
    time.sleep(delay)
    if d.proc is not None:
        d.proc.kill()
    t.join()
    d.stop()
    return bool(failed)


def peers_reach_each_other(d: Daemon) -> list[str]:
    c = d.client()
    try:
        out = []
        for net in c.networks():
            eps = [e for e in net["endpoints"] if e["sandbox"] and e["ipv4"]]
            if net["name"] in NETWORKS and len(eps) >= 2:
                a, b = eps[0], eps[1]
                path = os.path.join(d.run_dir, "netns", a["sandbox_id"])
                if not can_ping(path, b["ipv4"].split("/")[0], timeout_s=3):
                    out.append(f"{a['sandbox']} does not reach {b['sandbox']} on {net['name']}")
        return out
    finally:
        c.close()


@pytest.mark.timeout(60 + 8 * KILLS)  # each round: the kill, a restart, the checks
def test_kill_9_at_random_instants_leaves_nothing_the_store_does_not_explain(
        daemon: Daemon) -> None:
    rng = random.Random(SEED)
    kills = interrupted = ops_done = during_start = 0
    leaks: list[str] = []
    dups = 0
    for _ in range(KILLS):
        proc = daemon.proc
        assert proc is not None
        timer = threading.Timer(rng.uniform(0.0, 0.4), proc.kill)
        timer.start()
        c = Client(daemon.address, timeout=30)
        try:
            for _ in range(200):  # until the kill lands
                _, op = operation(rng)
                try:
                    op(c)
                    ops_done += 1
                except Unavailable:
                    interrupted += 1
                    break
                except CnmError:
                    ops_done += 1  # conflicts and not-found: the schedule is random
        finally:
            c.close()
            timer.join()
        proc.wait()
        kills += 1
        daemon.stop()
        if rng.random() < 0.25:  # a kill during the start itself (reconcile)
            kills += 1
            if kill_during_start(daemon, rng.uniform(0.05, 0.6)):
                during_start += 1
        daemon.start()  # waits for _ping: reconcile is done
        found = drift(daemon.host_ns.path, daemon.state_dir, daemon.run_dir)
        found += doctor(daemon.address)
        found += peers_reach_each_other(daemon)
        leaks += [f"after kill {kills}: {f}" for f in found]
        dups += duplicates(daemon.state_dir)
    print(f"\nkill campaign: seed {SEED}, kills {kills} ({during_start} before the daemon "
          f"was ready), operations {ops_done}, interrupted {interrupted}, leaks {len(leaks)}, "
          f"duplicate addresses {dups}")
    assert kills >= KILLS
    assert not leaks, leaks
    assert dups == 0


def test_the_check_sees_what_the_store_does_not_explain(daemon: Daemon) -> None:
    """The campaign's check can fail: a stray cnm link, a missing interface (and so its
    veth) and a missing address are each reported."""
    c = daemon.client()
    try:
        c.create_network(name="k0", subnets=["10.70.0.0/24"])
        s0 = c.create_sandbox(name="s0", network="k0")
        s1 = c.create_sandbox(name="s1", network="k0")
    finally:
        c.close()
    assert drift(daemon.host_ns.path, daemon.state_dir, daemon.run_dir) == []
    daemon.stop()
    host = daemon.host_ns.path
    in_ns(host, "ip", "link", "add", "cnmvdeadbeef", "type", "veth", "peer", "name", "cnmxdeadbeef")
    in_ns(host, "ip", "link", "set", "cnmvdeadbeef", "alias", "cnm:endpoint:" + "d" * 64)
    in_ns(os.path.join(daemon.run_dir, "netns", s0["id"]), "ip", "link", "del", "eth0")
    in_ns(os.path.join(daemon.run_dir, "netns", s1["id"]), "ip", "addr", "flush", "dev",
          "eth0", "scope", "global")
    s1_port = names.veth_name(s1["endpoints"][0]["id"])
    in_ns(host, "nft", "delete", "element", "bridge", "cnm", "ports", f'{{ "{s1_port}" }}')
    in_ns(host, "nft", "add", "element", "bridge", "cnm", "ports", '{ "cnmvstray" }')
    found = drift(host, daemon.state_dir, daemon.run_dir)
    assert any(f"port {s1_port} of a joined endpoint is not guarded" in f
               for f in found), found
    assert any("port cnmvstray is guarded" in f for f in found), found
    assert any("cnmvdeadbeef" in f for f in found), found
    assert any("s0: interface eth0 is missing" in f for f in found), found
    assert any("its veth is missing" in f for f in found), found
    assert any("s1: eth0 has []" in f for f in found), found
