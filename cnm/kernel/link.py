"""Link, address and route operations, in the host namespace and inside sandboxes.

Every method runs on the right namespace thread (see netns.py) and translates netlink
errors once. Teardown methods treat "already gone" as success.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import netaddr
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cnm import names
from cnm.errors import AlreadyExists, Conflict, KernelError, NotFound, from_errno
from cnm.esp import NFT_TABLE, EspPlan
from cnm.kernel import lower, netns, nft, xfrm
from cnm.kernel.announce import Announcer
from cnm.kernel.fds import lift
from cnm.kernel.netns import Handles, NsThread, Visitor, netlink_call
from cnm.kernel.ports import (
    HostPort,
    LinkState,
    Occupied,
    SandboxPort,
    SandboxState,
    VxlanSpec,
)
from cnm.kernel.ports import LinkInfo as LinkInfo  # re-exported: its old home
from cnm.kernel.rtnl import IFA_F_NODAD, index_of

# Gratuitous ARP / unsolicited NA for a joined endpoint: how many, how far apart (s).
ANNOUNCEMENTS = 3
ANNOUNCE_INTERVAL = 0.5
DNS_ADDRESS = "127.0.0.11"  # Docker's: resolv.conf in sandboxes on DNS networks names it
log = logging.getLogger("cnm.kernel")


def _lookup(ipr: IPRoute, name: str) -> int | None:
    """The index of link ``name`` in ``ipr``'s namespace (the calling thread's), or None."""
    return _lookup_here(name)


def _lookup_here(name: str) -> int | None:
    """The index of link ``name`` in the calling thread's namespace, or None (rtnl.index_of:
    an ioctl of ~10 us, where ``ipr.link_lookup`` costs 0.4-1 ms)."""
    return index_of(name)


def _ifname(index: int) -> str | None:
    """The name of link ``index`` in the calling thread's namespace (SIOCGIFNAME), or None."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def _mtu_of(name: str) -> int:
    """The MTU of link ``name`` in the calling thread's namespace (SIOCGIFMTU)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        reply = fcntl.ioctl(s, 0x8921, struct.pack("16si20x", name.encode(), 0))
    return int(struct.unpack_from("16si", reply)[1])


def _index(ipr: IPRoute, name: str) -> int:
    index = _lookup(ipr, name)
    if index is None:
        raise NotFound(f"link {name} vanished while cnm was configuring it")
    return index


def _links(ipr: IPRoute) -> list[LinkInfo]:
    out = []
    for msg in ipr.get_links():
        info = msg.get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info else None
        out.append(
            LinkInfo(
                name=msg.get("IFLA_IFNAME"),
                index=msg["index"],
                kind=kind or "",
                alias=msg.get("IFLA_IFALIAS"),
                master=msg.get("IFLA_MASTER"),
            )
        )
    return out


def _link_states(ipr: IPRoute, index: int | None = None) -> dict[str, LinkState]:
    """name -> LinkState of every link of the calling thread's namespace (or of ``index``),
    with its global-scope addresses."""
    links = ipr.get_links(index) if index is not None else ipr.get_links()
    byindex = {m["index"]: m.get("IFLA_IFNAME") for m in links}
    addrs: dict[int, list[str]] = {}
    for a in ipr.get_addr(index=index) if index is not None else ipr.get_addr():
        if a["scope"] != 0:  # link-local and host addresses are the kernel's own
            continue
        local = a.get("IFA_LOCAL") or a.get("IFA_ADDRESS")
        addrs.setdefault(a["index"], []).append(f"{local}/{a['prefixlen']}")
    out = {}
    for m in links:
        master = m.get("IFLA_MASTER")
        name = m.get("IFLA_IFNAME")
        out[name] = LinkState(name=name, up=bool(m["flags"] & 1),
                              master=(byindex.get(master) or _ifname(master)) if master
                              else None,
                              addresses=tuple(addrs.get(m["index"], ())))
    return out


def _default_routes(ipr: IPRoute) -> tuple[tuple[int, str, str], ...]:
    out = []
    for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        for r in ipr.get_routes(family=family, table=254):
            if r["dst_len"] != 0:
                continue
            gw = r.get("RTA_GATEWAY") or ("0.0.0.0" if version == 4 else "::")
            out.append((version, gw, _ifname(r.get("RTA_OIF") or 0) or "?"))
    return tuple(out)


_DNAT = re.compile(r"dport 53 dnat (?:ip )?to 127\.0\.0\.11:(\d+)")


def _dns_port() -> int | None:
    """The port the sandbox's DNS redirect leads to, when both its rules are there."""
    try:
        text = nft.run_here("list chain ip cnm_dns output\n")
    except NotFound:
        return None
    ports = _DNAT.findall(text)
    if len(ports) != 2 or ports[0] != ports[1]:
        return None
    return int(ports[0])


