"""The names each network answers: sandbox names, hostnames, aliases, NAME.NETWORK, PTR.

One ``Records`` per daemon, changed by the controller under its lock and read by the DNS
thread. Every change bumps ``generation``, which tells listeners to drop cached answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import netaddr


@dataclass(frozen=True)
class Holder:
    """One endpoint answering a name."""

    sandbox_id: str
    ipv4: str | None
    ipv6: str | None


@dataclass(frozen=True)
class Entry:
    network_id: str
    network_name: str
    sandbox_id: str
    sandbox_name: str
    names: tuple[str, ...]  # lower-case, without the trailing dot
    ipv4: str | None
    ipv6: str | None


def reverse_name(ip: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (lower-case, no trailing dot)."""
    return str(netaddr.IPAddress(ip).reverse_dns).rstrip(".").lower()


class Records:
    """Changes are incremental (a connect costs the same with 1,000 endpoints as with 1)
    and copy-on-write per name, so the DNS thread reads without a lock and never sees a
    half-made list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], Entry] = {}  # (network, sandbox)
        # network -> name -> holders; and network -> reverse name -> PTR target
        self._names: dict[str, dict[str, tuple[Holder, ...]]] = {}
        self._ptr: dict[str, dict[str, str]] = {}
        self.generation = 0

    def set(self, e: Entry) -> None:
        """Add (or replace) the names of one endpoint."""
        with self._lock:
            old = self._entries.get((e.network_id, e.sandbox_id))
            if old is not None:
                self._drop(old)
            self._entries[(e.network_id, e.sandbox_id)] = e
            names = self._names.setdefault(e.network_id, {})
            holder = Holder(e.sandbox_id, e.ipv4, e.ipv6)
            for name in _all_names(e):
                names[name] = (*names.get(name, ()), holder)
            ptr = self._ptr.setdefault(e.network_id, {})
            for ip in (e.ipv4, e.ipv6):
                if ip:
                    ptr[reverse_name(ip)] = _full(e)
            self.generation += 1

    def remove(self, network_id: str, sandbox_id: str) -> None:
        with self._lock:
            old = self._entries.pop((network_id, sandbox_id), None)
            if old is not None:
                self._drop(old)
                self.generation += 1

    def _drop(self, e: Entry) -> None:
        names = self._names.get(e.network_id, {})
        for name in _all_names(e):
            rest = tuple(h for h in names.get(name, ()) if h.sandbox_id != e.sandbox_id)
            if rest:
                names[name] = rest
            else:
                names.pop(name, None)
        ptr = self._ptr.get(e.network_id, {})
        for ip in (e.ipv4, e.ipv6):
            if ip and ptr.get(reverse_name(ip)) == _full(e):
                del ptr[reverse_name(ip)]

    def entry(self, network_id: str, sandbox_id: str) -> Entry | None:
        return self._entries.get((network_id, sandbox_id))

    def lookup(self, networks: Iterable[str], name: str) -> list[Holder]:
        """Every holder of ``name`` on the given networks (a sandbox's view)."""
        out: list[Holder] = []
        for n in networks:
            out.extend(self._names.get(n, {}).get(name, ()))
        return out

    def held_anywhere(self, name: str) -> bool:
        """Whether any network holds ``name``: such a name is never asked of upstreams."""
        return any(name in table for table in list(self._names.values()))

    def ptr_anywhere(self, rname: str) -> bool:
        """Whether any network holds the address of reverse name ``rname``."""
        return any(rname in table for table in list(self._ptr.values()))

    def ptr(self, networks: Iterable[str], rname: str) -> str | None:
        for n in networks:
            target = self._ptr.get(n, {}).get(rname)
            if target:
                return target
        return None


def _full(e: Entry) -> str:
    return f"{e.sandbox_name}.{e.network_name}".lower()


def _all_names(e: Entry) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*e.names, _full(e))))
