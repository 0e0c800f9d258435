"""XFRM (IPsec) over raw netlink: the SAs and policies of encrypted overlays.

The kernel's structures (linux/xfrm.h) are packed by hand as rtnl.py does for rtnetlink;
``encode_*`` and ``decode_*`` are pure (a unit test decodes what it encodes), ``Xfrm`` is one
NETLINK_XFRM socket, made and used on the host namespace's thread. ``apply`` makes the
kernel match a plan (cnm.esp.EspPlan): cnm's SAs (reqid in its range) and policies (its
mark) that the plan lacks are deleted, what it has is added; nothing else is touched.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from cnm.errors import Unsupported
from cnm.esp import AEAD, ESP_MARK, ESP_MARK_MASK, ICV_BITS, EspPlan, Policy, Sa, owned_reqid
from cnm.kernel.fds import lift
from cnm.kernel.rtnl import (
    _HDR,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NetlinkError,
    _attr,
    _attrs,
    answers,
)

NETLINK_XFRM = 6
XFRM_MSG_NEWSA, XFRM_MSG_DELSA, XFRM_MSG_GETSA = 0x10, 0x11, 0x12
XFRM_MSG_NEWPOLICY, XFRM_MSG_DELPOLICY, XFRM_MSG_GETPOLICY = 0x13, 0x14, 0x15
XFRM_MSG_UPDPOLICY = 0x19
XFRMA_TMPL, XFRMA_ALG_AEAD, XFRMA_MARK = 5, 18, 21
XFRM_MODE_TRANSPORT = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_ALLOW, XFRM_POLICY_BLOCK = 0, 1
XFRM_INF = 2**64 - 1
IPPROTO_ESP, IPPROTO_UDP = 50, 17
REPLAY_WINDOW = 32
# cnm's peer policies; its block policies come after them (a larger number loses).
PRIORITY = 0x100

# struct xfrm_selector: daddr, saddr, dport, dport_mask, sport, sport_mask (big endian),
# family, prefixlen_d, prefixlen_s, proto, 3 pad, ifindex, user.
_SEL_ADDRS = struct.Struct("=16s16s")
_SEL_PORTS = struct.Struct("!HHHH")
_SEL_REST = struct.Struct("=HBBB3xiI")
SEL_SIZE = _SEL_ADDRS.size + _SEL_PORTS.size + _SEL_REST.size  # 56
_ID = struct.Struct("=16s4sB3x")  # xfrm_id: daddr, spi (big endian), proto
_LFT = struct.Struct("=8Q")  # xfrm_lifetime_cfg
_CUR = struct.Struct("=4Q")  # xfrm_lifetime_cur
_STATS = struct.Struct("=3I")
_SA_TAIL = struct.Struct("=IIHBBB7x")  # seq, reqid, family, mode, replay_window, flags
SA_INFO_SIZE = SEL_SIZE + _ID.size + 16 + _LFT.size + _CUR.size + _STATS.size + _SA_TAIL.size
_SA_ID = struct.Struct("=16s4sHBx")  # xfrm_usersa_id: daddr, spi, family, proto
_POL_TAIL = struct.Struct("=IIBBBB4x")  # priority, index, dir, action, flags, share
POL_INFO_SIZE = SEL_SIZE + _LFT.size + _CUR.size + _POL_TAIL.size
_POL_ID = struct.Struct("=IB3x")  # after the selector: index, dir
_TMPL = struct.Struct("=16s4sB3xH2x16sIBBBxIII")  # xfrm_user_tmpl
_MARK = struct.Struct("=II")
_AEAD_HEAD = struct.Struct("=64sII")

assert SA_INFO_SIZE == 224 and POL_INFO_SIZE == 168 and _TMPL.size == 64


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _addr(address: str) -> bytes:
    return socket.inet_pton(_family(address), address).ljust(16, b"\0")


def _unaddr(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw[:16])


def _selector(src: str, dst: str, dport: int = 0, proto: int = 0, any_dst: bool = False) -> bytes:
    family = _family(src)
    bits = 32 if family == socket.AF_INET else 128
    return (_SEL_ADDRS.pack(_addr(dst), _addr(src))
            + _SEL_PORTS.pack(dport, 0xFFFF if dport else 0, 0, 0)
            + _SEL_REST.pack(family, 0 if any_dst else bits, bits, proto, 0, 0))


def _lifetimes() -> bytes:
    return (_LFT.pack(XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)
            + _CUR.pack(0, 0, 0, 0))


def encode_sa(sa: Sa) -> bytes:
    """The body of XFRM_MSG_NEWSA: ESP in transport mode with rfc4106(gcm(aes))."""
    family = _family(sa.src)
    info = (_selector(sa.src, sa.dst) + _ID.pack(_addr(sa.dst), sa.spi.to_bytes(4, "big"),
                                                 IPPROTO_ESP)
            + _addr(sa.src) + _lifetimes() + _STATS.pack(0, 0, 0)
            + _SA_TAIL.pack(0, sa.reqid, family, XFRM_MODE_TRANSPORT, REPLAY_WINDOW, 0))
    aead = _AEAD_HEAD.pack(AEAD.encode(), len(sa.key) * 8, ICV_BITS) + sa.key
    return info + _attr(XFRMA_ALG_AEAD, aead)


def encode_sa_id(src: str, dst: str, spi: int) -> bytes:
    """The body of XFRM_MSG_DELSA."""
    return _SA_ID.pack(_addr(dst), spi.to_bytes(4, "big"), _family(dst), IPPROTO_ESP)


def encode_policy(p: Policy) -> bytes:
    """The body of XFRM_MSG_UPDPOLICY: out, UDP to ``dport``, cnm's mark, one template."""
    family = _family(p.src)
    mark = _attr(XFRMA_MARK, _MARK.pack(ESP_MARK, ESP_MARK_MASK))
    if p.block:
        return (_selector(p.src, p.dst, p.dport, IPPROTO_UDP, any_dst=True) + _lifetimes()
                + _POL_TAIL.pack(PRIORITY + 1, 0, XFRM_POLICY_OUT, XFRM_POLICY_BLOCK, 0, 0)
                + mark)
    info = (_selector(p.src, p.dst, p.dport, IPPROTO_UDP) + _lifetimes()
            + _POL_TAIL.pack(PRIORITY, 0, XFRM_POLICY_OUT, XFRM_POLICY_ALLOW, 0, 0))
    tmpl = _TMPL.pack(_addr(p.dst), b"\0" * 4, IPPROTO_ESP, family, _addr(p.src), p.reqid,
                      XFRM_MODE_TRANSPORT, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    return info + _attr(XFRMA_TMPL, tmpl) + mark


def encode_policy_id(p: Policy) -> bytes:
    """The body of XFRM_MSG_DELPOLICY (the mark is part of a policy's identity)."""
    return (_selector(p.src, p.dst, p.dport, IPPROTO_UDP, any_dst=p.block)
            + _POL_ID.pack(0, XFRM_POLICY_OUT)
            + _attr(XFRMA_MARK, _MARK.pack(ESP_MARK, ESP_MARK_MASK)))


def decode_sa(data: bytes, start: int = 0, end: int | None = None) -> Sa | None:
    """An SA of a dump (or of ``encode_sa``); None unless ESP with an AEAD key."""
    end = len(data) if end is None else end
    o = start + SEL_SIZE
    daddr, spi, proto = _ID.unpack_from(data, o)
    saddr = data[o + _ID.size:o + _ID.size + 16]
    _, req, family, _, _, _ = _SA_TAIL.unpack_from(data, start + SA_INFO_SIZE - _SA_TAIL.size)
    attrs = _attrs(data, start + SA_INFO_SIZE, end)
    if proto != IPPROTO_ESP or XFRMA_ALG_AEAD not in attrs:
        return None
    raw = attrs[XFRMA_ALG_AEAD]
    _, bits, _ = _AEAD_HEAD.unpack_from(raw)
    key = raw[_AEAD_HEAD.size:_AEAD_HEAD.size + bits // 8]
    return Sa(_unaddr(family, saddr), _unaddr(family, daddr), int.from_bytes(spi, "big"), key,
              req)


def decode_policy(data: bytes, start: int = 0, end: int | None = None) -> Policy | None:
    """An outbound policy of a dump carrying cnm's mark; None for anyone else's."""
    end = len(data) if end is None else end
    daddr, saddr = _SEL_ADDRS.unpack_from(data, start)
    dport = _SEL_PORTS.unpack_from(data, start + _SEL_ADDRS.size)[0]
    family = _SEL_REST.unpack_from(data, start + _SEL_ADDRS.size + _SEL_PORTS.size)[0]
    _, _, direction, action, _, _ = _POL_TAIL.unpack_from(data, start + POL_INFO_SIZE
                                                          - _POL_TAIL.size)
    attrs = _attrs(data, start + POL_INFO_SIZE, end)
    mark = attrs.get(XFRMA_MARK)
    if direction != XFRM_POLICY_OUT or mark is None or \
            _MARK.unpack_from(mark) != (ESP_MARK, ESP_MARK_MASK):
        return None
    tmpl = attrs.get(XFRMA_TMPL)
    req = _TMPL.unpack_from(tmpl)[5] if tmpl and len(tmpl) >= _TMPL.size else 0
    return Policy(_unaddr(family, saddr), _unaddr(family, daddr), dport, req,
                  block=action == XFRM_POLICY_BLOCK)


@dataclass
class Xfrm:
    """One NETLINK_XFRM socket, bound to the namespace of the thread that made it."""

    sock: socket.socket
    seq: int = 0

    @classmethod
    def open(cls) -> Xfrm:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        sock.bind((0, 0))
        return cls(lift(sock))

    def close(self) -> None:
        self.sock.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self.seq += 1
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, self.seq,
                                 0) + body)
        return self.seq

    def request(self, kind: int, body: bytes) -> None:
        """One request and its acknowledgement; a kernel error raises NetlinkError."""
        for _ in self._answer(self._send(kind, NLM_F_ACK, body)):
            pass

    def dump(self, kind: int, body: bytes) -> Iterator[tuple[int, bytes, int, int]]:
        return self._answer(self._send(kind, NLM_F_DUMP, body))

    def _answer(self, seq: int) -> Iterator[tuple[int, bytes, int, int]]:
        return answers(self.sock, seq)

    def sas(self) -> list[Sa]:
        """cnm's SAs (reqid in its range)."""
        out = []
        for mtype, data, start, end in self.dump(XFRM_MSG_GETSA, b"\0" * _SA_ID.size):
            if mtype == XFRM_MSG_NEWSA:
                sa = decode_sa(data, start, end)
                if sa is not None and owned_reqid(sa.reqid):
                    out.append(sa)
        return out

    def policies(self) -> list[Policy]:
        """cnm's policies (its mark)."""
        out = []
        for mtype, data, start, end in self.dump(XFRM_MSG_GETPOLICY,
                                                 b"\0" * (SEL_SIZE + _POL_ID.size)):
            if mtype == XFRM_MSG_NEWPOLICY:
                p = decode_policy(data, start, end)
                if p is not None:
                    out.append(p)
        return out


