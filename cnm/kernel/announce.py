"""Gratuitous ARP and unsolicited neighbour advertisements for a new endpoint's addresses.

Addresses are handed out in order, but after a network's subnet wraps (or an address asked
for by hand) a new endpoint may hold an address a peer still caches with another MAC: the
peer then sends to the old MAC for as long as its cache keeps it (tens of seconds). An
announcement from the new holder (as Docker's ``advertise_addr_nmsgs``) heals every cache
at once: Linux overrides a known neighbour's MAC on a gratuitous ARP and on an NA with the
override flag. Frames are built here and sent on a packet socket in the calling thread's
namespace (the visitor's, inside the sandbox).
"""

from __future__ import annotations

import fcntl
import socket
import struct

import netaddr

from cnm.kernel import fds

_SIOCGIFHWADDR = 0x8927
_ETH_P_ARP = 0x0806
_ETH_P_IPV6 = 0x86DD
_ALL_NODES: bytes = netaddr.IPAddress("ff02::1").packed


def _mac_of(sock: socket.socket, ifname: str) -> bytes:
    ifreq = fcntl.ioctl(sock.fileno(), _SIOCGIFHWADDR, struct.pack("256s", ifname.encode()))
    return ifreq[18:24]


def arp_frame(mac: bytes, ip: str) -> bytes:
    """A gratuitous ARP request: sender and target are the announced address."""
    spa: bytes = netaddr.IPAddress(ip).packed
    eth = b"\xff" * 6 + mac + struct.pack("!H", _ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + spa + b"\x00" * 6 + spa
    return eth + arp


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def na_frame(mac: bytes, ip: str) -> bytes:
    """An unsolicited neighbour advertisement to all nodes, override flag set."""
    src: bytes = netaddr.IPAddress(ip).packed
    body = struct.pack("!I", 0x20000000) + src + struct.pack("!BB", 2, 1) + mac
    pseudo = src + _ALL_NODES + struct.pack("!I3xB", 4 + len(body), 58)
    icmp = struct.pack("!BBH", 136, 0, 0) + body
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + src + _ALL_NODES
    eth = b"\x33\x33\x00\x00\x00\x01" + mac + struct.pack("!H", _ETH_P_IPV6)
    return eth + ip6 + icmp


class Announcer:
    """A packet socket bound to one interface, made in the calling thread's namespace (the
    visitor's, inside the sandbox), and the frames that announce ``addresses`` (CIDRs) there.

    Sending and closing work from any thread: the socket stays in the namespace it was made
    in. Closing a packet socket waits for an RCU grace period (~15 ms here), so the caller
    closes it off the connect's path; meanwhile its descriptor is above 1023
    (cnm.kernel.fds), so that a burst of connects does not crowd the low ones."""

    def __init__(self, ifname: str, addresses: list[str]) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            sock.bind((ifname, 0))
            mac = _mac_of(sock, ifname)
        except BaseException:
            sock.close()
            raise
        self.sock = fds.lift(sock)
        self.frames = [na_frame(mac, ip) if ":" in ip else arp_frame(mac, ip)
                       for ip in (cidr.partition("/")[0] for cidr in addresses)]

    def send(self) -> int:
        """Every frame once; the number sent."""
        for frame in self.frames:
            self.sock.send(frame)
        return len(self.frames)

    def close(self) -> None:
        self.sock.close()
