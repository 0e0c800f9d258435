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


def announce(ifname: str, addresses: list[str]) -> int:
    """Announce ``addresses`` (CIDRs) on ``ifname`` in the calling thread's namespace;
    the number of frames sent."""
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((ifname, 0))
        mac = _mac_of(sock, ifname)
        for cidr in addresses:
            ip = cidr.partition("/")[0]
            sock.send(na_frame(mac, ip) if ":" in ip else arp_frame(mac, ip))
            sent += 1
    return sent
