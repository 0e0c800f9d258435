"""--dry-run: an operation run against recorders, then forgotten.

The core validates, plans and applies through its adapters; a dry run gives it adapters that
answer reads from the real ones and write nothing, only noting each step (a link, an
address, a route, a firewall element, a DNS name, a file, a store row). The records in
memory are put back afterwards, so the plan is exactly what the operation would do, and
nothing has changed: no kernel object, no store row, no DNS answer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from cnm.core.publish import Publishing
from cnm.core.state import State
from cnm.dns.records import Entry, Records
from cnm.dns.server import DnsServer
from cnm.drivers.base import Context
from cnm.kernel.ports import HostPort, SandboxPort
from cnm.model import Endpoint, Network, Sandbox
from cnm.netfilter import Netfilter, NftApi
from cnm.portspec import PortMapping
from cnm.store import State as Stored
from cnm.store import Store, Tx

T = TypeVar("T")


@dataclass
class Plan:
    """The steps of an operation, in order: (kind, what)."""

    steps: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, what: str) -> None:
        self.steps.append((kind, what))

    def to_list(self) -> list[dict[str, str]]:
        return [{"kind": k, "step": w} for k, w in self.steps]


def _addrs(addresses: Iterable[str]) -> str:
    return ", ".join(addresses) or "no address"


# Writes of each adapter: method -> (what it notes, what it returns).
HOST_WRITES: dict[str, Callable[..., tuple[str, Any]]] = {
    "ensure_bridge": lambda name, alias, mtu, addresses, mac: (
        f"create bridge {name} ({_addrs(addresses)}{f', mtu {mtu}' if mtu else ''})", True),
    "delete_link": lambda name: (f"delete link {name}", None),
    "add_veth": lambda name, alias, peer, netns, mac, master, mtu: (
        f"create veth {name} on {master}, its peer {peer} ({mac}) in {netns}", None),
    "move_link": lambda name, netns, new_name, mac: (
        f"move link {name} into {netns} as {new_name}", None),
    "retire": lambda name: (f"take link {name} off its bridge (the reaper deletes it)", None),
    "reap": lambda: ("delete retired links", None),
    "set_hairpin": lambda name: (f"hairpin mode on {name}", None),
    "ensure_dummy": lambda name, alias: (f"create dummy parent {name}", True),
    "ensure_vlan": lambda name, base, vid, alias: (
        f"create 802.1q link {name} on {base} (VLAN {vid})", True),
    "delete_owned": lambda name, alias: (f"delete link {name} if cnm made it", None),
    "add_slave": lambda spec: (
        f"create {spec.kind} {spec.ifname} on {spec.parent} ({spec.mode}) in {spec.netns}",
        spec.mac or ""),
    "ensure_shim": lambda spec, alias, addresses, routes: (
        f"create host shim {spec.ifname} on {spec.parent} ({_addrs(addresses)}; routes "
        f"{', '.join(routes)})", True),
}


def _routes(path: str, routes: Any, known: Any = None) -> tuple[str, None]:
    if known is not None and list(routes) == list(known):
        return "", None
    want = ", ".join(f"IPv{v} via {gw} dev {dev}" for v, gw, dev in routes) or "none"
    return f"default routes in {path}: {want}", None


SANDBOX_WRITES: dict[str, Callable[..., tuple[str, Any]]] = {
    "create_netns": lambda path: (f"create namespace {path}", None),
    "delete_netns": lambda path: (f"delete namespace {path}", None),
    "configure": lambda path, ifname, addresses: (
        f"{ifname} in {path}: {_addrs(addresses)}, up", None),
    "set_default_routes": _routes,
    "retire": lambda path, ifname, new_name, addresses=None: (
        f"take {ifname} out of {path} (down, renamed {new_name}, addresses gone)", None),
    "remove": lambda path, ifname: (f"delete {ifname} in {path}", None),
    "open_dns": lambda path: (f"DNS listener on 127.0.0.11:53 in {path}", (None, None)),
    "release": lambda path: (f"let go of {path} (its DNS redirect, cnm's handle)", None),
}


class _Recorder:
    """Reads go to the real adapter; writes are noted in the plan and return a stand-in."""

    def __init__(self, real: Any, plan: Plan, kind: str,
                 writes: dict[str, Callable[..., tuple[str, Any]]]) -> None:
        self._real, self._plan, self._kind, self._writes = real, plan, kind, writes

    def __getattr__(self, name: str) -> Any:
        if name not in self._writes:
            return getattr(self._real, name)

        def write(*args: Any) -> Any:
            what, result = self._writes[name](*args)
            if what:
                self._plan.add(self._kind, what)
            return result

        return write


class _Nft:
    def __init__(self, real: NftApi, plan: Plan) -> None:
        self._real, self._plan = real, plan

    def run(self, text: str) -> str:
        for line in text.splitlines():
            if line.strip():
                self._plan.add("firewall", line.strip())
        return ""

    def list_json(self, what: str) -> list[dict[str, Any]]:
        return self._real.list_json(what)

    def sysctl(self, key: str, value: str) -> None:
        self._plan.add("sysctl", f"{key} = {value}")


class _Records:
    """The names the operation would give and take away; the real table is untouched."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan

    def set(self, e: Entry) -> None:
        addrs = ", ".join(a for a in (e.ipv4, e.ipv6) if a)
        self._plan.add("dns", f"{', '.join(e.names)} -> {addrs} on network {e.network_name}")

    def remove(self, network_id: str, sandbox_id: str) -> None:
        self._plan.add("dns", f"names of sandbox {sandbox_id[:12]} on network "
                              f"{network_id[:12]} withdrawn")


