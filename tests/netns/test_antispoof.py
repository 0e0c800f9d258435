"""Anti-spoofing on bridge networks, with real frames: sandbox A sends with scapy, sandbox C
captures with scapy, B is the one whose identity A tries to take.

Every spoofed frame is paired with an honest one sent in the same burst, and the same burst
on a network with ``-o anti_spoofing=false`` must get through whole: a check that nothing
arrived cannot pass because nothing could have.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, cast

import netaddr
import pytest

from cnm import names
from cnm.errors import KernelError
from cnm.kernel.ports import HostPort
from cnm.model import EndpointSpec, NetworkSpec, SandboxSpec
from cnm.testing.netns import Daemon, HostNs, Stack, can_ping, in_ns
from tests.netns.statecheck import guards

# Captures every frame arriving at eth0 from someone else, until a line on stdin; then
# prints them as JSON.
SNIFF = """\
import json, sys, time
from scapy.all import ARP, IP, UDP, AsyncSniffer, Dot1Q, Ether, ICMPv6ND_NA, IPv6, Raw
own = sys.argv[1]
def summary(p):
    d = {"src": p[Ether].src}
    if ARP in p:
        d["arp"] = [p[ARP].op, p[ARP].hwsrc, p[ARP].psrc, p[ARP].pdst]
    if IP in p:
        d["ip4"] = p[IP].src
    if IPv6 in p:
        d["ip6"] = p[IPv6].src
    if ICMPv6ND_NA in p:
        d["na"] = p[ICMPv6ND_NA].tgt
    if Dot1Q in p:
        d["vlan"] = p[Dot1Q].vlan
    if Raw in p:
        d["load"] = bytes(p[Raw].load).decode(errors="replace")
    return d
s = AsyncSniffer(iface="eth0", lfilter=lambda p: Ether in p and p[Ether].src != own)
s.start()
while not getattr(s, "running", False):
    time.sleep(0.01)
time.sleep(0.5)
print("ready", flush=True)
sys.stdin.readline()
time.sleep(0.5)
print(json.dumps([summary(p) for p in s.stop()]), flush=True)
"""

# Sends the burst: every frame named by its tag (spoofed ones start with "spoof").
SEND = """\
import json, sys
from scapy.all import (ARP, IP, UDP, Dot1Q, Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6,
                       Raw, sendp)
p = json.loads(sys.argv[1])
a, b, c = p["a"], p["b"], p["c"]
BCAST, ALL6 = "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01"
def udp(tag):
    return UDP(sport=4242, dport=4242) / Raw(tag.encode())
def na(target):  # hop limit 255, or no kernel takes it
    return (ICMPv6ND_NA(tgt=target, R=0, S=0, O=1)
            / ICMPv6NDOptDstLLAddr(lladdr=a["mac"]))
