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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from cnm.errors import Conflict, Internal
from cnm.model import Endpoint, Network, Sandbox
from cnm.portspec import PortMapping
from cnm.store import Held, State

# 1: ports inside endpoint documents; 2: ports are rows; 3: an endpoint exists before it
# joins a sandbox (sandbox_id may be NULL) and has a name unique in its network.
SCHEMA_VERSION = 3

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
"""


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

    def put_network(self, n: Network) -> None:
        self._x(
            "INSERT INTO networks (id, name, doc) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
            (n.id, n.name, json.dumps(n.to_dict())),
        )

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


class SqliteStore:
    """SQLite in WAL mode; commits do not fsync (synchronous=NORMAL), which is durable
    across a daemon crash and costs microseconds instead of milliseconds."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, "cnm.db")
        self._lock = threading.Lock()
        self._c = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._c.execute("PRAGMA journal_mode=WAL")
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
        return State(nets, sbs, eps)

    def close(self) -> None:
        with self._lock:
            self._c.close()


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
