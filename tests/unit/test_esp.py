"""Encrypted overlays without root: --cluster-key-rotation, the per-direction SA derivation
(both hosts agree), the rotation's compare-and-swap against an in-memory etcd, the key
ring's switch and grace, the plan, the MTU, and the XFRM messages' bytes."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from cnm import daemon
from cnm.drivers.base import Context
from cnm.drivers.overlay import OVERHEAD, OverlayDriver
from cnm.errors import InvalidArgument
from cnm.esp import (
    AEAD,
    ESP_MARK,
    ClusterKey,
    EncryptedNetwork,
    KeyDoc,
    KeyRing,
    Policy,
    Sa,
    derive,
    owned_reqid,
    parse_duration,
    plan,
    reqid,
    rotate,
)
from cnm.kernel import xfrm
from cnm.model import Network, Peer, Subnet
from cnm.store.etcdclient import KV, unb64
from cnm.testing import FakeHostLinks, FakeSandboxLinks

H1, H2, H3 = "192.168.200.2", "192.168.200.3", "192.168.200.4"


# ------------------------------------------------------------------ the flag
@pytest.mark.parametrize(("text", "seconds"), [
    ("12h", 43200), ("30m", 1800), ("90s", 90), ("1h30m", 5400), ("45", 45), ("2d", 172800),
    (" 10M ", 600),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "12x", "0s", "0", "-5m", "5m3", "1.5.3h", "m30"])
def test_bad_durations_are_refused_naming_them(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_duration(text)
    assert "--cluster-key-rotation" in e.value.message and repr(text) in e.value.message


def _cluster(*argv: str) -> Any:
    return daemon.cluster_from(daemon.parser().parse_args(
        ["--cluster-store", "etcd://10.0.0.1:2379", "--advertise-addr", "10.0.0.1", *argv]))


def test_the_rotation_flag_reaches_the_cluster_config() -> None:
    assert _cluster().key_rotation == 12 * 3600
    assert _cluster("--cluster-key-rotation", "90s").key_rotation == 90
    with pytest.raises(InvalidArgument) as e:
        _cluster("--cluster-key-rotation", "soon")
    assert "'soon'" in e.value.message


# ------------------------------------------------------------------ derivation
def test_both_ends_derive_the_same_sas_and_directions_differ() -> None:
    k = ClusterKey(1, bytes(range(32)), 0.0)
    net = [EncryptedNetwork(5000, 4789, frozenset({H1, H2}))]
    on1, on2 = plan(H1, [k], k, net), plan(H2, [k], k, net)
    assert set(on1.sas) == set(on2.sas) and len(on1.sas) == 2
    out1 = next(s for s in on1.sas if s.src == H1)
    in1 = next(s for s in on1.sas if s.dst == H1)
    assert out1.spi != in1.spi and out1.key != in1.key
    assert len(out1.key) == 20 and out1.reqid == reqid(1) and owned_reqid(out1.reqid)


def test_generation_and_secret_change_spi_and_key() -> None:
    secret = bytes(range(32))
    a = derive(ClusterKey(1, secret, 0.0), H1, H2)
    assert derive(ClusterKey(1, secret, 99.0), H1, H2) == a  # creation time is not input
    assert derive(ClusterKey(2, secret, 0.0), H1, H2)[0] != a[0]
    assert derive(ClusterKey(2, secret, 0.0), H1, H2)[1] != a[1]
    assert derive(ClusterKey(1, bytes(32), 0.0), H1, H2) != a


def test_spis_are_never_reserved() -> None:
    spis = [derive(ClusterKey.new(g, 0.0), H1, f"10.0.{g % 250}.{g // 250 + 1}")[0]
            for g in range(1, 2000)]
    assert min(spis) >= 256 and max(spis) < 2**32 and len(set(spis)) == len(spis)


def test_the_plan_covers_every_peer_blocks_the_rest_and_marks_only_encrypted_vnis() -> None:
    k1, k2 = ClusterKey(1, b"a" * 32, 0.0), ClusterKey(2, b"b" * 32, 1.0)
    nets = [EncryptedNetwork(5000, 4789, frozenset({H1, H2})),
            EncryptedNetwork(6000, 4789, frozenset({H3}))]
    p = plan(H1, [k1, k2], k1, nets)
    assert len(p.sas) == 2 * 2 * 2  # two generations, two peers, two directions
    assert {(x.dst, x.reqid) for x in p.policies if not x.block} == {
        (H2, reqid(1)), (H3, reqid(1))}
    assert [x for x in p.policies if x.block] == [Policy(H1, "0.0.0.0", 4789, 0, block=True)]
    assert "@th,96,24 { 5000, 6000 }" in p.nft and f"{ESP_MARK:#x}" in p.nft
    assert "meta secpath missing" in p.nft
    # No key yet: marked packets are blocked, nothing is sent in the clear.
    nokey = plan(H1, [], None, nets)
    assert not nokey.sas and all(x.block for x in nokey.policies) and nokey.nft
    assert plan(H1, [k1], k1, []) == type(p)()


# ------------------------------------------------------------------ rotation
class FakeEtcd:
    """The two calls rotate makes, with etcd's semantics for them (mod_revision compare)."""

    def __init__(self) -> None:
        self.rev = 1
        self.data: dict[str, KV] = {}
        self.before_txn: Callable[[], None] | None = None

    def range(self, key: str, end: str | None = None, *, revision: int | None = None,
              count_only: bool = False) -> tuple[int, list[Any], int]:
        kv = self.data.get(key)
        return self.rev, [kv] if kv else [], 1 if kv else 0

    def put(self, key: str, value: str) -> None:
        self.rev += 1
        old = self.data.get(key)
        self.data[key] = KV(key, value, self.rev, old.create_revision if old else self.rev)

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> tuple[bool, int, list[Any]]:
        if self.before_txn is not None:
            hook, self.before_txn = self.before_txn, None
            hook()
        for c in compare:
            kv = self.data.get(unb64(c["key"]))
            assert c["target"] == "MOD" and c["result"] == "EQUAL"
            if (kv.mod_revision if kv else 0) != int(c["mod_revision"]):
                return False, self.rev, []
        for op in success:
            put = op["request_put"]
            self.put(unb64(put["key"]), unb64(put["value"]))
        return True, self.rev, []