frames = [
    Ether(src=a["mac"], dst=c["mac"]) / IP(src=a["ip4"], dst=c["ip4"]) / udp("honest-ip4"),
    Ether(src=a["mac"], dst=c["mac"]) / IPv6(src=a["ip6"], dst=c["ip6"]) / udp("honest-ip6"),
    Ether(src=a["mac"], dst=ALL6) / IPv6(src=a["ll"], dst="ff02::1") / udp("honest-ll6"),
    Ether(src=a["mac"], dst=BCAST) / ARP(op=1, hwsrc=a["mac"], psrc=a["ip4"], pdst=c["ip4"]),
    Ether(src=a["mac"], dst=BCAST) / ARP(op=1, hwsrc=a["mac"], psrc="0.0.0.0",
                                         pdst=a["ip4"]),
    Ether(src=a["mac"], dst=c["mac"]) / IPv6(src=a["ip6"], dst=c["ip6"], hlim=255) / na(a["ip6"]),
    Ether(src=a["mac"], dst=c["mac"]) / IP(src=b["ip4"], dst=c["ip4"]) / udp("spoof-ip4"),
    Ether(src=p["foreign"], dst=c["mac"]) / IP(src=a["ip4"], dst=c["ip4"]) / udp("spoof-mac"),
    Ether(src=a["mac"], dst=c["mac"]) / IPv6(src=b["ip6"], dst=c["ip6"]) / udp("spoof-ip6"),
    Ether(src=a["mac"], dst=c["mac"]) / Dot1Q(vlan=5) / IP(src=a["ip4"], dst=c["ip4"])
    / udp("spoof-vlan"),
    Ether(src=a["mac"], dst=c["mac"]) / ARP(op=2, hwsrc=a["mac"], psrc=b["ip4"],
                                            hwdst=c["mac"], pdst=c["ip4"]),
    Ether(src=a["mac"], dst=BCAST) / ARP(op=1, hwsrc=a["mac"], psrc=b["ip4"],
                                         hwdst="00:00:00:00:00:00", pdst=b["ip4"]),
    Ether(src=a["mac"], dst=c["mac"]) / ARP(op=2, hwsrc=p["foreign"], psrc=a["ip4"],
                                            hwdst=c["mac"], pdst=c["ip4"]),
    Ether(src=a["mac"], dst=c["mac"]) / IPv6(src=a["ip6"], dst=c["ip6"], hlim=255) / na(b["ip6"]),
]
sendp(frames, iface="eth0", verbose=False)
"""

FOREIGN_MAC = "02:00:5e:00:53:99"  # held by no one
HONEST = {"honest-ip4", "honest-ip6", "honest-ll6", "honest-arp", "honest-probe",
          "honest-na"}
SPOOFED = {"spoof-ip4", "spoof-mac", "spoof-ip6", "spoof-vlan", "spoof-arp-reply",
           "spoof-garp", "spoof-arp-hw", "spoof-na"}


@dataclass(frozen=True)
class Peer:
    netns: str
    mac: str
    ip4: str
    ip6: str
    port: str  # the host side of its veth

    @property
    def ll(self) -> str:
        return str(netaddr.EUI(self.mac).ipv6_link_local())

    def wire(self) -> dict[str, str]:
        return {"mac": self.mac, "ip4": self.ip4, "ip6": self.ip6, "ll": self.ll}


def _ok(d: Daemon, *args: str) -> str:
    r = d.cli(*args)
    assert r.returncode == 0, f"cnm {' '.join(args)}: {r.stderr}"
    return r.stdout


def _peer(d: Daemon, sandbox: str) -> Peer:
    sb = json.loads(_ok(d, "sandbox", "inspect", sandbox))[0]
    ep = sb["endpoints"][0]
    return Peer(sb["netns"], ep["mac"], ep["ipv4"].split("/")[0], ep["ipv6"].split("/")[0],
                names.veth_name(ep["id"]))


def _trio(d: Daemon, network: str, n: int, *options: str) -> tuple[Peer, Peer, Peer]:
    _ok(d, "network", "create", "--ipv6", "--subnet", f"10.7{n}.0.0/24", "--subnet",
        f"fd00:7{n}::/64", *options, network)
    for s in ("a", "b", "c"):
        _ok(d, "sandbox", "create", "--network", network, f"{network}-{s}")
    a, b, c = (_peer(d, f"{network}-{s}") for s in ("a", "b", "c"))
    for x in (a, b, c):
        _wait_dad(x)
    return a, b, c


def _wait_dad(p: Peer) -> None:
    """IPv6 addresses are usable only once DAD is over (about a second)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = in_ns(p.netns, "ip", "-6", "-j", "addr", "show", "dev", "eth0").stdout
        infos = [a for x in json.loads(out) for a in x.get("addr_info", [])]
        if infos and not any(a.get("tentative") for a in infos):
            return
        time.sleep(0.1)
    raise AssertionError(f"IPv6 DAD did not finish in {p.netns}")


