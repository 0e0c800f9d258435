"""Encrypted overlays (-o encrypted=true) between two hosts, asserted with packets on the
underlay: ESP between the VTEPs and no cleartext, a plain overlay beside it still VXLAN, a
cleartext VXLAN packet for the encrypted VNI dropped, the key rotated under a continuous
ping, and nothing of cnm's XFRM state left once the network goes. This machine's kernel has
no ESP algorithms: the VM tier runs it (netns-lab/vm/run -m vm)."""

from __future__ import annotations

import json
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cnm.esp import AEAD, REQID_BASE
from cnm.kernel.netns import run_in
from cnm.testing.cluster import Host, Lab, ok, wait_for
from cnm.testing.netns import can_ping, in_ns, run

pytestmark = pytest.mark.vm

ROTATION = 30  # seconds: --cluster-key-rotation of the lab
ETH_P_ALL = 0x0003
ATTACKER = "192.168.200.250"  # an address on the underlay bridge itself


@dataclass(frozen=True)
class Frame:
    src: str
    dst: str
    proto: int  # IP protocol
    dport: int = 0
    vni: int | None = None
    spi: int | None = None
    fragment: bool = False
    raw: bytes = b""


def parse(frame: bytes) -> Frame | None:
    """An IPv4 frame as seen on the underlay (None for anything else: ARP, ...)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0xF) * 4
    flags_frag = struct.unpack("!H", ip[6:8])[0]
    proto = ip[9]
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    body = ip[ihl:]
    fragment = bool(flags_frag & 0x2000 or flags_frag & 0x1FFF)
    if proto == 17 and len(body) >= 16:
        dport = struct.unpack("!H", body[2:4])[0]
        vni = int.from_bytes(body[12:15], "big") if dport == 4789 else None
        return Frame(src, dst, proto, dport, vni, fragment=fragment, raw=frame)
    if proto == 50 and len(body) >= 4:
        return Frame(src, dst, proto, spi=struct.unpack("!I", body[:4])[0],
                     fragment=fragment, raw=frame)
    return Frame(src, dst, proto, fragment=fragment, raw=frame)


class Capture:
    """Every frame crossing ``ifname`` in the namespace bound at ``netns`` (an AF_PACKET
    socket made there by ``run_in``, read by a thread of this process), from start to
    stop."""

    def __init__(self, netns: str, ifname: str) -> None:
        self.frames: list[bytes] = []
        self._stop = threading.Event()

        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((ifname, 0))
            s.settimeout(0.2)
            return s

        self._sock = run_in(netns, make)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        with self._sock:
            while not self._stop.is_set():
                try:
                    self.frames.append(self._sock.recv(65535))
                except TimeoutError:
                    continue

    def stop(self) -> list[Frame]:
        self._stop.set()
        self._t.join(5)
        return [f for f in (parse(x) for x in self.frames) if f is not None]


def endpoint(h: Host, sandbox: str, network: str) -> dict[str, str]:
    sb = h.client().sandbox(sandbox)
    return dict(next(e for e in sb["endpoints"] if e["network"] == network))


def vni_of(h: Host, network: str) -> int:
    return int(json.loads(ok(h, "network", "inspect", network))[0]["options"]["vni"])


def xfrm_states(h: Host) -> list[tuple[str, str, int, int]]:
    """(src, dst, spi, reqid) of every SA in the host's namespace."""
    out = run("ip", "-n", h.ns.name, "xfrm", "state").stdout
    return [(m[0], m[1], int(m[2], 16), int(m[3])) for m in re.findall(
        r"src (\S+) dst (\S+)\s+proto esp spi (0x[0-9a-f]+) reqid (\d+)", out)]


def xfrm_policies(h: Host) -> str:
    return run("ip", "-n", h.ns.name, "xfrm", "policy").stdout


def out_reqid(h: Host, peer: str) -> int | None:
    """The reqid the outbound policy towards ``peer`` uses (the generation in use)."""
    m = re.search(rf"dst {re.escape(peer)}/32 proto udp dport 4789.*?reqid (\d+)",
                  xfrm_policies(h), re.S)
    return int(m.group(1)) if m else None