def _add_addresses(ipr: IPRoute, index: int, cidrs: Sequence[str], what: str) -> None:
    for cidr in cidrs:
        n = netaddr.IPNetwork(cidr)
        kw = {"flags": IFA_F_NODAD} if n.version == 6 else {}
        try:
            ipr.addr("add", index=index, address=str(n.ip), prefixlen=n.prefixlen, **kw)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise


class HostLinks:
    """The HostPort: operations in the managed host namespace, on its resident thread.

    Deleting a link costs the kernel 14-22 ms (RCU synchronisation) however small it is, and
    it serialises. So endpoints are *retired* (detached, down, moved to the graveyard link
    group: about 1 ms) and a reaper deletes the whole group in one batched request shortly
    after: 50 links go in under 30 ms instead of 800 ms.
    """

    REAP_DELAY = 0.2

    def __init__(self, thread: NsThread) -> None:
        self._t = thread
        self._esp_nft: str | None = None  # the cnm_esp table as last written
        self._kick = threading.Event()
        self._stopping = False
        self._reaper = threading.Thread(target=self._reap_loop, name="cnm-reaper", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        while not self._stopping:
            self._kick.wait()
            if self._stopping:
                return
            self._kick.clear()
            # Coalesce a burst of retirements into one batched delete.
            time.sleep(self.REAP_DELAY)
            try:
                self.reap()
            except Exception as e:  # noqa: BLE001 - the reaper must outlive one failure
                log.error("reaping retired links failed: %s", e)

    def retire(self, name: str) -> None:
        """Take a link out of service now; the reaper deletes it soon. Gone is fine."""

        def run(ipr: IPRoute) -> None:
            index = _lookup(ipr, name)
            if index is not None:
                self._t.rtnl.set_link(index, up=False, master=0, group=names.GRAVEYARD_GROUP)

        self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"retire link {name}"))
        self._kick.set()

    def reap(self) -> None:
        """Delete every retired link now, in one batched request."""

        def run(ipr: IPRoute) -> None:
            try:
                ipr.link("del", group=names.GRAVEYARD_GROUP)
            except NetlinkError as e:
                if e.code not in (errno.ENODEV, errno.ENOENT):
                    raise

        self._t.call(lambda ipr: netlink_call(lambda: run(ipr), "delete retired links"))

    def close(self) -> None:
        """Stop the reaper after a last reap; the thread itself is the caller's."""
        self._stopping = True
        self._kick.set()
        self._reaper.join(timeout=5)
        self.reap()

    def links(self) -> list[LinkInfo]:
        # Raw (rtnl.py): pyroute2's dump parsed ~0.1 ms a link, 0.3 s at a restart beside
        # 1,000 veths.
        def run() -> list[LinkInfo]:
            return [LinkInfo(name=name, index=index, kind=kind, alias=alias, master=master)
                    for index, name, kind, alias, master in self._t.rtnl.links()]

        return self._t.call(lambda ipr: netlink_call(run, "list links"))

    def exists(self, name: str) -> bool:
        return self._t.call(lambda ipr: _lookup(ipr, name) is not None)

    def attached(self, name: str, master: str) -> bool:
        """True when link ``name`` exists, is up and is a port of ``master``."""

        def run() -> bool:
            # Raw (rtnl.py): pyroute2's get_links was ~2 ms of each endpoint at a restart.
            index, master_index = _lookup_here(name), _lookup_here(master)
            if index is None or master_index is None:
                return False
            state = self._t.rtnl.link_state(index)
            return state is not None and state[1] == master_index and bool(state[0] & 1)

        return self._t.call(lambda ipr: netlink_call(run, f"link {name}"))

    def ensure_bridge(self, name: str, alias: str, mtu: int | None, addresses: Sequence[str],
                      mac: str) -> bool:
        """Create the bridge, or bring an existing cnm bridge in line. True if created."""

        def create() -> bool:
            # Raw requests (rtnl.py): through pyroute2 these five cost ~3 ms of every
            # network create. The alias first: a crash before it leaves a bridge cnm
            # cannot tell from a foreign one (the kernel ignores IFLA_IFALIAS on create).
            rtnl = self._t.rtnl
            rtnl.add_link(name, "bridge", mac=mac, mtu=mtu)
            index = _lookup_here(name)
            if index is None:
                raise NotFound(f"link {name} vanished while cnm was configuring it")
            try:
                rtnl.set_link(index, alias=alias)
                for cidr in addresses:
                    rtnl.add_address(index, cidr)
                rtnl.set_link(index, up=True)
            except BaseException:
                rtnl.delete_link(index)
                raise
            return True

        def run(ipr: IPRoute) -> bool:
            index = _lookup(ipr, name)
            if index is None:
                return create()
            if ipr.get_links(index)[0].get("IFLA_IFALIAS") != alias:
                raise AlreadyExists(
                    f"link {name} already exists in the host namespace and is not this "
                    "network's bridge",
                    hint="choose another bridge name with -o bridge_name=NAME",
                )
            ipr.link("set", index=index, ifalias=alias)
            _add_addresses(ipr, index, addresses, name)
            ipr.link("set", index=index, state="up")
            return False

        return self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"bridge {name}"))

    def mtu_towards(self, address: str) -> int:
        """The MTU of the host link that holds ``address`` (an overlay's underlay)."""

        def run(ipr: IPRoute) -> int:
            want = str(netaddr.IPAddress(address))
            # Raw (rtnl.py) and an ioctl: pyroute2's address dump and link request were
            # ~3 ms of every overlay join (bench/overlay.py, a wall-clock py-spy profile).
            for a in self._t.rtnl.addresses():
                name = _ifname(a.index) if a.address == want else None
                if name is not None:
                    return _mtu_of(name)
            raise NotFound(f"no link of the host namespace holds the address {address}",
                           hint="--advertise-addr must be an address of this host")

        return self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"address {address}"))

    def ensure_vxlan(self, spec: VxlanSpec) -> bool:
        """The VXLAN device of ``spec`` (no learning, ARP/ND proxy), a port of its bridge,
        up. True if created."""

        def run(ipr: IPRoute) -> bool:
            index = _lookup(ipr, spec.name)
            created = index is None
            if index is not None:
                if ipr.get_links(index)[0].get("IFLA_IFALIAS") != spec.alias:
                    raise AlreadyExists(f"link {spec.name} already exists in the host "
                                        "namespace and is not this network's VXLAN device")
            else:
                local = {"vxlan_local6" if ":" in spec.local else "vxlan_local": spec.local}
                ipr.link("add", ifname=spec.name, kind="vxlan", vxlan_id=spec.vni,
                         vxlan_port=spec.port, vxlan_learning=0, vxlan_proxy=1,
                         mtu=spec.mtu, **local)
                index = _index(ipr, spec.name)
            try:
                ipr.link("set", index=index, ifalias=spec.alias,
                         master=_index(ipr, spec.master), state="up")
            except BaseException:
                if created:
                    ipr.link("del", index=index)
                raise
            return created

        return self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"vxlan {spec.name}"))

    def set_peer(self, device: str, mac: str, addresses: Sequence[str], vtep: str,
                 present: bool) -> None:
        """Frames for ``mac`` go to ``vtep`` on VXLAN ``device``, whose proxy answers ARP/ND
        for ``addresses`` with it (``present``); or no longer. Gone is fine."""

        def run(ipr: IPRoute) -> None:
            index = _lookup(ipr, device)
            if index is None:
                return
            # The VXLAN device's own FDB (NTF_SELF), not the bridge's; permanent entries.
            # Raw (rtnl.py): through pyroute2 these requests were most of the CPU a host
            # spends on another host's connect (bench/overlay.py --profile, 50 hosts).
            rtnl = self._t.rtnl
            if present:
                rtnl.set_fdb(index, mac, vtep, True)
                for a in addresses:
                    rtnl.set_neigh(index, a.partition("/")[0], mac, True)
                return
            for a in addresses:
                rtnl.set_neigh(index, a.partition("/")[0], mac, False)
            rtnl.set_fdb(index, mac, vtep, False)

        self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"peer {mac} on {device}"))

    def apply_esp(self, plan: EspPlan) -> None:
        """XFRM through NETLINK_XFRM and the cnm_esp table, on the host thread. Marks go
        after the policies they select exist, and before them when they all go."""

        def esp_table() -> None:
            # Rebuilt only when it changes: the same table again would zero its counters
            # (the cleartext drops) and gain nothing. The first call after a start always
            # writes it.
            if plan.nft == self._esp_nft:
                return
            table = f"inet {NFT_TABLE}"
            if plan.nft:
                nft.run_here(f"table {table}\ndelete table {table}\n{plan.nft}")
            else:
                with contextlib.suppress(NotFound):
                    nft.run_here(f"delete table {table}")
            self._esp_nft = plan.nft

        def run(_: IPRoute) -> None:
            if not plan.nft:
                esp_table()
            try:
                x = xfrm.Xfrm.open()
            except OSError as e:
                if plan.sas or plan.policies:
                    raise from_errno(e.errno or 0, "ESP (XFRM netlink)") from None
                return  # no XFRM in this kernel, and nothing of cnm's can be there
            try:
                netlink_call(lambda: xfrm.apply(x, plan), "ESP (XFRM) state")
            finally:
                x.close()
            if plan.nft:
                esp_table()

        self._t.call(run)

    def ports_of(self, bridge: str) -> list[str]:
        """The names of the bridge's ports (none when it does not exist)."""

        def run(ipr: IPRoute) -> list[str]:
            index = _lookup(ipr, bridge)
            if index is None:
                return []
            return [str(m.get("IFLA_IFNAME")) for m in ipr.get_links()
                    if m.get("IFLA_MASTER") == index]

        return self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"ports of {bridge}"))

    def link_state(self, name: str) -> LinkState | None:
        def run(ipr: IPRoute) -> LinkState | None:
            index = _lookup(ipr, name)
            if index is None:
                return None
            return _link_states(ipr, index).get(name)

        return self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"link {name}"))

    def set_hairpin(self, name: str) -> None:
        """Let a bridge port send frames back out the port they came in on."""

        def run(ipr: IPRoute) -> None:
            self._t.rtnl.set_hairpin(_index(ipr, name))

        self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"hairpin on {name}"))

    def delete_link(self, name: str) -> None:
        def run(ipr: IPRoute) -> None:
            index = _lookup(ipr, name)
            if index is None:
                return
            try:
                ipr.link("del", index=index)
            except NetlinkError as e:
                if e.code not in (errno.ENODEV, errno.ENOENT):
                    raise

        self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"delete link {name}"))

    def add_veth(self, name: str, alias: str, peer: str, peer_netns: str, peer_mac: str,
                 master: str | None, mtu: int | None) -> None:
        """A veth pair whose peer is created directly inside ``peer_netns`` (no move)."""

        def run(ipr: IPRoute) -> None:
            master_index = None
            if master is not None:
                master_index = _lookup(ipr, master)
                if master_index is None:
                    raise NotFound(f"bridge {master} does not exist in the host namespace")
            fd = os.open(peer_netns, os.O_RDONLY)
            try:
                self._t.rtnl.add_veth(name, peer, fd, peer_mac, master_index, mtu)
            finally:
                os.close(fd)
            index = _index(ipr, name)
            try:
                # A bridge port needs no IPv6 of its own: without it, a new port sends no
                # MLD/DAD/RS multicast that the bridge would flood to every sandbox.
                _sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "1")
                # Up only now, and the alias here: the kernel ignores it on creation.
                self._t.rtnl.set_link(index, up=True, alias=alias)
            except BaseException:
                self._t.rtnl.delete_link(index)
                raise

        self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"veth {name}"))

    def move_link(self, name: str, netns: str, new_name: str, mac: str | None) -> None:
        """Move a host link into ``netns`` as ``new_name`` (one request: the kernel names
        it on arrival), its MAC set first. The one place cnm moves a link (~18 ms): a
        remote plugin's link is made in the host namespace by the plugin."""

        def run(ipr: IPRoute) -> None:
            index = _lookup(ipr, name)
            if index is None:
                raise NotFound(f"link {name} (named by the plugin) is not in the host "
                               "namespace")
            ipr.link("set", index=index, state="down")
            if mac:
                ipr.link("set", index=index, address=mac)
            fd = os.open(netns, os.O_RDONLY)
            try:
                ipr.link("set", index=index, net_ns_fd=fd, ifname=new_name)
            finally:
                os.close(fd)

        self._t.call(lambda ipr: netlink_call(lambda: run(ipr), f"move {name} to {netns}"))

    # ---- parent links and their macvlan/ipvlan slaves (the work is in lower.py)
    def supports(self, kind: str) -> bool:
        """Whether the kernel has links of ``kind`` (asked without creating one)."""
        return self._t.call(lambda ipr: lower.supports(self._t.rtnl, kind))

    def parent_info(self, name: str) -> lower.ParentInfo | None:
        return self._t.call(lambda ipr: netlink_call(lambda: lower.parent_info(ipr, name),
                                                     f"link {name}"))

    def ensure_dummy(self, name: str, alias: str) -> bool:
        """A dummy link marked ``alias``, up (a parent for a network without one)."""
        return self._t.call(lambda ipr: netlink_call(
            lambda: lower.ensure_simple(ipr, self._t.rtnl, name, "dummy", alias),
            f"dummy {name}"))

    def ensure_vlan(self, name: str, base: str, vid: int, alias: str) -> bool:
        """The 802.1q sub-interface ``name`` of ``base`` with id ``vid``, marked, up."""
        return self._t.call(lambda ipr: netlink_call(
            lambda: lower.ensure_simple(ipr, self._t.rtnl, name, "vlan", alias, base, vid),
            f"vlan {name}"))

    def delete_owned(self, name: str, alias: str) -> None:
        """Delete link ``name`` only if it carries ``alias`` (cnm made it). Gone is fine."""
        self._t.call(lambda ipr: netlink_call(lambda: lower.delete_owned(ipr, name, alias),
                                              f"delete link {name}"))

    def add_slave(self, spec: lower.SlaveSpec) -> str:
        """A macvlan/ipvlan link, made directly in ``spec.netns``; returns its MAC."""
        return self._t.call(lambda ipr: netlink_call(
            lambda: lower.add_slave(self._t.rtnl, spec), f"{spec.kind} {spec.ifname}"))

    def ensure_shim(self, spec: lower.SlaveSpec, alias: str, addresses: Sequence[str],
                    routes: Sequence[str]) -> bool:
        """The host's own slave on a parent, with addresses and routes to the sandboxes."""
        return self._t.call(lambda ipr: netlink_call(
            lambda: lower.ensure_shim(ipr, self._t.rtnl, spec, alias, list(addresses),
                                      list(routes)), f"shim {spec.ifname}"))

    def occupied(self) -> list[Occupied]:
        """Every address (not loopback or link-local) and non-default route of the host."""

        def run() -> list[Occupied]:
            # Raw dumps (rtnl.py): pyroute2 parsed every message whole, ~3 ms of every network
            # create on a quiet host. Names only for the few links that hold something.
            rtnl = self._t.rtnl
            byindex: dict[int, str | None] = {}

            def dev_name(index: int | None) -> str | None:
                if index is None:
                    return None
                if index not in byindex:
                    byindex[index] = _ifname(index)
                return byindex[index]

            out = []
            for a in rtnl.addresses():
                n = netaddr.IPNetwork(f"{a.address}/{a.prefixlen}")
                if n.ip.is_loopback() or n.ip.is_link_local():
                    continue
                out.append(Occupied(str(n.cidr), "address", dev_name(a.index), str(n)))
            for family in (socket.AF_INET, socket.AF_INET6):
                for r in rtnl.routes(family):
                    if r.dst_len == 0 or r.dst is None:
                        continue
                    n = netaddr.IPNetwork(f"{r.dst}/{r.dst_len}")
                    if n.version == 6 and (n.ip.is_link_local() or n.ip.is_multicast()):
                        continue
                    out.append(Occupied(str(n.cidr), "route", dev_name(r.oif)))
            return out

        return self._t.call(lambda ipr: netlink_call(run, "list addresses"))


