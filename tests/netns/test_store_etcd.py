"""cnm.store's contract (tests/unit/test_store.py) on the etcd store, against a real etcd in
a throwaway namespace; and what only a shared store has: two hosts racing for one name,
subnet, claim or address, and a bounded wait when etcd is gone."""

from __future__ import annotations

import dataclasses
import inspect
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cnm.errors import Conflict
from cnm.kernel.link import host_socket_factory
from cnm.kernel.netns import NsThread
from cnm.model import Endpoint, Network, Subnet
from cnm.store import Held
from cnm.store import Store as Interface
from cnm.store.etcd import EtcdStore
from cnm.store.etcdclient import EtcdClient, StoreUnavailable
from cnm.testing.cluster import Etcd
from cnm.testing.netns import run
from tests.unit import test_store as contract


@pytest.fixture(scope="module")
def etcd_ns() -> Iterator[tuple[str, Etcd, Callable[..., EtcdClient]]]:
    name = f"cnmtest-etcd-{secrets.token_hex(3)}"
    run("ip", "netns", "add", name)
    etcd = None
    thread = None
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        etcd = Etcd.make([(f"/run/netns/{name}", "127.0.0.1")])
        etcd.start()
        etcd.wait_healthy()
        thread = NsThread(f"/run/netns/{name}", name="test-etcd-sockets")
        factory = host_socket_factory(thread)

        def client(timeout: float = 5.0) -> EtcdClient:
            return EtcdClient([("127.0.0.1", 2379)], timeout=timeout, socket_factory=factory)

        yield name, etcd, client
    finally:
        if thread is not None:
            thread.stop()
        if etcd is not None:
            etcd.close()
        run("ip", "netns", "del", name, check=False)


@pytest.fixture
def opener(etcd_ns: tuple[str, Etcd, Callable[..., EtcdClient]],
           tmp_path: Path) -> Callable[[], Interface]:
    prefix = f"/test-{secrets.token_hex(4)}/"
    return lambda: EtcdStore(etcd_ns[2](), "192.0.2.1", prefix)


store = contract.store

# Every contract test that takes a store (the migration tests are SQLite's own).
for _name, _fn in vars(contract).items():
    if _name.startswith("test_") and {"store", "opener"} & set(inspect.signature(_fn).parameters):
        globals()[_name] = _fn


def _on(ident: str, name: str, *cidrs: str) -> Network:
    return Network(id=ident, name=name, driver="overlay", created="x", scope="global",
                   subnets=tuple(Subnet(c, "") for c in cidrs))


def _race(stores: list[EtcdStore], write: Callable[[EtcdStore, int], None]) -> list[object]:
    """Run ``write`` on every store at once (one thread a host); what each got."""
    results: list[object] = [None] * len(stores)
    start = threading.Barrier(len(stores))

    def one(i: int) -> None:
        start.wait()
        try:
            write(stores[i], i)
            results[i] = "ok"
        except Exception as e:  # noqa: BLE001 - the result is what is compared
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_hosts_racing_for_one_vni_or_subnet_one_wins(
        etcd_ns: tuple[str, Etcd, Callable[..., EtcdClient]]) -> None:
    prefix = f"/race-{secrets.token_hex(4)}/"
    hosts = [EtcdStore(etcd_ns[2](), f"192.0.2.{i + 1}", prefix) for i in range(4)]
    for round_ in range(10):
        def create(s: EtcdStore, i: int, r: int = round_) -> None:
            with s.transaction() as tx:
                tx.put_network(_on(f"n{r}-{i}", f"net{r}-{i}", f"10.9.{r}.0/24"),
                               [f"vni:{5000 + r}"])
        results = _race(hosts, create)
        assert results.count("ok") == 1, results
        assert all(isinstance(r, Held) and r.kind in ("subnet", "claim")
                   for r in results if r != "ok")
    nets = hosts[0].load().networks
    assert len(nets) == 10 and len({n.subnets[0].subnet for n in nets}) == 10
    for s in hosts:
        s.close()


def test_hosts_racing_for_addresses_never_share_one(
        etcd_ns: tuple[str, Etcd, Callable[..., EtcdClient]]) -> None:
    prefix = f"/race-{secrets.token_hex(4)}/"
    hosts = [EtcdStore(etcd_ns[2](), f"192.0.2.{i + 1}", prefix) for i in range(3)]
    with hosts[0].transaction() as tx:
        tx.put_network(_on("n1", "ov", "10.8.0.0/24"))
    won: dict[str, str] = {}

    def take(s: EtcdStore, i: int) -> None:
        # Each host picks the lowest address it has not seen taken, like the IPAM would,
        # and picks again when the store says another host holds it.
        n = 2
        for k in range(20):
            e = Endpoint(id=f"e{i}-{k}", network_id="n1", sandbox_id=None, created="x",
                         name=f"h{i}-{k}", ipv4=f"10.8.0.{n}/24")
            while True:
                try:
                    with s.transaction() as tx:
                        tx.put_endpoint(e)
                    won[e.id] = e.ipv4 or ""
                    break
                except Held as held:
                    assert held.kind == "address"
                    n += 1
                    e = dataclasses.replace(e, ipv4=f"10.8.0.{n}/24")

    assert _race(hosts, take) == ["ok"] * 3
    assert len(won) == 60 and len(set(won.values())) == 60
    for s in hosts:
        s.close()


def test_a_store_with_no_etcd_fails_within_its_timeout(
        etcd_ns: tuple[str, Etcd, Callable[..., EtcdClient]]) -> None:
    client = EtcdClient([("127.0.0.1", 2399)], timeout=0.5,
                        socket_factory=etcd_ns[2]()._factory)  # nothing listens there
    s = EtcdStore(client, "192.0.2.1", "/gone/")
    with pytest.raises(StoreUnavailable) as e:
        s.load()
    assert "127.0.0.1:2399" in e.value.message and "did not answer" in e.value.message
    with pytest.raises(StoreUnavailable), s.transaction() as tx:
        tx.put_network(_on("n1", "x"))


def test_a_network_with_endpoints_on_another_host_is_refused_removal_naming_them(
        etcd_ns: tuple[str, Etcd, Callable[..., EtcdClient]]) -> None:
    """What arbitrates when this host has not heard of the other's endpoint yet."""
    prefix = f"/rm-{secrets.token_hex(4)}/"
    a, b = (EtcdStore(etcd_ns[2](), f"192.0.2.{i + 1}", prefix) for i in range(2))
    with a.transaction() as tx:
        tx.put_network(_on("n1", "ov", "10.7.0.0/24"), ["vni:4444"])
    with b.transaction() as tx:
        tx.put_endpoint(Endpoint(id="e1", network_id="n1", sandbox_id=None, created="x",
                                 name="web", ipv4="10.7.0.2/24"))
    with pytest.raises(Conflict) as e, a.transaction() as tx:
        tx.delete_network("n1")
    assert 'network "ov" still has endpoints (web on host 192.0.2.2)' in e.value.message
    assert [n.name for n in a.load().networks] == ["ov"]  # nothing changed
    with b.transaction() as tx:
        tx.delete_endpoint("e1")
    with a.transaction() as tx:
        tx.delete_network("n1")
    assert a.load().networks == []
    a.close()
    b.close()