def on_link(frames: list[Frame], a: str, b: str) -> list[Frame]:
    return [f for f in frames if {f.src, f.dst} == {a, b}]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    made = Lab.make(2, members=1, mtu=1500, start=False)
    try:
        made.extra += ("--cluster-key-rotation", f"{ROTATION}s")
        for h in made.hosts:
            h.daemon.ready_timeout = 150  # qemu without KVM, beside other work
            made.start(h)
        run("ip", "-n", made.underlay.name, "addr", "add", f"{ATTACKER}/16", "dev", "ul0")
        yield made
    finally:
        made.close()


def joined(lab: Lab, network: str, encrypted: bool, names: tuple[str, str]) -> None:
    h1, h2 = lab.hosts
    ok(h1, "network", "create", "-d", "overlay",
       *(["-o", "encrypted=true"] if encrypted else []), network)
    wait_for(f"network {network} on h2",
             lambda: h2.cli("network", "inspect", network).returncode == 0, timeout=60)
    for h, name in zip(lab.hosts, names, strict=True):
        ok(h, "sandbox", "create", "--network", network, name)
    macs = {endpoint(h, n, network)["mac"] for h, n in zip(lab.hosts, names, strict=True)}
    for h in lab.hosts:
        wait_for(f"the FDB of {h.name} on {network}",
                 lambda h=h: len(macs & set(h.fdb(network))) == 1, timeout=60)


@pytest.fixture(scope="module")
def sec(lab: Lab) -> str:
    joined(lab, "sec", True, ("a", "b"))
    return "sec"


@pytest.fixture(scope="module")
def plain(lab: Lab) -> str:
    joined(lab, "plain", False, ("c", "d"))
    return "plain"


