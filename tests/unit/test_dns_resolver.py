"""resolver.answer: query bytes in, reply bytes (or forward, or drop) out."""

from __future__ import annotations

import random
import struct

import pytest
from dnslib import EDNS0, OPCODE, QTYPE, RCODE, DNSRecord, EDNSOption

from cnm.dns import resolver
from cnm.dns.records import Entry, Records, reverse_name

V4 = "10.0.0.2"
V6 = "fd00::2"


@pytest.fixture
def records() -> Records:
    r = Records()
    r.set(Entry("web", "web", "sa", "a", ("a", "alpha", "api"), V4, V6))
    r.set(Entry("web", "web", "sb", "b", ("b",), "10.0.0.3", None))
    r.set(Entry("back", "back", "sdb", "db", ("db",), "10.1.0.2", None))
    for i in range(3):
        r.set(Entry("web", "web", f"svc{i}", f"svc{i}", (f"svc{i}", "svc"), f"10.0.0.{10 + i}",
                    None))
    return r


VIEW = ["web"]


def query(name: str, qtype: str = "A", edns: int | None = None, qid: int = 0x4242,
          rd: bool = True) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    q.header.rd = int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return bytes(q.pack())


def ask(records: Records, name: str, qtype: str = "A", view: list[str] = VIEW,
        **kw: object) -> tuple[resolver.Result, DNSRecord]:
    udp = bool(kw.pop("udp", True))
    result = resolver.answer(query(name, qtype, **kw), view, records, udp=udp)  # type: ignore[arg-type]
    assert result.wire is not None, result
    return result, DNSRecord.parse(result.wire)


def rdata(reply: DNSRecord, qtype: str | None = None) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if qtype is None or rr.rtype == QTYPE[qtype]]


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["a", "alpha", "api", "a.web", "A.WEB", "a.web.", "Alpha"])
def test_every_name_of_a_sandbox_answers_its_address(records: Records, name: str) -> None:
    result, r = ask(records, name)
    assert r.header.rcode == RCODE.NOERROR
    assert rdata(r) == [V4]
    assert r.rr[0].ttl == resolver.TTL
    assert str(r.rr[0].rname) == str(DNSRecord.parse(query(name)).q.qname)  # as asked
    assert result.cacheable and not result.forward


def test_reply_header_echoes_the_query_and_is_not_authoritative(records: Records) -> None:
    result, r = ask(records, "a", qid=0xBEEF)
    assert r.header.id == 0xBEEF
    assert (r.header.qr, r.header.aa, r.header.ra, r.header.rd, r.header.ad) == (1, 0, 1, 1, 0)
    assert [str(q.qname) for q in r.questions] == ["a."]
    _, r = ask(records, "a", rd=False)
    assert r.header.rd == 0


def test_several_holders_are_all_returned_shuffled(records: Records) -> None:
    want = ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    orders = set()
    for _ in range(60):
        result, r = ask(records, "svc")
        assert sorted(rdata(r)) == want
        orders.add(tuple(rdata(r)))
        assert not result.cacheable  # a cached order would stop the round robin
    assert len(orders) > 1


def test_aaaa_and_nodata_for_the_family_a_name_lacks(records: Records) -> None:
    _, r = ask(records, "a", "AAAA")
    assert rdata(r) == [V6]
    _, r = ask(records, "b", "AAAA")
    assert (r.header.rcode, r.rr) == (RCODE.NOERROR, [])
    _, r = ask(records, "a", "ANY")
    assert sorted(rdata(r)) == sorted([V4, V6])
    for other in ("MX", "TXT", "SRV", "CNAME", "SOA"):
        result, r = ask(records, "a", other)
        assert (r.header.rcode, r.rr) == (RCODE.NOERROR, []), other
        assert not result.forward


def test_ptr_for_endpoint_addresses(records: Records) -> None:
    _, r = ask(records, reverse_name(V4), "PTR")
    assert rdata(r) == ["a.web."]
    assert r.rr[0].rtype == QTYPE.PTR
    _, r = ask(records, reverse_name(V6), "PTR")
    assert rdata(r) == ["a.web."]
    _, r = ask(records, reverse_name(V4).upper() + ".", "PTR")
    assert rdata(r) == ["a.web."]


