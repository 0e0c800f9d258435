"""A real etcd cluster whose members run inside throwaway namespaces (Debian's etcd-server).

Each member runs in the namespace of the host it stands beside (``nsenter --net``) and
listens on that host's underlay address, in a session of its own (so a Ctrl-C at the
terminal reaches its owner, which stops it in order). `cnm lab` starts one for a lab's
``cluster:``; the overlay tests and benchmarks (``cnm.testing.cluster``) use it too.
Nothing here touches the machine's own namespace.

With ``tls`` (an ``Issuer``: a CA that signs certificates, like ``cnm.testing.pki.Pki``),
every member speaks TLS to clients and to its peers on https URLs, each with a certificate
for its own address, and requires a client certificate the same CA signed, from clients
(cnmd's ``--cluster-store-cert``) and from peers alike.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cnm.tls import TlsFiles


def _url(addr: str, port: int, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{addr}]:{port}" if ":" in addr else f"{scheme}://{addr}:{port}"


class Issuer(Protocol):
    """A CA that signs certificates: ``issue`` writes ca.pem, cert.pem and key.pem (0600)
    for ``identities`` (IP addresses or DNS names) in a directory named ``name``."""

    @property
    def ca(self) -> str: ...

    def issue(self, name: str, *identities: str) -> TlsFiles: ...


@dataclass
class Member:
    name: str
    netns: str  # a path (/run/netns/X)
    addr: str
    data_dir: str
    log: str
    proc: subprocess.Popen[bytes] | None = None
    tls: TlsFiles | None = None  # its certificate, for clients and peers alike

    @property
    def client_url(self) -> str:
        return _url(self.addr, 2379, self.tls is not None)

    @property
    def peer_url(self) -> str:
        return _url(self.addr, 2380, self.tls is not None)

    def tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        t = self.tls
        return ["--cert-file", t.cert, "--key-file", t.key, "--client-cert-auth",
                "--trusted-ca-file", t.ca,
                "--peer-cert-file", t.cert, "--peer-key-file", t.key,
                "--peer-client-cert-auth", "--peer-trusted-ca-file", t.ca]

    @property
    def endpoint(self) -> str:
        return f"[{self.addr}]:2379" if ":" in self.addr else f"{self.addr}:2379"


@dataclass
class Etcd:
    """An etcd cluster: one member per (netns path, address) given."""

    members: list[Member]
    token: str = field(default_factory=lambda: f"cnmtest-{secrets.token_hex(4)}")
    base: str = ""
    client: TlsFiles | None = None  # etcdctl's certificate (the health probe), with TLS

    @classmethod
    def make(cls, places: Sequence[tuple[str, str]], base: str | None = None,
             names: Sequence[str] | None = None, tls: Issuer | None = None) -> Etcd:
        """Members at ``places`` (netns path, address), named ``names`` (e1, e2, … by
        default), their data dirs and logs under ``base`` (a new temp dir by default;
        ``close`` removes it either way); with ``tls``, each with a certificate it signs."""
        if base is None:
            base = tempfile.mkdtemp(prefix="cnm-etcd-")
        else:
            os.makedirs(base, exist_ok=True)
        names = list(names) if names is not None else [f"e{i + 1}" for i in range(len(places))]
        members = [Member(n, ns, addr, os.path.join(base, n), os.path.join(base, f"{n}.log"),
                          tls=None if tls is None else tls.issue(f"etcd-{n}", addr))
                   for n, (ns, addr) in zip(names, places, strict=True)]
        client = None if tls is None else tls.issue("etcdctl", "etcdctl.cnm.test")
        return cls(members, base=base, client=client)

    @property
    def url(self) -> str:
        """What cnmd's --cluster-store takes."""
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    def start(self, name: str | None = None) -> None:
        """Start every member (or the one named); a restarted member keeps its data."""
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            if (name is not None and m.name != name) or m.proc is not None:
                continue
            with open(m.log, "ab") as logf:
                m.proc = subprocess.Popen(
                    ["nsenter", f"--net={m.netns}", "etcd", "--name", m.name,
                     "--data-dir", m.data_dir,
                     "--listen-client-urls", m.client_url,
                     "--advertise-client-urls", m.client_url,
                     "--listen-peer-urls", m.peer_url,
                     "--initial-advertise-peer-urls", m.peer_url,
                     "--initial-cluster", cluster, "--initial-cluster-token", self.token,
                     "--initial-cluster-state", "new", *m.tls_args(),
                     # Quick elections: a killed leader is replaced in well under a second.
                     "--heartbeat-interval", "50", "--election-timeout", "500",
                     "--max-txn-ops", "1024", "--logger", "zap", "--log-level", "warn"],
                    stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                    start_new_session=True)

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until a member answers a linearizable read (so the cluster has a leader)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is None:
                    continue
                if m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited: {self.tail(m)}")
                r = subprocess.run(["nsenter", f"--net={m.netns}", "etcdctl", "--endpoints",
                                    m.client_url, *self.etcdctl_tls(), "--command-timeout=1s",
                                    "get", "health-probe"], capture_output=True, timeout=5)
                if r.returncode == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("etcd has no quorum after "
                           f"{timeout:g} s: {[self.tail(m) for m in self.members]}")

    def ctl(self, *args: str, member: str | None = None,
            timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """etcdctl ARGS against the running members (or the one named), from the first
        one's namespace."""
        live = [m for m in self.members if m.proc is not None
                and (member is None or m.name == member)]
        m = live[0] if live else self.members[0]
        return subprocess.run(["nsenter", f"--net={m.netns}", "etcdctl", "--endpoints",
                               ",".join(x.client_url for x in live or self.members),
                               *self.etcdctl_tls(), "--command-timeout=2s", *args],
                              capture_output=True, text=True, timeout=timeout)

    def etcdctl_tls(self) -> list[str]:
        c = self.client
        return [] if c is None else ["--cacert", c.ca, "--cert", c.cert, "--key", c.key]

    def tail(self, m: Member) -> str:
        try:
            with open(m.log) as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def kill(self, name: str) -> None:
        """kill -9 one member."""
        m = next(x for x in self.members if x.name == name)
        if m.proc is not None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(timeout=10)
            m.proc = None

    def close(self) -> None:
        for m in self.members:
            self.kill(m.name)
        shutil.rmtree(self.base, ignore_errors=True)
