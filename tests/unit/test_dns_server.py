"""DnsServer with real sockets on 127.0.0.1 in this process: listeners, the cache,
forwarding to fake upstreams, TCP, and what it does when things go wrong.

The server sends to upstreams on port 53. The test's host-socket factory hands it sockets
that map each fake upstream's name (a TEST-NET address that is never contacted) to a
port on 127.0.0.1 where an in-process fake listens, and that refuse any other address.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from cnm import daemon, wiring
from cnm.core import Config, Controller
from cnm.dns.records import Entry, Records
from cnm.dns.server import ATTEMPT_TIMEOUT, MAX_UPSTREAMS, DnsServer, Upstreams
from cnm.errors import InvalidArgument
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec
from cnm.testing import FakeHostLinks, FakeKernel, FakeSandboxLinks
from tests.unit.test_dns_resolver import compression_cycle

LOOP = "127.0.0.1"


# --------------------------------------------------------------------------- fake upstreams
@dataclass
class Fake:
    """An upstream on 127.0.0.1 (UDP and TCP on one port): ``mode`` is "answer IP",
    "nxdomain", "servfail", "refused", "silent" or "wrong-source"."""

    mode: str
    udp: socket.socket = field(init=False)
    tcp: socket.socket = field(init=False)
    port: int = field(init=False)
    asked: list[str] = field(default_factory=list)
    _stop: bool = False

    def __post_init__(self) -> None:
        self.udp, self.tcp, self.port = listener_sockets()  # one port for both
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def reply(self, data: bytes) -> bytes | None:
        q = DNSRecord.parse(data)
        self.asked.append(str(q.q.qname).rstrip("."))
        word, _, arg = self.mode.partition(" ")
        if word == "silent":
            return None
        r = q.reply()
        if word == "answer":
            r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(arg), ttl=30))
        elif word == "wrong-question":
            r = DNSRecord.question("other.example")
            r.header.id = q.header.id
            r.header.qr = 1
            r.add_answer(RR("other.example", QTYPE.A, rdata=A("192.0.2.66"), ttl=30))
        else:
            r.header.rcode = {"nxdomain": RCODE.NXDOMAIN, "servfail": RCODE.SERVFAIL,
                              "refused": RCODE.REFUSED, "wrong-source": 0}[word]
            if word == "wrong-source":
                r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A("192.0.2.66"), ttl=30))
        return bytes(r.pack())

    def _serve_udp(self) -> None:
        while not self._stop:
            try:
                data, client = self.udp.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            out = self.reply(data)
            if out is None:
                continue
            if self.mode == "wrong-source":
                # A spoofer elsewhere on the host: same answer, another port.
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                    other.sendto(out, client)
            else:
                self.udp.sendto(out, client)

    def _serve_tcp(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(3)
                try:
                    (n,) = struct.unpack("!H", recv_exact(conn, 2))
                    out = self.reply(recv_exact(conn, n))
                    if out is None:
                        time.sleep(ATTEMPT_TIMEOUT + 0.5)
                        continue
                    conn.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    continue

    def close(self) -> None:
        self._stop = True
        self.udp.close()
        self.tcp.close()


class Mapped(socket.socket):
    """A host socket whose port-53 peers are the fakes: ``ports`` maps a fake upstream's
    address to its port on 127.0.0.1. Anything else is refused, so nothing leaves."""

    ports: dict[str, int]

    def _to(self, address: Any) -> tuple[str, int]:
        host, port = address[0], address[1]
        if port != 53 or host not in self.ports:
            raise OSError(f"test socket: {host}:{port} is not a fake upstream")
        return (LOOP, self.ports[host])

    def _from(self, address: Any) -> Any:
        back = {p: h for h, p in self.ports.items()}
        if address[0] == LOOP and address[1] in back:
            return (back[address[1]], 53)
        return address

    def sendto(self, data: Any, *args: Any) -> int:  # type: ignore[override]
        return super().sendto(data, self._to(args[-1]))

    def recvfrom(self, n: int, *args: Any) -> tuple[bytes, Any]:  # type: ignore[override]
        data, source = super().recvfrom(n, *args)
        return data, self._from(source)

    def connect(self, address: Any) -> None:
        super().connect(self._to(address))


@dataclass
class Upstream:
    address: str
    fake: Fake


@pytest.fixture
def fakes() -> Iterator[Callable[..., list[Upstream]]]:
    made: list[Fake] = []

    def make(*modes: str) -> list[Upstream]:
        out = []
        for i, mode in enumerate(modes):
            f = Fake(mode)
            made.append(f)
            out.append(Upstream(f"192.0.2.{len(made) * 10 + i}", f))
        return out

    yield make
    for f in made:
        f.close()


def factory(ups: list[Upstream]) -> Callable[[int, int], socket.socket]:
    ports = {u.address: u.fake.port for u in ups}

    def make(family: int, kind: int) -> socket.socket:
        s = Mapped(family, kind)
        s.ports = ports
        return s

    return make


# --------------------------------------------------------------------------- server + client
@dataclass
class Sandbox:
    """A listener's sockets (on 127.0.0.1, a free port) and a client that asks them."""

    sandbox_id: str
    udp: socket.socket
    tcp: socket.socket
    port: int

    def ask(self, name: str, qtype: str = "A", timeout: float = 5.0, raw: bytes | None = None,
            tcp: bool = False, qid: int | None = None) -> DNSRecord:
        wire = raw if raw is not None else make_query(name, qtype, qid)
        got = exchange(self.port, wire, timeout, tcp)
        return DNSRecord.parse(got)


