"""Overlay networks as the underlay sees them: two hosts (throwaway namespaces with their own
cnmd), a real etcd member, and a capture of every frame on host 1's port of the underlay
bridge (an AF_PACKET socket inside the underlay's own namespace). What a user would check
with tcpdump: VXLAN goes to the port the network names, ARP and neighbour discovery are
answered on each host and never cross the underlay, subnets come from Docker's global pool,
and names resolve only on their own network."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cnm.testing.cluster import Host, Lab, ok, wait_for
from cnm.testing.netns import can_ping, in_ns

# Runs inside the underlay's namespace: every frame on one port for SECONDS, summed up.
# For each outer IPv4 UDP datagram: its destination port; for VXLAN ones (8 bytes of VXLAN
# header after UDP) the inner frame's destination MAC and ethertype, and the inner IP
# protocol.
_CAPTURE = r"""
import json, socket, struct, sys, time
port, seconds = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((port, 0))
s.settimeout(0.1)
print("ready", flush=True)
out = {"udp": {}, "inner_multicast": 0, "inner": []}
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        f = s.recv(65535)
    except TimeoutError:
        continue
    if len(f) < 34 or f[12:14] != b"\x08\x00":
        continue
    ihl = (f[14] & 15) * 4
    if f[23] != 17:
        continue
    udp = 14 + ihl
    dport = struct.unpack("!H", f[udp + 2:udp + 4])[0]
    out["udp"][str(dport)] = out["udp"].get(str(dport), 0) + 1
    inner = udp + 16
    if dport < 1024 or len(f) < inner + 14:
        continue
    dst, etype = f[inner:inner + 6], f[inner + 12:inner + 14].hex()
    if dst[0] & 1:
        out["inner_multicast"] += 1
    proto = f[inner + 23] if etype == "0800" else f[inner + 20] if etype == "86dd" else -1
    out["inner"].append([dport, etype, proto])