def test_encrypted_traffic_is_esp_on_the_underlay_and_passes(lab: Lab, sec: str) -> None:
    h1, h2 = lab.hosts
    b_ip = endpoint(h2, "b", sec)["ipv4"].split("/")[0]
    a_ns = h1.netns("a")
    wait_for("a pings b over the encrypted overlay", lambda: can_ping(a_ns, b_ip), timeout=60)
    mtu = int(json.loads(in_ns(a_ns, "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"])
    assert mtu == 1500 - 50 - 38
    cap = Capture(f"/run/netns/{lab.underlay.name}", "ulp0")  # h1's port
    try:
        r = in_ns(a_ns, "ping", "-n", "-c", "5", "-i", "0.2", "-W", "5", "-q", b_ip,
                  check=False, timeout=60)
        # A full-size frame, DF set: fits the underlay with ESP, not fragmented.
        big = in_ns(a_ns, "ping", "-n", "-c", "2", "-i", "0.3", "-W", "5", "-M", "do", "-s",
                    str(mtu - 28), "-q", b_ip, check=False, timeout=60)
    finally:
        frames = on_link(cap.stop(), h1.addr, h2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert big.returncode == 0, big.stdout + big.stderr
    esp = [f for f in frames if f.proto == 50]
    assert len(esp) >= 12, f"{len(esp)} ESP packets of {len(frames)} between the VTEPs"
    vni = vni_of(h1, sec)
    assert not [f for f in frames if f.proto == 17 and f.vni == vni], "cleartext VXLAN"
    assert not [f for f in frames if f.proto == 1], "cleartext ICMP on the underlay"
    assert not [f for f in frames if f.fragment], "fragmented underlay packets"
    assert {f.spi for f in esp} <= {s[2] for s in xfrm_states(h1)}


def test_a_plain_overlay_beside_it_stays_cleartext_vxlan(lab: Lab, sec: str,
                                                         plain: str) -> None:
    h1, h2 = lab.hosts
    d_ip = endpoint(h2, "d", plain)["ipv4"].split("/")[0]
    c_ns = h1.netns("c")
    wait_for("c pings d over the plain overlay", lambda: can_ping(c_ns, d_ip), timeout=60)
    cap = Capture(f"/run/netns/{lab.underlay.name}", "ulp0")  # h1's port
    try:
        r = in_ns(c_ns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", "-q", d_ip,
                  check=False, timeout=60)
    finally:
        frames = on_link(cap.stop(), h1.addr, h2.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    vni = vni_of(h1, plain)
    vxlan = [f for f in frames if f.proto == 17 and f.vni == vni]
    assert len(vxlan) >= 6
    # The inner packets are readable there: IPv4 ICMP right after the VXLAN header.
    assert any(len(f.raw) > 73 and f.raw[62:64] == b"\x08\x00" and f.raw[73] == 1
               for f in vxlan)
    assert not [f for f in frames if f.proto == 50]


def vxlan_echo(vni: int, dst_mac: str, src_ip: str, dst_ip: str, tag: bytes) -> bytes:
    """A VXLAN packet's payload: an Ethernet frame holding an ICMP echo carrying ``tag``."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + tag
    csum = _checksum(icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex("02aabbccddee") + b"\x08\x00"
    return struct.pack("!II", 0x08000000, vni << 8) + eth + ip + icmp


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def inject(lab: Lab, to: str, payload: bytes) -> None:
    """Send ``payload`` to UDP 4789 of ``to`` from the underlay's own address."""

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((ATTACKER, 0))
            for _ in range(3):
                s.sendto(payload, (to, 4789))
                time.sleep(0.1)

    run_in(f"/run/netns/{lab.underlay.name}", send)


def arrived(lab: Lab, h: Host, sandbox: str, network: str, sender: tuple[Host, str]) -> bool:
    """Whether a cleartext VXLAN echo for ``network``'s VNI, injected on the underlay,
    reaches ``sandbox`` on ``h``."""
    tag = b"cnm-inject-" + secrets.token_hex(8).encode()
    ep = endpoint(h, sandbox, network)
    src_ip = endpoint(sender[0], sender[1], network)["ipv4"].split("/")[0]
    cap = Capture(h.netns(sandbox), "eth0")
    try:
        inject(lab, h.addr, vxlan_echo(vni_of(h, network), ep["mac"], src_ip,
                                       ep["ipv4"].split("/")[0], tag))
        time.sleep(1.5)
    finally:
        frames = cap.stop()
    return any(tag in f.raw for f in frames)


def test_cleartext_vxlan_for_the_encrypted_vni_is_dropped(lab: Lab, sec: str,
                                                          plain: str) -> None:
    h1, h2 = lab.hosts
    # The same injection reaches a sandbox of the plain overlay: it is a valid packet.
    assert arrived(lab, h2, "d", plain, (h1, "c"))
    assert not arrived(lab, h2, "b", sec, (h1, "a"))
    table = run("ip", "netns", "exec", h2.ns.name, "nft", "list", "table", "inet",
                "cnm_esp").stdout
    assert re.search(r"secpath missing counter packets [1-9]", table) or \
        re.search(r"ipsec missing counter packets [1-9]", table), table


def test_the_key_rotates_under_a_continuous_ping(lab: Lab, sec: str) -> None:
    h1, h2 = lab.hosts
    b_ip = endpoint(h2, "b", sec)["ipv4"].split("/")[0]
    a_ns = h1.netns("a")
    wait_for("a pings b", lambda: can_ping(a_ns, b_ip), timeout=60)
    before = out_reqid(h1, h2.addr)
    assert before is not None, xfrm_policies(h1)
    spis_before = {s[2] for s in xfrm_states(h1) if s[3] == before}
    count = int((ROTATION + 20) / 0.2)
    out: list[str] = []
    pinger = threading.Thread(target=lambda: out.append(in_ns(
        a_ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-q", b_ip,
        check=False, timeout=ROTATION * 4).stdout))
    pinger.start()
    try:
        wait_for("the outbound policy to switch generation",
                 lambda: out_reqid(h1, h2.addr) not in (None, before), timeout=ROTATION * 3)
        after = out_reqid(h1, h2.addr)
        wait_for("h2 to switch to the same generation",
                 lambda: out_reqid(h2, h1.addr) == after, timeout=30)
        spis_after = {s[2] for s in xfrm_states(h1) if s[3] == after}
        assert spis_after and not spis_after & spis_before
        # Past the grace, the old generation's SAs are gone: only the new one's are left
        # (the next rotation, ROTATION s after this one, would bring a third's along).
        wait_for("the old generation's SAs to go after the grace",
                 lambda: {s[3] for s in xfrm_states(h1)} == {after}, timeout=ROTATION)
    finally:
        pinger.join(ROTATION * 4)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out[0] if out else "")
    assert m, out
    assert m.group(1) == m.group(2), out[0]


def test_a_restart_removes_stale_sas_and_a_peer_gone_takes_its_own(lab: Lab,
                                                                  sec: str) -> None:
    h1, h2 = lab.hosts
    b_ip = endpoint(h2, "b", sec)["ipv4"].split("/")[0]
    a_ns = h1.netns("a")
    key = "0x" + "11" * 20
    stale, foreign = 0x4242, 0x4343

    def add_sa(spi: int, req: int) -> None:
        run("ip", "-n", h1.ns.name, "xfrm", "state", "add", "src", h1.addr, "dst",
            "192.168.200.99", "proto", "esp", "spi", hex(spi), "reqid", str(req), "mode",
            "transport", "aead", AEAD, key, "128")

    lab.kill9(h1)
    try:
        add_sa(stale, REQID_BASE + 999)  # cnm's range, left by a crash: stale
        add_sa(foreign, 7)  # someone else's: never touched
        lab.start(h1)
        spis = {s[2] for s in xfrm_states(h1)}
        assert stale not in spis and foreign in spis
        wait_for("a pings b after the restart", lambda: can_ping(a_ns, b_ip), timeout=60)
    finally:
        run("ip", "-n", h1.ns.name, "xfrm", "state", "del", "src", h1.addr, "dst",
            "192.168.200.99", "proto", "esp", "spi", hex(foreign), check=False)
        if h1.daemon.proc is None:
            lab.start(h1)
    lab.kill9(h2)
    try:
        # Its lease expires (TTL 3 s): its peers go, and h1's SAs and policy with it.
        wait_for("h1's SAs with h2 gone",
                 lambda: not [s for s in xfrm_states(h1) if h2.addr in s[:2]], timeout=60)
        assert out_reqid(h1, h2.addr) is None
    finally:
        lab.start(h2)
    wait_for("h1's SAs with h2 back",
             lambda: [s for s in xfrm_states(h1) if s[1] == h2.addr], timeout=60)
    wait_for("a pings b after h2 came back", lambda: can_ping(a_ns, b_ip), timeout=60)


def test_deleting_the_network_removes_its_sas_policies_and_table(lab: Lab, sec: str) -> None:
    h1, h2 = lab.hosts
    assert xfrm_states(h1) and xfrm_states(h2)
    ok(h1, "sandbox", "rm", "a")
    ok(h2, "sandbox", "rm", "b")
    ok(h1, "network", "rm", sec)
    for h in lab.hosts:
        wait_for(f"no SA left on {h.name}", lambda h=h: not xfrm_states(h), timeout=60)
        wait_for(f"no cnm policy left on {h.name}",
                 lambda h=h: "0xe5c0000" not in xfrm_policies(h), timeout=60)
        r = run("ip", "netns", "exec", h.ns.name, "nft", "list", "table", "inet", "cnm_esp",
                check=False)
        assert r.returncode != 0, r.stdout


def next_headers(frames: list[bytes], a: str, b: str) -> list[int]:
    """The next-header field of every IPv6 frame between ``a`` and ``b``."""
    pa, pb = socket.inet_pton(socket.AF_INET6, a), socket.inet_pton(socket.AF_INET6, b)
    return [f[14 + 6] for f in frames if len(f) > 54 and f[12:14] == b"\x86\xdd"
            and {f[22:38], f[38:54]} == {pa, pb}]


def test_an_ipv6_underlay_is_encrypted_too() -> None:
    lab = Lab.make(2, ipv6=True, members=1, start=False)
    try:
        for h in lab.hosts:
            h.daemon.ready_timeout = 150
            lab.start(h)
        h1, h2 = lab.hosts
        joined(lab, "sec6", True, ("a", "b"))
        b_ip = endpoint(h2, "b", "sec6")["ipv4"].split("/")[0]
        a_ns = h1.netns("a")
        wait_for("a pings b over IPv6 ESP", lambda: can_ping(a_ns, b_ip), timeout=60)
        mtu = int(json.loads(in_ns(a_ns, "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"])
        assert mtu == 1500 - 70 - 38
        cap = Capture(f"/run/netns/{lab.underlay.name}", "ulp0")
        try:
            r = in_ns(a_ns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", "-M", "do", "-s",
                      str(mtu - 28), "-q", b_ip, check=False, timeout=60)
        finally:
            cap.stop()
        assert r.returncode == 0, r.stdout + r.stderr
        kinds = next_headers(cap.frames, h1.addr, h2.addr)
        assert kinds.count(50) >= 6 and 17 not in kinds and 44 not in kinds, kinds
    finally:
        lab.close()
