"""A new endpoint announces its addresses (gratuitous ARP, unsolicited NA): a peer that
cached the address with the MAC of its previous holder learns the new one at once, without
sending anything itself (finding 3 of issue 13: ~34 s unreachable after a restart).

cnm's own namespaces also announce by the kernel's arp_notify/ndisc_notify; a runtime's
namespace that cnm adopts has neither, so it is the case that shows cnm's announcement."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest

from cnm.model import NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, can_ping, in_ns, links, run


@pytest.fixture
def runtime_ns() -> Iterator[str]:
    """A namespace made the way a runtime makes one (arp_notify and ndisc_notify are off
    by default)."""
    name = f"cnm-ann-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        yield f"/run/netns/{name}"
    finally:
        run("ip", "netns", "del", name, check=False)


def neighbour_mac(netns: str, address: str) -> str | None:
    out = in_ns(netns, "ip", "-j", "neigh", "show", address).stdout
    entries = [e for e in json.loads(out or "[]") if e.get("lladdr")]
    return entries[0]["lladdr"] if entries else None


def wait_for(check: object, seconds: float = 10) -> bool:
    """Poll ``check`` until it holds (the announcements take ~1 s); a bound, not a speed
    assert: without an announcement the cache never changes."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("address,field", [("10.31.0.50", "ip"), ("fd00:31::50", "ip6")])
def test_a_new_holder_of_an_address_heals_its_peers_caches(stack: Stack, runtime_ns: str,
                                                           address: str, field: str) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.31.0.0/24", "fd00:31::/64"),
                                 ipv6=True))
    c.create_sandbox(SandboxSpec(name="peer", network="web"))
    c.create_sandbox(SandboxSpec(name="old", network="web", **{field: address}))
    peer = stack.netns("peer")
    assert can_ping(peer, address, timeout_s=5)
    old_mac = links(stack.netns("old"))["eth0"]["address"]
    assert neighbour_mac(peer, address) == old_mac

    c.remove_sandbox("old")
    c.create_sandbox(SandboxSpec(name="new", network="web", netns=runtime_ns,
                                 **{field: address}))
    new_mac = links(runtime_ns)["eth0"]["address"]
    assert new_mac != old_mac
    # The peer sends nothing: only the new holder's announcement can change its cache.
    assert wait_for(lambda: neighbour_mac(peer, address) == new_mac), \
        f"the peer still caches {neighbour_mac(peer, address)} for {address}"
    assert can_ping(peer, address, timeout_s=5)
