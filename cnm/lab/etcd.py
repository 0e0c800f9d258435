"""A real etcd cluster whose members run inside throwaway namespaces (Debian's etcd-server).

Each member runs in the namespace of the host it stands beside (``nsenter --net``) and
listens on that host's underlay address, in a session of its own (so a Ctrl-C at the
terminal reaches its owner, which stops it in order). `cnm lab` starts one for a lab's
``cluster:``; the overlay tests and benchmarks (``cnm.testing.cluster``) use it too.
Nothing here touches the machine's own namespace.
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


def _url(addr: str, port: int) -> str:
    return f"http://[{addr}]:{port}" if ":" in addr else f"http://{addr}:{port}"


@dataclass
class Member:
    name: str
    netns: str  # a path (/run/netns/X)
    addr: str
    data_dir: str
    log: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return _url(self.addr, 2379)

    @property
    def peer_url(self) -> str:
        return _url(self.addr, 2380)

    @property
    def endpoint(self) -> str:
        return f"[{self.addr}]:2379" if ":" in self.addr else f"{self.addr}:2379"


@dataclass
class Etcd:
    """An etcd cluster: one member per (netns path, address) given."""

    members: list[Member]
    token: str = field(default_factory=lambda: f"cnmtest-{secrets.token_hex(4)}")
    base: str = ""

    @classmethod
    def make(cls, places: Sequence[tuple[str, str]], base: str | None = None,
             names: Sequence[str] | None = None) -> Etcd:
        """Members at ``places`` (netns path, address), named ``names`` (e1, e2, … by
        default), their data dirs and logs under ``base`` (a new temp dir by default;
        ``close`` removes it either way)."""
        if base is None:
            base = tempfile.mkdtemp(prefix="cnm-etcd-")
        else:
            os.makedirs(base, exist_ok=True)
        names = list(names) if names is not None else [f"e{i + 1}" for i in range(len(places))]
        members = [Member(n, ns, addr, os.path.join(base, n), os.path.join(base, f"{n}.log"))
                   for n, (ns, addr) in zip(names, places, strict=True)]
        return cls(members, base=base)

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
                     "--initial-cluster-state", "new",
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
                                    m.client_url, "--command-timeout=1s", "get",
                                    "health-probe"], capture_output=True, timeout=5)
                if r.returncode == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("etcd has no quorum after "
                           f"{timeout:g} s: {[self.tail(m) for m in self.members]}")

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