def test_ptr_of_an_address_not_in_view_is_not_answered_with_its_name(
        records: Records) -> None:
    # Held on a network the asker does not share: NXDOMAIN here, never asked upstream.
    result, r = ask(records, reverse_name("10.1.0.2"), "PTR")
    assert r.header.rcode == RCODE.NXDOMAIN and r.rr == [] and not result.forward
    # Not cnm's at all: for the upstreams.
    for name in (reverse_name("192.0.2.1"), "1.ip6.arpa"):
        result = resolver.answer(query(name, "PTR"), VIEW, records)
        assert result.forward and result.wire is None, name
    # The holder's own view does answer it.
    _, r = ask(records, reverse_name("10.1.0.2"), "PTR", view=["back"])
    assert rdata(r) == ["db.back."]


# --------------------------------------------------------------------------- scope, forward
def test_a_name_held_only_elsewhere_is_nxdomain_not_forwarded(records: Records) -> None:
    for name in ("db", "db.back"):
        result, r = ask(records, name)
        assert r.header.rcode == RCODE.NXDOMAIN and r.rr == []
        assert result.cacheable and not result.forward
    result, r = ask(records, "db", view=["web", "back"])
    assert rdata(r) == ["10.1.0.2"]


def test_names_nobody_holds_are_forwarded(records: Records) -> None:
    for name, qtype in (("example.com", "A"), ("a.example.com", "AAAA"), ("web", "A"),
                        ("alpha.web", "A"), ("x", "MX")):
        assert resolver.answer(query(name, qtype), VIEW, records) == resolver.FORWARD
    # With an empty view everything not held elsewhere is forwarded.
    assert resolver.answer(query("zzz"), [], records) == resolver.FORWARD


# --------------------------------------------------------------------------- errors
def test_garbage_gets_a_header_only_formerr(records: Records) -> None:
    data = b"\xab\xcd\x01\x00" + b"\xff" * 30  # RD set, a question that cannot be read
    result = resolver.answer(data, VIEW, records)
    assert result.wire is not None and not result.cacheable
    assert result.wire[:2] == b"\xab\xcd"
    assert len(result.wire) == 12
    r = DNSRecord.parse(result.wire)
    assert (r.header.qr, r.header.rd, r.header.ra) == (1, 1, 1)
    assert r.header.rcode == RCODE.FORMERR
    assert (r.header.q, r.header.a, r.header.auth, r.header.ar) == (0, 0, 0, 0)


def test_too_short_or_a_response_is_dropped(records: Records) -> None:
    for data in (b"", b"\x00", b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 5):
        assert resolver.answer(data, VIEW, records) == resolver.DROP
    # A response (QR set), readable or not, is never answered.
    reply = DNSRecord.parse(query("a")).reply().pack()
    assert resolver.answer(reply, VIEW, records) == resolver.DROP
    assert resolver.answer(b"\x12\x34\x81\x00" + b"\xff" * 20, VIEW, records) == resolver.DROP


@pytest.mark.parametrize("qd", [0, 2])
def test_not_exactly_one_question_is_formerr(records: Records, qd: int) -> None:
    q = DNSRecord.question("a")
    if qd == 0:
        q.questions = []
    else:
        q.add_question(DNSRecord.question("b").q)
    result = resolver.answer(q.pack(), VIEW, records)
    assert result.wire is not None
    assert DNSRecord.parse(result.wire).header.rcode == RCODE.FORMERR


@pytest.mark.parametrize("opcode", [OPCODE.IQUERY, OPCODE.STATUS, OPCODE.NOTIFY,
                                    OPCODE.UPDATE])
def test_other_opcodes_are_notimp(records: Records, opcode: int) -> None:
    q = DNSRecord.parse(query("a"))
    q.header.opcode = opcode
    result = resolver.answer(q.pack(), VIEW, records)
    assert result.wire is not None
    r = DNSRecord.parse(result.wire)
    assert r.header.rcode == RCODE.NOTIMP and r.rr == []
    assert r.header.aa == 0


