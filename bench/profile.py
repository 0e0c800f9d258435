#!/usr/bin/env python3
"""Where cnm's time goes: the controller in-process (built as tests/netns/conftest.py builds
it) on a throwaway host namespace, with every adapter step and every pyroute2 call timed.

    .venv/bin/python bench/profile.py [--n 100] [--scale 1000]

1. connect / disconnect of N sandboxes (each created on "base") to "bench": the median time
   of each step per operation.
2. SCALE sandboxes created on one bridge: per-step medians over the first and the last 100,
   once as cnm does it and once with IPv6 switched off in every namespace (an experiment,
   not something cnm does: it shows what the link-local multicast flood costs).
3. The kernel floor: the same plumbing done by a bare pyroute2 loop (veth with its peer
   created in the sandbox, address, up, default route), no cnm, IPv6 on and off.

Nothing here touches the machine's own namespace; everything made is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from cnm import wiring
from cnm.core import Config, Controller
from cnm.kernel import netns as kns
from cnm.kernel.link import HostLinks, SandboxLinks
from cnm.kernel.netns import NsThread, Visitor
from cnm.model import ConnectSpec, NetworkSpec, SandboxSpec

V6_DEFAULT = "/proc/sys/net/ipv6/conf/default/disable_ipv6"

# label -> ms spent in the current operation (reset per operation)
_op: dict[str, float] = defaultdict(float)


def _add(label: str, t0: float) -> None:
    _op[label] += (time.perf_counter() - t0) * 1000


class _Timed:
    """Stands in for an IPRoute inside a job: times each call by method and verb."""

    def __init__(self, ipr: Any, where: str) -> None:
        self._ipr, self._where = ipr, where

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._ipr, name)
        if not callable(fn):
            return fn

        def call(*a: Any, **k: Any) -> Any:
            verb = a[0] if a and isinstance(a[0], str) else ""
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                _add(f"    {self._where}: ipr.{name} {verb}".rstrip(), t0)

        return call


def instrument(host: HostLinks, sandbox: SandboxLinks, c: Controller) -> None:
    def wrap(obj: Any, attr: str, label: str) -> None:
        fn = getattr(obj, attr)

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                _add(label, t0)

        setattr(obj, attr, timed)

    for a in ("add_veth", "retire"):
        wrap(host, a, f"  host.{a}")
    for a in ("create_netns", "configure", "set_default_routes", "retire"):
        wrap(sandbox, a, f"  sandbox.{a}")
    wrap(c.state, "write_file", "  files (hosts, resolv.conf, hostname)")
    store_tx = c.store.transaction

    @contextlib.contextmanager
    def transaction() -> Iterator[Any]:
        t0 = time.perf_counter()
        with store_tx() as tx:
            yield tx
        _add("  store transaction", t0)

    c.store.transaction = transaction  # type: ignore[method-assign]
    if not getattr(kns._Worker.submit, "profiled", False):
        _instrument_workers()


def _instrument_workers() -> None:
    submit = kns._Worker.submit

    def timed_submit(self: Any, path: str | None, fn: Callable[..., Any]) -> Any:
        where = "host" if isinstance(self, NsThread) else "sandbox"
        if fn.__name__ in ("_create", "_forget"):
            return submit(self, path, fn)

        def job(ipr: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(_Timed(ipr, where))
            finally:
                _add(f"   {where} thread: job body", t0)

        t0 = time.perf_counter()
        try:
            return submit(self, path, job)
        finally:
            _add(f"   {where} thread: submit..result", t0)

    timed_submit.profiled = True  # type: ignore[attr-defined]
    kns._Worker.submit = timed_submit  # type: ignore[method-assign]


def measure(fn: Callable[..., Any], *args: Any) -> tuple[float, dict[str, float]]:
    """(total ms, ms per step) of one ``fn(*args)``."""
    _op.clear()
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000, dict(_op)


def table(title: str, cols: dict[str, list[tuple[float, dict[str, float]]]]) -> None:
    keys = sorted({k for rows in cols.values() for _, d in rows for k in d})
    print(f"\n{title}")
    print(f"{'step (median ms per operation)':<52}" + "".join(f"{c:>12}" for c in cols))
    print(f"{'TOTAL':<52}" + "".join(f"{statistics.median(t for t, _ in r):12.3f}"
                                     for r in cols.values()))
    for k in keys:
        print(f"{k:<52}" + "".join(f"{statistics.median(d.get(k, 0.0) for _, d in r):12.3f}"
                                   for r in cols.values()))


class Stack:
    """An in-process controller on a throwaway host namespace."""

    def __init__(self, tag: str, v6: bool) -> None:
        self.ns = f"cnmbench-prof-{tag}"
        self.tmp = Path(tempfile.mkdtemp(prefix="cnmbench-prof-"))
        self.parts: list[Callable[[], None]] = []
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        try:
            self._start(v6)
        except BaseException:
            self.close()
            raise

    def _start(self, v6: bool) -> None:
        cfg = Config(state_dir=str(self.tmp / "state"), run_dir=str(self.tmp / "run"),
                     host_netns=f"/run/netns/{self.ns}")
        adapters = wiring.kernel(cfg.host_netns)
        self.parts.extend(adapters.closers)
        self.thread, self.visitor = adapters.threads
        self.host, self.sandbox = adapters.host, adapters.sandbox
        # The controller alone (no firewall, no DNS): what connect costs in the kernel.
        built = wiring.build(cfg, adapters, firewall=False, dns=False, start=False)
        self.store = built.store
        self.parts.append(self.store.close)
        self.c = built.controller
        if not v6:
            self.thread.call(_v6_off)
            create = self.sandbox.create_netns

            def create_netns(path: str) -> None:
                create(path)
                self.visitor.call(path, _v6_off)

            self.sandbox.create_netns = create_netns  # type: ignore[method-assign]
        self.c.start()
        instrument(self.host, self.sandbox, self.c)

    def close(self) -> None:
        # Namespaces and links go with the host namespace and the unmounts below; the
        # controller's own teardown is not what is measured here.
        for stop in reversed(self.parts):
            with contextlib.suppress(Exception):
                stop()
        ns_dir = self.tmp / "run" / "netns"
        if ns_dir.is_dir():
            for e in ns_dir.iterdir():
                subprocess.run(["umount", "-l", str(e)], capture_output=True)
                e.unlink(missing_ok=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _v6_off(ipr: Any) -> None:
    # /proc/sys/net is the namespace of the thread that opens it: the job's namespace.
    with open(V6_DEFAULT, "w") as f:
        f.write("1")


def part_connect(n: int, tag: str) -> None:
    s = Stack(f"{tag}-c", v6=True)
    try:
        c = s.c
        c.create_network(NetworkSpec(name="base", subnets=("10.99.0.0/16",)))
        c.create_network(NetworkSpec(name="bench", subnets=("10.97.0.0/16",)))
        for i in range(n + 5):
            c.create_sandbox(SandboxSpec(name=f"p{i}", network="base"))
        for i in range(5):  # warm-up
            c.connect(ConnectSpec(network="bench", sandbox=f"p{i}"))
        con = [measure(c.connect, ConnectSpec(network="bench", sandbox=f"p{i}"))
               for i in range(5, n + 5)]
        dis = [measure(c.disconnect, "bench", f"p{i}") for i in range(5, n + 5)]
        table(f"1. connect / disconnect, in-process, n={n}", {"connect": con, "disconnect": dis})
    finally:
        s.close()


def part_scale(n: int, tag: str) -> None:
    cols: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for v6 in (True, False):
        s = Stack(f"{tag}-s{int(v6)}", v6=v6)
        try:
            s.c.create_network(NetworkSpec(name="big", subnets=("10.100.0.0/16",)))
            rows = [measure(s.c.create_sandbox, SandboxSpec(name=f"p{i}", network="big"))
                    for i in range(n)]
        finally:
            s.close()
        k = min(100, n // 2)
        label = "v6 on" if v6 else "v6 off"
        cols[f"{label} f{k}"], cols[f"{label} l{k}"] = rows[:k], rows[-k:]
    table(f"2. create_sandbox x{n} on one bridge, first/last {min(100, n // 2)}", cols)


def part_floor(n: int, tag: str) -> None:
    cols: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for v6 in (True, False):
        rows = _floor(n, f"cnmbench-prof-{tag}-f{int(v6)}", v6)
        k = min(100, n // 2)
        label = "v6 on" if v6 else "v6 off"
        cols[f"{label} f{k}"], cols[f"{label} l{k}"] = rows[:k], rows[-k:]
    table(f"3. kernel floor (bare pyroute2, no cnm) x{n}, first/last {min(100, n // 2)}", cols)


def _floor(n: int, host_ns: str, v6: bool) -> list[tuple[float, dict[str, float]]]:
    """One thread in the host namespace; sandboxes made as cnm makes them (Visitor.create)."""
    tmp = Path(tempfile.mkdtemp(prefix="cnmbench-prof-"))
    subprocess.run(["ip", "netns", "add", host_ns], check=True)
    visitor = Visitor()
    rows: list[tuple[float, dict[str, float]]] = []
    err: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        try:
            fd = os.open(f"/run/netns/{host_ns}", os.O_RDONLY)
            kns.setns(fd, host_ns)
            os.close(fd)
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            if not v6:
                _v6_off(None)
            with IPRoute() as host:
                host.link("add", ifname="br0", kind="bridge")
                br = host.link_lookup(ifname="br0")[0]
                host.addr("add", index=br, address="10.100.0.1", prefixlen=16)
                host.link("set", index=br, state="up")
                for i in range(n):
                    if stop.is_set():
                        break
                    path = str(tmp / f"s{i}")
                    visitor.create(path)
                    if not v6:
                        visitor.call(path, _v6_off)
                    rows.append(measure(_plumb, host, br, home, i, path))
            os.close(home)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            err.append(e)

    t = threading.Thread(target=work)
    try:
        t.start()
        while t.is_alive():
            t.join(0.2)
    finally:
        stop.set()
        t.join()
        visitor.stop()
        for e in tmp.iterdir():
            subprocess.run(["umount", "-l", str(e)], capture_output=True)
        subprocess.run(["ip", "netns", "del", host_ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    if err:
        raise err[0]
    return rows


def _plumb(host: IPRoute, br: int, home: int, i: int, path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    t0 = time.perf_counter()
    host.link("add", ifname=f"v{i}", kind="veth", master=br, state="up",
              peer={"ifname": "eth0", "net_ns_fd": fd})
    _add("  host: veth add (peer in sandbox, master, up)", t0)
    t0 = time.perf_counter()
    kns.setns(fd, path)
    os.close(fd)
    with IPRoute() as ipr:
        ipr.link("get", index=1)
        _add("  sandbox: setns + open handle", t0)
        t0 = time.perf_counter()
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=idx, address=f"10.100.{2 + i // 250}.{1 + i % 250}", prefixlen=16)
        ipr.link("set", index=idx, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway="10.100.0.1", oif=idx)
        _add("  sandbox: lookup, address, up, route", t0)
    kns.setns(home, "home")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="connects/disconnects (part 1)")
    p.add_argument("--scale", type=int, default=1000, help="sandboxes on one bridge (2, 3)")
    p.add_argument("--parts", default="123", help="which parts to run, e.g. 13")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/profile.py needs root", file=sys.stderr)
        return 2
    tag = secrets.token_hex(3)
    if "1" in args.parts:
        part_connect(args.n, tag)
    if "2" in args.parts:
        part_scale(args.scale, tag)
    if "3" in args.parts:
        part_floor(args.scale, tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
