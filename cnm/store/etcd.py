"""The global store: cnm.store's interface on an etcd cluster every host shares.

Every record is a JSON document under ``prefix``; every value a record holds (a network's
name, subnets and claims; an endpoint's name, addresses, sandbox and host ports) is a key of
its own naming its holder. A transaction reads what it needs at one revision, then commits
its writes in one etcd transaction that compares every key it read (unchanged since: its
``mod_revision``, 0 when absent) and every range it scanned (no key in it changed since the
read). Two hosts racing for one name, subnet, VNI or address: the second commit's compare
fails, the transaction reads again and finds the value held (``Held``), so the core picks
another. Nothing is locked, nothing is home-made: etcd's compare-and-swap is the arbiter.

Layout (P = prefix):

    P/net/ID              {"network": …, "claims": […]}
    P/netname/NAME        {"id": ID}
    P/subnet/4|6/FIRST    {"network_id", "cidr", "first", "last"}   (hex, address order)
    P/claim/CLAIM         {"id": ID}                                 (vni:4097, a bridge)
    P/sb/ID, P/sbname/NAME                                           (sandboxes)
    P/ep/ID               {"endpoint": …, "host": ADDR}
    P/epname/NET/NAME, P/epaddr/NET/IP, P/epsb/NET/SANDBOX            {"id": EP}
    P/port/HOST/PROTO/IP/PORT                                         {"id": EP}
    P/cursor/NET/HOST/SUBNET  {"position": N}    (each host's IPAM position, with its network)

Endpoints carry the host that holds them; ``load`` gives this host's. The leased records of
the cluster (hosts, joined endpoints' peers) are cnm.cluster's, beside these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import netaddr

from cnm.errors import Conflict
from cnm.model import Endpoint, Network, Sandbox
from cnm.portspec import PortMapping
from cnm.store import Held, State
from cnm.store.etcdclient import EtcdClient, _kv, b64, prefix_end

# How many times a commit whose reads went stale (another host wrote) reads again.
RETRIES = 16


def _span(cidr: str) -> tuple[int, str, str]:
    net = netaddr.IPNetwork(cidr)
    width = 8 if net.version == 4 else 32
    return net.version, f"{net.first:0{width}x}", f"{net.last:0{width}x}"


class _View:
    """What one attempt of a transaction read (at one revision) and wants to write."""

    def __init__(self, client: EtcdClient) -> None:
        self.c = client
        self.rev = 0
        self.got: dict[str, tuple[Any, int]] = {}  # key -> (doc or None, mod_revision)
        self.scanned: dict[str, dict[str, Any]] = {}  # prefix -> {key: doc}
        self.writes: dict[str, Any] = {}  # key -> doc, or None to delete

    def get(self, key: str) -> Any:
        if key in self.writes:
            return self.writes[key]
        for prefix, docs in self.scanned.items():
            if key.startswith(prefix):
                return docs.get(key)
        if key not in self.got:
            rev, kvs, _ = self.c.range(key, revision=self.rev or None)
            self.rev = self.rev or rev
            self.got[key] = (kvs[0].doc(), kvs[0].mod_revision) if kvs else (None, 0)
        return self.got[key][0]

    def prefetch(self, keys: list[str]) -> None:
        """Read ``keys`` in one round trip (a transaction of reads, at this view's revision
        when it has one)."""
        want = [k for k in dict.fromkeys(keys) if k not in self.got and k not in self.writes
                and not any(k.startswith(p) for p in self.scanned)]
        if len(want) < 2:
            return
        reads = [{"request_range": {"key": b64(k), **({"revision": str(self.rev)}
                                                      if self.rev else {})}} for k in want]
        _, rev, responses = self.c.txn([], reads)
        self.rev = self.rev or rev
        for key, resp in zip(want, responses, strict=True):
            kvs = [_kv(k) for k in resp.get("response_range", {}).get("kvs", [])]
            self.got[key] = (kvs[0].doc(), kvs[0].mod_revision) if kvs else (None, 0)

    def scan(self, prefix: str) -> dict[str, Any]:
        if prefix not in self.scanned:
            rev, kvs = self.c.prefix(prefix, revision=self.rev or None)
            self.rev = self.rev or rev
            self.scanned[prefix] = {kv.key: kv.doc() for kv in kvs}
        out = dict(self.scanned[prefix])
        for key, doc in self.writes.items():
            if key.startswith(prefix):
                if doc is None:
                    out.pop(key, None)
                else:
                    out[key] = doc
        return out

    def put(self, key: str, doc: Any) -> None:
        self.writes[key] = doc

    def delete(self, key: str) -> None:
        self.writes[key] = None

    def commit(self) -> bool:
        if not self.writes:
            return True
        compare = [{"key": b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": str(m)}
                   for k, (_, m) in self.got.items()]
        compare += [{"key": b64(p), "range_end": b64(prefix_end(p)), "target": "MOD",
                     "result": "LESS", "mod_revision": str(self.rev + 1)}
                    for p in self.scanned]
        ops = [{"request_put": {"key": b64(k), "value": b64(json.dumps(d))}} if d is not None
               else {"request_delete_range": {"key": b64(k)}}
               for k, d in self.writes.items()]
        ok, _, _ = self.c.txn(compare, ops)
        return ok


class Tx:
    """One operation's writes. Each call checks against the store as read at one revision
    (raising ``Held`` there, as SQLite would); the commit replays the calls on fresh reads
    when another host wrote in between."""

    def __init__(self, store: EtcdStore) -> None:
        self.s = store
        self.p = store.prefix
        self.ops: list[Callable[[_View], None]] = []
        self.view = _View(store.client)

    def _do(self, op: Callable[[_View], None]) -> None:
        op(self.view)
        self.ops.append(op)

    # ----------------------------------------------------------------- networks
    def put_network(self, n: Network, claims: Sequence[str] = ()) -> None:
        self._do(lambda v: self._put_network(v, n, tuple(claims)))

    def _put_network(self, v: _View, n: Network, claims: tuple[str, ...]) -> None:
        p = self.p
        old = v.get(f"{p}net/{n.id}")
        holder = v.get(f"{p}netname/{n.name}")
        if holder is not None and holder["id"] != n.id:
            raise Held(f'network name "{n.name}" is already held', kind="network",
                       network_id=n.id, value=n.name)
        if old is not None and old["network"]["name"] != n.name:
            v.delete(f"{p}netname/{old['network']['name']}")
        v.put(f"{p}netname/{n.name}", {"id": n.id})
        for family in (4, 6):
            held = v.scan(f"{p}subnet/{family}/")
            for key, doc in held.items():
                if doc["network_id"] == n.id:
                    v.delete(key)
        for sub in n.subnets:
            family, first, last = _span(sub.subnet)
            for doc in v.scan(f"{p}subnet/{family}/").values():
                if doc["first"] <= last and doc["last"] >= first:
                    other = v.get(f"{p}net/{doc['network_id']}")
                    name = other["network"]["name"] if other else doc["network_id"]
                    raise Held(f'subnet {sub.subnet} overlaps {doc["cidr"]} of network '
                               f'"{name}"', kind="subnet", network_id=doc["network_id"],
                               value=doc["cidr"])
            v.put(f"{p}subnet/{family}/{first}",
                  {"network_id": n.id, "cidr": sub.subnet, "first": first, "last": last})
        for claim in old["claims"] if old is not None else ():
            if claim not in claims:
                v.delete(f"{p}claim/{claim}")
        for claim in claims:
            holder = v.get(f"{p}claim/{claim}")
            if holder is not None and holder["id"] != n.id:
                other = v.get(f"{p}net/{holder['id']}")
                name = other["network"]["name"] if other else holder["id"]
                raise Held(f'{claim} is already used by network "{name}"', kind="claim",
                           network_id=holder["id"], value=claim)
            v.put(f"{p}claim/{claim}", {"id": n.id})
        v.put(f"{p}net/{n.id}", {"network": n.to_dict(), "claims": list(claims)})

    def delete_network(self, network_id: str) -> None:
        self._do(lambda v: self._delete_network(v, network_id))

    def _delete_network(self, v: _View, network_id: str) -> None:
        p = self.p
        old = v.get(f"{p}net/{network_id}")
        if old is None:
            return
        name = old["network"]["name"]
        held = v.scan(f"{p}epname/{network_id}/")
        if held:
            who = []
            for key, doc in sorted(held.items()):
                ep = v.get(f"{p}ep/{doc['id']}") or {}
                who.append(f"{key.rsplit('/', 1)[1]} on host {ep.get('host', '?')}")
            raise Conflict(f'store refused the change: network "{name}" still has endpoints '
                           f"({', '.join(who)})", hint="disconnect them first, on their hosts")
        v.delete(f"{p}net/{network_id}")
        v.delete(f"{p}netname/{name}")
        for key in v.scan(f"{p}cursor/{network_id}/"):
            v.delete(key)
        for sub in old["network"]["subnets"]:
            family, first, _ = _span(sub["subnet"])
            v.delete(f"{p}subnet/{family}/{first}")
        for claim in old["claims"]:
            v.delete(f"{p}claim/{claim}")

    # ----------------------------------------------------------------- sandboxes
    def put_sandbox(self, s: Sandbox) -> None:
        self._do(lambda v: self._put_sandbox(v, s))

    def _put_sandbox(self, v: _View, s: Sandbox) -> None:
        p = self.p
        holder = v.get(f"{p}sbname/{s.name}")
        if holder is not None and holder["id"] != s.id:
            raise Conflict(f'store refused the change: sandbox name "{s.name}" is held')
        old = v.get(f"{p}sb/{s.id}")
        if old is not None and old["name"] != s.name:
            v.delete(f"{p}sbname/{old['name']}")
        v.put(f"{p}sbname/{s.name}", {"id": s.id})
        v.put(f"{p}sb/{s.id}", s.to_dict())

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._do(lambda v: self._delete_sandbox(v, sandbox_id))

    def _delete_sandbox(self, v: _View, sandbox_id: str) -> None:
        old = v.get(f"{self.p}sb/{sandbox_id}")
        if old is not None:
            v.delete(f"{self.p}sb/{sandbox_id}")
            v.delete(f"{self.p}sbname/{old['name']}")

    # ----------------------------------------------------------------- endpoints
    def _holds(self, e: Endpoint, host: str) -> dict[str, tuple[str, str]]:
        """key -> (kind, value) of everything ``e`` holds."""
        p, n = self.p, e.network_id
        out = {f"{p}epname/{n}/{e.name or e.id}": ("name", e.name or e.id)}
        for ip in (e.ip4, e.ip6):
            if ip:
                out[f"{p}epaddr/{n}/{ip}"] = ("address", ip)
        if e.sandbox_id is not None:
            out[f"{p}epsb/{n}/{e.sandbox_id}"] = ("sandbox", e.sandbox_id)
        for m in e.ports:
            out[self._port_key(host, m)] = ("port", f"{m.host_port}/{m.proto}")
        return out

    def _port_key(self, host: str, m: PortMapping) -> str:
        return f"{self.p}port/{host}/{m.proto}/{m.host_ip or '*'}/{m.host_port}"

    def put_endpoint(self, e: Endpoint) -> None:
        self._do(lambda v: self._put_endpoint(v, e))

    def _put_endpoint(self, v: _View, e: Endpoint) -> None:
        p = self.p
        v.prefetch([f"{p}net/{e.network_id}", f"{p}ep/{e.id}", *self._holds(e, self.s.host)])
        if v.get(f"{p}net/{e.network_id}") is None:
            raise Conflict(f"store refused the change: network {e.network_id[:12]} of "
                           f"endpoint {e.id[:12]} does not exist")
        old = v.get(f"{p}ep/{e.id}")
        host = old["host"] if old is not None else self.s.host
        mine = self._holds(e, host)
        if old is not None:
            for key in self._holds(Endpoint.from_dict(old["endpoint"]), host):
                if key not in mine:
                    v.delete(key)
        for key, (kind, value) in mine.items():
            holder = v.get(key)
            if holder is not None and holder["id"] != e.id:
                raise Held(f"{kind} {value} is already held in network {e.network_id[:12]}",
                           kind=kind, network_id=e.network_id, value=value)
            v.put(key, {"id": e.id})
        v.put(f"{p}ep/{e.id}", {"endpoint": e.to_dict(), "host": host})

    def add_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None:
        more = tuple(mappings)
        self._do(lambda v: self._ports(v, endpoint_id, more, ()))

    def delete_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None:
        less = tuple(mappings)
        self._do(lambda v: self._ports(v, endpoint_id, (), less))

    def _ports(self, v: _View, endpoint_id: str, more: tuple[PortMapping, ...],
               less: tuple[PortMapping, ...]) -> None:
        old = v.get(f"{self.p}ep/{endpoint_id}")
        if old is None:
            raise Conflict(f"store refused the change: endpoint {endpoint_id[:12]} does not "
                           "exist")
        e = Endpoint.from_dict(old["endpoint"])
        gone = {(m.proto, m.host_ip, m.host_port) for m in less}
        ports = tuple(m for m in e.ports if (m.proto, m.host_ip, m.host_port) not in gone)
        import dataclasses

        self._put_endpoint(v, dataclasses.replace(e, ports=ports + more))

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._do(lambda v: self._delete_endpoint(v, endpoint_id))

    def _delete_endpoint(self, v: _View, endpoint_id: str) -> None:
        old = v.get(f"{self.p}ep/{endpoint_id}")
        if old is None:
            return
        for key in self._holds(Endpoint.from_dict(old["endpoint"]), old["host"]):
            v.delete(key)
        v.delete(f"{self.p}ep/{endpoint_id}")

    # ----------------------------------------------------------------- IPAM positions
    def put_cursor(self, network_id: str, subnet: str, position: int) -> None:
        self._do(lambda v: v.put(self._cursor_key(network_id, subnet), {"position": position}))

    def _cursor_key(self, network_id: str, subnet: str) -> str:
        # Per host: each host's IPAM goes on from where it was.
        return f"{self.p}cursor/{network_id}/{self.s.host}/{subnet.replace('/', '_')}"

    # ----------------------------------------------------------------- commit
    def commit(self) -> None:
        if self.view.commit():
            return
        for _ in range(RETRIES):
            self.view = _View(self.s.client)
            for op in self.ops:
                op(self.view)  # raises Held when another host now holds what this wants
            if self.view.commit():
                return
        raise Conflict("store refused the change: the cluster store kept changing under it "
                       f"({RETRIES} tries)", hint="try again")


class EtcdStore:
    """cnm.store's Store on etcd; ``host`` (the advertise address) names this host's
    endpoints."""

    def __init__(self, client: EtcdClient, host: str, prefix: str = "/cnm/") -> None:
        self.client = client
        self.host = host
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        tx = Tx(self)
        yield tx
        tx.commit()

    def load(self) -> State:
        """Every network and sandbox, and this host's endpoints, at one revision."""
        s, mine = self.load_all()
        return State(s.networks, s.sandboxes, [e for e, host in mine if host == self.host],
                     s.cursors)

    def load_all(self) -> tuple[State, list[tuple[Endpoint, str]]]:
        p = self.prefix
        rev, nets = self.client.prefix(f"{p}net/")
        _, sbs = self.client.prefix(f"{p}sb/", revision=rev)
        _, eps = self.client.prefix(f"{p}ep/", revision=rev)
        _, cursors = self.client.prefix(f"{p}cursor/", revision=rev)
        held = [(Endpoint.from_dict(kv.doc()["endpoint"]), str(kv.doc()["host"]))
                for kv in eps]
        positions: dict[str, dict[str, int]] = {}
        for kv in cursors:
            network_id, host, subnet = kv.key[len(f"{p}cursor/"):].split("/")
            if host == self.host:
                positions.setdefault(network_id, {})[subnet.replace("_", "/")] = int(
                    kv.doc()["position"])
        return (State([Network.from_dict(kv.doc()["network"]) for kv in nets],
                      [Sandbox.from_dict(kv.doc()) for kv in sbs], [e for e, _ in held],
                      positions),
                held)

    def close(self) -> None:
        self.client.close()
