"""Encrypted overlays as data: the cluster key, its rotation, and the ESP plan of a host.

The cluster holds one random key under ``P/key`` with a generation number and its creation
time (and the previous generation, so packets in flight stay accepted). When it is older
than ``--cluster-key-rotation``, any host writes the next generation with etcd's
compare-and-swap: one wins, every host sees it through its watch.

Each direction between two VTEPs has its own SA, whose SPI and key are derived from the
cluster key (HMAC-SHA256 over generation, source and destination), so both ends agree
without another message. What a host programs (``plan``) is a pure function of the keys it
knows, its VTEP, and the encrypted networks it has a host side of with their peers' VTEPs:
``cnm.kernel.xfrm`` makes the kernel match it (removing what cnm owns and no longer wants).
Nothing here does I/O but ``rotate``, which speaks to the store through ``KeyStore``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cnm.errors import Conflict, InvalidArgument

# What cnm owns: its SAs carry a reqid in [REQID_BASE, REQID_BASE + 0xFFFF], its policies
# this mark (the nft table puts it on an encrypted network's VXLAN packets).
REQID_BASE = 0xC5E0000
ESP_MARK = 0x0E5C0000
ESP_MARK_MASK = 0xFFFF0000
AEAD = "rfc4106(gcm(aes))"
KEY_BYTES = 16 + 4  # AES-128 and the 4-byte salt of RFC 4106
ICV_BITS = 128
NFT_TABLE = "cnm_esp"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str = "--cluster-key-rotation") -> float:
    """``12h``, ``30m``, ``90s``, ``1h30m`` or plain seconds -> seconds (at least 1 s)."""
    raw = text.strip().lower()
    if raw.isdecimal():
        seconds = float(raw)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise InvalidArgument(f"{what} {text!r}: not a duration",
                                  hint="for example 12h, 30m, 90s or 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 1:
        raise InvalidArgument(f"{what} {text!r}: must be at least 1 s")
    return seconds


@dataclass(frozen=True)
class ClusterKey:
    generation: int
    secret: bytes
    created: float  # the writer's wall clock (time.time())

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "secret": self.secret.hex(),
                "created": self.created}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterKey:
        return cls(int(d["generation"]), bytes.fromhex(d["secret"]), float(d["created"]))

    @classmethod
    def new(cls, generation: int, now: float) -> ClusterKey:
        return cls(generation, secrets.token_bytes(32), now)


@dataclass(frozen=True)
class KeyDoc:
    """The value under ``P/key``: the current generation and the one before it."""

    current: ClusterKey
    previous: ClusterKey | None = None

    def dumps(self) -> str:
        return json.dumps({"current": self.current.to_dict(),
                           "previous": self.previous.to_dict() if self.previous else None})

    @classmethod
    def loads(cls, text: str) -> KeyDoc:
        d = json.loads(text)
        return cls(ClusterKey.from_dict(d["current"]),
                   ClusterKey.from_dict(d["previous"]) if d.get("previous") else None)

    def keys(self) -> tuple[ClusterKey, ...]:
        return (self.current,) + ((self.previous,) if self.previous else ())


def _packed(address: str) -> bytes:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.inet_pton(family, address)


def derive(key: ClusterKey, src: str, dst: str) -> tuple[int, bytes]:
    """(SPI, key material) of the SA from VTEP ``src`` to VTEP ``dst``: both hosts compute
    the same. The SPI is never 0-255 (reserved) and differs per direction and generation."""
    label = b"cnm-esp" + key.generation.to_bytes(8, "big") + _packed(src) + _packed(dst)
    digest = hmac.new(key.secret, label, hashlib.sha256).digest()
    material = hmac.new(key.secret, b"key" + label, hashlib.sha256).digest()[:KEY_BYTES]
    spi = 0x100 + int.from_bytes(digest[:4], "big") % (2**32 - 0x100)
    return spi, material


def reqid(generation: int) -> int:
    return REQID_BASE + (generation & 0xFFFF)


def owned_reqid(value: int) -> bool:
    return REQID_BASE <= value <= REQID_BASE + 0xFFFF


@dataclass(frozen=True)
class Sa:
    """One ESP SA in transport mode between two VTEPs."""

    src: str
    dst: str
    spi: int
    key: bytes
    reqid: int


@dataclass(frozen=True)
class Policy:
    """Outbound: VXLAN (UDP to ``dport``) from ``src`` to ``dst`` with cnm's mark goes
    through ESP, using the SA of ``reqid`` (the generation in use); or, ``block``, is
    dropped."""

    src: str
    dst: str  # the unspecified address (any) for a block policy
    dport: int
    reqid: int
    block: bool = False


@dataclass(frozen=True)
class EncryptedNetwork:
    """An encrypted network this host has a host side of, and where its peers are."""

    vni: int
    port: int
    vteps: frozenset[str]


@dataclass(frozen=True)
class EspPlan:
    sas: tuple[Sa, ...] = ()
    policies: tuple[Policy, ...] = ()
    nft: str = ""  # the whole cnm_esp table, or "" for none

    @property
    def spis(self) -> set[int]:
        return {s.spi for s in self.sas}


def nft_table(networks: Sequence[EncryptedNetwork]) -> str:
    """cnm's ESP table: marks an encrypted network's VXLAN packets on the way out (a route
    chain: the changed mark makes the kernel look the XFRM policy up again), and drops
    those that arrive without having been through ESP (``meta secpath missing``)."""
    if not networks:
        return ""
    by_port: dict[int, list[int]] = {}
    for n in networks:
        by_port.setdefault(n.port, []).append(n.vni)
    out_rules, in_rules = [], []
    for port, vnis in sorted(by_port.items()):
        match = f"udp dport {port} @th,96,24 {{ {', '.join(str(v) for v in sorted(vnis))} }}"
        out_rules.append(f"    {match} meta mark set {ESP_MARK:#x}")
        in_rules.append(f"    {match} meta secpath missing counter drop")
    return "\n".join([
        f"table inet {NFT_TABLE} {{",
        "  chain output {",
        "    type route hook output priority mangle; policy accept;",
        *out_rules,
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        *in_rules,
        "  }",
        "}",
    ]) + "\n"


def plan(me: str, keys: Iterable[ClusterKey], outbound: ClusterKey | None,
         networks: Sequence[EncryptedNetwork]) -> EspPlan:
    """What this host (VTEP ``me``) should have: both directions' SAs of every generation in
    ``keys`` towards every peer VTEP of ``networks``, one outbound policy per peer and VXLAN
    port using the ``outbound`` generation, and per port a block policy below them: a
    marked packet no peer policy takes (no key yet, a peer not yet known) is dropped, never
    sent in the clear."""
    if not networks:
        return EspPlan()
    any_addr = "::" if ":" in me else "0.0.0.0"
    policies = {Policy(me, any_addr, port, 0, block=True) for port in {n.port for n in networks}}
    peers = sorted(set().union(*(n.vteps for n in networks)) - {me})
    sas: list[Sa] = []
    if outbound is not None and peers:
        for k in sorted(set(keys) | {outbound}, key=lambda k: k.generation):
            for peer in peers:
                for src, dst in ((me, peer), (peer, me)):
                    spi, material = derive(k, src, dst)
                    sas.append(Sa(src, dst, spi, material, reqid(k.generation)))
        policies |= {Policy(me, v, n.port, reqid(outbound.generation))
                     for n in networks for v in n.vteps - {me}}
    return EspPlan(tuple(sas), tuple(sorted(policies, key=lambda p: (p.block, p.dst, p.dport))),
                   nft_table(networks))


class KeyRing:
    """This host's view of the cluster key over time (clock passed in: no I/O).

    A new generation's inbound SAs go in at once; the outbound policies switch to it
    ``switch`` seconds after it was first seen (every host has its inbound SAs by then),
    and the previous generation's SAs go ``grace`` seconds after it was seen."""

    def __init__(self, rotation: float) -> None:
        self.rotation = rotation
        self.switch = min(2.0, rotation / 8)
        self.grace = max(3 * self.switch, min(30.0, rotation / 2))
        self.doc: KeyDoc | None = None
        self.seen = 0.0
        self._settled = True  # the grace of the last new generation is over and applied

    def update(self, doc: KeyDoc, now: float) -> bool:
        """Take the store's key document; True if it changed anything."""
        if self.doc == doc:
            return False
        if self.doc is None or self.doc.current.generation != doc.current.generation:
            # At start a previous generation may still be the peers' outbound one.
            self.seen = now
            self._settled = doc.previous is None
        self.doc = doc
        return True

    def keys(self, now: float) -> tuple[ClusterKey, ...]:
        if self.doc is None:
            return ()
        if self.doc.previous is not None and now - self.seen < self.grace:
            return self.doc.keys()
        return (self.doc.current,)

    def outbound(self, now: float) -> ClusterKey | None:
        if self.doc is None:
            return None
        if self.doc.previous is not None and now - self.seen < self.switch:
            return self.doc.previous
        return self.doc.current

    def due(self, now: float) -> bool:
        """Whether the plan is to be made again at ``now``: while a switch or grace is to
        come, and once more when the grace is over (then no more)."""
        if self._settled:
            return False
        if now - self.seen >= self.grace:
            self._settled = True
        return True