def test_the_first_host_makes_the_key_and_the_next_reads_it() -> None:
    etcd = FakeEtcd()
    doc, wrote = rotate(etcd, "/cnm/key", 100, now=1000.0)
    assert wrote and doc.current.generation == 1 and doc.previous is None
    again, wrote = rotate(etcd, "/cnm/key", 100, now=1050.0)
    assert not wrote and again == doc
    assert KeyDoc.loads(etcd.data["/cnm/key"].value) == doc


def test_an_old_key_is_rotated_keeping_the_previous() -> None:
    etcd = FakeEtcd()
    first, _ = rotate(etcd, "/cnm/key", 100, now=1000.0)
    doc, wrote = rotate(etcd, "/cnm/key", 100, now=1100.0)
    assert wrote and doc.current.generation == 2 and doc.previous == first.current
    assert doc.current.secret != first.current.secret


def test_of_two_hosts_rotating_at_once_only_one_writes() -> None:
    etcd = FakeEtcd()
    rotate(etcd, "/cnm/key", 100, now=1000.0)
    winner: list[KeyDoc] = []
    # The other host's rotation lands between this one's read and its compare-and-swap.
    etcd.before_txn = lambda: winner.append(rotate(etcd, "/cnm/key", 100, now=1100.0)[0])
    doc, wrote = rotate(etcd, "/cnm/key", 100, now=1100.0)
    assert not wrote and winner and doc == winner[0]
    assert doc.current.generation == 2
    assert KeyDoc.loads(etcd.data["/cnm/key"].value).current.generation == 2


def test_the_ring_switches_outbound_late_and_drops_the_old_after_the_grace() -> None:
    ring = KeyRing(rotation=60)
    k1, k2 = ClusterKey(1, b"a" * 32, 0.0), ClusterKey(2, b"b" * 32, 60.0)
    assert ring.update(KeyDoc(k1), now=0.0)
    assert ring.outbound(0.0) == k1 and ring.keys(0.0) == (k1,)
    assert not ring.update(KeyDoc(k1), now=1.0)
    assert ring.update(KeyDoc(k2, k1), now=100.0)
    assert ring.keys(100.0) == (k2, k1) and ring.outbound(100.0) == k1  # inbound first
    assert ring.due(100.0)
    assert ring.outbound(100.0 + ring.switch) == k2
    assert ring.keys(100.0 + ring.switch) == (k2, k1)  # packets in flight still accepted
    assert ring.keys(100.0 + ring.grace) == (k2,)
    # Once more when the grace is over (the old SAs go then), and no more after.
    assert ring.due(100.0 + ring.grace) and not ring.due(101.0 + ring.grace)