def make_query(name: str, qtype: str = "A", qid: int | None = None) -> bytes:
    q = DNSRecord.question(name, qtype)
    if qid is not None:
        q.header.id = qid
    return bytes(q.pack())


def exchange(port: int, wire: bytes, timeout: float, tcp: bool = False) -> bytes:
    if tcp:
        with socket.create_connection((LOOP, port), timeout=timeout) as c:
            c.sendall(struct.pack("!H", len(wire)) + wire)
            (n,) = struct.unpack("!H", recv_exact(c, 2))
            return recv_exact(c, n)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(timeout)
        c.sendto(wire, (LOOP, port))
        while True:
            data = c.recv(65535)
            if data[:2] == wire[:2]:
                return data


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def listener_sockets() -> tuple[socket.socket, socket.socket, int]:
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((LOOP, 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((LOOP, port))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        return udp, tcp, port
    raise RuntimeError("no free port pair on 127.0.0.1")


class Harness:
    def __init__(self, upstreams: list[Upstream]) -> None:
        self.records = Records()
        self.server = DnsServer(self.records, Upstreams([u.address for u in upstreams]),
                                factory(upstreams))

    def sandbox(self, sandbox_id: str, view: list[str]) -> Sandbox:
        udp, tcp, port = listener_sockets()
        self.server.add(sandbox_id, udp, tcp, view)
        return Sandbox(sandbox_id, udp, tcp, port)

    def hold(self, sandbox: str, ip: str, network: str = "web",
             names: tuple[str, ...] = ()) -> None:
        self.records.set(Entry(network, network, f"id-{sandbox}", sandbox,
                               (sandbox, *names), ip, None))


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(upstreams: list[Upstream] | None = None) -> Harness:
        h = Harness(upstreams or [])
        made.append(h)
        return h

    yield make
    for h in made:
        h.server.close()


def addrs(r: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in r.rr]


# --------------------------------------------------------------------------- answering
def test_answers_held_names_with_the_clients_id(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("a", "10.0.0.2", names=("api",))
    sb = h.sandbox("s1", ["web"])
    for qid in (1, 2, 0xFFFF):
        r = sb.ask("api", qid=qid)
        assert (r.header.id, addrs(r)) == (qid, ["10.0.0.2"])
    assert h.server.serves("s1")


def test_queries_sent_before_add_is_processed_are_answered(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("a", "10.0.0.2")
    udp, tcp, port = listener_sockets()
    # The client asks first: the datagram waits in the bound socket.
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(5)
    wire = make_query("a", qid=99)
    c.sendto(wire, (LOOP, port))
    h.server.add("s1", udp, tcp, ["web"])
    r = DNSRecord.parse(c.recv(4096))
    c.close()
    assert addrs(r) == ["10.0.0.2"] and r.header.id == 99


def test_a_cached_answer_follows_every_change_of_the_records(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("a", "10.0.0.2")
    sb = h.sandbox("s1", ["web"])
    wire = make_query("a", qid=5)
    assert addrs(DNSRecord.parse(exchange(sb.port, wire, 5))) == ["10.0.0.2"]
    assert addrs(DNSRecord.parse(exchange(sb.port, wire, 5))) == ["10.0.0.2"]  # cached
    h.hold("a", "10.0.0.9")  # same sandbox, new address
    assert addrs(DNSRecord.parse(exchange(sb.port, wire, 5))) == ["10.0.0.9"]
    h.records.remove("web", "id-a")
    r = DNSRecord.parse(exchange(sb.port, wire, 5))
    assert r.header.rcode == RCODE.SERVFAIL  # forwarded now, and there is no upstream
    # A cached NXDOMAIN goes too when the name arrives on the asker's network.
    h.hold("db", "10.1.0.2", network="back")
    wire = make_query("db", qid=6)
    assert DNSRecord.parse(exchange(sb.port, wire, 5)).header.rcode == RCODE.NXDOMAIN
    h.hold("db", "10.0.0.7", network="web")
    assert addrs(DNSRecord.parse(exchange(sb.port, wire, 5))) == ["10.0.0.7"]


def test_round_robin_is_not_frozen_by_the_cache(harness: Callable[..., Harness]) -> None:
    h = harness()
    for i in range(4):
        h.hold(f"s{i}", f"10.0.0.{i + 2}", names=("svc",))
    sb = h.sandbox("s1", ["web"])
    wire = make_query("svc", qid=7)
    orders = {tuple(addrs(DNSRecord.parse(exchange(sb.port, wire, 5)))) for _ in range(30)}
    assert len(orders) > 1
    assert all(sorted(o) == [f"10.0.0.{i}" for i in range(2, 6)] for o in orders)


def test_set_view_changes_what_a_sandbox_sees(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("db", "10.1.0.2", network="back")
    sb = h.sandbox("s1", ["web"])
    assert sb.ask("db").header.rcode == RCODE.NXDOMAIN
    h.server.set_view("s1", ["web", "back"])
    assert addrs(sb.ask("db")) == ["10.1.0.2"]
    h.server.set_view("s1", ["web"])
    assert sb.ask("db").header.rcode == RCODE.NXDOMAIN
    h.server.set_view("nobody", ["web"])  # unknown: ignored


def test_a_view_is_in_effect_when_set_view_returns(harness: Callable[..., Harness]) -> None:
    """connect and disconnect change the sandbox's view through set_view: the sandbox's
    next query, sent the moment they return, must see the new view (and no answer
    cached under the old one)."""
    h = harness()
    h.hold("db", "10.1.0.2", network="back")
    sb = h.sandbox("s1", ["web"])
    wire = make_query("db", qid=1)
    for i in range(300):
        h.server.set_view("s1", ["web", "back"])
        r = DNSRecord.parse(exchange(sb.port, wire, 5))
        assert addrs(r) == ["10.1.0.2"], i
        h.server.set_view("s1", ["web"])
        r = DNSRecord.parse(exchange(sb.port, wire, 5))
        assert r.header.rcode == RCODE.NXDOMAIN, i


def test_listeners_have_their_own_views(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("web1", "10.0.0.2", network="front")
    h.hold("db1", "10.1.0.2", network="back")
    front = h.sandbox("f", ["front"])
    back = h.sandbox("b", ["back"])
    assert addrs(front.ask("web1")) == ["10.0.0.2"]
    assert front.ask("db1").header.rcode == RCODE.NXDOMAIN
    assert addrs(back.ask("db1")) == ["10.1.0.2"]
    assert back.ask("web1").header.rcode == RCODE.NXDOMAIN


def test_remove_closes_the_listener(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("a", "10.0.0.2")
    sb = h.sandbox("s1", ["web"])
    assert addrs(sb.ask("a")) == ["10.0.0.2"]
    h.server.remove("s1")
    deadline = time.monotonic() + 5
    while sb.udp.fileno() != -1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sb.udp.fileno() == -1 and sb.tcp.fileno() == -1
    assert not h.server.serves("s1")
    h.server.remove("s1")  # twice is fine
    other = h.sandbox("s2", ["web"])
    assert addrs(other.ask("a")) == ["10.0.0.2"]


def test_serves_is_true_as_soon_as_add_returns(harness: Callable[..., Harness]) -> None:
    """The controller asks serves() right after add() (connect to a second network) and
    remove() (leave the last one): a stale answer would open a second listener or keep
    none."""
    h = harness()
    for i in range(200):
        udp, tcp, _ = listener_sockets()
        h.server.add(f"s{i}", udp, tcp, ["web"])
        assert h.server.serves(f"s{i}"), i
        h.server.remove(f"s{i}")
        assert not h.server.serves(f"s{i}"), i


def test_garbage_gets_formerr_or_nothing_and_the_server_goes_on(
        harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("a", "10.0.0.2")
    sb = h.sandbox("s1", ["web"])
    r = sb.ask("", raw=b"\x77\x77\x01\x00" + b"\xff" * 40)
    assert (r.header.id, r.header.rcode) == (0x7777, RCODE.FORMERR)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(0.3)
        for junk in (b"", b"\x01", b"\x12\x34\x81\x80" + b"\0" * 8):  # short, a response
            c.sendto(junk, (LOOP, sb.port))
            with pytest.raises(TimeoutError):
                c.recv(4096)
    assert addrs(sb.ask("a")) == ["10.0.0.2"]


# --------------------------------------------------------------------------- forwarding
def test_forwards_to_the_first_upstream_and_keeps_the_clients_id(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]]) -> None:
    ups = fakes("answer 203.0.113.1", "answer 203.0.113.2")
    h = harness(ups)
    sb = h.sandbox("s1", ["web"])
    r = sb.ask("www.example.test", qid=0x1111)
    assert (r.header.id, addrs(r)) == (0x1111, ["203.0.113.1"])
    assert ups[0].fake.asked == ["www.example.test"] and ups[1].fake.asked == []


def test_nxdomain_from_an_upstream_is_the_answer(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]]) -> None:
    ups = fakes("nxdomain", "answer 203.0.113.2")
    sb = harness(ups).sandbox("s1", ["web"])
    assert sb.ask("gone.example.test").header.rcode == RCODE.NXDOMAIN
    assert ups[1].fake.asked == []


@pytest.mark.parametrize("mode", ["servfail", "refused"])
def test_servfail_and_refused_move_on_to_the_next_upstream_at_once(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]],
        mode: str) -> None:
    ups = fakes(mode, "answer 203.0.113.2")
    sb = harness(ups).sandbox("s1", ["web"])
    start = time.monotonic()
    assert addrs(sb.ask("x.example.test")) == ["203.0.113.2"]
    assert time.monotonic() - start < ATTEMPT_TIMEOUT
    assert ups[0].fake.asked == ups[1].fake.asked == ["x.example.test"]


def test_a_silent_upstream_costs_one_attempt(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]]) -> None:
    ups = fakes("silent", "answer 203.0.113.2")
    sb = harness(ups).sandbox("s1", ["web"])
    start = time.monotonic()
    assert addrs(sb.ask("slow.example.test")) == ["203.0.113.2"]
    assert ATTEMPT_TIMEOUT - 0.1 < time.monotonic() - start < 2 * ATTEMPT_TIMEOUT


def test_all_silent_is_servfail_before_a_clients_five_seconds(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]]) -> None:
    ups = fakes("silent", "silent", "silent", "answer 203.0.113.4")
    h = harness(ups)
    sb = h.sandbox("s1", ["web"])
    start = time.monotonic()
    r = sb.ask("void.example.test", qid=0x2222, timeout=10)
    elapsed = time.monotonic() - start
    assert (r.header.id, r.header.rcode) == (0x2222, RCODE.SERVFAIL)
    assert str(r.q.qname) == "void.example.test."
    assert elapsed < 4.5
    # Three attempts, then the floor; a fourth upstream is never asked.
    assert [len(u.fake.asked) for u in ups] == [1, 1, 1, 0]
    # Meanwhile and afterwards, held names answer.
    h.hold("a", "10.0.0.2")
    assert addrs(sb.ask("a")) == ["10.0.0.2"]


