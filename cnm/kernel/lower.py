"""Parent links and their slaves: macvlan and ipvlan endpoints, 802.1q sub-interfaces,
dummy parents and host-side shims.

The functions here run on the host namespace's thread (``HostLinks`` in link.py calls them
there). A slave is created in the host namespace's netlink request but directly inside the
sandbox (IFLA_LINK names the parent here, IFLA_NET_NS_FD the sandbox): no move, which would
cost ~17 ms. Where an errno alone would not tell a user what is wrong (EINVAL from a
passthru parent that is taken, EOPNOTSUPP from a kernel without the link type), the error
is translated here with the words that do. The records (ParentInfo, SlaveSpec) live in
ports.py; drivers still import them from here, so they are re-exported.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from typing import Any

import netaddr
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cnm.errors import AlreadyExists, CnmError, Conflict, InUse, NotFound, from_errno
from cnm.kernel.ports import ParentInfo as ParentInfo
from cnm.kernel.ports import SlaveSpec as SlaveSpec
from cnm.kernel.ports import unsupported
from cnm.kernel.rtnl import Rtnl, index_of

MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}
IFLA_MACVLAN_MODE = IFLA_IPVLAN_MODE = IFLA_VLAN_ID = 1
IFLA_IPVLAN_FLAGS = 2
ARPHRD_ETHER = 1
IFF_UP, IFF_LOOPBACK = 0x1, 0x8
SIOCGIFFLAGS, SIOCGIFHWADDR = 0x8913, 0x8927


def _u16(kind: int, value: int) -> bytes:
    return struct.pack("=HHH2x", 6, kind, value)


def _u32(kind: int, value: int) -> bytes:
    return struct.pack("=HHI", 8, kind, value)


def _lookup(name: str) -> int | None:
    return index_of(name)


def _ioctl(name: str, request: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return fcntl.ioctl(s, request, struct.pack("16s24x", name.encode()))


def _is_up(name: str) -> bool:
    return bool(struct.unpack_from("=H", _ioctl(name, SIOCGIFFLAGS), 16)[0] & IFF_UP)


def _mac_of(name: str) -> str:
    raw = _ioctl(name, SIOCGIFHWADDR)[18:24]
    return ":".join(f"{b:02x}" for b in raw)


def _alias(ipr: IPRoute, index: int) -> str | None:
    value = ipr.get_links(index)[0].get("IFLA_IFALIAS")
    return str(value) if value is not None else None


def supports(rtnl: Rtnl, kind: str) -> bool:
    """Whether the kernel has the link type, asked without creating anything: a request with
    no parent fails EINVAL in a driver that exists, EOPNOTSUPP where there is none."""
    name = "cnmprobe" + os.urandom(3).hex()
    try:
        rtnl.add_link(name, kind)
    except OSError as e:
        return e.errno != errno.EOPNOTSUPP
    # A type that needs no parent (a dummy) was made: the kernel has it; undo that.
    index = _lookup(name)
    if index is not None:
        rtnl.delete_link(index)
    return True


def parent_info(ipr: IPRoute, name: str) -> ParentInfo | None:
    index = _lookup(name)
    if index is None:
        return None
    msg = ipr.get_links(index)[0]
    info = msg.get("IFLA_LINKINFO")
    master = msg.get("IFLA_MASTER")
    return ParentInfo(
        name=name, index=index, kind=(info.get("IFLA_INFO_KIND") if info else None) or "",
        up=bool(msg["flags"] & IFF_UP),
        ether=msg["ifi_type"] == ARPHRD_ETHER and not msg["flags"] & IFF_LOOPBACK,
        master=(socket.if_indextoname(master) if master else None),
        alias=msg.get("IFLA_IFALIAS"), mac=str(msg.get("IFLA_ADDRESS") or ""),
        addresses=tuple(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                        for a in ipr.get_addr(index=index)),
    )


def _info_data(spec: SlaveSpec) -> bytes:
    if spec.kind == "macvlan":
        return _u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[spec.mode])
    return (_u16(IFLA_IPVLAN_MODE, IPVLAN_MODES[spec.mode])
            + _u16(IFLA_IPVLAN_FLAGS, IPVLAN_FLAGS[spec.flag]))


def add_slave(rtnl: Rtnl, spec: SlaveSpec) -> str:
    """Create the slave (down); return the MAC it has."""
    where = spec.netns or "the host namespace"
    what = f"{spec.kind} {spec.ifname} on {spec.parent} in {where}"
    parent = _lookup(spec.parent)
    if parent is None:
        raise NotFound(f"{what}: parent link {spec.parent} does not exist in the host "
                       "namespace")
    if not _is_up(spec.parent):
        raise Conflict(f"{what}: parent link {spec.parent} is down",
                       hint=f"bring it up first (ip link set {spec.parent} up)")
    passthru = spec.kind == "macvlan" and spec.mode == "passthru"
    mac = spec.mac if spec.kind == "macvlan" and not passthru else None
    fd = os.open(spec.netns, os.O_RDONLY) if spec.netns else None
    try:
        rtnl.add_link(spec.ifname, spec.kind, link=parent, netns_fd=fd, mac=mac,
                      data=_info_data(spec))
    except OSError as e:
        raise _slave_error(e.errno or 0, spec, what) from None
    finally:
        if fd is not None:
            os.close(fd)
    return mac or _mac_of(spec.parent)


def _slave_error(code: int, spec: SlaveSpec, what: str) -> CnmError:
    if code == errno.EOPNOTSUPP:
        return unsupported(spec.kind, what)
    if code == errno.EINVAL and spec.kind == "macvlan":
        # The kernel's only EINVAL for a well-formed request: passthru wants the parent alone.
        return InUse(f"{what}: the parent already has a macvlan link, and a passthru one "
                     "must be its only one")
    if code == errno.EBUSY:
        return InUse(f"{what}: the parent is taken by another kind of upper link (a bridge or "
                     "bond port, or macvlan and ipvlan on one parent)")
    if code == errno.EEXIST:
        return AlreadyExists(f"{what}: an interface {spec.ifname} already exists there")
    return from_errno(code, what)


def ensure_simple(ipr: IPRoute, rtnl: Rtnl, name: str, kind: str, alias: str,
                  base: str | None = None, vid: int | None = None) -> bool:
    """A dummy, or an 802.1q sub-interface ``name`` of ``base``, marked ``alias`` and up.
    An existing one is taken only when it carries ``alias``. True if created."""
    what = f"{kind} link {name}"
    index = _lookup(name)
    if index is not None:
        if _alias(ipr, index) != alias:
            raise AlreadyExists(f"{what}: a link {name} already exists and cnm did not make "
                                "it for this network")
        ipr.link("set", index=index, state="up")
        return False
    link = data = None
    if base is not None:
        link = _lookup(base)
        if link is None:
            raise NotFound(f"{what}: link {base} does not exist in the host namespace")
        data = _u16(IFLA_VLAN_ID, vid or 0)
    try:
        rtnl.add_link(name, kind, link=link, data=data or b"")
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            raise unsupported(kind, f"cannot create {name}") from None
        raise
    index = _lookup(name)
    if index is None:
        raise NotFound(f"{what} vanished while cnm was configuring it")
    try:
        rtnl.set_link(index, up=True, alias=alias)
    except BaseException:
        rtnl.delete_link(index)
        raise
    return True


def delete_owned(ipr: IPRoute, name: str, alias: str) -> None:
    """Delete link ``name`` if it carries ``alias`` (cnm made it); gone is success."""
    index = _lookup(name)
    if index is None or _alias(ipr, index) != alias:
        return
    try:
        ipr.link("del", index=index)
    except NetlinkError as e:
        if e.code not in (errno.ENODEV, errno.ENOENT):
            raise


def ensure_shim(ipr: IPRoute, rtnl: Rtnl, spec: SlaveSpec, alias: str,
                addresses: list[str], routes: list[str]) -> bool:
    """The host's own slave on the parent, with host addresses (/32, /128) and routes to the
    network's sandboxes through it. True if created."""
    index = _lookup(spec.ifname)
    created = index is None
    if index is None:
        add_slave(rtnl, spec)
        index = _lookup(spec.ifname)
        if index is None:
            raise NotFound(f"shim {spec.ifname} vanished while cnm was configuring it")
    elif _alias(ipr, index) != alias:
        raise AlreadyExists(f"link {spec.ifname} already exists in the host namespace and is "
                            "not this network's shim")
    try:
        rtnl.set_link(index, alias=alias)
        for addr in addresses:
            rtnl.add_address(index, addr)
        rtnl.set_link(index, up=True)
        for cidr in routes:
            _add_route(ipr, index, cidr, spec.ifname)
    except BaseException:
        if created:
            rtnl.delete_link(index)
        raise
    return created


def _add_route(ipr: IPRoute, index: int, cidr: str, dev: str) -> None:
    n = netaddr.IPNetwork(cidr)
    family = socket.AF_INET6 if n.version == 6 else socket.AF_INET
    kw: dict[str, Any] = {"dst": str(n.network), "dst_len": n.prefixlen, "family": family}
    try:
        ipr.route("add", oif=index, **kw)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise
        if any(r.get("RTA_OIF") == index for r in ipr.get_routes(table=254, **kw)):
            return  # ours already (a reconcile)
        raise Conflict(f"route {n} via {dev}: the host namespace already routes {n} elsewhere",
                       hint="give the network an --ip-range: the shim then routes only that",
                       ) from None
