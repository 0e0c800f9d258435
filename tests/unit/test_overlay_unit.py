"""The overlay's options, a cnmd without a cluster store refusing -d overlay (nothing
changed), the cluster flags' errors (TLS files that do not load among them), and the store
URL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnm import daemon
from cnm.core import Controller
from cnm.drivers.overlay import VNI_MAX, VNI_MIN, OverlayOptions
from cnm.errors import InvalidArgument
from cnm.model import NetworkSpec
from cnm.store.etcdclient import parse_endpoints
from cnm.testing import FakeHostLinks
from cnm.testing.pki import Pki


def test_options_parse_and_round_trip() -> None:
    o = OverlayOptions.parse({"vni": "5000", "vxlan_port": "8472", "mtu": "1400"})
    assert (o.vni, o.vxlan_port, o.mtu) == (5000, 8472, 1400)
    assert OverlayOptions.parse(o.to_dict()) == o


def test_a_vni_is_picked_in_range_and_kept() -> None:
    picked = {OverlayOptions.parse({}).vni for _ in range(50)}
    assert all(VNI_MIN <= v <= VNI_MAX for v in picked) and len(picked) > 40
    o = OverlayOptions.parse({})
    assert OverlayOptions.parse(o.to_dict()).vni == o.vni


@pytest.mark.parametrize(("raw", "says"), [
    ({"vni": "4095"}, "vni"), ({"vni": str(2**24)}, "vni"), ({"vni": "x"}, "vni"),
    ({"vxlan_port": "0"}, "vxlan_port"), ({"mtu": "60"}, "mtu"), ({"colour": "red"}, "colour"),
])
def test_bad_options_are_refused_by_name(raw: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        OverlayOptions.parse(raw)
    assert says in e.value.message


def test_encryption_is_accepted_and_kept() -> None:
    o = OverlayOptions.parse({"encrypted": "true", "vni": "5000"})
    assert o.encrypted is True
    assert OverlayOptions.parse(o.to_dict()) == o
    assert OverlayOptions.parse({"encrypted": "false"}).encrypted is False
    assert "encrypted" not in OverlayOptions.parse({"vni": "5000"}).to_dict()
    with pytest.raises(InvalidArgument) as e:
        OverlayOptions.parse({"encrypted": "maybe"})
    assert "encrypted" in e.value.message


def test_anti_spoofing_is_on_unless_turned_off_and_kept() -> None:
    assert OverlayOptions.parse({"vni": "5000"}).anti_spoofing is True
    off = OverlayOptions.parse({"vni": "5000", "anti_spoofing": "false"})
    assert off.anti_spoofing is False and OverlayOptions.parse(off.to_dict()) == off
    with pytest.raises(InvalidArgument) as e:
        OverlayOptions.parse({"anti_spoofing": "perhaps"})
    assert "anti_spoofing" in e.value.message


def test_without_a_cluster_store_overlay_is_refused_saying_what_is_missing(
        ctl: Controller, host: FakeHostLinks) -> None:
    before = sorted(n.name for n in ctl.store.load().networks)
    links = sorted(host.live())
    with pytest.raises(InvalidArgument) as e:
        ctl.create_network(NetworkSpec("ov", driver="overlay"))
    assert "cluster store" in e.value.message
    assert e.value.hint is not None and "--cluster-store" in e.value.hint
    assert "--advertise-addr" in e.value.hint
    assert sorted(n.name for n in ctl.store.load().networks) == before
    assert sorted(host.live()) == links


def _cluster(*argv: str) -> object:
    return daemon.cluster_from(daemon.parser().parse_args(list(argv)))


def test_cluster_flags() -> None:
    assert _cluster() is None
    c = _cluster("--cluster-store", "etcd://10.0.0.1:2379,[fd00::2]:2379",
                 "--advertise-addr", "10.0.0.1", "--cluster-ttl", "5")
    assert c is not None
    assert c.endpoints == (("10.0.0.1", 2379), ("fd00::2", 2379))  # type: ignore[attr-defined]
    assert (c.advertise, c.ttl) == ("10.0.0.1", 5)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("argv", "says"), [
    (["--cluster-store", "etcd://10.0.0.1:2379"], "--advertise-addr"),
    (["--advertise-addr", "10.0.0.1"], "--cluster-store"),
    (["--cluster-store", "http://10.0.0.1:2379", "--advertise-addr", "10.0.0.1"], "etcd://"),
    (["--cluster-store", "etcd://10.0.0.1", "--advertise-addr", "10.0.0.1"], "ADDR:PORT"),
    (["--cluster-store", "etcd://10.0.0.1:2379", "--advertise-addr", "nope"], "not an IP"),
    (["--cluster-store", "etcd://10.0.0.1:2379", "--advertise-addr", "10.0.0.1",
      "--cluster-ttl", "1"], "--cluster-ttl"),
    (["--cluster-store", "etcd://10.0.0.1:2379", "--advertise-addr", "10.0.0.1",
      "--cluster-store-ca", "/nonexistent/ca.pem"], "no such file"),
])
def test_bad_cluster_flags_say_what_is_wrong(argv: list[str], says: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        _cluster(*argv)
    assert says in e.value.message


def test_store_urls() -> None:
    assert parse_endpoints("etcd://a:1,b:2") == [("a", 1), ("b", 2)]
    with pytest.raises(InvalidArgument):
        parse_endpoints("etcd://a:99999")


def test_store_tls_files_are_checked_before_anything_starts(tmp_path: Path) -> None:
    files = Pki(tmp_path / "pki").issue("cnmd", "h1.cnm.test")
    base = ["--cluster-store", "etcd://10.0.0.1:2379", "--advertise-addr", "10.0.0.1"]
    c = _cluster(*base, "--cluster-store-ca", files.ca, "--cluster-store-cert", files.cert,
                 "--cluster-store-key", files.key)
    assert c.tls is not None and c.tls.cert == files.cert  # type: ignore[attr-defined]
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    os.chmod(junk, 0o600)
    for argv, says in (
            (["--cluster-store-ca", str(junk)], f"--cluster-store-ca {junk}: not a PEM CA"),
            (["--cluster-store-cert", str(junk), "--cluster-store-key", files.key],
             f"--cluster-store-cert {junk}: not a PEM certificate with its key"),
            (["--cluster-store-cert", files.cert, "--cluster-store-key", str(junk)],
             "not a PEM certificate with its key"),
            (["--cluster-store-cert", files.cert], "go together"),
            (["--cluster-store-key", files.key], "go together")):
        with pytest.raises(InvalidArgument) as e:
            _cluster(*base, *argv)
        assert says in e.value.message, argv
    os.chmod(files.key, 0o644)
    with pytest.raises(InvalidArgument) as e:
        _cluster(*base, "--cluster-store-cert", files.cert, "--cluster-store-key", files.key)
    assert "readable by others" in e.value.message and e.value.hint == f"chmod 600 {files.key}"
    with pytest.raises(InvalidArgument) as e:
        daemon.cluster_from(daemon.parser().parse_args(["--cluster-store-key", files.key]))
    assert "need --cluster-store" in e.value.message