def test_no_upstream_is_an_immediate_servfail(harness: Callable[..., Harness]) -> None:
    sb = harness().sandbox("s1", ["web"])
    start = time.monotonic()
    assert sb.ask("x.example.test").header.rcode == RCODE.SERVFAIL
    assert time.monotonic() - start < 0.5


def test_a_reply_from_elsewhere_or_to_another_question_is_ignored(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]]) -> None:
    for mode in ("wrong-source", "wrong-question"):
        ups = fakes(mode)
        sb = harness(ups).sandbox("s1", ["web"])
        r = sb.ask("spoof.example.test", timeout=10)
        # The forged answer was dropped; the attempt timed out: SERVFAIL.
        assert r.header.rcode == RCODE.SERVFAIL, mode
        assert addrs(r) == [], mode


def test_many_concurrent_forwards_each_get_their_own_answer(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]]) -> None:
    ups = fakes("answer 203.0.113.9")
    sb = harness(ups).sandbox("s1", ["web"])
    clients = []
    for i in range(100):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(5)
        c.sendto(make_query(f"n{i}.example.test", qid=i), (LOOP, sb.port))
        clients.append(c)
    for i, c in enumerate(clients):
        r = DNSRecord.parse(c.recv(4096))
        c.close()
        assert (r.header.id, str(r.q.qname), addrs(r)) == (i, f"n{i}.example.test.",
                                                           ["203.0.113.9"])