# ------------------------------------------------------------------ the driver
def _net(encrypted: bool, vni: int = 5000) -> Network:
    opts = {"vni": str(vni), "vxlan_port": "4789",
            **({"encrypted": "true"} if encrypted else {})}
    return Network(id=f"{vni:x}" * 8, name=f"n{vni}", driver="overlay", created="",
                   scope="global", subnets=(Subnet("10.9.0.0/24", "10.9.0.1"),), options=opts)


def _host() -> tuple[FakeHostLinks, Context]:
    host = FakeHostLinks()
    host.ensure_bridge("ul0", "underlay", 1500, [f"{H1}/24"], "02:00:00:00:00:01")
    return host, Context(host, FakeSandboxLinks())


def test_mtu_leaves_room_for_esp() -> None:
    host, ctx = _host()
    d = OverlayDriver(H1, KeyRing(60))
    assert d.mtu(_net(True), ctx) == 1500 - OVERHEAD[4] - 38
    assert d.mtu(_net(False), ctx) == 1500 - OVERHEAD[4]


def test_the_driver_programs_esp_with_the_host_side_and_the_peers_only() -> None:
    host, ctx = _host()
    ring = KeyRing(60)
    ring.update(KeyDoc(ClusterKey(1, b"k" * 32, 0.0)), now=0.0)
    d = OverlayDriver(H1, ring)
    sec, plain = _net(True, 5000), _net(False, 6000)
    for net in (sec, plain):
        d.remote(net, Peer(net.id, f"ep{net.id}", "sb", H2, "02:00:00:00:00:02",
                           "10.9.0.5/24"), True, ctx)
    assert host.esp == type(host.esp)()  # no host side yet: nothing
    d._host_side(plain, ctx)
    assert not host.esp.sas
    d._host_side(sec, ctx)
    assert {(s.src, s.dst) for s in host.esp.sas} == {(H1, H2), (H2, H1)}
    assert "{ 5000 }" in host.esp.nft and "6000" not in host.esp.nft
    d.remote(sec, Peer(sec.id, f"ep{sec.id}", "sb", H2, "02:00:00:00:00:02"), False, ctx)
    assert not host.esp.sas and host.esp.nft  # the peer gone: its SAs too
    d.delete_network(sec, ctx)
    assert host.esp == type(host.esp)()


# ------------------------------------------------------------------ XFRM bytes
def test_an_sa_message_decodes_to_itself_with_the_kernels_layout() -> None:
    sa = Sa(H1, H2, 0x12345678, bytes(range(20)), reqid(3))
    b = xfrm.encode_sa(sa)
    assert xfrm.decode_sa(b) == sa
    assert len(b) == 224 + 4 + 72 + 20  # xfrm_usersa_info, then XFRMA_ALG_AEAD
    # xfrm_id after the 56-byte selector: daddr, then the SPI in network order.
    assert b[56:60] == socket.inet_aton(H2) and b[72:76] == bytes.fromhex("12345678")
    assert b[76] == 50  # IPPROTO_ESP
    assert struct.unpack_from("=I", b, 208)[0] == reqid(3)  # after seq
    assert struct.unpack_from("=H", b, 212)[0] == socket.AF_INET
    length, kind = struct.unpack_from("=HH", b, 224)
    assert (length, kind) == (4 + 72 + 20, xfrm.XFRMA_ALG_AEAD)
    assert b[228:228 + len(AEAD)] == AEAD.encode()
    assert struct.unpack_from("=II", b, 228 + 64) == (160, 128)


def test_policy_messages_decode_to_themselves_and_carry_cnms_mark() -> None:
    for p in (Policy(H1, H2, 4789, reqid(1)), Policy(H1, "0.0.0.0", 8472, 0, block=True)):
        b = xfrm.encode_policy(p)
        assert xfrm.decode_policy(b) == p
        assert struct.pack("=II", ESP_MARK, 0xFFFF0000) in b
        assert struct.unpack_from("!H", b, 32)[0] == p.dport  # selector dport, big endian
        assert b[42] == (0 if p.block else 32)  # prefixlen_d
    # Another owner's policy (no mark of cnm's) is never read as cnm's.
    other = xfrm.encode_policy(Policy(H1, H2, 4789, 7)).replace(
        struct.pack("=II", ESP_MARK, 0xFFFF0000), struct.pack("=II", 1, 0xFFFFFFFF))
    assert xfrm.decode_policy(other) is None


def test_the_nft_table_is_valid_json_free_text() -> None:
    p = plan(H1, [], None, [EncryptedNetwork(5000, 8472, frozenset({H2}))])
    assert p.nft.startswith("table inet cnm_esp {") and "udp dport 8472" in p.nft
    json.dumps(p.nft)  # (a plain string for the adapter)
