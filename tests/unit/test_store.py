from __future__ import annotations

import dataclasses
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from cnm.errors import Conflict, Internal
from cnm.model import Endpoint, Network, Sandbox, Subnet
from cnm.portspec import PortMapping
from cnm.store import Held
from cnm.store import Store as Interface
from cnm.store.sqlite import SCHEMA_VERSION
from cnm.store.sqlite import SqliteStore as Store


def net(ident: str = "n1", name: str = "blue") -> Network:
    return Network(id=ident, name=name, driver="bridge", created="2026-01-01T00:00:00Z",
                   subnets=(Subnet("10.1.0.0/24", "10.1.0.1", "10.1.0.128/25",
                                   {"router": "10.1.0.2"}),
                            Subnet("fd00:1::/64", "fd00:1::1")),
                   ipv6=True, internal=True, options={"mtu": "1400"}, labels={"team": "a"})


def sandbox(ident: str = "s1", name: str = "web") -> Sandbox:
    return Sandbox(id=ident, name=name, hostname=name, created="2026-01-01T00:00:00Z",
                   labels={"k": "v"})


def endpoint(ident: str = "e1", network: str = "n1", sb: str = "s1",
             ipv4: str | None = "10.1.0.3/24", ipv6: str | None = "fd00:1::3/64") -> Endpoint:
    return Endpoint(id=ident, network_id=network, sandbox_id=sb, created="2026-01-01",
                    ifname="eth0", mac="02:00:00:00:00:01", ipv4=ipv4, ipv6=ipv6,
                    gateway4="10.1.0.1", aliases=("db", "primary"), order=1,
                    # Host ports of their own per endpoint: the store refuses one held twice.
                    ports=(PortMapping("tcp", "", 8080 + _n(ident), 8080 + _n(ident), 80, 80),
                           PortMapping("udp", "10.0.0.1", 5000 + 10 * _n(ident),
                                       5009 + 10 * _n(ident), 5000, 5009)))


def _n(ident: str) -> int:
    return int(ident[1:]) if ident[1:].isdecimal() else 0


# Every implementation of cnm.store's interface runs the tests that take ``store``: the
# contract is theirs. (A global store, etcd, joins this table.)
IMPLEMENTATIONS: dict[str, Callable[[Path], Interface]] = {
    "sqlite": lambda d: Store(str(d)),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Interface]:
    return lambda: IMPLEMENTATIONS[request.param](tmp_path / "state")


@pytest.fixture
def store(opener: Callable[[], Interface]) -> Interface:
    s = opener()
    yield s  # type: ignore[misc]
    s.close()


def test_round_trip(opener: Callable[[], Interface], store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox())
        tx.put_endpoint(endpoint())
    store.close()
    again = opener()
    state = again.load()
    again.close()
    assert state.networks == [net()]
    assert state.sandboxes == [sandbox()]
    assert state.endpoints == [endpoint()]


def test_a_reserved_endpoint_is_in_no_sandbox_and_its_name_is_unique(store: Interface) -> None:
    reserved = dataclasses.replace(endpoint("e1", ipv6=None), sandbox_id=None, name="spare",
                                   standalone=True, ifname="", ports=())
    other = dataclasses.replace(reserved, id="e2", name="other", ipv4="10.1.0.4/24")
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_endpoint(reserved)
        tx.put_endpoint(other)  # two reserved endpoints: no clash on "no sandbox"
    assert sorted(e.name for e in store.load().endpoints) == ["other", "spare"]
    twin = dataclasses.replace(reserved, id="e3", ipv4="10.1.0.5/24")
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.put_endpoint(twin)
    assert [e.sandbox_id for e in store.load().endpoints] == [None, None]


def test_put_again_updates_the_record(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net())
    with store.transaction() as tx:
        tx.put_network(Network(id="n1", name="renamed", driver="bridge", created="x"))
    assert [n.name for n in store.load().networks] == ["renamed"]


def test_duplicate_network_name_is_a_conflict(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net("n1", "blue"))
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.put_network(net("n2", "blue"))
    assert [n.id for n in store.load().networks] == ["n1"]


def test_a_held_network_name_says_so(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net("n1", "blue"))
    with pytest.raises(Held) as e, store.transaction() as tx:
        tx.put_network(dataclasses.replace(net("n2", "blue"), subnets=()))
    assert (e.value.kind, e.value.value) == ("network", "blue")


def on(ident: str, name: str, *cidrs: str) -> Network:
    return Network(id=ident, name=name, driver="bridge", created="x",
                   subnets=tuple(Subnet(c, "") for c in cidrs))


@pytest.mark.parametrize("cidr", ["10.1.0.0/24", "10.1.0.128/25", "10.0.0.0/8",
                                  "10.1.0.255/32", "fd00:1::/48", "fd00:1::8/126"])
