"""Helpers for the DNS tests of the root tier: a DNS client living inside a sandbox, a fake
upstream resolver in a namespace of its own, and the CLI calls those tests repeat.

Every query goes to an address inside a namespace the test made: 127.0.0.11 inside a
sandbox, or a fake upstream on a veth between the test's host namespace and the fake's.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnm.testing.netns import Daemon, HostNs, run

AGENT = str(Path(__file__).with_name("dnsagent.py"))
EMBEDDED = "127.0.0.11"

# The fake upstreams' link: host side .1, the fakes on .2 and up.
UPSTREAM_NET = "10.253.53"


def ok(d: Daemon, *args: str) -> str:
    """Run the CLI; it must succeed. Returns stdout."""
    r = d.cli(*args)
    assert r.returncode == 0, f"cnm {' '.join(args)} -> {r.returncode}: {r.stderr}"
    return r.stdout


def sandbox_info(d: Daemon, name: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(ok(d, "sandbox", "inspect", name))[0]
    return info


def ip_of(d: Daemon, sandbox: str, network: str, family: int = 4) -> str:
    eps = sandbox_info(d, sandbox)["endpoints"]
    ep = next(e for e in eps if e["network"] == network)
    return str(ep["ipv4" if family == 4 else "ipv6"]).split("/")[0]


def agent(netns: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run dnsagent.py inside ``netns`` to completion."""
    return run("nsenter", f"--net={netns}", sys.executable, AGENT, *args, timeout=timeout)


class Asker:
    """A DNS client process inside a namespace, kept running: a query costs a round trip,
    not a process start, so "right after connect returns" means microseconds after."""

    def __init__(self, netns: str, server: str = EMBEDDED) -> None:
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, AGENT, "ask", server],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, name: str, qtype: str = "A", **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"name": name, "type": qtype, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the DNS client exited ({self.proc.poll()})"
        out: dict[str, Any] = json.loads(line)
        return out

    def addresses(self, name: str, qtype: str = "A", **kw: Any) -> list[str]:
        """The addresses answered for ``name`` (in the order given); asserts NOERROR."""
        r = self.ask(name, qtype, **kw)
        assert r.get("rcode") == "NOERROR", (name, r)
        return [a[2] for a in r["answers"] if a[1] == qtype]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@contextlib.contextmanager
def asker(netns: str, server: str = EMBEDDED) -> Iterator[Asker]:
    a = Asker(netns, server)
    try:
        yield a
    finally:
        a.close()


@dataclass
class UpstreamNs:
    """A namespace for fake upstream resolvers, on a veth to the test's host namespace."""

    name: str
    path: str
    addresses: list[str]


@contextlib.contextmanager
def upstream_ns(host: HostNs, count: int = 5) -> Iterator[UpstreamNs]:
    name = f"cnmtest-up-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        # Both ends are created inside the test's namespaces, never in the machine's own.
        run("ip", "-n", host.name, "link", "add", "dnsup0", "type", "veth", "peer", "name",
            "eth0", "netns", name)
        run("ip", "-n", host.name, "addr", "add", f"{UPSTREAM_NET}.1/24", "dev", "dnsup0")
        run("ip", "-n", host.name, "link", "set", "dnsup0", "up")
        addresses = [f"{UPSTREAM_NET}.{i}" for i in range(2, 2 + count)]
        for a in addresses:
            run("ip", "-n", name, "addr", "add", f"{a}/24", "dev", "eth0")
        run("ip", "-n", name, "link", "set", "eth0", "up")
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield UpstreamNs(name, f"/run/netns/{name}", addresses)
    finally:
        run("ip", "netns", "del", name, check=False)


class FakeServer:
    """dnsagent.py serve, running inside a namespace until closed."""

    def __init__(self, netns: str, spec: dict[str, dict[str, str]], log: Path) -> None:
        self.log = log
        log.touch()
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, AGENT, "serve", json.dumps(spec),
             str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"fake DNS server did not start: {self.proc.stderr}")

    def queries(self) -> list[dict[str, Any]]:
        """Every query received so far, in order."""
        return [json.loads(x) for x in self.log.read_text().splitlines() if x]

    def asked(self, name: str, qtype: str = "A") -> list[str]:
        """The servers that were asked ``name`` (type ``qtype``), in order."""
        return [q["server"] for q in self.queries()
                if q["name"] == name and q["type"] == qtype]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


@contextlib.contextmanager
def fake_server(netns: str, spec: dict[str, dict[str, str]], log: Path) -> Iterator[FakeServer]:
    f = FakeServer(netns, spec, log)
    try:
        yield f
    finally:
        f.close()