class KeyStore(Protocol):
    """What ``rotate`` needs of the store client (cnm.store.etcdclient.EtcdClient)."""

    def range(self, key: str, end: str | None = None, *, revision: int | None = None,
              count_only: bool = False) -> tuple[int, list[Any], int]: ...

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> tuple[bool, int, list[Any]]: ...


def rotate(client: KeyStore, path: str, interval: float, now: float) -> tuple[KeyDoc, bool]:
    """The cluster's key, made or rotated when missing or older than ``interval``; (doc,
    whether this call wrote it). Writing compares the key's mod_revision with what was
    read, so of hosts racing only one writes a generation; the others read it back."""
    from cnm.store.etcdclient import b64

    for _ in range(8):
        _, kvs, _ = client.range(path)
        doc = KeyDoc.loads(kvs[0].value) if kvs else None
        if doc is not None and now - doc.current.created < interval:
            return doc, False
        seen = kvs[0].mod_revision if kvs else 0
        new = (KeyDoc(ClusterKey.new(doc.current.generation + 1, now), doc.current)
               if doc is not None else KeyDoc(ClusterKey.new(1, now)))
        ok, _, _ = client.txn(
            [{"key": b64(path), "target": "MOD", "result": "EQUAL", "mod_revision": str(seen)}],
            [{"request_put": {"key": b64(path), "value": b64(new.dumps())}}])
        if ok:
            return new, True
    raise Conflict(f"the cluster key at {path} kept changing under its rotation",
                   hint="it is tried again at the next tick")