def _dns_redirect_port() -> int | None:
    """The port cnm's DNS redirect in the calling thread's namespace sends 127.0.0.11:53
    to (both its rules, udp and tcp, to the same one), or None: no redirect, or not cnm's
    two rules. A read: no rule changes, so closing its context is cheap."""
    try:
        text = nft.run_here("list chain ip cnm_dns output")
    except (NotFound, KernelError):
        return None
    ports = {proto: int(port) for proto, port in
             _DNS_RULE.findall(text)}
    if set(ports) == {"udp", "tcp"} and len(set(ports.values())) == 1 and \
            len(_DNS_RULE.findall(text)) == 2:
        return ports["udp"]
    return None


_DNS_RULE = re.compile(r"ip daddr 127\.0\.0\.11 (udp|tcp) dport 53 dnat (?:ip )?to "
                       r"127\.0\.0\.11:(\d+)")


class SandboxLinks:
    """The SandboxPort: operations inside sandbox namespaces, on the visitor thread."""

    def __init__(self, visitor: Visitor) -> None:
        self._v = visitor

    def create_netns(self, path: str) -> None:
        self._v.create(path)

    def delete_netns(self, path: str) -> None:
        """Close cnm's own handle on the namespace, then unbind it. Gone is success."""
        self._v.forget(path)
        netns.delete(path)

    def identity(self, path: str) -> str | None:
        # On the calling thread: an open, an ioctl and a stat of the file, no setns.
        return netns.identity(path)

    def release(self, path: str) -> None:
        """Let go of a namespace cnm did not make: its DNS redirect table goes, and cnm's
        cached handle (whose socket would keep the namespace alive). Gone is success."""

        def run(_: Handles) -> None:
            nft.run_here("add table ip cnm_dns\ndelete table ip cnm_dns\n")

        with contextlib.suppress(NotFound):
            self._v.call(path, run)
        self._v.forget(path)

    def configure(self, path: str, ifname: str, addresses: Sequence[str]) -> None:
        """Give an interface its addresses and bring it up. Interfaces in a sandbox start
        without IPv6 (see netns._create); one with an IPv6 address gets it back first."""

        def run(h: Handles) -> None:
            index = _lookup_here(ifname)
            if index is None:
                raise NotFound(f"interface {ifname} is missing in {path}")
            if any(":" in a for a in addresses):
                _sysctl(f"net/ipv6/conf/{ifname}/disable_ipv6", "0")
            for cidr in addresses:
                h.rtnl.add_address(index, cidr)
            h.rtnl.set_link(index, up=True)

        self._v.call(path, lambda h: netlink_call(lambda: run(h), f"configure {ifname}"))
        if addresses:
            self._announce(path, ifname, list(addresses), ANNOUNCEMENTS)

    def _announce(self, path: str, ifname: str, addresses: list[str], left: int,
                  first: bool = True) -> None:
        """Announce the addresses now and again after a while, ``left`` times in all (as
        Docker does: the first may be sent before the new link's queue is up). Each time a
        packet socket is made in the sandbox, sends, and is closed off the caller's path:
        a packet socket's close waits for an RCU grace period (~15 ms here), which the
        connect no longer pays. Best effort: a sandbox that went meanwhile, or a link
        without ARP, just stops it."""
        announcer: Announcer | None = None
        try:
            announcer = self._v.call(path, lambda h: Announcer(ifname, addresses))
            announcer.send()
        except Exception as e:  # noqa: BLE001 - an announcement is a courtesy, not a step
            log.debug("announcing %s on %s in %s: %s", addresses, ifname, path, e)
            left = 0
        finally:
            if announcer is not None:
                if first:
                    threading.Thread(target=announcer.close, daemon=True,
                                     name="cnm-announce-close").start()
                else:  # (a timer's own thread)
                    announcer.close()
        if left > 1:
            timer = threading.Timer(ANNOUNCE_INTERVAL, self._announce,
                                    (path, ifname, addresses, left - 1, False))
            timer.daemon = True
            timer.start()

    def set_default_routes(self, path: str, routes: Sequence[tuple[int, str, str]],
                           known: Sequence[tuple[int, str, str]] | None = None) -> None:
        """Make the default routes exactly ``routes``: (ip version, gateway, ifname).

        With ``known`` (what the sandbox has now), a family whose route does not change is
        not touched: a second network's connect costs no route request at all.
        """

        def run(h: Handles) -> None:
            for version in (4, 6):
                want = [r for r in routes if r[0] == version]
                if known is not None and want == [r for r in known if r[0] == version]:
                    continue
                if want:
                    _, gw, dev = want[0]
                    index = _lookup_here(dev)
                    if index is None:
                        raise NotFound(f"interface {dev} is missing in {path}")
                    h.rtnl.replace_default_route(version, gw, index)
                else:
                    h.rtnl.delete_default_route(version)

        self._v.call(path, lambda h: netlink_call(lambda: run(h), "default route"))

    def retire(self, path: str, ifname: str, new_name: str,
               addresses: Sequence[str] | None = None) -> None:
        """Take an interface out of the sandbox's view: down, addresses gone, renamed so its
        name is free at once. Its deletion comes with its host end (HostLinks.retire).
        Given its ``addresses``, they are deleted one by one (no dump of the namespace)."""

        def run(h: Handles) -> None:
            index = _lookup_here(ifname)
            if index is None:
                return
            # Down first: a link is renamed only while down.
            h.rtnl.set_link(index, up=False)
            h.rtnl.set_link(index, name=new_name)
            if addresses is None:
                h.ipr.flush_addr(index=index)
            for cidr in addresses or ():
                h.rtnl.delete_address(index, cidr)

        # A namespace already gone took the interface with it.
        with contextlib.suppress(NotFound):
            self._v.call(path, lambda h: netlink_call(lambda: run(h), f"retire {ifname}"))

    def open_dns(self, path: str) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP sockets inside the sandbox on 127.0.0.11:PORT, and a redirect of
        127.0.0.11:53 to them, so the sandbox may still run its own server on port 53.

        The redirect table is created once and only its chain is rewritten: deleting a
        table with a NAT hook costs the kernel ~15 ms of RCU synchronisation. Rewriting the
        chain costs as much (the rules it deletes are freed when the context's socket
        closes), so a sandbox whose redirect is already there (a restart: cnmd's sockets
        went with the old process) gets its sockets on the port the redirect names, when
        that port is free, and the chain is left as it is: 13 of the 16 ms a sandbox took
        in a restart.
        """

        def bind(port: int) -> tuple[socket.socket, socket.socket] | None:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind((DNS_ADDRESS, port))
            except OSError as e:
                udp.close()
                if port and e.errno == errno.EADDRINUSE:
                    return None
                if e.errno != errno.EADDRNOTAVAIL:
                    raise
                raise Conflict(f"cannot serve DNS in {path}: its loopback is down",
                               hint="bring lo up in the namespace (ip link set lo up), as "
                               "container runtimes do") from e
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((DNS_ADDRESS, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                return None
            tcp.listen(128)
            return udp, tcp

        def run(_: Handles) -> tuple[socket.socket, socket.socket]:
            port = _dns_redirect_port()
            if port is not None:
                kept = bind(port)
                if kept is not None:
                    return lift(kept[0]), lift(kept[1])
            for _attempt in range(20):
                made = bind(0)
                if made is None:
                    continue
                udp, tcp = made
                port = udp.getsockname()[1]
                try:
                    nft.run_here(
                        "add table ip cnm_dns\n"
                        "add chain ip cnm_dns output { type nat hook output priority -100; }\n"
                        "flush chain ip cnm_dns output\n"
                        # dnat, not redirect: redirect on the output hook goes to
                        # 127.0.0.1, and the sockets are on 127.0.0.11.
                        f"add rule ip cnm_dns output ip daddr {DNS_ADDRESS} udp dport 53 "
                        f"dnat to {DNS_ADDRESS}:{port}\n"
                        f"add rule ip cnm_dns output ip daddr {DNS_ADDRESS} tcp dport 53 "
                        f"dnat to {DNS_ADDRESS}:{port}\n"
                    )
                except BaseException:
                    udp.close()
                    tcp.close()
                    raise
                return lift(udp), lift(tcp)
            raise KernelError(f"no free port on {DNS_ADDRESS} in {path}")

        return self._v.call(path, run)

    def remove(self, path: str, ifname: str) -> None:
        def run(ipr: IPRoute) -> None:
            index = _lookup(ipr, ifname)
            if index is not None:
                try:
                    ipr.link("del", index=index)
                except NetlinkError as e:
                    if e.code not in (errno.ENODEV, errno.ENOENT):
                        raise

        self._v.call(path, lambda h: netlink_call(lambda: run(h.ipr), f"remove {ifname}"))

    def links(self, path: str) -> list[LinkInfo]:
        return self._v.call(path, lambda h: netlink_call(lambda: _links(h.ipr), "list links"))

    def inspect(self, path: str) -> SandboxState:
        def run(h: Handles) -> SandboxState:
            links = _link_states(h.ipr)
            links.pop("lo", None)
            return SandboxState(links=links, routes=_default_routes(h.ipr),
                                dns_port=_dns_port())

        return self._v.call(path, lambda h: netlink_call(lambda: run(h), f"inspect {path}"))


def owned(links: Sequence[LinkInfo]) -> dict[str, tuple[str, str]]:
    """name -> (kind, id) for the links cnm created (by their ifalias)."""
    out = {}
    for link in links:
        parsed = names.parse_alias(link.alias)
        if parsed:
            out[link.name] = parsed
    return out


def host_socket_factory(thread: NsThread) -> Callable[[int, int], socket.socket]:
    """Sockets made in the host namespace (a socket keeps the namespace it was made in):
    the embedded DNS forwards from there, so loopback upstreams like 127.0.0.53 work."""

    def make(family: int, kind: int) -> socket.socket:
        return thread.call(lambda _: socket.socket(family, kind))

    return make


def _sysctl(key: str, value: str) -> None:
    """Write a sysctl of the calling thread's network namespace."""
    try:
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)
    except OSError as e:
        raise KernelError(f"sysctl {key}={value}: {e.strerror}") from None


if TYPE_CHECKING:
    # mypy checks here that the adapters implement the ports (structurally: no subclass);
    # tests/unit/test_ports.py checks their method names and parameters at run time.
    _host_port: type[HostPort] = HostLinks
    _sandbox_port: type[SandboxPort] = SandboxLinks
