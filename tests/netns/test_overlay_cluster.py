"""The cluster's bookkeeping across three hosts (a 3-member etcd): a network still used on
other hosts is refused removal, naming them, with nothing changed anywhere; and the watch
goes on through another etcd member when the one it reads from dies."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from cnm.testing.cluster import Host, Lab, ok, wait_for
from cnm.testing.netns import can_ping, run


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = Lab.make(3)
    try:
        yield made
    finally:
        made.close()


def ep(h: Host, sandbox: str) -> dict[str, str]:
    return h.client().sandbox(sandbox)["endpoints"][0]  # type: ignore[no-any-return]


def inspect(h: Host, network: str) -> dict[str, object]:
    return json.loads(ok(h, "network", "inspect", network))[0]  # type: ignore[no-any-return]


def kernel(h: Host) -> tuple[list[tuple[str, str, str]], str]:
    """Host ``h``'s links (name, master, alias) and its tables (without counters)."""
    links = sorted((x["ifname"], x.get("master", ""), x.get("ifalias", ""))
                   for x in json.loads(run("ip", "-n", h.ns.name, "-j", "link", "show").stdout))
    tables = run("ip", "netns", "exec", h.ns.name, "nft", "-s", "list", "ruleset").stdout
    return links, tables


def test_a_network_used_on_other_hosts_is_refused_removal_naming_them(lab: Lab) -> None:
    h1, h2, h3 = lab.hosts
    ok(h1, "network", "create", "-d", "overlay", "shared")
    for h in (h2, h3):
        wait_for(f"shared on {h.name}", lambda h=h: h.cli("network", "inspect", "shared")
                 .returncode == 0)
    ok(h2, "sandbox", "create", "--network", "shared", "s2")
    ok(h3, "sandbox", "create", "--network", "shared", "s3")
    s3 = ep(h3, "s3")
    wait_for("s2 and s3 seen on host 1", lambda: sorted(
        e["name"] for e in inspect(h1, "shared")["endpoints"]) == ["s2", "s3"])  # type: ignore[attr-defined]
    wait_for("s3 in the FDB of host 2", lambda: s3["mac"] in h2.fdb("shared"))
    before = {h.name: inspect(h, "shared") for h in lab.hosts}
    before_kernel = kernel(h1)
    r = h1.cli("network", "rm", "shared")
    assert r.returncode == 1, r.stderr
    # Names the network, each sandbox that uses it and its host.
    assert '"shared"' in r.stderr, r.stderr
    assert f"s2 on host {h2.addr}, s3 on host {h3.addr}" in r.stderr, r.stderr
    # Nothing changed: not the records on any host, not host 1's links or firewall, not
    # the traffic between the two sandboxes.
    assert {h.name: inspect(h, "shared") for h in lab.hosts} == before
    assert kernel(h1) == before_kernel
    assert can_ping(h2.netns("s2"), s3["ipv4"].split("/")[0])
    keys = lab.etcd.ctl("get", "--prefix", "--keys-only", "/cnm/netname/").stdout.split()
    assert "/cnm/netname/shared" in keys
    # Once they have left, the network goes everywhere.
    ok(h2, "sandbox", "rm", "s2")
    ok(h3, "sandbox", "rm", "s3")
    wait_for("no endpoints of shared seen on host 1",
             lambda: inspect(h1, "shared")["endpoints"] == [])
    ok(h1, "network", "rm", "shared")
    for h in lab.hosts:
        wait_for(f"shared gone from {h.name}",
                 lambda h=h: h.cli("network", "inspect", "shared").returncode != 0)



def test_the_watch_goes_on_through_another_member_when_its_own_dies(lab: Lab) -> None:
    """Each member killed in turn (so whichever one host 1's watch reads from is killed
    once): a sandbox joining on host 2 meanwhile still reaches host 1's FDB and DNS."""
    h1, h2, _ = lab.hosts
    ok(h1, "network", "create", "-d", "overlay", "w")
    wait_for("w on host 2", lambda: h2.cli("network", "inspect", "w").returncode == 0)
    ok(h1, "sandbox", "create", "--network", "w", "a")
    for m in lab.etcd.members:
        lab.etcd.kill(m.name)
        name = f"after-{m.name}"
        ok(h2, "sandbox", "create", "--network", "w", name)
        new = ep(h2, name)
        wait_for(f"{name} in the FDB of host 1 with {m.name} down",
                 lambda new=new: h1.fdb("w").get(new["mac"]) == h2.addr)
        assert can_ping(h1.netns("a"), new["ipv4"].split("/")[0])
        lab.etcd.start(m.name)
        # Back in the cluster before the next one goes (or the quorum would).
        wait_for(f"{m.name} healthy again", lambda m=m: lab.etcd.ctl(
            "endpoint", "health", member=m.name).returncode == 0, timeout=30, every=0.2)
    names = {e["name"] for e in inspect(h1, "w")["endpoints"]}  # type: ignore[attr-defined]
    assert names == {"a", "after-e1", "after-e2", "after-e3"}


def test_a_clustered_cnmd_stops_at_once_and_keeps_its_records() -> None:
    """A hang guard, not a timing assertion: stopped right after its watch read a change,
    cnmd must exit before the SIGKILL that Daemon.stop sends after 3.5 s. The old code's
    close of the watch's response waited for the reader's next read to return: the
    stream's 5 s idle timeout, or the next change (with a lease of 10 s, cnmd's default,
    nothing comes sooner). What it holds outside its lease stays (the lease is left to run
    out, as after a crash), and a restart carries on."""
    lab = Lab.make(2, members=1, ttl=10)
    try:
        h1, h2 = lab.hosts
        ok(h1, "network", "create", "-d", "overlay", "st")
        ok(h1, "sandbox", "create", "--network", "st", "a")
        a = h1.client().sandbox("a")["endpoints"][0]
        wait_for("st on host 2", lambda: h2.cli("network", "inspect", "st").returncode == 0)
        ok(h2, "sandbox", "create", "--network", "st", "b")
        b = ep(h2, "b")
        wait_for("b in the FDB of host 1", lambda: h1.fdb("st").get(b["mac"]) == h2.addr)
        # A change under cnm's prefix that no one acts on: host 1's watch reads it at once.
        assert lab.etcd.ctl("put", "/cnm/stop-probe", "1").returncode == 0
        assert h1.daemon.stop(timeout=3.5) == 0, "cnmd needed SIGKILL to stop"
        keys = lab.etcd.ctl("get", "--prefix", "--keys-only", "/cnm/").stdout.split()
        assert f"/cnm/ep/{a['id']}" in keys and "/cnm/netname/st" in keys
        assert f"/cnm/host/{h1.addr}" in keys  # its lease runs out in its own time
        lab.start(h1)
        wait_for("a in the FDB of host 2", lambda: h2.fdb("st").get(a["mac"]) == h1.addr)
        assert can_ping(h1.netns("a"), b["ipv4"].split("/")[0])
    finally:
        lab.close()
