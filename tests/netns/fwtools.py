"""Helpers for the firewall tests: an outside client namespace, servers that say who
called, clients that probe with real TCP and UDP packets, and cnm's nft table as data.

Everything runs in throwaway namespaces the test made; nothing here touches the machine's
own namespace or firewall.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cnm.testing.netns import HostNs, in_ns, run

# The host's address on the link to the outside client, and the client's.
HOST4, OUT4 = "198.51.100.1", "198.51.100.2"
HOST6, OUT6 = "2001:db8:100::1", "2001:db8:100::2"
# A second address of the host on the same link (for host_binding_ipv4).
HOST4_OTHER = "198.51.100.3"

# Listens on every given port, TCP and UDP, IPv4 (and IPv6 with "6"), and answers each
# connection or datagram with "PEER_ADDRESS LOCAL_PORT": who the server saw, on which port.
_SERVER = r"""
import selectors, socket, sys
ports = [int(p) for p in sys.argv[1].split(",")]
fams = [(socket.AF_INET, "0.0.0.0")]
if sys.argv[2] == "6":
    fams.append((socket.AF_INET6, "::"))
sel = selectors.DefaultSelector()
for port in ports:
    for fam, addr in fams:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(fam, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
            if kind == socket.SOCK_STREAM:
                s.listen(64)
            sel.register(s, selectors.EVENT_READ, kind)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        port = s.getsockname()[1]
        if key.data == socket.SOCK_STREAM:
            c, peer = s.accept()
            c.sendall(f"{peer[0]} {port}\n".encode())
            c.close()
        else:
            _, peer = s.recvfrom(100)
            s.sendto(f"{peer[0]} {port}\n".encode(), peer)
"""

# Probes until one answer or the deadline: the first packets after a link comes up can be
# lost, so one try would make a passing check flaky. A failing check takes the full time.
_CLIENT = r"""
import socket, sys, time
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + float(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
last = None
while time.monotonic() < deadline:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(fam, kind)
    s.settimeout(max(0.05, min(1.0 if proto == "tcp" else 0.3, deadline - time.monotonic())))
    try:
        if proto == "tcp":
            s.connect((host, port))
            data = s.recv(100)
        else:
            s.sendto(b"who", (host, port))
            data = s.recv(100)
        if data:
            print(data.decode().strip())
            sys.exit(0)
    except OSError as e:
        last = e
        time.sleep(0.2)
    finally:
        s.close()
print(f"no answer: {last!r}", file=sys.stderr)
sys.exit(1)
"""


def probe(netns: str, proto: str, host: str, port: int, timeout: float = 3) -> str | None:
    """From ``netns``, "PEER PORT" as the server saw this connection, or None if none came."""
    r = in_ns(netns, sys.executable, "-c", _CLIENT, proto, host, str(port), str(timeout),
              check=False, timeout=timeout + 20)
    return r.stdout.strip() if r.returncode == 0 else None


def peer(netns: str, proto: str, host: str, port: int, timeout: float = 3) -> str | None:
    """The source address the server saw, or None when the connection failed."""
    answer = probe(netns, proto, host, port, timeout)
    return answer.split()[0] if answer else None


def blocked(netns: str, proto: str, host: str, port: int) -> bool:
    """True when no answer came within a short deadline (timed out or refused)."""
    return probe(netns, proto, host, port, timeout=1.5) is None


class Servers:
    """Reply servers started inside namespaces; all stopped on exit, even on failure."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, netns: str, *ports: int, v6: bool = False) -> None:
        # nsenter with only --net execs the command, so the pid is python's own.
        p = subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, "-c", _SERVER,
             ",".join(map(str, ports)), "6" if v6 else "4"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            raise RuntimeError(f"server did not start: {p.communicate(timeout=5)[1]}")

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.communicate(timeout=10)


@dataclass
class Outside:
    """A client namespace on a link to the host: HOST4/HOST6 there, OUT4/OUT6 here."""

    name: str
    path: str
    host_if: str


@contextmanager
def outside(host: HostNs) -> Iterator[Outside]:
    """A throwaway namespace joined to ``host`` by a veth, routed to the host for the rest."""
    name = f"cnmtest-out-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", host.name, "link", "add", "vout0", "type", "veth", "peer", "name",
            "eth0", "netns", name)
        for ns, addrs in ((host.name, (f"{HOST4}/24", f"{HOST4_OTHER}/24", f"{HOST6}/64")),
                          (name, (f"{OUT4}/24", f"{OUT6}/64"))):
            dev = "vout0" if ns == host.name else "eth0"
            for a in addrs:
                run("ip", "-n", ns, "addr", "add", a, "dev", dev,
                    *(["nodad"] if ":" in a else []))
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", name, "link", "set", "lo", "up")
        # Back to the sandboxes' own subnets (masquerade=false) through the host.
        run("ip", "-n", name, "route", "add", "default", "via", HOST4)
        run("ip", "-n", name, "-6", "route", "add", "default", "via", HOST6)
        yield Outside(name, f"/run/netns/{name}", "vout0")
    finally:
        run("ip", "netns", "del", name, check=False)


def nft_table(host: HostNs) -> dict[str, Any]:
    """cnm's table as {"chains": [names], "elements": {set or map: sorted elements}}."""
    items = json.loads(in_ns(host.path, "nft", "-j", "list", "table", "inet", "cnm").stdout)
    chains, elements = [], {}
    for item in items["nftables"]:
        if "chain" in item:
            chains.append(item["chain"]["name"])
        for kind in ("set", "map"):
            if kind in item:
                elems = item[kind].get("elem", [])
                elements[item[kind]["name"]] = sorted(json.dumps(e, sort_keys=True)
                                                      for e in elems)
    return {"chains": sorted(chains), "elements": elements}


def ruleset(host: HostNs, *what: str) -> str:
    """``nft list WHAT`` in the host namespace (the whole ruleset by default)."""
    return in_ns(host.path, "nft", "list", *(what or ("ruleset",))).stdout


def flush_ruleset(host: HostNs) -> None:
    """What a careless host firewall script does: drop every table (of the test's host)."""
    in_ns(host.path, "nft", "flush", "ruleset")