def apply(x: Xfrm, plan: EspPlan) -> None:
    """Make cnm's XFRM state match ``plan``: new SAs first (a peer may already send with
    them), then the policies, then what is no longer wanted."""
    have_sas = set(x.sas())
    have_pols = set(x.policies())
    for sa in plan.sas:
        if sa not in have_sas:
            try:
                x.request(XFRM_MSG_NEWSA, encode_sa(sa))
            except NetlinkError as e:
                if e.errno in (errno.ENOSYS, errno.ENOENT, errno.EOPNOTSUPP,
                               errno.EPROTONOSUPPORT):
                    raise Unsupported(f"this kernel cannot do ESP with {AEAD} "
                                      f"({errno.errorcode.get(e.errno or 0, e.errno)})",
                                      hint="it needs xfrm_user, esp4/esp6 and the crypto "
                                           "modules (gcm, ghash, ctr, seqiv)") from None
                if e.errno != errno.EEXIST:
                    raise
                # The same SPI with another key (a cluster key made again): replace it.
                x.request(XFRM_MSG_DELSA, encode_sa_id(sa.src, sa.dst, sa.spi))
                x.request(XFRM_MSG_NEWSA, encode_sa(sa))
    wanted = {(p.src, p.dst, p.dport, p.block) for p in plan.policies}
    for p in plan.policies:
        if p not in have_pols:
            x.request(XFRM_MSG_UPDPOLICY, encode_policy(p))
    for p in have_pols:
        if (p.src, p.dst, p.dport, p.block) not in wanted:
            _gone_ok(x, XFRM_MSG_DELPOLICY, encode_policy_id(p))
    keep = set(plan.sas)
    for sa in have_sas - keep:
        _gone_ok(x, XFRM_MSG_DELSA, encode_sa_id(sa.src, sa.dst, sa.spi))


def _gone_ok(x: Xfrm, kind: int, body: bytes) -> None:
    """A deletion; already gone is fine."""
    try:
        x.request(kind, body)
    except NetlinkError as e:
        if e.errno not in (errno.ENOENT, errno.ESRCH):
            raise