print(json.dumps(out), flush=True)
"""


@dataclass
class Capture:
    udp: dict[int, int]  # outer UDP destination port -> datagrams
    inner_multicast: int  # VXLAN payloads sent to a broadcast or multicast MAC
    inner: list[tuple[int, str, int]]  # (outer port, inner ethertype, inner IP protocol)


class Sniffer:
    """A capture on the underlay port of host ``index`` (every frame it sends or gets)."""

    def __init__(self, lab: Lab, index: int, seconds: float) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.underlay.name, sys.executable, "-c", _CAPTURE,
             f"ulp{index}", str(seconds)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def result(self) -> Capture:
        out, _ = self.proc.communicate(timeout=60)
        got = json.loads(out)
        return Capture({int(k): v for k, v in got["udp"].items()}, got["inner_multicast"],
                       [tuple(x) for x in got["inner"]])  # type: ignore[misc]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    made = Lab.make(2, members=1)
    try:
        yield made
    finally:
        made.close()


def ep(h: Host, sandbox: str, network: str) -> dict[str, str]:
    sb = h.client().sandbox(sandbox)
    return dict(next(e for e in sb["endpoints"] if e["network"] == network))


def pair(lab: Lab, network: str, *create: str) -> tuple[dict[str, str], dict[str, str]]:
    """``network`` made on host 1 (with ``create``'s flags), sandbox NETWORK-a on host 1 and
    NETWORK-b on host 2, each in the other's FDB: their endpoints."""
    h1, h2 = lab.hosts
    ok(h1, "network", "create", "-d", "overlay", *create, network)
    wait_for(f"{network} on host 2",
             lambda: h2.cli("network", "inspect", network).returncode == 0)
    ok(h1, "sandbox", "create", "--network", network, f"{network}-a")
    ok(h2, "sandbox", "create", "--network", network, f"{network}-b")
    a, b = ep(h1, f"{network}-a", network), ep(h2, f"{network}-b", network)
    wait_for("b in host 1's FDB", lambda: b["mac"] in h1.fdb(network))
    wait_for("a in host 2's FDB", lambda: a["mac"] in h2.fdb(network))
    return a, b


def test_vxlan_goes_to_the_port_the_network_names(lab: Lab) -> None:
    h1, h2 = lab.hosts
    a, b = pair(lab, "ovport", "-o", "vxlan_port=4799")
    sniff = Sniffer(lab, 0, 2.5)
    assert can_ping(h1.netns("ovport-a"), b["ipv4"].split("/")[0])
    assert can_ping(h2.netns("ovport-b"), a["ipv4"].split("/")[0])
    got = sniff.result()
    # every echo and reply went as VXLAN to 4799, and nothing to VXLAN's usual 4789
    assert got.udp.get(4799, 0) >= 2 and 4789 not in got.udp, got.udp
    assert (4799, "0800", 1) in got.inner  # ICMP inside


def test_arp_and_neighbour_discovery_never_cross_the_underlay(lab: Lab) -> None:
    """With every neighbour entry in both sandboxes flushed, IPv4 and IPv6 pings across the
    hosts still pass, and no broadcast or multicast frame (ARP request, neighbour
    solicitation, router solicitation) is carried over VXLAN: each host's VXLAN device
    answers from what etcd told it."""
    h1, h2 = lab.hosts
    a, b = pair(lab, "ovnd", "--ipv6", "--subnet", "10.60.0.0/24", "--subnet",
                "fd00:60::/64")
    assert b["ipv6"] and a["ipv6"]
    for h, sb in ((h1, "ovnd-a"), (h2, "ovnd-b")):
        in_ns(h.netns(sb), "ip", "neigh", "flush", "all")
    sniff = Sniffer(lab, 0, 3.0)
    assert can_ping(h1.netns("ovnd-a"), b["ipv4"].split("/")[0])
    assert can_ping(h1.netns("ovnd-a"), b["ipv6"].split("/")[0])
    assert can_ping(h2.netns("ovnd-b"), a["ipv6"].split("/")[0])
    got = sniff.result()
    assert (4789, "86dd", 58) in got.inner and (4789, "0800", 1) in got.inner, got.inner
    assert got.inner_multicast == 0, got.inner
    # Neither sandbox sent a neighbour solicitation over the wire, yet both learned.
    for h, sb in ((h1, "ovnd-a"), (h2, "ovnd-b")):
        neigh = in_ns(h.netns(sb), "ip", "-6", "neigh", "show").stdout
        assert "lladdr" in neigh, neigh


def test_subnets_come_from_the_global_pool_in_24s(lab: Lab) -> None:
    h1, h2 = lab.hosts
    ok(h1, "network", "create", "-d", "overlay", "pool1")
    ok(h2, "network", "create", "-d", "overlay", "pool2")
    subnets = []
    for name in ("pool1", "pool2"):
        wait_for(f"{name} on both hosts",
                 lambda name=name: all(h.cli("network", "inspect", name).returncode == 0
                                       for h in lab.hosts))
        net = json.loads(ok(h1, "network", "inspect", name))[0]
        subnets.append(ipaddress.ip_network(net["subnets"][0]["subnet"]))
    assert all(s.prefixlen == 24 and s.subnet_of(ipaddress.ip_network("10.0.0.0/8"))
               for s in subnets), subnets
    assert not subnets[0].overlaps(subnets[1])


def test_names_resolve_only_on_their_own_overlay(lab: Lab) -> None:
    h1, h2 = lab.hosts
    a, _ = pair(lab, "dnsa")
    ok(h1, "network", "create", "-d", "overlay", "dnsb")
    wait_for("dnsb on host 2", lambda: h2.cli("network", "inspect", "dnsb").returncode == 0)
    ok(h2, "sandbox", "create", "--network", "dnsb", "other")

    def dig(h: Host, sandbox: str, name: str) -> list[str]:
        r = in_ns(h.netns(sandbox), "dig", "+short", "+time=2", "+tries=1", "@127.0.0.11",
                  "-t", "A", "-q", name, check=False)
        return [x for x in r.stdout.split() if x]

    deadline = time.monotonic() + 10
    while dig(h2, "dnsa-b", "dnsa-a") != [a["ipv4"].split("/")[0]]:
        assert time.monotonic() < deadline, "dnsa-a does not resolve on its own network"
        time.sleep(0.2)
    # On host 2 too, a sandbox of another overlay does not learn host 1's names.
    assert dig(h2, "other", "dnsa-a") == []
    assert not can_ping(h2.netns("other"), a["ipv4"].split("/")[0], timeout_s=1)


# Runs in a sandbox: one UDP datagram from SRC (an address the sandbox holds on lo, not
# its endpoint's) or from its own address (SRC "-") to DST:PORT.
_SEND = r"""
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if src != "-":
    s.bind((src, 0))
for _ in range(3):
    s.sendto(b"hello", (dst, port))
"""
# Runs in a sandbox: the source address of each datagram to PORT within SECONDS.
_LISTEN = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
s.settimeout(0.1)
print("ready", flush=True)
got, end = set(), time.monotonic() + seconds
while time.monotonic() < end:
    try:
        got.add(s.recvfrom(100)[1][0])
    except TimeoutError:
        pass
print(" ".join(sorted(got)), flush=True)
"""


@pytest.mark.parametrize("guarded", [True, False])
def test_a_sandbox_cannot_send_into_the_overlay_as_another_address(lab: Lab,
                                                                   guarded: bool) -> None:
    """b (host 2) holds a second address on its lo and sends from it to a (host 1): the
    overlay's port guard drops what does not carry b's own address, and lets b's own
    through. With -o anti_spoofing=false the spoofed datagrams arrive (the test can fail)."""
    h1, h2 = lab.hosts
    net = "spoof" if guarded else "nospoof"
    a, b = pair(lab, net, *([] if guarded else ["-o", "anti_spoofing=false"]))
    in_ns(h2.netns(f"{net}-b"), "ip", "addr", "add", "10.99.0.250/32", "dev", "lo")
    listener = subprocess.Popen(
        ["nsenter", f"--net={h1.netns(f'{net}-a')}", sys.executable, "-c", _LISTEN, "7070",
         "2.5"], stdout=subprocess.PIPE, text=True)
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    to = a["ipv4"].split("/")[0]
    for src in ("10.99.0.250", "-"):
        in_ns(h2.netns(f"{net}-b"), sys.executable, "-c", _SEND, src, to, "7070")
    out, _ = listener.communicate(timeout=30)
    seen = set(out.split())
    own = b["ipv4"].split("/")[0]
    assert own in seen, seen
    assert ("10.99.0.250" in seen) is (not guarded), seen
