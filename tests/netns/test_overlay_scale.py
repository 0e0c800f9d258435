"""Convergence of many hosts on one overlay, bounded for CI: CNM_OVERLAY_HOSTS hosts (10
unless set; bench/overlay.py times 50), each a throwaway namespace with its own cnmd, on one
underlay, sharing a 3-member etcd. Every host gets a sandbox on the network; then every host
has every other host's endpoint in its FDB with the right VTEP, the first host pings all of
them, and a third of the hosts killed with SIGKILL vanish from every survivor's FDB within
the lease's TTL, and come back after their restart. Correctness only: no timing is asserted
(the waits bound a test that would otherwise hang)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cnm.testing.cluster import Host, Lab, wait_for
from cnm.testing.netns import can_ping

N = int(os.environ.get("CNM_OVERLAY_HOSTS", "10"))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    made = Lab.make(N, ttl=3)
    try:
        yield made
    finally:
        made.close()


def ep(h: Host, sandbox: str) -> dict[str, str]:
    return dict(h.client().sandbox(sandbox)["endpoints"][0])


def converged(hosts: list[Host], present: dict[str, tuple[str, str]],
              absent: frozenset[str] = frozenset()) -> None:
    """Every host of ``hosts`` holds the other hosts' endpoints of ``present`` (MAC ->
    (host address, IPv4)) in its FDB, each via its own host's VTEP, and none of ``absent``."""
    for h in hosts:
        want = {mac: addr for mac, (addr, _) in present.items() if addr != h.addr}

        def ok(h: Host = h, want: dict[str, str] = want) -> bool:
            fdb = h.fdb("big")
            return all(fdb.get(m) == a for m, a in want.items()) and not absent & set(fdb)
        wait_for(f"the FDB of {h.name} ({len(want)} peers, none of {len(absent)})", ok,
                 timeout=30 + N)


def test_every_host_converges_and_a_third_killed_vanish_and_return(lab: Lab) -> None:
    h1 = lab.hosts[0]
    r = h1.cli("network", "create", "-d", "overlay", "big")
    assert r.returncode == 0, r.stderr
    wait_for("the network on every host",
             lambda: all(h.cli("network", "inspect", "big").returncode == 0
                         for h in lab.hosts), timeout=30 + N)
    macs: dict[str, tuple[str, str]] = {}
    for h in lab.hosts:
        r = h.cli("sandbox", "create", "--network", "big", f"s-{h.name}")
        assert r.returncode == 0, f"{h.name}: {r.stderr}"
        e = ep(h, f"s-{h.name}")
        macs[e["mac"]] = (h.addr, e["ipv4"].split("/")[0])
    converged(lab.hosts, macs)
    for addr, ip in macs.values():
        if addr != h1.addr:
            assert can_ping(h1.netns(f"s-{h1.name}"), ip), f"host 1 -> {ip} on {addr}"

    killed = lab.hosts[-(N // 3):]  # never the etcd members' hosts (the first three)
    for h in killed:
        lab.kill9(h)
    gone = {h.addr for h in killed}
    alive = [h for h in lab.hosts if h not in killed]
    converged(alive, {m: v for m, v in macs.items() if v[0] not in gone},
              frozenset(m for m, v in macs.items() if v[0] in gone))

    for h in killed:
        lab.start(h)
    converged(lab.hosts, macs)
    last = killed[-1]
    assert can_ping(h1.netns(f"s-{h1.name}"), ep(last, f"s-{last.name}")["ipv4"].split("/")[0])
