"""The local store: SQLite under the state dir, one transaction per operation.

It implements cnm.store's interface (Store, Tx).

The store is the truth: the kernel is made to match it. Records are JSON documents; the
columns beside them carry the unique constraints that make a double allocation impossible
even if a bug slipped past the controller's lock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import netaddr

from cnm.errors import Conflict, Internal
from cnm.model import Endpoint, Network, Sandbox
from cnm.portspec import PortMapping
from cnm.store import Held, State

# 1: ports inside endpoint documents; 2: ports are rows; 3: an endpoint exists before it
# joins a sandbox (sandbox_id may be NULL) and has a name unique in its network; 4: a
# network's subnets and its driver's claims are rows the store refuses to hold twice.
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks(id),
    sandbox_id TEXT REFERENCES sandboxes(id),
    name TEXT NOT NULL,
    ipv4 TEXT, ipv6 TEXT, doc TEXT NOT NULL,
    UNIQUE (network_id, sandbox_id),
    UNIQUE (network_id, name),
    UNIQUE (network_id, ipv4),
    UNIQUE (network_id, ipv6));
CREATE TABLE IF NOT EXISTS ports (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    proto TEXT NOT NULL, host_ip TEXT NOT NULL, host_port INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (proto, host_ip, host_port));
CREATE INDEX IF NOT EXISTS ports_of_endpoint ON ports (endpoint_id);
CREATE TABLE IF NOT EXISTS subnets (
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    family INTEGER NOT NULL, first TEXT NOT NULL, last TEXT NOT NULL, cidr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS subnets_by_first ON subnets (family, first);
CREATE TABLE IF NOT EXISTS cursors (
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    subnet TEXT NOT NULL, position TEXT NOT NULL,
    PRIMARY KEY (network_id, subnet));
CREATE TABLE IF NOT EXISTS claims (
    claim TEXT PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE CASCADE);
"""


def _span(cidr: str) -> tuple[int, str, str]:
    """(family, first, last) of a subnet, as fixed-width hex so that text order is address
    order (SQLite's integers stop at 64 bits)."""
    net = netaddr.IPNetwork(cidr)
    width = 8 if net.version == 4 else 32
    return net.version, f"{net.first:0{width}x}", f"{net.last:0{width}x}"