def compression_cycle() -> bytes:
    """A name whose pointers go round in circles (see tests/netns/dnsagent.py): two
    backward pointers that are valid UTF-8, hidden inside the first question's last label.
    """
    b = bytearray(struct.pack("!HHHHHH", 0x1234, 0x0100, 2, 0, 0, 0))
    while len(b) < 588:
        b += bytes([63]) + b"a" * 63
    b += bytes([50]) + b"b" * 50
    content = bytearray(b"c" * 70)  # offsets 640..709
    content[0] = 63  # 640: a label running over the pointer at 700
    content[1] = 58  # 641: a label ending at the pointer at 700
    content[60:62] = b"\xc2\x80"  # 700 -> 640
    content[64:66] = b"\xc2\x81"  # 704 -> 641
    b += bytes([70]) + content + b"\0\0\1\0\1"
    b += b"\xc2\x81\0\1\0\1"  # the second question: -> 641
    return bytes(b)


@pytest.mark.parametrize("packet", [
    compression_cycle(),
    struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1",  # points at itself
    struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x01a\xc0\x0c\0\1\0\1",
    struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x40\0\1\0\1",  # forward
], ids=["cycle", "self", "label-then-self", "forward"])
def test_compression_loops_are_formerr(records: Records, packet: bytes) -> None:
    result = resolver.answer(packet, VIEW, records)
    assert result.wire is not None
    assert DNSRecord.parse(result.wire).header.rcode == RCODE.FORMERR
    assert resolver.servfail(packet) is not None


def test_random_and_damaged_packets_never_raise(records: Records) -> None:
    rng = random.Random(5)
    seeds = [query(n, t, edns=e) for n in ("a", "svc", "db", reverse_name(V4), "x.test")
             for t in ("A", "AAAA", "PTR", "ANY") for e in (None, 4096)]
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        roll = rng.random()
        if roll < 0.3:
            data = bytearray(rng.randbytes(rng.randrange(0, 300)))
        elif roll < 0.5:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 5)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        for udp in (True, False):
            result = resolver.answer(bytes(data), VIEW, records, udp=udp)
            assert result.wire is None or len(result.wire) >= 12
            if result.wire is not None:
                assert result.wire[:2] == bytes(data[:2])
        resolver.servfail(bytes(data))


# --------------------------------------------------------------------------- EDNS, size
def test_edns_query_gets_our_opt_and_no_echo_of_its_options(records: Records) -> None:
    q = DNSRecord.parse(query("a"))
    q.add_ar(EDNS0(udp_len=4096, opts=[EDNSOption(10, b"\x01" * 8)]))  # a client cookie
    result = resolver.answer(q.pack(), VIEW, records)
    assert result.wire is not None
    r = DNSRecord.parse(result.wire)
    opts = [rr for rr in r.ar if rr.rtype == QTYPE.OPT]
    assert len(opts) == 1 and opts[0].rclass == resolver.UDP_MAX
    assert opts[0].rdata == [] or not opts[0].rdata
    # Without EDNS in the query, none in the reply.
    _, r = ask(records, "a")
    assert [rr for rr in r.ar if rr.rtype == QTYPE.OPT] == []
    # Errors and NXDOMAIN carry it as well.
    _, r = ask(records, "db", edns=1232)
    assert r.header.rcode == RCODE.NXDOMAIN
    assert [rr.rclass for rr in r.ar if rr.rtype == QTYPE.OPT] == [resolver.UDP_MAX]


@pytest.fixture
def crowd() -> Records:
    """60 holders of "many": about 1 KB of A records."""
    r = Records()
    for i in range(60):
        r.set(Entry("web", "web", f"s{i}", f"s{i}", (f"s{i}", "many"), f"10.0.1.{i + 2}",
                    None))
    for i in range(100):
        r.set(Entry("web", "web", f"h{i}", f"h{i}", (f"h{i}", "huge"), f"10.0.2.{i + 2}",
                    None))
    return r


