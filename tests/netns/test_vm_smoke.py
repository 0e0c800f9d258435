"""The VM tier runs, and its kernel has what this machine's lacks: a dummy link, an ipvlan
pair passing packets between two sandboxes, an 802.1q vlan link."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from cnm.testing.netns import HostNs, can_ping, in_ns, links, run

pytestmark = pytest.mark.vm


@pytest.fixture
def sandboxes() -> Iterator[list[str]]:
    names = [f"cnmtest-{secrets.token_hex(4)}" for _ in range(2)]
    try:
        for name in names:
            run("ip", "netns", "add", name)
        yield names
    finally:
        for name in names:
            run("ip", "netns", "del", name, check=False)


def test_dummy_ipvlan_and_vlan_links_work(host_ns: HostNs, sandboxes: list[str]) -> None:
    ns = host_ns.name
    run("ip", "-n", ns, "link", "add", "parent0", "type", "dummy")
    run("ip", "-n", ns, "link", "set", "parent0", "up")
    assert links(host_ns.path)["parent0"]["linkinfo"]["info_kind"] == "dummy"

    # Two ipvlan (l2) links on one parent, one in each sandbox: the parent switches
    # packets between them, so a ping from one sandbox reaches the other.
    for i, sandbox in enumerate(sandboxes, start=1):
        run("ip", "-n", ns, "link", "add", "link", "parent0", "name", f"iv{i}", "type",
            "ipvlan", "mode", "l2")
        run("ip", "-n", ns, "link", "set", f"iv{i}", "netns", sandbox)
        run("ip", "-n", sandbox, "addr", "add", f"10.77.0.{i}/24", "dev", f"iv{i}")
        run("ip", "-n", sandbox, "link", "set", f"iv{i}", "up")
    kind = links(f"/run/netns/{sandboxes[0]}")["iv1"]["linkinfo"]
    assert kind["info_kind"] == "ipvlan"
    assert kind["info_data"]["mode"] == "l2"
    assert can_ping(f"/run/netns/{sandboxes[0]}", "10.77.0.2")
    # An address nobody holds does not answer: the ping above is not vacuous.
    assert not can_ping(f"/run/netns/{sandboxes[0]}", "10.77.0.3", timeout_s=1)

    run("ip", "-n", ns, "link", "add", "link", "parent0", "name", "parent0.10", "type",
        "vlan", "id", "10")
    vlan = links(host_ns.path)["parent0.10"]["linkinfo"]
    assert vlan["info_kind"] == "vlan"
    assert vlan["info_data"]["id"] == 10
    assert in_ns(host_ns.path, "ip", "link", "show", "parent0.10").returncode == 0