class Tx:
    """The writes of one operation; committed together or not at all."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def _x(self, sql: str, args: tuple[object, ...],
           held: Callable[[str], Held | None] | None = None) -> None:
        try:
            self._c.execute(sql, args)
        except sqlite3.IntegrityError as e:
            typed = held(str(e)) if held is not None else None
            if typed is not None:
                raise typed from e
            raise Conflict(f"store refused the change: {e}") from e

    def put_network(self, n: Network, claims: Sequence[str] = ()) -> None:
        self._x(
            "INSERT INTO networks (id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
            (n.id, n.name, json.dumps(n.to_dict())),
            lambda err: Held(f'network name "{n.name}" is already held', kind="network",
                             network_id=n.id, value=n.name)
            if err.startswith("UNIQUE constraint") else None,
        )
        self._x("DELETE FROM subnets WHERE network_id = ?", (n.id,))
        for sub in n.subnets:
            family, first, last = _span(sub.subnet)
            # Held subnets never overlap each other, so the one that starts last at or
            # before this one's end is the only one that can overlap it: one index probe.
            row = self._c.execute(
                "SELECT s.cidr, s.last, s.network_id, n.name FROM subnets s "
                "JOIN networks n ON n.id = s.network_id WHERE s.family = ? AND s.first <= ? "
                "ORDER BY s.first DESC LIMIT 1", (family, last)).fetchone()
            if row is not None and row[1] >= first:
                raise Held(f'subnet {sub.subnet} overlaps {row[0]} of network "{row[3]}"',
                           kind="subnet", network_id=row[2], value=row[0])
            self._x("INSERT INTO subnets (network_id, family, first, last, cidr) "
                    "VALUES (?, ?, ?, ?, ?)", (n.id, family, first, last, sub.subnet))
        self._x("DELETE FROM claims WHERE network_id = ?", (n.id,))
        for claim in claims:
            row = self._c.execute(
                "SELECT n.id, n.name FROM claims c JOIN networks n ON n.id = c.network_id "
                "WHERE c.claim = ?", (claim,)).fetchone()
            if row is not None:
                raise Held(f'{claim} is already used by network "{row[1]}"', kind="claim",
                           network_id=row[0], value=claim)
            self._x("INSERT INTO claims (claim, network_id) VALUES (?, ?)", (claim, n.id))

    def delete_network(self, network_id: str) -> None:
        self._x("DELETE FROM networks WHERE id = ?", (network_id,))

    def put_sandbox(self, s: Sandbox) -> None:
        self._x(
            "INSERT INTO sandboxes (id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
            (s.id, s.name, json.dumps(s.to_dict())),
        )

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._x("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def put_endpoint(self, e: Endpoint) -> None:
        """The endpoint and all its ports (its published ports are rows of their own, so
        adding the 10,000th costs what the first did: see add_ports)."""
        v4, v6 = e.ip4, e.ip6
        doc = e.to_dict()
        doc["ports"] = []
        self._x(
            "INSERT INTO endpoints (id, network_id, sandbox_id, name, ipv4, ipv6, doc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "network_id = excluded.network_id, sandbox_id = excluded.sandbox_id, "
            "name = excluded.name, ipv4 = excluded.ipv4, ipv6 = excluded.ipv6, "
            "doc = excluded.doc",
            (e.id, e.network_id, e.sandbox_id, e.name or e.id, v4, v6, json.dumps(doc)),
            lambda err: _held(err, e),
        )
        self._x("DELETE FROM ports WHERE endpoint_id = ?", (e.id,))
        self.add_ports(e.id, e.ports)

    def add_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None:
        for m in mappings:
            self._x("INSERT INTO ports (endpoint_id, proto, host_ip, host_port, doc) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (endpoint_id, m.proto, m.host_ip, m.host_port, json.dumps(m.to_dict())))

    def delete_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None:
        for m in mappings:
            self._x("DELETE FROM ports WHERE endpoint_id = ? AND proto = ? AND host_ip = ? "
                    "AND host_port = ?", (endpoint_id, m.proto, m.host_ip, m.host_port))

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._x("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))

    def put_cursor(self, network_id: str, subnet: str, position: int) -> None:
        # TEXT: an IPv6 position does not fit SQLite's 64-bit integers.
        self._x("INSERT INTO cursors (network_id, subnet, position) VALUES (?, ?, ?) "
                "ON CONFLICT (network_id, subnet) DO UPDATE SET position = excluded.position",
                (network_id, subnet, str(position)))


class SqliteStore:
    """SQLite in WAL mode; commits do not fsync (synchronous=NORMAL), which is durable
    across a daemon crash and costs microseconds instead of milliseconds."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "cnm.db")
        _private(state_dir, self.path)
        self._lock = threading.Lock()
        self._c = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._c.execute("PRAGMA journal_mode=WAL")
        _private(state_dir, self.path)  # the -wal and -shm files exist now
        self._c.execute("PRAGMA synchronous=NORMAL")
        self._c.execute("PRAGMA foreign_keys=ON")
        has_meta = self._c.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        row = self._c.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() \
            if has_meta else None
        version = int(row[0]) if row else SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise Internal(
                f"store {self.path} has schema version {version}, newer than this cnm "
                f"({SCHEMA_VERSION})",
                hint="run the cnm release that wrote it",
            )
        if version < 3 and row is not None:
            self._migrate_to_3()
        self._c.executescript(_SCHEMA)
        if row is None:
            self._c.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        if version < 2:
            self._migrate_1_to_2()
        if version < 4 and row is not None:
            self._migrate_to_4()
        if version < SCHEMA_VERSION:
            self._c.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                            (str(SCHEMA_VERSION),))

    def _migrate_to_3(self) -> None:
        """Versions 1 and 2 had no endpoint name column and a NOT NULL sandbox_id: rebuild
        the table (SQLite cannot drop a NOT NULL; the new table is renamed into place, so
        the ports table's reference to "endpoints" still holds); names are the sandboxes'."""
        self._c.execute("PRAGMA foreign_keys=OFF")
        self._c.executescript("""
            BEGIN IMMEDIATE;
            CREATE TABLE endpoints_3 (
                id TEXT PRIMARY KEY,
                network_id TEXT NOT NULL REFERENCES networks(id),
                sandbox_id TEXT REFERENCES sandboxes(id),
                name TEXT NOT NULL,
                ipv4 TEXT, ipv6 TEXT, doc TEXT NOT NULL,
                UNIQUE (network_id, sandbox_id),
                UNIQUE (network_id, name),
                UNIQUE (network_id, ipv4),
                UNIQUE (network_id, ipv6));
            INSERT INTO endpoints_3 (id, network_id, sandbox_id, name, ipv4, ipv6, doc)
                SELECT e.id, e.network_id, e.sandbox_id,
                       COALESCE(json_extract(s.doc, '$.name'), e.id), e.ipv4, e.ipv6,
                       json_set(e.doc, '$.name', COALESCE(json_extract(s.doc, '$.name'), e.id))
                FROM endpoints e LEFT JOIN sandboxes s ON s.id = e.sandbox_id;
            DROP TABLE endpoints;
            ALTER TABLE endpoints_3 RENAME TO endpoints;
            COMMIT;
        """)
        self._c.execute("PRAGMA foreign_keys=ON")

    def _migrate_1_to_2(self) -> None:
        """Version 1 kept published ports inside each endpoint's document."""
        with self.transaction() as tx:
            for (doc,) in self._c.execute("SELECT doc FROM endpoints").fetchall():
                tx.put_endpoint(Endpoint.from_dict(json.loads(doc)))

    def _migrate_to_4(self) -> None:
        """Version 3 kept subnets inside network documents only. (Claims are the drivers'
        words, not the store's: the core puts each network again at start, which fills them.)"""
        with self.transaction() as tx:
            for (doc,) in self._c.execute("SELECT doc FROM networks").fetchall():
                tx.put_network(Network.from_dict(json.loads(doc)))

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._c.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._c)
            except BaseException:
                self._c.execute("ROLLBACK")
                raise
            try:
                self._c.execute("COMMIT")
            except sqlite3.Error as e:
                self._c.execute("ROLLBACK")
                raise Internal(f"store commit failed: {e}") from e

    def load(self) -> State:
        with self._lock:
            nets = [Network.from_dict(json.loads(r[0]))
                    for r in self._c.execute("SELECT doc FROM networks")]
            sbs = [Sandbox.from_dict(json.loads(r[0]))
                   for r in self._c.execute("SELECT doc FROM sandboxes")]
            ports: dict[str, list[dict[str, object]]] = {}
            for eid, doc in self._c.execute("SELECT endpoint_id, doc FROM ports ORDER BY rowid"):
                ports.setdefault(eid, []).append(json.loads(doc))
            eps = [Endpoint.from_dict({**json.loads(doc), "ports": ports.get(eid, [])})
                   for eid, doc in self._c.execute("SELECT id, doc FROM endpoints")]
            cursors: dict[str, dict[str, int]] = {}
            for nid, subnet, position in self._c.execute(
                    "SELECT network_id, subnet, position FROM cursors"):
                cursors.setdefault(nid, {})[subnet] = int(position)
        return State(nets, sbs, eps, cursors)

    def close(self) -> None:
        with self._lock:
            self._c.close()


def _private(state_dir: str, path: str) -> None:
    """The store holds every network's layout: the state dir 0700 and the database and its
    -wal and -shm files 0600, even when an older cnm (or an admin) made them wider. SQLite
    makes the -wal and -shm files with the database file's mode."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.chmod(name, 0o600)


def _held(message: str, e: Endpoint) -> Held | None:
    """SQLite's unique-constraint message, as the value it names (the store's one place
    that reads it)."""
    column = message.rsplit(".", 1)[-1] if message.startswith("UNIQUE constraint") else ""
    value = {"ipv4": e.ip4, "ipv6": e.ip6, "name": e.name, "sandbox_id": e.sandbox_id}
    if column not in value:
        return None
    kind = "address" if column.startswith("ip") else column.removesuffix("_id")
    return Held(f"{kind} {value[column]} is already held in network {e.network_id[:12]}",
                kind=kind, network_id=e.network_id, value=value[column] or "")