def test_udp_without_edns_truncates_past_512_bytes(crowd: Records) -> None:
    result, r = ask(crowd, "many", view=["web"])
    assert r.header.tc == 1 and r.rr == []
    assert [str(q.qname) for q in r.questions] == ["many."]
    assert result.wire is not None and len(result.wire) <= resolver.UDP_PLAIN
    assert not result.cacheable
    # Over TCP: all of them, no TC.
    _, r = ask(crowd, "many", view=["web"], udp=False)
    assert r.header.tc == 0 and len(r.rr) == 60


def test_edns_size_decides_up_to_our_limit(crowd: Records) -> None:
    # 1232 is enough for 60, whatever larger size the client offers.
    _, r = ask(crowd, "many", view=["web"], edns=4096)
    assert r.header.tc == 0 and len(r.rr) == 60
    # A small EDNS size is honoured, and one below 512 means 512.
    _, r = ask(crowd, "many", view=["web"], edns=600)
    assert r.header.tc == 1 and r.rr == []
    assert [rr.rclass for rr in r.ar if rr.rtype == QTYPE.OPT] == [resolver.UDP_MAX]
    result, r = ask(crowd, "many", view=["web"], edns=100)
    assert r.header.tc == 1
    assert result.wire is not None and len(result.wire) <= resolver.UDP_PLAIN
    # 100 records (~1.6 KB) pass our 1232 even when the client offers 65535.
    result, r = ask(crowd, "huge", view=["web"], edns=65535)
    assert r.header.tc == 1 and r.rr == []
    assert result.wire is not None and len(result.wire) <= resolver.UDP_MAX
    _, r = ask(crowd, "huge", view=["web"], udp=False)
    assert len(r.rr) == 100


def test_a_reply_just_under_the_limit_is_not_truncated() -> None:
    r = Records()
    # Header 12 + question 9 ("many." A IN) + n * 16: 30 records make 501 bytes.
    for i in range(30):
        r.set(Entry("web", "web", f"s{i}", f"s{i}", ("many",), f"10.0.1.{i + 2}", None))
    result, reply = ask(r, "many", view=["web"])
    assert result.wire is not None and len(result.wire) <= 512
    assert reply.header.tc == 0 and len(reply.rr) == 30


# --------------------------------------------------------------------------- servfail
def test_servfail_keeps_the_question() -> None:
    wire = resolver.servfail(query("example.com", "AAAA", qid=77))
    assert wire is not None
    r = DNSRecord.parse(wire)
    assert (r.header.id, r.header.rcode, r.header.qr, r.header.ra) == (77, RCODE.SERVFAIL, 1, 1)
    assert str(r.q.qname) == "example.com." and r.q.qtype == QTYPE.AAAA
    assert r.rr == [] and r.ar == []


def test_servfail_for_garbage_is_header_only_and_none_for_scraps() -> None:
    wire = resolver.servfail(b"\x00\x09\x01\x00" + b"\xff" * 20)
    assert wire is not None and len(wire) == 12
    assert DNSRecord.parse(wire).header.rcode == RCODE.SERVFAIL
    assert resolver.servfail(b"\x00\x01") is None


def test_reverse_lookup_of_an_address_on_another_network_is_not_forwarded() -> None:
    from dnslib import DNSRecord

    from cnm.dns.records import Entry, Records
    from cnm.dns.resolver import answer

    records = Records()
    records.set(Entry("net-b", "b", "sb-x", "x", ("x",), "10.9.0.7", None))
    query = DNSRecord.question("7.0.9.10.in-addr.arpa", "PTR").pack()
    result = answer(query, ["net-a"], records)
    assert not result.forward
    assert result.wire is not None and DNSRecord.parse(result.wire).header.rcode == 3
    # An address cnm does not hold still goes to the upstreams.
    other = DNSRecord.question("8.0.9.10.in-addr.arpa", "PTR").pack()
    assert answer(other, ["net-a"], records).forward