def test_a_removed_sandboxs_pending_query_does_not_stop_the_server(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]]) -> None:
    """A sandbox removed while its query waits on silent upstreams: when the last attempt
    times out there is no socket left to send SERVFAIL from, and that must not end the
    DNS thread that serves every other sandbox."""
    ups = fakes("silent")
    h = harness(ups)
    h.hold("a", "10.0.0.2")
    gone = h.sandbox("gone", ["web"])
    stay = h.sandbox("stay", ["web"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.sendto(make_query("late.example.test"), (LOOP, gone.port))
        deadline = time.monotonic() + 5
        while not ups[0].fake.asked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ups[0].fake.asked == ["late.example.test"]
        h.server.remove("gone")
    time.sleep(ATTEMPT_TIMEOUT + 0.3)
    assert addrs(stay.ask("a", timeout=2)) == ["10.0.0.2"]


# --------------------------------------------------------------------------- TCP
def test_tcp_answers_what_udp_must_truncate(harness: Callable[..., Harness]) -> None:
    h = harness()
    for i in range(60):
        h.hold(f"s{i}", f"10.0.1.{i + 2}", names=("many",))
    sb = h.sandbox("s1", ["web"])
    r = sb.ask("many")
    assert r.header.tc == 1 and r.rr == []
    r = sb.ask("many", tcp=True)
    assert r.header.tc == 0 and len(r.rr) == 60


def test_tcp_serves_several_queries_on_one_connection(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("a", "10.0.0.2")
    h.hold("b", "10.0.0.3")
    sb = h.sandbox("s1", ["web"])
    with socket.create_connection((LOOP, sb.port), timeout=5) as c:
        for qid, name, want in ((1, "a", "10.0.0.2"), (2, "b", "10.0.0.3"), (3, "a", None)):
            if want is None:  # two queries in one write
                both = make_query("a", qid=3) + make_query("b", qid=4)
                c.sendall(b"".join(struct.pack("!H", len(w)) + w for w in
                                   (both[:len(both) // 2], both[len(both) // 2:])))
                for expect_id, expect in ((3, "10.0.0.2"), (4, "10.0.0.3")):
                    (n,) = struct.unpack("!H", recv_exact(c, 2))
                    r = DNSRecord.parse(recv_exact(c, n))
                    assert (r.header.id, addrs(r)) == (expect_id, [expect])
                continue
            w = make_query(name, qid=qid)
            c.sendall(struct.pack("!H", len(w)) + w)
            (n,) = struct.unpack("!H", recv_exact(c, 2))
            r = DNSRecord.parse(recv_exact(c, n))
            assert (r.header.id, addrs(r)) == (qid, [want])


def test_tcp_forwards_and_falls_back_to_servfail(
        harness: Callable[..., Harness], fakes: Callable[..., list[Upstream]]) -> None:
    ups = fakes("servfail", "answer 203.0.113.2")
    sb = harness(ups).sandbox("s1", ["web"])
    r = sb.ask("t.example.test", tcp=True, qid=0x3333)
    assert (r.header.id, addrs(r)) == (0x3333, ["203.0.113.2"])
    silent = fakes("silent", "silent", "silent")
    sb = harness(silent).sandbox("s2", ["web"])
    start = time.monotonic()
    r = sb.ask("t.example.test", tcp=True, timeout=10)
    assert r.header.rcode == RCODE.SERVFAIL
    assert time.monotonic() - start < 4.5


def test_tcp_garbage_closes_that_connection_only(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.hold("a", "10.0.0.2")
    sb = h.sandbox("s1", ["web"])
    cycle = compression_cycle()
    cases = [
        (b"\xff\xff" + b"x" * 10, None),  # a length it never sends
        (b"\x00", None),
        (b"\x00\x00", None),  # an empty message: too short to answer
        (struct.pack("!H", 30) + b"\x12\x34\x81\x00" + b"\xff" * 26, None),  # a response
        (struct.pack("!H", 30) + b"\x12\x34\x01\x00" + b"\xff" * 26, RCODE.FORMERR),
        (struct.pack("!H", len(cycle)) + cycle, RCODE.FORMERR),
    ]
    for payload, expect in cases:
        with socket.create_connection((LOOP, sb.port), timeout=5) as c:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := c.recv(4096):
                got += chunk
        if expect is None:
            assert got == b"", payload[:8]
        else:
            (n,) = struct.unpack("!H", got[:2])
            assert len(got) == 2 + n
            assert DNSRecord.parse(got[2:]).header.rcode == expect
    assert addrs(sb.ask("a", tcp=True)) == ["10.0.0.2"]


# --------------------------------------------------------------------------- upstreams
def test_upstreams_given_are_capped_at_three() -> None:
    u = Upstreams(["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"])
    assert u.get() == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert MAX_UPSTREAMS == 3


def test_upstreams_from_resolv_conf_and_reread_on_change(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.org\nnameserver 127.0.0.53\n"
                    "nameserver fe80::1%eth0\nnameserver 192.0.2.9\nnameserver 192.0.2.10\n"
                    "options ndots:2\n")
    u = Upstreams([], str(conf))
    assert u.get() == ["127.0.0.53", "fe80::1", "192.0.2.9"]
    conf.write_text("nameserver 198.51.100.1\n")
    st = conf.stat()
    os.utime(conf, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert u.get() == ["198.51.100.1"]
    conf.unlink()
    assert u.get() == []
    # Given servers win over the file.
    assert Upstreams(["192.0.2.7"], str(conf)).get() == ["192.0.2.7"]


def test_upstreams_skip_lines_that_are_not_addresses(tmp_path: Path) -> None:
    """A resolver name that is not an address would be looked up (blocking the DNS thread
    on the host's resolver) and its replies never matched: every forward would time out."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver dns.example\nnameserver\nnameserver 192.0.2.9\n")
    assert Upstreams([], str(conf)).get() == ["192.0.2.9"]


def test_cnmd_refuses_a_dns_upstream_that_is_not_an_address(tmp_path: Path) -> None:
    good = daemon.parser().parse_args(["--dns", "192.0.2.1", "--dns", "2001:db8::1",
                                       "--state-dir", str(tmp_path)])
    assert daemon.config_from(good).state_dir == str(tmp_path)
    bad = daemon.parser().parse_args(["--dns", "dns.example", "--state-dir", str(tmp_path)])
    with pytest.raises(InvalidArgument, match="--dns dns.example: not an IP address"):
        daemon.config_from(bad)


def test_close_stops_the_thread() -> None:
    server = DnsServer(Records(), Upstreams([]), factory([]))
    udp, tcp, port = listener_sockets()
    server.add("s1", udp, tcp, ["web"])
    server.close()
    assert not server._thread.is_alive()
    assert udp.fileno() == -1 and tcp.fileno() == -1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(0.3)
        c.sendto(make_query("a"), (LOOP, port))
        with pytest.raises((TimeoutError, ConnectionRefusedError)):
            c.recv(4096)


# --------------------------------------------------------------------------- with the controller
class Recording(FakeSandboxLinks):
    """The fake kernel's sandbox links, keeping the DNS sockets opened per namespace (on
    127.0.0.1)."""

    opened: dict[str, list[tuple[socket.socket, socket.socket]]]

    def open_dns(self, path: str) -> tuple[socket.socket, socket.socket]:
        pair = super().open_dns(path)
        self.opened.setdefault(path, []).append(pair)
        return pair


@dataclass
class DnsStack:
    ctl: Controller
    server: DnsServer
    sbx: Recording

    def busy(self) -> threading.Event:
        """Keep the DNS thread busy (as with a burst of queries) until the event is set,
        or for half a second at most (set_view waits for it)."""
        gate = threading.Event()
        started = threading.Event()

        def hold() -> None:
            started.set()
            gate.wait(0.5)

        self.server._do(hold)
        assert started.wait(5)
        return gate

    def settle(self) -> None:
        """Wait until the DNS thread has run every command queued so far."""
        done = threading.Event()
        self.server._do(done.set)
        assert done.wait(5)

    def listeners(self, sandbox: str) -> list[tuple[socket.socket, socket.socket]]:
        return self.sbx.opened.get(self.ctl.netns_path(self.ctl.sandbox(sandbox)), [])

    def ask(self, sandbox: str, name: str) -> DNSRecord:
        """Ask the sandbox's listener (the last sockets opened for it)."""
        udp, _ = self.listeners(sandbox)[-1]
        return DNSRecord.parse(exchange(udp.getsockname()[1], make_query(name), 5))


@pytest.fixture
def dns_stack(tmp_path: Path, kernel: FakeKernel, host: FakeHostLinks,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[DnsStack]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search example.org\n")
    (tmp_path / "host-netns").touch()
    cfg = Config(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                 host_netns=str(tmp_path / "host-netns"), resolv_conf=str(resolv))
    sbx = Recording(kernel)
    sbx.opened = {}
    built = wiring.build(cfg, wiring.Adapters(host, sbx, host_socket=factory([])))
    assert built.dns is not None
    try:
        yield DnsStack(built.controller, built.dns, sbx)
    finally:
        built.close()


def test_connect_while_the_dns_thread_is_busy_keeps_one_listener(dns_stack: DnsStack) -> None:
    s = dns_stack
    s.ctl.create_network(NetworkSpec(name="web", subnets=("10.0.0.0/24",)))
    s.ctl.create_network(NetworkSpec(name="back", subnets=("10.1.0.0/24",)))
    s.ctl.create_sandbox(SandboxSpec(name="db", network="back"))
    gate = s.busy()
    try:
        s.ctl.create_sandbox(SandboxSpec(name="a", network="web"))
        s.ctl.connect(ConnectSpec(network="back", sandbox="a"))
    finally:
        gate.set()
    s.settle()
    # One listener: a second one's sockets would leak, and pin the sandbox's namespace
    # after it is removed.
    opened = s.listeners("a")
    assert len(opened) == 1
    r = s.ask("a", "db")
    assert [str(x.rdata) for x in r.rr] == ["10.1.0.2"]
    s.ctl.remove_sandbox("a")
    s.settle()
    assert all(sock.fileno() == -1 for pair in opened for sock in pair)


def test_leave_and_join_while_the_dns_thread_is_busy_keeps_a_listener(
        dns_stack: DnsStack) -> None:
    s = dns_stack
    s.ctl.create_network(NetworkSpec(name="web", subnets=("10.0.0.0/24",)))
    s.ctl.create_sandbox(SandboxSpec(name="a", network="web"))
    s.ctl.create_sandbox(SandboxSpec(name="b", network="web"))
    sb = s.ctl.sandbox("a")
    gate = s.busy()
    try:
        s.ctl.disconnect("web", "a")  # its last DNS network: the listener goes
        s.ctl.connect(ConnectSpec(network="web", sandbox="a"))  # and must come back
    finally:
        gate.set()
    s.settle()
    assert s.server.serves(sb.id)
    r = s.ask("a", "b")
    assert [str(x.rdata) for x in r.rr] == ["10.0.0.3"]
