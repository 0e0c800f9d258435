"""Fakes of the kernel adapters, and fault injection, for tests that need no root.

``FakeKernel`` holds the state (namespaces, links, addresses, default routes);
``FakeHostLinks`` and ``FakeSandboxLinks`` are its two views, implementing the kernel ports
``HostPort`` and ``SandboxPort`` (cnm/kernel/ports.py) as the real adapters do. Give both
views the same kernel, so that a veth made by the host view shows up inside the sandbox::

    kernel = FakeKernel()
    ctx = Context(FakeHostLinks(kernel), FakeSandboxLinks(kernel))

The fakes share no code with the real adapters (no subclassing): mypy checks at the end of
this module that they implement the ports, tests/unit/test_ports.py that their methods
and parameters match the ports'.

The fakes keep the kernel rules a controller bug would trip over: a link name is unique
in its namespace and at most 15 bytes, a veth dies with its peer and with its namespace, a
default route needs its gateway on a subnet of an address of its device and goes when the
device goes down or loses that address.

Fault injection: ``fail_on(method, exc, after=N)`` makes the call after the next N calls
of ``method`` raise ``exc`` before it does anything. The fakes have it, and ``Faulty(obj)``
puts it in front of any object, a real adapter included.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import netaddr

from cnm import names
from cnm.errors import AlreadyExists, CnmError, Conflict, InUse, KernelError, NotFound
from cnm.esp import EspPlan
from cnm.kernel.ports import (
    HostPort,
    LinkInfo,
    LinkState,
    Occupied,
    ParentInfo,
    SandboxPort,
    SandboxState,
    SlaveSpec,
    VxlanSpec,
    unsupported,
)

T = TypeVar("T")

# Key of the host namespace in FakeKernel.namespaces (sandboxes are keyed by path).
HOST = "host"


# --------------------------------------------------------------------------- faults
@dataclass
class _Fault:
    exc: CnmError
    skip: int
    times: int


@dataclass(frozen=True)
class Call:
    """One recorded call: method name and arguments."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class Faults:
    """Armed failures by method name, and the log of calls that passed through."""

    def __init__(self, methods: Sequence[str]) -> None:
        self._methods = frozenset(methods)
        self._lock = threading.Lock()
        self._armed: dict[str, list[_Fault]] = {}
        self.calls: list[Call] = []

    def arm(self, method: str, exc: CnmError, after: int = 0, times: int = 1) -> None:
        """Let ``after`` calls of ``method`` through, then make ``times`` calls raise ``exc``."""
        if method not in self._methods:
            raise ValueError(f"no method {method!r} to fail; known: {sorted(self._methods)}")
        if after < 0 or times < 1:
            raise ValueError("after must be >= 0 and times >= 1")
        with self._lock:
            self._armed.setdefault(method, []).append(_Fault(exc, after, times))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def pending(self) -> int:
        """How many armed failures have not fired yet."""
        with self._lock:
            return sum(f.times for fs in self._armed.values() for f in fs)

    def enter(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Record a call; raise if a failure is due on it."""
        with self._lock:
            self.calls.append(Call(method, args, dict(kwargs)))
            fire: _Fault | None = None
            for f in self._armed.get(method, []):
                if f.skip > 0:
                    f.skip -= 1
                elif fire is None:
                    fire = f
            if fire is None:
                return
            fire.times -= 1
            if fire.times == 0:
                self._armed[method].remove(fire)
        raise fire.exc

    def count(self, method: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.method == method)


def _public_methods(cls: type) -> list[str]:
    return [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))]


class Faulty(Generic[T]):
    """A proxy that injects failures into any object's methods (a real adapter, say).

    ``Faulty(host).fail_on("add_veth", KernelError("boom"), after=1)`` lets one
    ``add_veth`` through and fails the second, before the real method runs. Every other
    attribute is the target's. Calls are recorded in ``calls``.
    """

    def __init__(self, target: T) -> None:
        self.target = target
        self.faults = Faults(_public_methods(type(target)))

    @property
    def calls(self) -> list[Call]:
        return self.faults.calls

    def fail_on(self, method: str, exc: CnmError, after: int = 0, times: int = 1) -> Faulty[T]:
        self.faults.arm(method, exc, after, times)
        return self

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.target, name)
        if name.startswith("_") or not callable(attr):
            return attr
        faults = self.faults

        def call(*args: Any, **kwargs: Any) -> Any:
            faults.enter(name, args, kwargs)
            return attr(*args, **kwargs)

        return call


# --------------------------------------------------------------------------- kernel
@dataclass(eq=False)
class FakeLink:
    name: str
    index: int
    kind: str
    netns: str = HOST
    mac: str = ""
    alias: str | None = None
    master: FakeLink | None = None
    group: int = 0
    up: bool = False
    hairpin: bool = False
    mtu: int | None = None
    addresses: list[str] = field(default_factory=list)
    peer: FakeLink | None = None
    # A macvlan/ipvlan/vlan link's parent: deleting the parent deletes it too.
    lower: FakeLink | None = None
    mode: str = ""

    @property
    def retired(self) -> bool:
        return self.group == names.GRAVEYARD_GROUP

    def info(self) -> LinkInfo:
        return LinkInfo(name=self.name, index=self.index, kind=self.kind, alias=self.alias,
                        master=self.master.index if self.master else None)

    def state(self) -> LinkState:
        return LinkState(name=self.name, up=self.up,
                         master=self.master.name if self.master else None,
                         addresses=tuple(self.addresses))


_SERIALS = itertools.count(1)


@dataclass(eq=False)
class FakeNamespace:
    links: dict[str, FakeLink] = field(default_factory=dict)
    # Default route of each IP version: (gateway, device).
    routes: dict[int, tuple[str, FakeLink]] = field(default_factory=dict)
    # Its identity (a real one's is its nsfs inode): never reused.
    serial: int = field(default_factory=lambda: next(_SERIALS))


class FakeKernel:
    """The state both fake adapters act on. Thread-safe: one lock guards it all."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._index = itertools.count(2)
        # Link types this kernel has (take some away to play a kernel without them).
        self.features = {"macvlan", "ipvlan", "vlan", "dummy"}
        self.namespaces: dict[str, FakeNamespace] = {}
        # Non-default routes of the host namespace: (cidr, device).
        self.host_routes: list[tuple[str, str]] = []
        self.add_namespace(HOST)

    def add_namespace(self, key: str) -> FakeNamespace:
        ns = FakeNamespace()
        ns.links["lo"] = FakeLink("lo", 1, "", netns=key, up=True,
                                  addresses=["127.0.0.1/8", "::1/128"])
        self.namespaces[key] = ns
        return ns

    def namespace(self, key: str) -> FakeNamespace:
        ns = self.namespaces.get(key)
        if ns is None:
            raise NotFound(f"network namespace {key} does not exist")
        return ns

    def is_netns(self, path: str) -> bool:
        """A live namespace of this kernel at ``path`` (FakeSandboxLinks.is_netns); it also
        stands in for ``cnm.kernel.netns.is_netns`` where a test patches that."""
        with self.lock:
            return path in self.namespaces and os.path.exists(path)

    def add_link(self, key: str, name: str, kind: str, what: str, **attrs: Any) -> FakeLink:
        ns = self.namespace(key)
        if len(name.encode()) > names.IFNAMSIZ or not name:
            raise KernelError(f"{what}: EINVAL ({name!r} is not a valid interface name)")
        if name in ns.links:
            raise AlreadyExists(f"{what}: already exists")
        link = FakeLink(name, next(self._index), kind, netns=key, **attrs)
        ns.links[name] = link
        return link

    def delete_link(self, link: FakeLink) -> None:
        """Delete a link; a veth takes its peer along, a bridge frees its ports, a parent
        takes its slaves (in any namespace) along."""
        for victim in (link, link.peer):
            if victim is None:
                continue
            ns = self.namespaces.get(victim.netns)
            if ns is None or ns.links.get(victim.name) is not victim:
                continue
            del ns.links[victim.name]
            self.drop_routes(victim)
            if victim.netns == HOST:
                self.host_routes = [r for r in self.host_routes if r[1] != victim.name]
            for other in ns.links.values():
                if other.master is victim:
                    other.master = None
            for upper in self.uppers(victim):
                self.delete_link(upper)

    def uppers(self, link: FakeLink) -> list[FakeLink]:
        """The links (in every namespace) whose parent is ``link``."""
        return [x for ns in self.namespaces.values() for x in ns.links.values()
                if x.lower is link]

    def drop_routes(self, link: FakeLink) -> None:
        """The kernel removes the routes of a device that goes down or away."""
        ns = self.namespaces.get(link.netns)
        if ns is not None:
            for version, (_, dev) in list(ns.routes.items()):
                if dev is link:
                    del ns.routes[version]

    def delete_namespace(self, key: str) -> None:
        ns = self.namespaces.pop(key, None)
        if ns is None:
            return
        for link in list(ns.links.values()):
            if link.peer is not None:
                self.delete_link(link.peer)


def _add_addresses(link: FakeLink, cidrs: Sequence[str]) -> None:
    for cidr in cidrs:
        n = netaddr.IPNetwork(cidr)
        text = f"{n.ip}/{n.prefixlen}"
        if text not in link.addresses:
            link.addresses.append(text)


def _on_link(link: FakeLink, gateway: str) -> bool:
    gw = netaddr.IPAddress(gateway)
    return any(gw in netaddr.IPNetwork(a) and gw != netaddr.IPNetwork(a).ip
               for a in link.addresses)


class _Faultable:
    """Fault injection and the call log, for the fakes."""

    faults: Faults

    def _init_faults(self) -> None:
        self.faults = Faults(_public_methods(type(self)))

    @property
    def calls(self) -> list[Call]:
        return self.faults.calls

    def fail_on(self, method: str, exc: CnmError, after: int = 0, times: int = 1) -> None:
        """Let ``after`` calls of ``method`` through, then make ``times`` calls raise ``exc``."""
        self.faults.arm(method, exc, after, times)

    def _enter(self, method: str, *args: Any) -> None:
        self.faults.enter(method, args, {})


class FakeHostLinks(_Faultable):
    """The HostPort over a FakeKernel. Retired links wait in the graveyard until ``reap()``
    (the real adapter's reaper thread does that 0.2 s later; here a test decides)."""

    def __init__(self, kernel: FakeKernel | None = None) -> None:
        self.kernel = kernel or FakeKernel()
        self.closed = False
        # VXLAN device -> {MAC: (VTEP, addresses)}: what set_peer programmed.
        self.peers: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {}
        # What apply_esp was last given (the kernel's XFRM state and cnm_esp table).
        self.esp = EspPlan()
        self._init_faults()

    def _ns(self) -> FakeNamespace:
        return self.kernel.namespace(HOST)

    # ---- the adapter's methods
    def retire(self, name: str) -> None:
        self._enter("retire", name)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            if link is not None:
                link.up = False
                link.master = None
                link.group = names.GRAVEYARD_GROUP
                self.kernel.drop_routes(link)

    def reap(self) -> None:
        self._enter("reap")
        with self.kernel.lock:
            for link in list(self._ns().links.values()):
                if link.retired:
                    self.kernel.delete_link(link)

    def close(self) -> None:
        self._enter("close")
        self.reap()
        self.closed = True

    def links(self) -> list[LinkInfo]:
        self._enter("links")
        with self.kernel.lock:
            return [link.info() for link in self._ns().links.values()]

    def exists(self, name: str) -> bool:
        self._enter("exists", name)
        with self.kernel.lock:
            return name in self._ns().links

    def set_hairpin(self, name: str) -> None:
        self._enter("set_hairpin", name)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            if link is None:
                raise NotFound(f"hairpin on {name}: not found")
            link.hairpin = True

    def attached(self, name: str, master: str) -> bool:
        self._enter("attached", name, master)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            return bool(link and link.master and link.master.name == master and link.up)

    def ensure_bridge(self, name: str, alias: str, mtu: int | None, addresses: Sequence[str],
                      mac: str) -> bool:
        self._enter("ensure_bridge", name, alias, mtu, addresses, mac)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            created = link is None
            if link is None:
                link = self.kernel.add_link(HOST, name, "bridge", f"bridge {name}", mac=mac,
                                            mtu=mtu)
            elif link.alias != alias:
                raise AlreadyExists(
                    f"link {name} already exists in the host namespace and is not this "
                    "network's bridge",
                    hint="choose another bridge name with -o bridge_name=NAME",
                )
            link.alias = alias
            _add_addresses(link, addresses)
            link.up = True
            return created

    def mtu_towards(self, address: str) -> int:
        self._enter("mtu_towards", address)
        with self.kernel.lock:
            for link in self._ns().links.values():
                if any(a.partition("/")[0] == address for a in link.addresses):
                    return link.mtu or 1500
        raise NotFound(f"no link of the host namespace holds the address {address}")

    def ensure_vxlan(self, spec: VxlanSpec) -> bool:
        self._enter("ensure_vxlan", spec)
        with self.kernel.lock:
            link = self._ns().links.get(spec.name)
            created = link is None
            if link is None:
                link = self.kernel.add_link(HOST, spec.name, "vxlan", f"vxlan {spec.name}",
                                            mtu=spec.mtu, mode=f"vni {spec.vni}")
            elif link.alias != spec.alias:
                raise AlreadyExists(f"link {spec.name} already exists in the host namespace")
            link.alias = spec.alias
            link.master = self._ns().links[spec.master]
            link.up = True
            return created

    def set_peer(self, device: str, mac: str, addresses: Sequence[str], vtep: str,
                 present: bool) -> None:
        self._enter("set_peer", device, mac, addresses, vtep, present)
        with self.kernel.lock:
            if device not in self._ns().links:
                return
            table = self.peers.setdefault(device, {})
            if present:
                table[mac] = (vtep, tuple(addresses))
            else:
                table.pop(mac, None)

    def link_state(self, name: str) -> LinkState | None:
        self._enter("link_state", name)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            return link.state() if link is not None else None

    def apply_esp(self, plan: EspPlan) -> None:
        self._enter("apply_esp", plan)
        with self.kernel.lock:
            self.esp = plan

    def ports_of(self, bridge: str) -> list[str]:
        self._enter("ports_of", bridge)
        with self.kernel.lock:
            return [x.name for x in self._ns().links.values()
                    if x.master is not None and x.master.name == bridge]

    def delete_link(self, name: str) -> None:
        self._enter("delete_link", name)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            if link is not None:
                self.kernel.delete_link(link)

    def add_veth(self, name: str, alias: str, peer: str, peer_netns: str, peer_mac: str,
                 master: str | None, mtu: int | None) -> None:
        self._enter("add_veth", name, alias, peer, peer_netns, peer_mac, master, mtu)
        what = f"veth {name}"
        with self.kernel.lock:
            bridge = None
            if master is not None:
                bridge = self._ns().links.get(master)
                if bridge is None:
                    raise NotFound(f"bridge {master} does not exist in the host namespace")
            if peer_netns not in self.kernel.namespaces:
                raise NotFound(f"{what}: not found")
            if name in self._ns().links:
                raise AlreadyExists(f"{what}: already exists")
            inner = self.kernel.add_link(peer_netns, peer, "veth", what, mac=peer_mac, mtu=mtu)
            try:
                outer = self.kernel.add_link(HOST, name, "veth", what, alias=alias,
                                             master=bridge, up=True, mtu=mtu,
                                             mac=names.random_mac())
            except CnmError:
                self.kernel.delete_link(inner)
                raise
            inner.peer, outer.peer = outer, inner

    def move_link(self, name: str, netns: str, new_name: str, mac: str | None) -> None:
        self._enter("move_link", name, netns, new_name, mac)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            if link is None:
                raise NotFound(f"link {name} (named by the plugin) is not in the host "
                               "namespace")
            target = self.kernel.namespace(netns)
            if new_name in target.links:
                raise AlreadyExists(f"move {name} to {netns}: already exists")
            del self._ns().links[name]
            link.name, link.netns, link.up, link.master = new_name, netns, False, None
            if mac:
                link.mac = mac
            target.links[new_name] = link

    def supports(self, kind: str) -> bool:
        self._enter("supports", kind)
        return kind in self.kernel.features

    def parent_info(self, name: str) -> ParentInfo | None:
        self._enter("parent_info", name)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            if link is None:
                return None
            return ParentInfo(name=name, index=link.index, kind=link.kind, up=link.up,
                              ether=name != "lo", alias=link.alias, mac=link.mac,
                              master=link.master.name if link.master else None,
                              addresses=tuple(link.addresses))

    def _ensure_simple(self, name: str, kind: str, alias: str,
                       lower: FakeLink | None = None) -> bool:
        link = self._ns().links.get(name)
        if link is not None:
            if link.alias != alias:
                raise AlreadyExists(f"{kind} link {name}: a link {name} already exists and "
                                    "cnm did not make it for this network")
            link.up = True
            return False
        if kind not in self.kernel.features:
            raise unsupported(kind, f"cannot create {name}")
        self.kernel.add_link(HOST, name, kind, f"{kind} {name}", alias=alias, up=True,
                             lower=lower, mac=lower.mac if lower else names.random_mac())
        return True

    def ensure_dummy(self, name: str, alias: str) -> bool:
        self._enter("ensure_dummy", name, alias)
        with self.kernel.lock:
            return self._ensure_simple(name, "dummy", alias)

    def ensure_vlan(self, name: str, base: str, vid: int, alias: str) -> bool:
        self._enter("ensure_vlan", name, base, vid, alias)
        with self.kernel.lock:
            lower = self._ns().links.get(base)
            if lower is None and name not in self._ns().links:
                raise NotFound(f"vlan link {name}: link {base} does not exist in the host "
                               "namespace")
            return self._ensure_simple(name, "vlan", alias, lower)

    def delete_owned(self, name: str, alias: str) -> None:
        self._enter("delete_owned", name, alias)
        with self.kernel.lock:
            link = self._ns().links.get(name)
            if link is not None and link.alias == alias:
                self.kernel.delete_link(link)

    def _add_slave(self, spec: SlaveSpec) -> FakeLink:
        """The kernel's rules for a new slave: parent there and up, the type known, macvlan
        and ipvlan never on one parent, a passthru macvlan alone."""
        where = spec.netns or "the host namespace"
        what = f"{spec.kind} {spec.ifname} on {spec.parent} in {where}"
        parent = self._ns().links.get(spec.parent)
        if parent is None:
            raise NotFound(f"{what}: parent link {spec.parent} does not exist in the host "
                           "namespace")
        if not parent.up:
            raise Conflict(f"{what}: parent link {spec.parent} is down")
        if spec.kind not in self.kernel.features:
            raise unsupported(spec.kind, what)
        uppers = [x for x in self.kernel.uppers(parent) if x.kind in ("macvlan", "ipvlan")]
        if any(x.kind != spec.kind for x in uppers) or parent.master is not None:
            raise InUse(f"{what}: the parent is taken by another kind of upper link")
        passthru = spec.kind == "macvlan" and spec.mode == "passthru"
        if spec.kind == "macvlan" and uppers and (
                passthru or any(x.mode == "passthru" for x in uppers)):
            raise InUse(f"{what}: the parent already has a macvlan link, and a passthru one "
                        "must be its only one")
        own_mac = spec.kind == "macvlan" and not passthru
        mac = (spec.mac or names.random_mac()) if own_mac else parent.mac
        ns = spec.netns or HOST
        if ns not in self.kernel.namespaces:
            raise NotFound(f"network namespace {ns} does not exist")
        if spec.ifname in self.kernel.namespace(ns).links:
            raise AlreadyExists(f"{what}: an interface {spec.ifname} already exists there")
        return self.kernel.add_link(ns, spec.ifname, spec.kind, what, lower=parent,
                                    mode=spec.mode, mac=mac)

    def add_slave(self, spec: SlaveSpec) -> str:
        self._enter("add_slave", spec)
        with self.kernel.lock:
            return self._add_slave(spec).mac

    def ensure_shim(self, spec: SlaveSpec, alias: str, addresses: Sequence[str],
                    routes: Sequence[str]) -> bool:
        self._enter("ensure_shim", spec, alias, addresses, routes)
        with self.kernel.lock:
            link = self._ns().links.get(spec.ifname)
            created = link is None
            if link is None:
                link = self._add_slave(spec)
            elif link.alias != alias:
                raise AlreadyExists(f"link {spec.ifname} already exists in the host namespace "
                                    "and is not this network's shim")
            link.alias = alias
            link.up = True
            _add_addresses(link, addresses)
            for cidr in routes:
                if (cidr, spec.ifname) not in self.kernel.host_routes:
                    self.kernel.host_routes.append((cidr, spec.ifname))
            return created

    def occupied(self) -> list[Occupied]:
        self._enter("occupied")
        with self.kernel.lock:
            out = []
            for link in self._ns().links.values():
                for a in link.addresses:
                    n = netaddr.IPNetwork(a)
                    if n.ip.is_loopback() or n.ip.is_link_local():
                        continue
                    out.append(Occupied(str(n.cidr), "address", link.name, str(n)))
            for cidr, dev in self.kernel.host_routes:
                out.append(Occupied(str(netaddr.IPNetwork(cidr).cidr), "route", dev))
            return out

    # ---- for tests: arrange and inspect the host namespace
    def link(self, name: str) -> FakeLink | None:
        with self.kernel.lock:
            return self._ns().links.get(name)

    def live(self) -> dict[str, FakeLink]:
        """Links in service (not loopback, not retired), by name."""
        with self.kernel.lock:
            return {n: link for n, link in self._ns().links.items()
                    if n != "lo" and not link.retired}

    def add_address(self, dev: str, cidr: str) -> None:
        """Give the host an address (on a dummy link ``dev``, made if missing)."""
        with self.kernel.lock:
            link = self._ns().links.get(dev)
            if link is None:
                link = self.kernel.add_link(HOST, dev, "dummy", dev, up=True)
            _add_addresses(link, [cidr])

    def add_route(self, cidr: str, dev: str = "eth0") -> None:
        """Give the host a (non-default) route to ``cidr``."""
        with self.kernel.lock:
            self.kernel.host_routes.append((cidr, dev))

    def add_parent(self, name: str, up: bool = True, master: str | None = None) -> FakeLink:
        """Give the host an Ethernet link (a would-be parent), optionally a port of
        ``master`` (made if missing)."""
        with self.kernel.lock:
            bridge = None
            if master is not None:
                bridge = self._ns().links.get(master) or self.kernel.add_link(
                    HOST, master, "bridge", master, up=True, mac=names.random_mac())
            return self.kernel.add_link(HOST, name, "veth", name, up=up, master=bridge,
                                        mac=names.random_mac())


class FakeSandboxLinks(_Faultable):
    """The SandboxPort over a FakeKernel; a namespace is keyed by its path, where a plain
    file stands in for the bind mount (the controller lists its netns directory)."""

    def __init__(self, kernel: FakeKernel | None = None) -> None:
        self.kernel = kernel or FakeKernel()
        # path -> the port its DNS redirect leads to (open_dns makes it; a test may drop it)
        self.redirects: dict[str, int] = {}
        self._init_faults()

    def create_netns(self, path: str) -> None:
        self._enter("create_netns", path)
        with self.kernel.lock:
            if path in self.kernel.namespaces:
                raise AlreadyExists(f"network namespace {path}: already exists")
            # Like the real one: O_EXCL, so a leftover file is an error, not reused.
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
            os.close(fd)
            self.kernel.add_namespace(path)

    def delete_netns(self, path: str) -> None:
        self._enter("delete_netns", path)
        with self.kernel.lock:
            self.kernel.delete_namespace(path)
            self.redirects.pop(path, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def identity(self, path: str) -> str | None:
        self._enter("identity", path)
        with self.kernel.lock:
            ns = self.kernel.namespaces.get(path)
            return f"fake:{ns.serial}" if ns is not None and os.path.exists(path) else None

    def release(self, path: str) -> None:
        self._enter("release", path)
        self.redirects.pop(path, None)

    def configure(self, path: str, ifname: str, addresses: Sequence[str]) -> None:
        self._enter("configure", path, ifname, addresses)
        with self.kernel.lock:
            link = self.kernel.namespace(path).links.get(ifname)
            if link is None:
                raise NotFound(f"interface {ifname} is missing in {path}")
            _add_addresses(link, addresses)
            link.up = True

    def set_default_routes(self, path: str, routes: Sequence[tuple[int, str, str]],
                           known: Sequence[tuple[int, str, str]] | None = None) -> None:
        # The fake applies the whole wanted state: ``known`` only spares real requests.
        self._enter("set_default_routes", path, routes)
        with self.kernel.lock:
            ns = self.kernel.namespace(path)
            for version in (4, 6):
                want = [r for r in routes if r[0] == version]
                if not want:
                    ns.routes.pop(version, None)
                    continue
                _, gw, dev = want[0]
                link = ns.links.get(dev)
                if link is None:
                    raise NotFound(f"default route: device {dev} not found in {path}")
                # The unspecified address: a route out of the device itself (ipvlan L3).
                on_link = netaddr.IPAddress(gw).value == 0
                if not link.up or not (on_link or _on_link(link, gw)):
                    raise KernelError(f"default route: gateway {gw} is unreachable on {dev} "
                                      "(ENETUNREACH)")
                ns.routes[version] = (gw, link)

    def retire(self, path: str, ifname: str, new_name: str,
               addresses: Sequence[str] | None = None) -> None:
        self._enter("retire", path, ifname, new_name)
        with self.kernel.lock:
            ns = self.kernel.namespaces.get(path)
            link = ns.links.get(ifname) if ns else None
            if ns is None or link is None:
                return
            if new_name in ns.links:
                raise AlreadyExists(f"retire {ifname}: already exists")
            link.up = False
            del ns.links[ifname]
            link.name = new_name
            ns.links[new_name] = link
            link.addresses.clear()
            self.kernel.drop_routes(link)

    def open_dns(self, path: str) -> tuple[socket.socket, socket.socket]:
        """Real sockets on the loopback of the calling namespace (no redirect)."""
        self._enter("open_dns", path)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        self.redirects[path] = udp.getsockname()[1]
        return udp, tcp

    def remove(self, path: str, ifname: str) -> None:
        self._enter("remove", path, ifname)
        with self.kernel.lock:
            link = self.kernel.namespace(path).links.get(ifname)
            if link is not None:
                self.kernel.delete_link(link)

    def links(self, path: str) -> list[LinkInfo]:
        self._enter("links", path)
        with self.kernel.lock:
            return [link.info() for link in self.kernel.namespace(path).links.values()]

    def inspect(self, path: str) -> SandboxState:
        self._enter("inspect", path)
        with self.kernel.lock:
            ns = self.kernel.namespace(path)
            return SandboxState(
                links={n: x.state() for n, x in ns.links.items() if n != "lo"},
                routes=tuple((v, gw, dev.name) for v, (gw, dev) in sorted(ns.routes.items())),
                dns_port=self.redirects.get(path))

    # ---- for tests: inspect sandboxes
    def namespaces(self) -> list[str]:
        with self.kernel.lock:
            return sorted(k for k in self.kernel.namespaces if k != HOST)

    def interfaces(self, path: str) -> dict[str, FakeLink]:
        """The interfaces of a sandbox other than loopback, by name."""
        with self.kernel.lock:
            return {n: link for n, link in self.kernel.namespace(path).links.items()
                    if n != "lo"}

    def default_routes(self, path: str) -> dict[int, tuple[str, str]]:
        """IP version -> (gateway, device name)."""
        with self.kernel.lock:
            ns = self.kernel.namespace(path)
            return {v: (gw, dev.name) for v, (gw, dev) in ns.routes.items()}


class FakeNft:
    """nftables for unit tests: keeps the elements of cnm's sets and maps, as the kernel
    would (a missing element on delete is NotFound, a duplicate on add is refused), and
    records every transaction and sysctl. The sets of ``table inet cnm`` are keyed by
    their name, those of ``table bridge cnm`` (the port guards) by "bridge NAME"."""

    _ELEMENT = re.compile(r"^(add|delete) element (inet|bridge) cnm (\w+) \{ (.*) \}$")

    def __init__(self) -> None:
        self.transactions: list[str] = []
        self.elements: dict[str, dict[str, str]] = {}
        self.sysctls: dict[str, str] = {}
        self.docker_user: list[dict[str, Any]] | None = None  # the DOCKER-USER chain, if any
        self.table = False  # cnm's table exists (a test may drop it: a flushed ruleset)
        self.bridge_table = False  # and its table of port guards

    def run(self, text: str) -> str:
        if not text:
            return ""
        staged = {k: dict(v) for k, v in self.elements.items()}
        if "delete table inet cnm" in text:
            staged = {k: v for k, v in staged.items() if k.startswith("bridge ")}
        if "delete table bridge cnm" in text:
            staged = {k: v for k, v in staged.items() if not k.startswith("bridge ")}
        for line in text.splitlines():
            m = self._ELEMENT.match(line.strip())
            if not m:
                continue
            verb, family, name, body = m.groups()
            key, _, value = body.partition(" : ")
            table = staged.setdefault(name if family == "inet" else f"bridge {name}", {})
            if verb == "add":
                if key in table:
                    raise KernelError("nftables refused the change: Error: Could not process "
                                      "rule: File exists")
                table[key] = value
            elif key not in table:
                raise NotFound("nftables: Error: Could not process rule: No such file or "
                               "directory")
            else:
                del table[key]
        self.elements = staged
        if "table inet cnm {" in text:
            self.table = True
        elif "delete table inet cnm" in text:
            self.table = False
        if "table bridge cnm {" in text:
            self.bridge_table = True
        elif "delete table bridge cnm" in text:
            self.bridge_table = False
        self.transactions.append(text)
        return ""

    def list_json(self, what: str) -> list[dict[str, Any]]:
        if what == "chain ip filter DOCKER-USER" and self.docker_user is not None:
            return [{"chain": {"name": "DOCKER-USER"}}, *self.docker_user]
        if what == "table inet cnm" and self.table:
            from cnm import firewall

            kinds, rules = firewall.layout()
            return [{"table": {"family": "inet", "name": "cnm"}},
                    *({kind: {"name": name, "elem": [
                        [k, v] if kind == "map" else k
                        for k, v in self.elements.get(name, {}).items()]}}
                      for name, kind in kinds.items()),
                    *({"chain": {"name": chain}} for chain in rules),
                    *({"rule": {"chain": chain}} for chain, n in rules.items()
                      for _ in range(n))]
        if what == "table bridge cnm" and self.bridge_table:
            from cnm import antispoof

            kinds, rules = antispoof.layout()
            return [{"table": {"family": "bridge", "name": "cnm"}},
                    *({"set": {"name": name, "elem": list(
                        self.elements.get(f"bridge {name}", {}))}} for name in kinds),
                    *({"chain": {"name": chain}} for chain in rules),
                    *({"rule": {"chain": chain}} for chain, n in rules.items()
                      for _ in range(n))]
        return []

    def sysctl(self, key: str, value: str) -> None:
        self.sysctls[key] = value


if TYPE_CHECKING:
    # mypy checks here that the fakes implement the kernel ports.
    _host_port: type[HostPort] = FakeHostLinks
    _sandbox_port: type[SandboxPort] = FakeSandboxLinks