def test_a_subnet_overlapping_another_networks_is_held(store: Interface, cidr: str) -> None:
    with store.transaction() as tx:
        tx.put_network(on("n1", "a", "10.1.0.0/24", "fd00:1::/64"))
    with pytest.raises(Held) as e, store.transaction() as tx:
        tx.put_network(on("n2", "b", "192.168.9.0/24", cidr))
    assert e.value.kind == "subnet" and e.value.network_id == "n1"
    assert e.value.value in ("10.1.0.0/24", "fd00:1::/64")
    assert f"overlaps {e.value.value} of network \"a\"" in e.value.message
    assert [n.id for n in store.load().networks] == ["n1"]


def test_subnets_beside_each_other_and_across_families_are_fine(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(on("n1", "a", "10.1.0.0/24", "fd00:1::/64"))
        tx.put_network(on("n2", "b", "10.1.1.0/24", "10.0.255.0/24", "fd00:2::/64"))
        # Its own subnets again: an update, not an overlap.
        tx.put_network(on("n1", "a", "10.1.0.0/25"))
    with store.transaction() as tx:  # n1's old /24 half and its v6 are free again
        tx.put_network(on("n3", "c", "10.1.0.128/25", "fd00:1::/64"))
    assert sorted(n.id for n in store.load().networks) == ["n1", "n2", "n3"]


def test_a_deleted_networks_subnets_and_claims_are_free(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(on("n1", "a", "10.1.0.0/24"), ["br-a", "vni:4097"])
    with store.transaction() as tx:
        tx.delete_network("n1")
    with store.transaction() as tx:
        tx.put_network(on("n2", "a", "10.1.0.0/24"), ["br-a", "vni:4097"])
    assert [n.id for n in store.load().networks] == ["n2"]


def test_a_claim_of_another_network_is_held(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(on("n1", "a"), ["br-a", "vni:4097"])
        tx.put_network(on("n1", "a"), ["br-a", "vni:4097"])  # its own: fine
    with pytest.raises(Held) as e, store.transaction() as tx:
        tx.put_network(on("n2", "b"), ["br-b", "vni:4097"])
    assert (e.value.kind, e.value.value, e.value.network_id) == ("claim", "vni:4097", "n1")
    assert 'used by network "a"' in e.value.message
    with store.transaction() as tx:  # nothing of the refused one stayed
        tx.put_network(on("n3", "c"), ["br-b"])


def test_duplicate_sandbox_name_is_a_conflict(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_sandbox(sandbox("s1", "web"))
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.put_sandbox(sandbox("s2", "web"))
    assert [s.id for s in store.load().sandboxes] == ["s1"]


@pytest.mark.parametrize("second", [
    endpoint("e2", sb="s2", ipv4="10.1.0.3/24", ipv6="fd00:1::4/64"),
    endpoint("e2", sb="s2", ipv4="10.1.0.4/24", ipv6="fd00:1::3/64"),
    endpoint("e2", sb="s1", ipv4="10.1.0.4/24", ipv6="fd00:1::4/64"),  # same sandbox again
])
def test_same_address_or_sandbox_twice_in_one_network_is_a_conflict(store: Interface,
                                                                     second: Endpoint) -> None:
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox("s1", "a"))
        tx.put_sandbox(sandbox("s2", "b"))
        tx.put_endpoint(endpoint("e1", sb="s1", ipv4="10.1.0.3/24", ipv6="fd00:1::3/64"))
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.put_endpoint(second)
    assert [e.id for e in store.load().endpoints] == ["e1"]


def test_same_address_in_two_networks_is_fine(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net("n1", "a"))
        # (Two networks' subnets may not overlap: this one has none of its own.)
        tx.put_network(dataclasses.replace(net("n2", "b"), subnets=()))
        tx.put_sandbox(sandbox())
        tx.put_endpoint(endpoint("e1", network="n1"))
        tx.put_endpoint(endpoint("e2", network="n2"))
    assert len(store.load().endpoints) == 2


def test_endpoints_without_address_do_not_clash(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox("s1", "a"))
        tx.put_sandbox(sandbox("s2", "b"))
        tx.put_endpoint(Endpoint(id="e1", network_id="n1", sandbox_id="s1", created="x"))
        tx.put_endpoint(Endpoint(id="e2", network_id="n1", sandbox_id="s2", created="x"))
    assert len(store.load().endpoints) == 2


def test_endpoint_of_an_unknown_network_is_refused(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_sandbox(sandbox())
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.put_endpoint(endpoint(network="nope"))


def test_rollback_on_exception_leaves_nothing(store: Interface) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox())
        tx.put_endpoint(endpoint())
        raise RuntimeError("kernel step failed")
    state = store.load()
    assert (state.networks, state.sandboxes, state.endpoints) == ([], [], [])
    # The store is usable afterwards.
    with store.transaction() as tx:
        tx.put_network(net())
    assert len(store.load().networks) == 1


def test_delete(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox())
        tx.put_endpoint(endpoint())
    with store.transaction() as tx:
        tx.delete_endpoint("e1")
        tx.delete_sandbox("s1")
        tx.delete_network("n1")
    state = store.load()
    assert (state.networks, state.sandboxes, state.endpoints) == ([], [], [])


def test_network_with_endpoints_cannot_be_deleted(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox())
        tx.put_endpoint(endpoint())
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.delete_network("n1")
    assert len(store.load().networks) == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(str(tmp_path)).close()
    c = sqlite3.connect(tmp_path / "cnm.db")
    c.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))
    c.commit()
    c.close()
    with pytest.raises(Internal) as e:
        Store(str(tmp_path))
    assert f"schema version {SCHEMA_VERSION + 1}" in e.value.message
    assert e.value.hint is not None


def test_a_host_port_held_twice_is_refused(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox())
        tx.put_sandbox(sandbox("s2", "b"))
        tx.put_endpoint(endpoint("e1"))
    same_ports = dataclasses.replace(endpoint("e2", sb="s2", ipv4="10.1.0.9/24", ipv6=None),
                                     ports=endpoint("e1").ports)
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.put_endpoint(same_ports)
    assert [e.id for e in store.load().endpoints] == ["e1"]


def test_published_ports_are_rows_added_and_removed_one_by_one(store: Interface) -> None:
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox())
        tx.put_endpoint(endpoint("e1"))
    extra = PortMapping("sctp", "", 9999, 9999, 99, 99)
    with store.transaction() as tx:
        tx.add_ports("e1", [extra])
    assert store.load().endpoints[0].ports == (*endpoint("e1").ports, extra)
    with store.transaction() as tx:
        tx.delete_ports("e1", [endpoint("e1").ports[0]])
    assert store.load().endpoints[0].ports == (endpoint("e1").ports[1], extra)
    with store.transaction() as tx:
        tx.delete_endpoint("e1")  # its ports go with it
    assert store.load().endpoints == []


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    import json
    import sqlite3

    store = Store(str(tmp_path))
    with store.transaction() as tx:
        tx.put_network(net())
        tx.put_sandbox(sandbox())
    store.close()
    # A version 1 store: ports inside the endpoint's document, no ports table.
    c = sqlite3.connect(str(tmp_path / "cnm.db"), isolation_level=None)
    c.execute("DROP TABLE ports")
    c.execute("DROP TABLE endpoints")
    c.execute("""CREATE TABLE endpoints (
        id TEXT PRIMARY KEY, network_id TEXT NOT NULL REFERENCES networks(id),
        sandbox_id TEXT NOT NULL REFERENCES sandboxes(id), ipv4 TEXT, ipv6 TEXT,
        doc TEXT NOT NULL, UNIQUE (network_id, sandbox_id), UNIQUE (network_id, ipv4),
        UNIQUE (network_id, ipv6))""")
    e = endpoint("e1")
    c.execute("INSERT INTO endpoints (id, network_id, sandbox_id, ipv4, ipv6, doc) "
              "VALUES (?, ?, ?, ?, ?, ?)",
              (e.id, e.network_id, e.sandbox_id, "10.1.0.3", "fd00:1::3",
               json.dumps(e.to_dict())))
    c.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    c.close()
    store = Store(str(tmp_path))
    # Version 3 names it after its sandbox.
    assert store.load().endpoints == [dataclasses.replace(e, name=sandbox().name)]
    row = store._c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    assert row == (str(SCHEMA_VERSION),)
    store.close()


