"""Run commands in throwaway namespaces, and the stacks under test (the fixtures that
make them are cnm.testing.plugin).

Every test gets its own "host" namespace (named cnmtest-*), its own state and run dirs, and
either an in-process controller (``stack``) or a real cnmd process (``daemon``). Teardown
runs even when the test fails: the daemon is stopped, every namespace bound under the run
dir is unmounted, and the host namespace is deleted (its bridges and veths go with it).
Nothing here touches the machine's own namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnm.client import Client
from cnm.core import Config, Controller
from cnm.kernel.link import HostLinks, SandboxLinks


def run(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def in_ns(netns: str, *cmd: str, check: bool = True,
          timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a command inside the network namespace bound at ``netns``."""
    return run("nsenter", f"--net={netns}", *cmd, check=check, timeout=timeout)


def can_ping(netns: str, address: str, timeout_s: int = 2) -> bool:
    """One echo reply within ``timeout_s``. Probes every 0.2 s until then: the first
    packets after a link comes up can be lost (the kernel attaches its qdisc
    asynchronously), and a peer's neighbour entry may be waiting out an ARP retry, so a
    single probe would make a passing check flaky. A failing check takes the full time."""
    family = ["-6"] if ":" in address else []
    r = in_ns(netns, "ping", *family, "-c", "1", "-i", "0.2", "-w", str(timeout_s), "-q",
              address, check=False, timeout=timeout_s + 10)
    return r.returncode == 0


def links(netns: str) -> dict[str, dict[str, Any]]:
    """name -> `ip -j link` record, inside ``netns``."""
    out = in_ns(netns, "ip", "-j", "-d", "link", "show").stdout
    return {x["ifname"]: x for x in json.loads(out)}


def addresses(netns: str, ifname: str) -> list[str]:
    out = in_ns(netns, "ip", "-j", "addr", "show", "dev", ifname).stdout
    return [f"{a['local']}/{a['prefixlen']}" for x in json.loads(out)
            for a in x.get("addr_info", []) if a.get("scope") == "global"]


def default_route(netns: str) -> str | None:
    out = in_ns(netns, "ip", "-j", "route", "show", "default").stdout
    routes = json.loads(out)
    return f"{routes[0]['gateway']} dev {routes[0]['dev']}" if routes else None


@dataclass
class HostNs:
    name: str
    path: str


def unbind_all(run_dir: Path) -> None:
    ns_dir = run_dir / "netns"
    if ns_dir.is_dir():
        for entry in ns_dir.iterdir():
            subprocess.run(["umount", "-l", str(entry)], capture_output=True)
            entry.unlink(missing_ok=True)


@dataclass
class Stack:
    """An in-process controller on real kernel adapters."""

    controller: Controller
    host: HostLinks
    sandbox: SandboxLinks
    host_ns: HostNs
    config: Config

    def netns(self, sandbox: str) -> str:
        return self.controller.netns_path(self.controller.sandbox(sandbox))


@dataclass
class Daemon:
    """A real cnmd process managing a throwaway host namespace."""

    host_ns: HostNs
    state_dir: Path
    run_dir: Path
    socket: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    # How long start waits for it to answer: a bound that only ends a hung test (the VM
    # tier, 10-16 times slower, gives it more).
    ready_timeout: float = 30.0

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def start(self, *extra: str, prefix: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> None:
        """Start cnmd (``prefix``: a command to run it under, like prlimit; ``env``: added
        to its environment, like NOTIFY_SOCKET)."""
        # A resolver file of the test's own (no nameserver), so the embedded DNS never
        # asks the machine's real resolvers; a later --resolv-conf in ``extra`` wins.
        resolv = self.state_dir.parent / "host-resolv-none.conf"
        resolv.write_text("# the test host has no upstream resolver\n")
        cmd = [*prefix, sys.executable, "-m", "cnm", "daemon", "--netns", self.host_ns.path,
               "--state-dir", str(self.state_dir), "--run-dir", str(self.run_dir),
               "--resolv-conf", str(resolv), "-H", self.address,
               # Not on the machine's /run/docker/plugins unless a test asks for it.
               *(() if "--docker-plugin" in extra else ("--docker-plugin", "none")), *extra]
        logf = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf,
                                     env=None if env is None else {**os.environ, **env})
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cnmd exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-2000:]}")
            try:
                c = Client(self.address, timeout=2)
                c.call("GET", "/v1/_ping")
                c.close()
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"cnmd did not become ready in {self.ready_timeout:g} s")

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; the exit status (-9: it was killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def client(self) -> Client:
        return Client(self.address)

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the real `cnm` CLI against this daemon."""
        env = {**os.environ, "CNM_HOST": self.address}
        return subprocess.run([sys.executable, "-m", "cnm", *args], capture_output=True,
                              text=True, env=env, check=check, timeout=60)


