from __future__ import annotations

import pytest

from cnm import names

IDS = [names.new_id() for _ in range(20)] + ["f" * 64, "0" * 64]


def test_new_id_is_64_hex_and_unique() -> None:
    ids = {names.new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize("fn", [names.bridge_name, names.veth_name, names.retired_name])
def test_kernel_names_fit_ifnamsiz_and_are_deterministic(fn: object) -> None:
    assert callable(fn)
    for ident in IDS:
        name = fn(ident)
        assert len(name.encode()) <= names.IFNAMSIZ == 15
        assert names.valid_ifname(name)
        assert name.startswith(names.PREFIX)
        assert fn(ident) == name


def test_kernel_names_differ_by_kind_and_by_id() -> None:
    a, b = "a" * 64, "b" * 64
    assert len({names.bridge_name(a), names.veth_name(a), names.retired_name(a)}) == 3
    assert names.veth_name(a) != names.veth_name(b)


def test_sandbox_ifname() -> None:
    assert [names.sandbox_ifname(i) for i in range(3)] == ["eth0", "eth1", "eth2"]


def test_alias_round_trip() -> None:
    ident = names.new_id()
    for kind in ("network", "endpoint"):
        value = names.alias(kind, ident)
        assert value.startswith(names.ALIAS_PREFIX)
        assert names.parse_alias(value) == (kind, ident)


@pytest.mark.parametrize("value", [None, "", "docker0", "cnm:", "cnm:network", "xcnm:a:b"])
def test_parse_alias_of_foreign_links(value: str | None) -> None:
    assert names.parse_alias(value) is None


@pytest.mark.parametrize("name", ["a", "web-1", "my_net.v2", "A" * 64, "0abc"])
def test_valid_name(name: str) -> None:
    assert names.valid_name(name)


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "a/b", "A" * 65, "net\n", "é"])
def test_invalid_name(name: str) -> None:
    assert not names.valid_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 16, "br 0", "br0\n", "br/0"])
def test_invalid_ifname(name: str) -> None:
    assert not names.valid_ifname(name)


def test_random_mac_is_locally_administered_unicast() -> None:
    for _ in range(50):
        mac = names.random_mac()
        assert mac.startswith("02:")
        assert names.valid_unicast_mac(mac)


@pytest.mark.parametrize("mac", ["02:42:ac:11:00:02", "00:1A:2B:3C:4D:5E"])
def test_valid_mac(mac: str) -> None:
    assert names.valid_unicast_mac(mac)


@pytest.mark.parametrize("mac", [
    "01:00:5e:00:00:01",      # multicast
    "ff:ff:ff:ff:ff:ff",      # broadcast
    "00:00:00:00:00:00",
    "02:42:ac:11:00",         # short
    "02-42-ac-11-00-02",
    "02:42:ac:11:00:0g",
    "02:42:ac:11:00:02\n",
    "",
])
def test_invalid_mac(mac: str) -> None:
    assert not names.valid_unicast_mac(mac)
