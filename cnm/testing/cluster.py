"""A real etcd cluster, and hosts joined by an underlay, all in throwaway namespaces.

``Etcd`` (from ``cnm.lab.etcd``, which `cnm lab` uses too) runs etcd members, each inside
the namespace of the host it stands beside and listening on that host's underlay address;
``Underlay`` is a bridge in a namespace of its own with one veth per host. The tests and
benchmarks of the overlay build on them; every process and directory they made goes in
``close``, which the fixtures call in ``finally``. Nothing touches the machine's own namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnm import names
from cnm.client import Client
from cnm.lab.etcd import Etcd
from cnm.testing.netns import Daemon, HostNs, run, unbind_all
from cnm.tls import TlsFiles

if TYPE_CHECKING:
    from cnm.testing.pki import Pki


@dataclass
class Underlay:
    """A bridge in a namespace of its own and, per host namespace, a veth on it holding
    the host's underlay address (``mtu`` on every link)."""

    name: str
    hosts: list[tuple[str, str, str]]  # (host ns name, address with prefix, link name)
    mtu: int

    @classmethod
    def make(cls, host_namespaces: Sequence[str], addresses: Sequence[str],
             mtu: int = 1500) -> Underlay:
        name = f"cnmul-{secrets.token_hex(4)}"
        run("ip", "netns", "add", name)
        u = cls(name, [], mtu)
        try:
            run("ip", "-n", name, "link", "set", "lo", "up")
            run("ip", "-n", name, "link", "add", "ul0", "mtu", str(mtu), "type", "bridge")
            run("ip", "-n", name, "link", "set", "ul0", "up")
            for i, (ns, addr) in enumerate(zip(host_namespaces, addresses, strict=True)):
                port = f"ulp{i}"
                run("ip", "-n", name, "link", "add", port, "mtu", str(mtu), "type", "veth",
                    "peer", "name", "ul0", "netns", ns)
                run("ip", "-n", name, "link", "set", port, "master", "ul0", "up")
                run("ip", "-n", ns, "link", "set", "ul0", "mtu", str(mtu))
                # (nodad: an IPv6 address usable at once)
                run("ip", "-n", ns, "addr", "add", addr, "dev", "ul0",
                    *(["nodad"] if ":" in addr else []))
                run("ip", "-n", ns, "link", "set", "ul0", "up")
                u.hosts.append((ns, addr, "ul0"))
        except BaseException:
            u.close()
            raise
        return u

    def close(self) -> None:
        run("ip", "netns", "del", self.name, check=False)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15,
             every: float = 0.05) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` (no timing is asserted: the
    bound only ends a test that would otherwise hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"{what}: not so after {timeout:g} s")


@dataclass
class Host:
    """One "host": a throwaway namespace, its underlay address, and its own cnmd."""

    name: str
    ns: HostNs
    addr: str  # without its prefix
    daemon: Daemon
    tls: TlsFiles | None = None  # its client certificate for etcd, in a TLS lab

    def store_tls(self) -> tuple[str, ...]:
        """cnmd's flags for TLS to etcd (none without it)."""
        t = self.tls
        return () if t is None else ("--cluster-store-ca", t.ca, "--cluster-store-cert",
                                     t.cert, "--cluster-store-key", t.key)

    def client(self) -> Client:
        return self.daemon.client()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.daemon.cli(*args)

    def vxlan(self, network: str) -> str:
        net = self.client().network(network)
        return f"{names.PREFIX}x{net['id'][:11]}"

    def fdb(self, network: str) -> dict[str, str]:
        """MAC -> VTEP of the VXLAN device of ``network`` on this host ({} without one)."""
        r = run("bridge", "-n", self.ns.name, "-j", "fdb", "show", "dev", self.vxlan(network),
                check=False)
        if r.returncode != 0:
            return {}
        return {e["mac"]: e["dst"] for e in json.loads(r.stdout or "[]") if e.get("dst")}

    def netns(self, sandbox: str) -> str:
        sb = self.client().sandbox(sandbox)
        return str(sb.get("netns") or os.path.join(self.daemon.run_dir, "netns", sb["id"]))


def ok(h: Host, *args: str) -> str:
    """``cnm ARGS`` against host ``h``'s cnmd, which must succeed: its output."""
    r = h.cli(*args)
    assert r.returncode == 0, f"{h.name}: cnm {' '.join(args)}: {r.stderr}"
    return r.stdout


@dataclass
class Lab:
    """``n`` hosts on one underlay (MTU ``mtu``), a 3-member etcd cluster on the first three
    hosts' underlay addresses, and a cnmd per host in that cluster. With ``tls``, a CA made
    here (``pki``) signs a certificate for each member's address and a client certificate
    for each host, and everything speaks TLS (members to each other too)."""

    hosts: list[Host]
    underlay: Underlay
    etcd: Etcd
    base: str
    ttl: int
    extra: tuple[str, ...] = ()
    pki: Pki | None = None

    @classmethod
    def make(cls, n: int = 3, *, mtu: int = 1500, ipv6: bool = False, ttl: int = 3,
             timeout: float = 2.0, members: int = 3, start: bool = True,
             tls: bool = False) -> Lab:
        tag = secrets.token_hex(3)
        base = tempfile.mkdtemp(prefix="cnm-lab-")
        pki = None
        if tls:
            from cnm.testing.pki import Pki  # trustme: the test extra

            pki = Pki(os.path.join(base, "pki"))
        made: list[str] = []
        underlay = etcd = None
        hosts: list[Host] = []
        try:
            for i in range(n):
                name = f"cnmtest-{tag}-h{i + 1}"
                run("ip", "netns", "add", name)
                made.append(name)
                run("ip", "-n", name, "link", "set", "lo", "up")
            addrs = ([f"fd00:cafe::{i + 1}/64" for i in range(n)] if ipv6 else
                     [f"192.168.{200 + (i + 1) // 250}.{(i + 1) % 250 + 1}/16"
                      for i in range(n)])
            underlay = Underlay.make(made, addrs, mtu)
            etcd = Etcd.make([(f"/run/netns/{made[i]}", addrs[i].split("/")[0])
                              for i in range(min(members, n))], tls=pki)
            etcd.start()
            etcd.wait_healthy()
            for i, name in enumerate(made):
                d = os.path.join(base, f"h{i + 1}")
                sock_dir = tempfile.mkdtemp(prefix="cnmtest-")
                daemon = Daemon(HostNs(name, f"/run/netns/{name}"), Path(d) / "state",
                                Path(d) / "run", os.path.join(sock_dir, "cnm.sock"),
                                Path(d + ".log"))
                os.makedirs(d, exist_ok=True)
                hosts.append(Host(f"h{i + 1}", daemon.host_ns, addrs[i].split("/")[0],
                                  daemon, None if pki is None else
                                  pki.issue(f"cnmd-h{i + 1}", f"h{i + 1}.cnm.test")))
            lab = cls(hosts, underlay, etcd, base, ttl,
                      ("--cluster-store", etcd.url, "--cluster-ttl", str(ttl),
                       "--cluster-timeout", str(timeout)), pki)
            if start:
                for h in hosts:
                    lab.start(h)
            return lab
        except BaseException:
            for h in hosts:
                h.daemon.stop()
                unbind_all(h.daemon.run_dir)
            if etcd is not None:
                etcd.close()
            if underlay is not None:
                underlay.close()
            for name in made:
                run("ip", "netns", "del", name, check=False)
            shutil.rmtree(base, ignore_errors=True)
            raise

    def start(self, h: Host) -> None:
        h.daemon.start(*self.extra, *h.store_tls(), "--advertise-addr", h.addr)

    def kill9(self, h: Host) -> None:
        assert h.daemon.proc is not None
        h.daemon.proc.send_signal(signal.SIGKILL)
        h.daemon.proc.wait(timeout=10)
        h.daemon.proc = None

    def close(self) -> None:
        for h in self.hosts:
            try:
                h.daemon.stop()
            finally:
                unbind_all(h.daemon.run_dir)
                shutil.rmtree(os.path.dirname(h.daemon.socket), ignore_errors=True)
        self.etcd.close()
        self.underlay.close()
        for h in self.hosts:
            run("ip", "netns", "del", h.ns.name, check=False)
        shutil.rmtree(self.base, ignore_errors=True)
