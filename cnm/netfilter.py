"""Applies the firewall plan (cnm.firewall, and cnm.antispoof's bridge table) to the host
namespace, one transaction a change.

Also owns the host-side switches the plan needs: IP forwarding for networks that reach
out, route_localnet on bridges (127.0.0.1 to a published port), and br_netfilter's
bridge-nf-call-* (same-bridge rules, hairpin), set only where they differ.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from cnm import antispoof, firewall
from cnm.antispoof import PortGuard
from cnm.errors import CnmError, NotFound
from cnm.firewall import NetworkRules, PortRule
from cnm.portspec import PortTable

log = logging.getLogger("cnm.netfilter")


class NftApi(Protocol):
    """What cnm.kernel.nft.Nftables offers (and cnm.testing fakes)."""

    def run(self, text: str) -> str: ...

    def list_json(self, what: str) -> list[dict[str, Any]]: ...

    def sysctl(self, key: str, value: str) -> None: ...


class Netfilter:
    def __init__(self, nft: NftApi) -> None:
        self.nft = nft
        self.ports = PortTable()
        # Rebuilds the table from the store; the controller sets it. An addition that finds
        # cnm's table gone (someone ran `nft flush ruleset`) calls it and tries once more.
        self.repair: Callable[[], object] | None = None

    def rebuild(self, networks: Sequence[NetworkRules], ports: Iterable[PortRule],
                hairpins: Iterable[tuple[str | None, str | None]] = (),
                guards: Iterable[PortGuard] = ()) -> None:
        """Replace cnm's tables, inet and bridge, in one transaction (start, reload, repair
        after a flush)."""
        self.nft.run(firewall.table(networks, ports, hairpins) + antispoof.table(guards))
        for n in networks:
            self._switches(n)
        self.sync_docker(networks)

    def drift(self, networks: Sequence[NetworkRules], ports: Iterable[PortRule],
              hairpins: Iterable[tuple[str | None, str | None]] = ()) -> list[str]:
        """How the live ``inet cnm`` table differs from what ``rebuild`` would make, in
        words: a missing table, set, map or chain, a chain with another number of rules (a
        flushed table), an element missing from a set or map or one no record explains (a
        DNAT to the wrong address, say)."""
        return self._drift(firewall.TABLE, firewall.layout(),
                           firewall.elements(networks, ports, hairpins))

    def drift_guards(self, guards: Iterable[PortGuard]) -> list[str]:
        """The same for the ``bridge cnm`` table of port guards (anti-spoofing): a guard
        missing from its sets lets that sandbox spoof; an element no joined endpoint
        explains guards a port nobody holds."""
        return self._drift(antispoof.TABLE, antispoof.layout(), antispoof.want(guards))

    def _drift(self, table: str, layout: tuple[dict[str, str], dict[str, int]],
               want_elements: dict[str, list[str]]) -> list[str]:
        items = self.nft.list_json(f"table {table}")
        if not any("table" in i for i in items):
            return [f"table {table} is missing"]
        sets: dict[str, list[Any]] = {}
        chains: set[str] = set()
        rules: dict[str, int] = {}
        for i in items:
            for kind in ("set", "map"):
                if kind in i:
                    sets[i[kind]["name"]] = list(i[kind].get("elem", []))
            if "chain" in i:
                chains.add(i["chain"]["name"])
            if "rule" in i:
                rules[i["rule"]["chain"]] = rules.get(i["rule"]["chain"], 0) + 1
        kinds, want_rules = layout
        out = [f"{kind} {name} is missing" for name, kind in kinds.items() if name not in sets]
        for chain, n in want_rules.items():
            if chain not in chains:
                out.append(f"chain {chain} is missing")
            elif rules.get(chain, 0) != n:
                out.append(f"chain {chain} has {rules.get(chain, 0)} rule(s), cnm's {n}")
        for name, want in want_elements.items():
            if name not in sets:
                continue
            have = [firewall.element_text(e) for e in sets[name]]
            lost, extra = _minus(want, have), _minus(have, want)
            if lost:
                out.append(f"{kinds[name]} {name} lacks {_some(lost)}")
            if extra:
                out.append(f"{kinds[name]} {name} holds {_some(extra)}, which no record "
                           "explains")
        return out

    def _add(self, text: str) -> None:
        try:
            self.nft.run(text)
        except NotFound:
            if self.repair is None:
                raise
            log.warning("cnm's nftables table was missing (a flushed ruleset?): rebuilt it")
            self.repair()
            self.nft.run(text)

    def add_network(self, n: NetworkRules, all_networks: Sequence[NetworkRules]) -> None:
        self._add(firewall.add_network(n))
        self._switches(n)
        self.sync_docker(all_networks)

    def remove_network(self, n: NetworkRules, remaining: Sequence[NetworkRules]) -> None:
        self._delete(firewall.delete_network(n))
        self.sync_docker(remaining)

    def add_ports(self, rules: Sequence[PortRule]) -> None:
        self._add(firewall.add_ports(rules))

    def add_hairpin(self, addr4: str | None, addr6: str | None) -> None:
        self._add(firewall.add_hairpin(addr4, addr6))

    def remove_hairpin(self, addr4: str | None, addr6: str | None) -> None:
        self._delete(firewall.delete_hairpin(addr4, addr6))

    def add_guard(self, g: PortGuard) -> None:
        self._add(antispoof.add(g))

    def remove_guard(self, g: PortGuard) -> None:
        self._delete(antispoof.delete(g))

    def remove_ports(self, rules: Sequence[PortRule]) -> None:
        self._delete(firewall.delete_ports(rules))

    def _delete(self, text: str) -> None:
        """Delete elements; an element already gone (a flushed table) is success. nft 1.0.6
        has no "destroy", so a batch that fails on a missing element goes again one by one."""
        try:
            self.nft.run(text)
        except NotFound:
            for line in text.splitlines():
                with contextlib.suppress(NotFound):
                    self.nft.run(line + "\n")

    def localnet(self, n: NetworkRules) -> None:
        """127.0.0.1 may be routed out of the network's bridge (to a port published on the
        host's loopback). An overlay network's bridge exists only while a local endpoint is
        joined (its rules, by interface name, hold before it does): it gets this when an
        endpoint's ports are programmed, after its join made the bridge."""
        try:
            self.nft.sysctl(f"net/ipv4/conf/{n.bridge}/route_localnet", "1")
        except NotFound:
            log.info("bridge %s does not exist (yet): route_localnet left", n.bridge)

    def _switches(self, n: NetworkRules) -> None:
        self.localnet(n)
        for key in ("net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"):
            try:
                self.nft.sysctl(key, "1")
            except CnmError as e:  # a kernel without br_netfilter: icc=false cannot hold
                log.warning("%s: %s", key, e.message)
        if n.internal:
            return
        if any(":" not in s for s in n.subnets):
            self.nft.sysctl("net/ipv4/ip_forward", "1")
        if any(":" in s for s in n.subnets):
            self.nft.sysctl("net/ipv6/conf/all/forwarding", "1")

    def sync_docker(self, networks: Sequence[NetworkRules]) -> None:
        """Next to dockerd, FORWARD drops bridged and routed traffic unless DOCKER-USER
        accepts it; keep one accept per direction per cnm bridge there."""
        items = self.nft.list_json("chain ip filter DOCKER-USER")
        if not any("chain" in i for i in items):
            return
        handles = [i["rule"]["handle"] for i in items
                   if "rule" in i and i["rule"].get("comment") == firewall.DOCKER_COMMENT]
        self.nft.run(firewall.docker_user([n.bridge for n in networks], handles))


def _minus(a: list[str], b: list[str]) -> list[str]:
    """``a`` less ``b``, as multisets, in ``a``'s order (O(n): 10,000 ports are fine)."""
    left = collections.Counter(b)
    out = []
    for x in a:
        if left[x]:
            left[x] -= 1
        else:
            out.append(x)
    return out


def _some(items: list[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more