class _Dns:
    def __init__(self, real: DnsServer | None, plan: Plan) -> None:
        self._real, self._plan = real, plan

    def serves(self, sandbox_id: str) -> bool:
        return self._real is not None and self._real.serves(sandbox_id)

    def add(self, sandbox_id: str, udp: Any, tcp: Any, view: list[str]) -> None:
        self._plan.add("dns", f"serve sandbox {sandbox_id[:12]} the names of {len(view)} "
                              "network(s)")

    def set_view(self, sandbox_id: str, view: list[str]) -> None:
        self._plan.add("dns", f"sandbox {sandbox_id[:12]} sees the names of {len(view)} "
                              "network(s)")

    def remove(self, sandbox_id: str) -> None:
        self._plan.add("dns", f"stop serving sandbox {sandbox_id[:12]}")


class _Tx:
    def __init__(self, plan: Plan) -> None:
        self._plan = plan

    def put_network(self, n: Network, claims: Sequence[str] = ()) -> None:
        held = f", holding {', '.join(claims)}" if claims else ""
        self._plan.add("store", f"network {n.name} ({n.id[:12]}){held}")

    def delete_network(self, network_id: str) -> None:
        self._plan.add("store", f"delete network {network_id[:12]}")

    def put_sandbox(self, s: Sandbox) -> None:
        self._plan.add("store", f"sandbox {s.name} ({s.id[:12]})")

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._plan.add("store", f"delete sandbox {sandbox_id[:12]}")

    def put_endpoint(self, e: Endpoint) -> None:
        held = f"in sandbox {e.sandbox_id[:12]}" if e.sandbox_id else "reserved"
        self._plan.add("store", f"endpoint {e.name} ({e.id[:12]}), {held}")

    def add_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None:
        self._plan.add("store", f"{len(list(mappings))} port(s) of endpoint {endpoint_id[:12]}")

    def delete_ports(self, endpoint_id: str, mappings: Iterable[PortMapping]) -> None:
        self._plan.add("store", f"delete {len(list(mappings))} port(s) of endpoint "
                                f"{endpoint_id[:12]}")

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._plan.add("store", f"delete endpoint {endpoint_id[:12]}")

    def put_cursor(self, network_id: str, subnet: str, position: int) -> None:
        pass  # bookkeeping of the addresses above, not a step of its own


class _Store:
    def __init__(self, real: Store, plan: Plan) -> None:
        self._real, self._plan = real, plan

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        yield _Tx(self._plan)

    def load(self) -> Stored:
        return self._real.load()

    def close(self) -> None:
        pass


def dry_run(state: State, publishing: Publishing, op: Callable[[], T]) -> tuple[T, Plan]:
    """Run ``op`` against recorders; put every record in memory back. The caller holds the
    lock, so no other operation sees the planned state in between."""
    plan = Plan()
    s = state
    saved = (s.ctx, s.netfilter, s.store, s.records, s.dns, s.write_file, s.networks,
             s.sandboxes, s.endpoints, s.addresses, publishing.index, publishing.guards)
    s.ctx = Context(cast(HostPort, _Recorder(s.ctx.host, plan, "link", HOST_WRITES)),
                    cast(SandboxPort, _Recorder(s.ctx.sandbox, plan, "sandbox",
                                                 SANDBOX_WRITES)), dry_run=True)
    if s.netfilter is not None:
        nf = Netfilter(_Nft(s.netfilter.nft, plan))
        nf.ports = copy.deepcopy(s.netfilter.ports)
        s.netfilter = nf
    s.store = _Store(s.store, plan)
    s.records = cast(Records, _Records(plan))
    s.dns = cast(DnsServer, _Dns(s.dns, plan)) if s.dns is not None else None
    def note_file(path: str, text: str) -> None:
        if s.changes(path, text):
            plan.add("file", path)

    s.write_file = note_file
    s.networks, s.sandboxes = dict(s.networks), dict(s.sandboxes)
    s.endpoints = s.endpoints.copy()
    s.addresses = copy.deepcopy(s.addresses)
    publishing.index = copy.deepcopy(publishing.index)
    publishing.guards = dict(publishing.guards)
    try:
        return op(), plan
    finally:
        (s.ctx, s.netfilter, s.store, s.records, s.dns, s.write_file, s.networks, s.sandboxes,
         s.endpoints, s.addresses, publishing.index, publishing.guards) = saved