def test_a_version_3_store_gets_its_subnets_held(tmp_path: Path) -> None:
    import sqlite3

    store = Store(str(tmp_path))
    with store.transaction() as tx:
        tx.put_network(on("n1", "a", "10.1.0.0/24"))
    store.close()
    c = sqlite3.connect(str(tmp_path / "cnm.db"), isolation_level=None)
    c.execute("DROP TABLE subnets")
    c.execute("DROP TABLE claims")
    c.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    c.close()
    store = Store(str(tmp_path))
    with pytest.raises(Held), store.transaction() as tx:
        tx.put_network(on("n2", "b", "10.1.0.0/16"))
    assert store._c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (
        str(SCHEMA_VERSION),)
    store.close()


def test_the_store_is_private_even_where_it_was_not(tmp_path: Path) -> None:
    """An existing state dir of 0755 and a cnm.db of 0644 (an older cnm, a careless admin):
    once the store opens, the dir is 0700 and the database, -wal and -shm 0600."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "cnm.db").touch(mode=0o644)
    (state / "cnm.db").chmod(0o644)
    store = Store(str(state))
    try:
        with store.transaction() as tx:
            tx.put_sandbox(Sandbox(id="s" * 64, name="s", hostname="s", created="now"))
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for name in ("cnm.db", "cnm.db-wal", "cnm.db-shm"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    finally:
        store.close()
