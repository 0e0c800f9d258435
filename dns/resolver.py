"""The answer function of the embedded DNS (pure: bytes in, bytes out).

Names are answered from ``Records`` for the networks the asking sandbox is on (its view);
anything else is for the upstream resolvers. Several holders of a name are all returned,
shuffled; a name that exists only in the other family gets NOERROR with no data.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from dnslib import AAAA, EDNS0, OPCODE, PTR, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.dns import DNSError

from cnm.dns.records import Records

TTL = 60  # short: a sandbox that comes back with a new address is found within a minute
UDP_PLAIN = 512  # without EDNS0 (RFC 1035)
UDP_MAX = 1232  # the EDNS0 size we accept and advertise (DNS flag day 2020)


@dataclass(frozen=True)
class Result:
    """What to do with a query: send ``wire``, forward it, or drop it."""

    wire: bytes | None = None
    forward: bool = False
    # Whether ``wire`` (minus its ID) answers the same query bytes every time.
    cacheable: bool = False


DROP = Result()
FORWARD = Result(forward=True)

# What dnslib raises on a packet it cannot read. RecursionError: it follows compression
# pointers recursively and stops only a pointer to the one just followed, so a cycle of
# two pointers (legal backward jumps through a label that holds them) recurses until
# Python gives up.
_UNREADABLE = (DNSError, ValueError, IndexError, KeyError, UnicodeDecodeError, RecursionError)


def _error(q: DNSRecord, rcode: int) -> Result:
    r = q.reply()
    r.header.rcode = rcode
    r.header.aa = 0
    r.header.ad = 0
    return Result(r.pack())


def header_error(data: bytes, rcode: int) -> Result:
    """A header-only error reply for a query too broken to parse (FORMERR)."""
    if len(data) < 12 or data[2] & 0x80:  # too short, or itself a response: drop
        return DROP
    flags = bytes([0x80 | (data[2] & 0x01), 0x80 | rcode])  # QR, RD copied; RA, rcode
    return Result(data[:2] + flags + b"\0" * 8)


def answer(data: bytes, view: Sequence[str], records: Records, udp: bool = True) -> Result:
    try:
        q = DNSRecord.parse(data)
    except _UNREADABLE:
        return header_error(data, RCODE.FORMERR)
    if q.header.qr:
        return DROP
    if q.header.opcode != OPCODE.QUERY:
        return _error(q, RCODE.NOTIMP)
    if len(q.questions) != 1:
        return _error(q, RCODE.FORMERR)
    name = str(q.q.qname).rstrip(".").lower()
    qtype = q.q.qtype
    reply = q.reply()
    reply.header.aa = 0
    reply.header.ad = 0  # nothing here is DNSSEC-validated
    reply.header.ra = 1
    reply.ar = []  # dnslib copies the query's OPT; ours is set below
    opt = next((r for r in q.ar if r.rtype == QTYPE.OPT), None)
    if opt is not None:
        reply.add_ar(EDNS0(udp_len=UDP_MAX))
    limit = min(max(opt.rclass, UDP_PLAIN), UDP_MAX) if opt is not None else UDP_PLAIN

    if qtype == QTYPE.PTR and name.endswith((".in-addr.arpa", ".ip6.arpa")):
        target = records.ptr(view, name)
        if target is None:
            if records.ptr_anywhere(name):
                # A sandbox's address on a network the asker does not share: answered
                # here, so cnm's internal addresses are never asked of the upstreams.
                reply.header.rcode = RCODE.NXDOMAIN
                return _finish(reply, udp, limit, cacheable=True)
            return FORWARD
        reply.add_answer(RR(q.q.qname, QTYPE.PTR, rdata=PTR(target + "."), ttl=TTL))
        return _finish(reply, udp, limit, cacheable=True)

    holders = records.lookup(view, name)
    if not holders:
        if records.held_anywhere(name):
            # A sandbox on a network the asker does not share: not its business, and not
            # a question for the upstreams either.
            reply.header.rcode = RCODE.NXDOMAIN
            return _finish(reply, udp, limit, cacheable=True)
        return FORWARD
    v4 = list(dict.fromkeys(h.ipv4.split("/")[0] for h in holders if h.ipv4))
    v6 = list(dict.fromkeys(h.ipv6.split("/")[0] for h in holders if h.ipv6))
    rrs: list[RR] = []
    if qtype in (QTYPE.A, QTYPE.ANY):
        rrs += [RR(q.q.qname, QTYPE.A, rdata=A(ip), ttl=TTL) for ip in v4]
    if qtype in (QTYPE.AAAA, QTYPE.ANY):
        rrs += [RR(q.q.qname, QTYPE.AAAA, rdata=AAAA(ip), ttl=TTL) for ip in v6]
    # Other types of a name we hold, and the family it lacks: NOERROR with no data.
    random.shuffle(rrs)
    for rr in rrs:
        reply.add_answer(rr)
    return _finish(reply, udp, limit, cacheable=len(rrs) <= 1)


def _finish(reply: DNSRecord, udp: bool, limit: int, cacheable: bool) -> Result:
    wire = reply.pack()
    if udp and len(wire) > limit:
        # Too big for this transport: the header and question only, with TC set; the
        # client asks again over TCP.
        reply.rr = []
        reply.header.tc = 1
        wire = reply.pack()
    return Result(wire, cacheable=cacheable)


def servfail(data: bytes) -> bytes | None:
    """SERVFAIL for a query (the floor when every upstream failed)."""
    try:
        q = DNSRecord.parse(data)
    except _UNREADABLE:
        return header_error(data, RCODE.SERVFAIL).wire
    r = q.reply()
    r.header.aa = 0
    r.header.ad = 0
    r.header.ra = 1
    r.header.rcode = RCODE.SERVFAIL
    r.ar = []
    return bytes(r.pack())