def _tag(f: dict[str, Any], a: Peer, b: Peer) -> str | None:
    """Which frame of the burst a captured one is (None: someone else's traffic)."""
    if "load" in f and f["load"].startswith(("honest-", "spoof-")):
        return str(f["load"])
    if "arp" in f:
        op, hwsrc, psrc, pdst = f["arp"]
        return {(1, a.mac, a.ip4, pdst): "honest-arp",
                (1, a.mac, "0.0.0.0", a.ip4): "honest-probe",
                (2, a.mac, b.ip4, pdst): "spoof-arp-reply",
                (1, a.mac, b.ip4, b.ip4): "spoof-garp",
                (2, FOREIGN_MAC, a.ip4, pdst): "spoof-arp-hw"}.get((op, hwsrc, psrc, pdst))
    if "na" in f and f["src"] == a.mac:
        return {a.ip6: "honest-na", b.ip6: "spoof-na"}.get(f["na"])
    return None


def _burst(a: Peer, b: Peer, c: Peer) -> set[str]:
    """Send the burst from A; the tags of what C received."""
    sniffer = subprocess.Popen(
        ["nsenter", f"--net={c.netns}", sys.executable, "-c", SNIFF, c.mac],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sniffer.stdout is not None and sniffer.stdin is not None
        assert sniffer.stdout.readline().strip() == "ready", sniffer.stderr
        params = {"a": a.wire(), "b": b.wire(), "c": c.wire(), "foreign": FOREIGN_MAC}
        in_ns(a.netns, sys.executable, "-c", SEND, json.dumps(params), timeout=60)
        out, err = sniffer.communicate("stop\n", timeout=30)
    finally:
        if sniffer.poll() is None:
            sniffer.kill()
            sniffer.wait()
    assert sniffer.returncode == 0, err
    frames = json.loads(out.strip().splitlines()[-1])
    return {t for f in frames if (t := _tag(f, a, b)) is not None}


def _neighbour(netns: str, address: str) -> str | None:
    """The MAC ``netns`` has for ``address`` (None: no entry)."""
    out = in_ns(netns, "ip", "-j", "neigh", "show", address, "dev", "eth0").stdout
    entries = json.loads(out) if out.strip() else []
    return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None


def _c_knows_b(b: Peer, c: Peer) -> None:
    """C learns B's real MAC (for both families), then the entries outlive the kernel's
    locktime (1 s), after which a reply or a gratuitous ARP could override them."""
    assert can_ping(c.netns, b.ip4)
    assert can_ping(c.netns, b.ip6)
    assert _neighbour(c.netns, b.ip4) == b.mac
    assert _neighbour(c.netns, b.ip6) == b.mac
    time.sleep(1.5)


def _spoofing_is_dropped(a: Peer, b: Peer, c: Peer) -> None:
    _c_knows_b(b, c)
    got = _burst(a, b, c)
    assert got == HONEST, f"missing honest: {HONEST - got}; spoofed that arrived: " \
                          f"{got & SPOOFED}"
    assert _neighbour(c.netns, b.ip4) == b.mac
    assert _neighbour(c.netns, b.ip6) == b.mac
    # The kernel's own traffic, neighbour discovery included, still flows.
    assert can_ping(a.netns, c.ip4)
    assert can_ping(a.netns, c.ip6)
    assert can_ping(a.netns, c.ll + "%eth0")


def test_a_sandbox_cannot_spoof_and_the_guard_survives_reload_and_restart(
        daemon: Daemon, host_ns: HostNs) -> None:
    d = daemon
    a, b, c = _trio(d, "guarded", 1)
    net = json.loads(_ok(d, "network", "inspect", "guarded"))[0]
    assert net["options"]["anti_spoofing"] == "true"
    assert set(guards(host_ns.path)["ports"]) >= {json.dumps(x.port) for x in (a, b, c)}
    _spoofing_is_dropped(a, b, c)

    assert "guarded ports" in _ok(d, "firewall", "reload")
    _spoofing_is_dropped(a, b, c)

    # A restart rebuilds the table even if it went meanwhile.
    assert d.stop() == 0
    in_ns(host_ns.path, "nft", "delete", "table", "bridge", "cnm")
    d.start()
    _spoofing_is_dropped(a, b, c)

    # Leaving takes the port's elements out; nothing of it stays.
    _ok(d, "sandbox", "rm", "guarded-a")
    left = json.dumps(guards(host_ns.path))
    assert a.port not in left and a.mac not in left and a.ip4 not in left


def test_anti_spoofing_false_lets_every_frame_through(daemon: Daemon, host_ns: HostNs) -> None:
    d = daemon
    a, b, c = _trio(d, "open", 2, "-o", "anti_spoofing=false")
    net = json.loads(_ok(d, "network", "inspect", "open"))[0]
    assert net["options"]["anti_spoofing"] == "false"
    assert a.port not in json.dumps(guards(host_ns.path))
    _c_knows_b(b, c)
    got = _burst(a, b, c)
    assert got == HONEST | SPOOFED, f"missing: {(HONEST | SPOOFED) - got}"
    # What the guard prevents: C now sends B's traffic to A.
    assert _neighbour(c.netns, b.ip4) == a.mac
    assert _neighbour(c.netns, b.ip6) == a.mac


def test_a_bad_value_is_refused_and_changes_nothing(daemon: Daemon, host_ns: HostNs) -> None:
    d = daemon
    before = (_ok(d, "network", "ls"), guards(host_ns.path))
    r = d.cli("network", "create", "-o", "anti_spoofing=maybe", "web")
    assert r.returncode != 0
    assert "anti_spoofing" in r.stderr and "'maybe'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert (_ok(d, "network", "ls"), guards(host_ns.path)) == before


@pytest.mark.parametrize("kind", ["default bridge", "user-defined"])
def test_the_default_bridge_is_guarded_too(daemon: Daemon, host_ns: HostNs, kind: str) -> None:
    d = daemon
    network = "bridge"
    if kind == "user-defined":
        network = "web"
        _ok(d, "network", "create", "--subnet", "10.73.0.0/24", network)
    _ok(d, "sandbox", "create", "--network", network, "x")
    sb = json.loads(_ok(d, "sandbox", "inspect", "x"))[0]
    ep = sb["endpoints"][0]
    port = names.veth_name(ep["id"])
    g = guards(host_ns.path)
    assert json.dumps(port) in g["ports"]
    assert any(port in e and ep["mac"] in e for e in g["macs"]), g["macs"]
    assert any(port in e and ep["ipv4"].split("/")[0] in e for e in g["addrs4"]), g["addrs4"]


class _FailingVeth:
    """The host adapter, with add_veth noting the guards in place and then failing."""

    def __init__(self, real: Any, host_netns: str) -> None:
        self.real, self.host_netns = real, host_netns
        self.seen: dict[str, list[str]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def add_veth(self, name: str, *args: Any) -> None:
        self.seen = guards(self.host_netns)
        raise KernelError(f"injected failure making {name}")


def test_the_guard_is_there_before_the_link_and_gone_after_a_failed_join(
        stack: Stack) -> None:
    c = stack.controller
    c.create_network(NetworkSpec(name="web", subnets=("10.74.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="peer", network="web"))
    c.create_sandbox(SandboxSpec(name="a"))  # on the default bridge
    ep = c.create_endpoint(EndpointSpec(network="web", name="lone"))
    before = guards(stack.host_ns.path)
    spy = _FailingVeth(c.ctx.host, stack.host_ns.path)
    c.ctx.host = cast(HostPort, spy)
    try:
        with pytest.raises(KernelError, match="injected"):
            c.join(ep.id, "a")
    finally:
        c.ctx.host = spy.real
    assert spy.seen is not None
    assert json.dumps(names.veth_name(ep.id)) in spy.seen["ports"]  # before the link
    assert guards(stack.host_ns.path) == before
    assert c.endpoint(ep.id).sandbox_id is None
