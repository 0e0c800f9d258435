"""Overlay benchmark, one run: N hosts (throwaway namespaces, each its own cnmd) on an
underlay bridge, a 3-member etcd on the first three hosts' underlay addresses
(cnm.testing.cluster.Lab), everything started in parallel.

- etcd's own watch latency, the floor: a put through member 1 until a watch through member
  1 (where every cnmd watches: cnmd asks the first member named first) and one through
  member 2 see it. Measured with the cnmds running, at the same cluster size.
- convergence: every host (or ``--anchors`` of them) gets a sandbox on overlay network
  ``ov``, so its host side (bridge, VXLAN device) exists and it programs FDB entries; then
  ``-c`` connects, round-robin over ``--connectors`` hosts, one at a time: from the connect
  returning until the new endpoint's MAC is in the FDB of each other anchored host. One
  rtnetlink socket per host namespace, subscribed to neighbour notifications (RTM_NEWNEIGH
  of family AF_BRIDGE on that host's VXLAN device), read with select by one monitor process
  and timestamped on arrival (CLOCK_MONOTONIC, the clock the connect is timed with).
  Reported per host-arrival and per connect (the last host: "present on every other host").
- connect on an overlay vs on a bridge network, same daemon, same run: medians and ratio.
- memory of every cnmd (RSS, PSS, USS from /proc/PID/smaps_rollup): in the cluster before
  any sandbox, and at the end (with sandboxes); beside them a cnmd without a cluster store.
- throughput: iperf3 between sandboxes on two hosts over the overlay, and between the same
  two host namespaces over the underlay directly, alternating, ``--iperf-reps`` each.
- ``--profile``: py-spy records the connecting cnmd and a receiving one during the
  convergence part; the top frames are printed.

Usage (root): .venv/bin/python bench/overlay.py [--hosts N] [-c CONNECTS] [--json PATH]
  e.g. --hosts 3 (the default) and --hosts 50 (the issue's cluster size).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchcommon  # noqa: E402
from benchcommon import Janitor, progress  # noqa: E402

from cnm.kernel.link import host_socket_factory  # noqa: E402
from cnm.kernel.netns import NsThread, run_in  # noqa: E402
from cnm.store.etcdclient import EtcdClient  # noqa: E402

try:  # the watch's abortable stream (main since f394288); a list of responses before it
    from cnm.store.etcdclient import Stream  # type: ignore[attr-defined]
except ImportError:
    Stream = None
from cnm.testing.cluster import Host, Lab  # noqa: E402

PY = sys.executable
PY_SPY = str(Path(PY).parent / "py-spy")
NETLINK_ROUTE = 0
RTMGRP_NEIGH = 0x4  # the legacy bitmask of RTNLGRP_NEIGH (3)
RTM_NEWNEIGH = 28
AF_BRIDGE = 7
NDA_DST, NDA_LLADDR = 1, 2
SO_RCVBUFFORCE = 33


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * q))]


def summary(xs: list[float]) -> dict[str, float]:
    """ms: median, p99, max, n (of seconds)."""
    return {"median": statistics.median(xs) * 1e3 if xs else float("nan"),
            "p90": pct(xs, 0.90) * 1e3, "p99": pct(xs, 0.99) * 1e3,
            "max": max(xs) * 1e3 if xs else float("nan"), "n": len(xs)}


def now() -> float:
    return time.monotonic_ns() / 1e9


# ---------------------------------------------------------------------- the lab
def make_lab(janitor: Janitor, n: int) -> Lab:
    """The Lab, its cnmds started 6 at a time (Python start-up is most of a cnmd's)."""
    lab = Lab.make(n, ttl=10, timeout=5.0, start=False)
    janitor.push("close the lab", lab.close)

    def stop_all() -> None:
        # SIGTERM to every cnmd at once, then wait: Lab.close would stop them one by one.
        procs = [h.daemon.proc for h in lab.hosts if h.daemon.proc is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for h in lab.hosts:
            h.daemon.proc = None

    janitor.push("stop the cnmds", stop_all)
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        for f in [ex.submit(lab.start, h) for h in lab.hosts]:
            f.result()
    return lab


# ---------------------------------------------------------------------- etcd's floor
def watch_latency(lab: Lab, n: int) -> dict[str, list[float]]:
    """A put through member 1 until a watch through member 1, and one through member 2,
    see it (the watchers are threads of this process, in the members' namespaces)."""
    m1, m2 = lab.etcd.members[0], lab.etcd.members[1]
    t1, t2 = NsThread(m1.netns, name="b1"), NsThread(m2.netns, name="b2")
    stop = threading.Event()
    try:
        put = EtcdClient([(m1.addr, 2379)], socket_factory=host_socket_factory(t1))
        rev, _, _ = put.range("/bench/none")
        seen: dict[str, dict[str, float]] = {"m1": {}, "m2": {}}
        cond = threading.Condition()
        holders: list[Any] = []
        for label, member, t in (("m1", m1, t1), ("m2", m2, t2)):
            c = EtcdClient([(member.addr, 2379)], socket_factory=host_socket_factory(t))
            holder: Any = Stream() if Stream is not None else []
            holders.append(holder)

            def watch(c: EtcdClient = c, mine: dict[str, float] = seen[label],
                      holder: Any = holder) -> None:
                start = rev + 1
                while not stop.is_set():
                    for r, events in c.watch("/bench/", start, stop, holder):
                        t_seen = now()
                        with cond:
                            for _, kv in events:
                                mine.setdefault(kv.key, t_seen)
                            cond.notify_all()
                        start = max(start, r + 1)

            threading.Thread(target=watch, daemon=True).start()
        time.sleep(0.5)
        out: dict[str, list[float]] = {"m1": [], "m2": []}
        for i in range(n):
            key = f"/bench/w{i}"
            t0 = now()
            put.put(key, "{}")
            with cond:
                cond.wait_for(lambda k=key: all(k in s for s in seen.values()), timeout=5)
            for label in out:
                if key in seen[label]:
                    out[label].append(seen[label][key] - t0)
            time.sleep(0.005)
        put.delete("/bench/", "/bench0")
        return out
    finally:
        stop.set()
        for holder in holders:
            if isinstance(holder, list):
                for resp in holder:
                    resp.close()
            else:
                holder.abort()
        t1.stop()
        t2.stop()


# ---------------------------------------------------------------------- FDB monitor
def neigh_socket() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    s.bind((0, RTMGRP_NEIGH))
    s.setblocking(False)
    return s


def parse_fdb(data: bytes, vx_index: int) -> list[str]:
    """The MACs of the RTM_NEWNEIGH AF_BRIDGE messages on ``vx_index`` in ``data``."""
    macs = []
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if kind == RTM_NEWNEIGH and off + 28 <= len(data):
            family, ifindex = data[off + 16], struct.unpack_from("=i", data, off + 20)[0]
            if family == AF_BRIDGE and ifindex == vx_index:
                a = off + 28
                mac = None
                has_dst = False
                while a + 4 <= off + length:
                    alen, atype = struct.unpack_from("=HH", data, a)
                    if alen < 4:
                        break
                    if atype == NDA_LLADDR and alen == 10:
                        mac = data[a + 4:a + 10].hex(":")
                    elif atype == NDA_DST:
                        has_dst = True
                    a += (alen + 3) & ~3
                if mac is not None and has_dst:
                    macs.append(mac)
        off += (length + 3) & ~3
    return macs


def monitor(socks: list[socket.socket], vx: list[int], conn: Any) -> None:
    """The monitor process: each new (host, MAC) of a VXLAN FDB entry, with the time its
    notification was read, sent to ``conn`` at once; ends when ``conn`` says so."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fds = {s.fileno(): i for i, s in enumerate(socks)}
    seen: set[tuple[int, str]] = set()
    overruns = 0
    poller = select.epoll()
    for fd in fds:
        poller.register(fd, select.EPOLLIN)
    poller.register(conn.fileno(), select.EPOLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == conn.fileno():
                conn.recv()
                conn.send(("overruns", overruns))
                return
            i = fds[fd]
            while True:
                try:
                    data = socks[i].recv(1 << 16)
                except BlockingIOError:
                    break
                except OSError:  # ENOBUFS: the socket overran (counted; never seen so far)
                    overruns += 1
                    continue
                t = time.monotonic_ns() / 1e9
                out = []
                for mac in parse_fdb(data, vx[i]):
                    if (i, mac) not in seen:
                        seen.add((i, mac))
                        out.append((i, mac, t))
                if out:
                    conn.send(("fdb", out))


class Fdb:
    """The monitor process and what it reported: (host index, MAC) -> arrival."""

    def __init__(self, hosts: list[Host], network: str) -> None:
        vx_name = hosts[0].vxlan(network)
        self.socks = []
        self.vx = []
        for h in hosts:
            path = f"/run/netns/{h.ns.name}"
            self.socks.append(run_in(path, neigh_socket))
            self.vx.append(run_in(path, lambda: socket.if_nametoindex(vx_name)))
        self.arrived: dict[tuple[int, str], float] = {}
        self.overruns = 0
        self.conn, child = multiprocessing.Pipe()
        ctx = multiprocessing.get_context("fork")
        self.proc = ctx.Process(target=monitor, args=(self.socks, self.vx, child), daemon=True)
        self.proc.start()
        child.close()

    def wait(self, mac: str, hosts: set[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all((i, mac) in self.arrived for i in hosts):
            left = deadline - time.monotonic()
            if left <= 0 or not self.conn.poll(left):
                return
            self._take(self.conn.recv())

    def _take(self, msg: Any) -> None:
        if msg[0] == "fdb":
            for i, mac, t in msg[1]:
                self.arrived.setdefault((i, mac), t)
        elif msg[0] == "overruns":
            self.overruns = msg[1]

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send("stop")
                while self.conn.poll(2):
                    msg = self.conn.recv()
                    self._take(msg)
                    if msg[0] == "overruns":
                        break
            except (OSError, EOFError):
                pass
            self.proc.join(2)
            if self.proc.is_alive():
                self.proc.kill()
        for s in self.socks:
            s.close()


# ---------------------------------------------------------------------- convergence
def anchor_all(hosts: list[Host], network: str) -> None:
    """A sandbox on ``network`` on each of ``hosts`` (so each has the host side)."""
    def one(h: Host) -> None:
        h.client().create_sandbox(name=f"anchor-{h.name}", network=network)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        for f in [ex.submit(one, h) for h in hosts]:
            f.result()


def convergence(lab: Lab, anchors: int, connectors: int, connects: int,
                profile_dir: Path | None) -> dict[str, Any]:
    hosts = lab.hosts[:anchors]
    connectors = min(connectors, len(hosts))
    progress(f"convergence: sandboxes on ov on {len(hosts)} hosts")
    anchor_all(hosts, "ov")
    time.sleep(1.0)
    # The sandboxes to connect, made beforehand on a local bridge network (not timed).
    per_host = [[] for _ in range(connectors)]  # type: list[list[str]]
    for k in range(connects):
        per_host[k % connectors].append(f"cv{k}")

    def make(i: int) -> None:
        c = hosts[i].client()
        c.create_network(name="cvbase", driver="bridge", internal=True)
        for name in per_host[i]:
            c.create_sandbox(name=name, network="cvbase")

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for f in [ex.submit(make, i) for i in range(connectors)]:
            f.result()
    clients = [h.client() for h in hosts[:connectors]]
    fdb = Fdb(hosts, "ov")
    cpu0 = {h.name: cpu_seconds(h) for h in hosts}
    etcd0 = etcd_cpu(lab)
    spies = []
    try:
        time.sleep(0.5)
        if profile_dir is not None:
            spies = start_profiles(profile_dir, {"connecting": hosts[0], "receiving": hosts[-1]},
                                   seconds=max(5, int(connects * 0.12)))
        per_arrival: list[float] = []
        per_connect: list[float] = []
        signed: list[float] = []  # arrival - return (negative: before the connect returned)
        from_call: list[float] = []  # arrival - the connect's call
        from_call_last: list[float] = []
        before_return = 0
        missing = 0
        by_host: dict[int, list[float]] = collections.defaultdict(list)
        connect_ms: list[float] = []
        for k in range(connects):
            i = k % connectors
            t_call = now()
            ep = clients[i].connect("ov", f"cv{k}")
            t0 = now()  # the connect has returned
            connect_ms.append(t0 - t_call)
            mac = str(ep["mac"])
            others = {j for j in range(len(hosts)) if j != i}
            fdb.wait(mac, others, timeout=5.0)
            last = 0.0
            last_call = 0.0
            for j in others:
                t = fdb.arrived.get((j, mac))
                if t is None:
                    missing += 1
                    continue
                d = t - t0
                signed.append(d)
                from_call.append(t - t_call)
                last_call = max(last_call, t - t_call)
                if d < 0:
                    before_return += 1
                d = max(0.0, d)
                per_arrival.append(d)
                by_host[j].append(t - t_call)
                last = max(last, d)
            per_connect.append(last)
            from_call_last.append(last_call)
            time.sleep(0.02)  # let the last host's apply finish: the samples stay apart
        cpu = {h.name: cpu_seconds(h) - cpu0[h.name] for h in hosts}
        etcd_used = etcd_cpu(lab) - etcd0
        profiles = finish_profiles(spies)
        spies = []
    finally:
        for p in spies:
            p.terminate()
        fdb.close()
    worst_hosts = sorted(((statistics.median(v), j) for j, v in by_host.items()), reverse=True)
    return {"hosts": len(hosts), "connectors": connectors, "connects": connects,
            "per_arrival": summary(per_arrival), "per_connect": summary(per_connect),
            "connect_ov": summary(connect_ms),
            "signed_per_arrival": {"median": statistics.median(signed) * 1e3 if signed else 0,
                                   "p01": pct(signed, 0.01) * 1e3, "p99": pct(signed, 0.99) * 1e3},
            "from_call_per_arrival": summary(from_call),
            "from_call_per_connect": summary(from_call_last),
            "arrived_before_return": before_return, "missing": missing,
            "overruns": fdb.overruns,
            # CPU ms per connect: a receiving cnmd (not a connector), all cnmds, etcd
            "cpu_ms_per_connect": {
                "receiving_cnmd_median": statistics.median(
                    [cpu[h.name] for h in hosts[connectors:]] or [0]) * 1e3 / connects,
                "connecting_cnmd_median": statistics.median(
                    [cpu[h.name] for h in hosts[:connectors]]) * 1e3 / connects,
                "all_cnmds": sum(cpu.values()) * 1e3 / connects,
                "etcd": etcd_used * 1e3 / connects},
            # (from the connect's call: the clamped figure is 0 for most)
            "slowest_hosts_median_ms": [(hosts[j].name, round(m * 1e3, 2))
                                        for m, j in worst_hosts[:5]],
            "samples_per_arrival_ms": [round(x * 1e3, 3) for x in per_arrival],
            "samples_per_connect_ms": [round(x * 1e3, 3) for x in per_connect],
            "profiles": profiles}


def proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(h: Host) -> float:
    assert h.daemon.proc is not None
    return proc_cpu(h.daemon.proc.pid)


def etcd_cpu(lab: Lab) -> float:
    total = 0.0
    for m in lab.etcd.members:
        proc = getattr(m, "proc", None)
        if proc is not None and proc.poll() is None:
            total += proc_cpu(proc.pid)
    return total


# ---------------------------------------------------------------------- py-spy
def start_profiles(out: Path, who: dict[str, Host], seconds: int) -> list[Any]:
    if not os.access(PY_SPY, os.X_OK):
        progress("py-spy is not in the venv (bash bench/install.sh): no profile")
        return []
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for label, h in who.items():
        assert h.daemon.proc is not None
        path = out / f"{label}-{h.name}.txt"
        procs.append((label, path, subprocess.Popen(
            [PY_SPY, "record", "--pid", str(h.daemon.proc.pid), "--duration", str(seconds),
             "--rate", "250", "--format", "raw", "--nonblocking", "--gil", "--threads",
             "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(1.0)  # py-spy attaches
    return procs


def finish_profiles(procs: list[Any]) -> dict[str, Any]:
    out = {}
    for label, path, p in procs:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.terminate()
            continue
        if path.exists():
            out[label] = top_frames(path)
    return out


def top_frames(path: Path, k: int = 12) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks: the busiest threads, and inclusive shares of the
    functions seen outside idle waits."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for f in set(frames[1:]):
            incl[f] += count
    return {"samples": total, "file": str(path),
            "threads": threads.most_common(6),
            "self": own.most_common(k), "inclusive": incl.most_common(k * 2)}


# ---------------------------------------------------------------------- connect
def connects(lab: Lab, n: int) -> dict[str, Any]:
    h1 = lab.hosts[0]
    c = h1.client()
    c.create_network(name="brb", driver="bridge")
    c.create_network(name="ovb", driver="overlay")
    c.create_network(name="base", driver="bridge")
    for i in range(n):
        c.create_sandbox(name=f"s{i}", network="base")
    res: dict[str, list[float]] = {"brb": [], "ovb": []}
    for i in range(n):
        for net in ("brb", "ovb"):
            t0 = now()
            c.connect(net, f"s{i}")
            res[net].append(now() - t0)
    ov, br = summary(res["ovb"]), summary(res["brb"])
    return {"overlay": ov, "bridge": br, "ratio": ov["median"] / br["median"]}


# ---------------------------------------------------------------------- memory
def smaps(pid: int) -> dict[str, float]:
    """MiB: Rss, Pss, USS (private clean + dirty) of ``pid``."""
    kb: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                kb[parts[0].rstrip(":")] = int(parts[1])
    return {"rss": kb.get("Rss", 0) / 1024, "pss": kb.get("Pss", 0) / 1024,
            "uss": (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) / 1024}


def memory(lab: Lab) -> dict[str, Any]:
    per = {}
    for h in lab.hosts:
        assert h.daemon.proc is not None
        per[h.name] = smaps(h.daemon.proc.pid)
    out: dict[str, Any] = {}
    for key in ("rss", "pss", "uss"):
        vals = [m[key] for m in per.values()]
        out[key] = {"median": statistics.median(vals), "max": max(vals)}
    out["per_host"] = per
    return out


def count_sandboxes(h: Host) -> int:
    return len(h.client().sandboxes())


def plain_cnmd_memory(janitor: Janitor) -> dict[str, Any]:
    """A cnmd without a cluster store (its own throwaway namespace), started with
    python's import timing on: its RSS/PSS/USS idle and with 1 sandbox, and its modules."""
    mark = janitor.mark()
    d = benchcommon.throwaway_daemon(janitor, "ovmem")
    try:
        d.start(env={"PYTHONPROFILEIMPORTTIME": "1"})
        time.sleep(1.0)
        assert d.proc is not None
        idle = smaps(d.proc.pid)
        c = d.client()
        c.create_sandbox(name="one")
        time.sleep(0.5)
        one = smaps(d.proc.pid)
        # Beside the cluster's bridge connect: the same connects on a cnmd without one.
        c.create_network(name="brb", driver="bridge")
        c.create_network(name="base", driver="bridge")
        times = []
        for i in range(30):
            c.create_sandbox(name=f"s{i}", network="base")
            t0 = now()
            c.connect("brb", f"s{i}")
            times.append(now() - t0)
        imports = imports_of(d.log)
        stages = import_stages(imports.pop("names"))
        return {"idle": idle, "one_sandbox": one, "imports": imports, "import_stages": stages,
                "connect_bridge": summary(times)}
    finally:
        janitor.clean(mark)


def imports_of(log: Path) -> dict[str, Any]:
    """From a PYTHONPROFILEIMPORTTIME log: how many modules, and by top-level package."""
    by_pkg: collections.Counter[str] = collections.Counter()
    names: list[str] = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        name = line.rsplit("|", 1)[-1].strip()
        names.append(name)
        by_pkg[name.split(".")[0]] += 1
    return {"modules": len(names), "by_package": by_pkg.most_common(15), "names": names}


STAGES = (("the interpreter", ()), ("requests (urllib3, http.client, ssl, email)", ("requests",)),
          ("pyroute2 (its __init__ imports every module)", ("pyroute2",)),
          ("yaml, dnslib, netaddr, sqlite3", ("yaml", "dnslib", "netaddr", "sqlite3")),
          ("cnm itself", ()))


def import_stages(modules: list[str]) -> dict[str, Any]:
    """A fresh interpreter importing what cnmd imports (``modules``, from its import-time
    log) in stages: the USS (MiB) each stage adds, and the module count. cnm's own modules
    come last, so each stage is what that package pulls in."""
    stages = [(label, list(mods)) for label, mods in STAGES]
    stages[-1] = (stages[-1][0], [m for m in modules if m.split(".")[0] == "cnm"])
    code = (
        "import json, sys\n"
        "def uss():\n"
        "    kb = {}\n"
        "    for line in open('/proc/self/smaps_rollup'):\n"
        "        p = line.split()\n"
        "        if len(p) >= 3 and p[2] == 'kB': kb[p[0].rstrip(':')] = int(p[1])\n"
        "    return (kb['Private_Clean'] + kb['Private_Dirty']) / 1024, kb['Rss'] / 1024\n"
        "out = []\n"
        f"for label, mods in {stages!r}:\n"
        "    for m in mods:\n"
        "        try:\n"
        "            __import__(m)\n"
        "        except Exception:\n"
        "            pass\n"
        "    u, r = uss()\n"
        "    out.append((label, u, r, len(sys.modules)))\n"
        "print(json.dumps(out))\n")
    r = benchcommon.run(PY, "-c", code)
    rows = json.loads(r.stdout)
    res = []
    prev_u, prev_n = 0.0, 0
    for label, u, rss, n in rows:
        res.append({"stage": label, "uss_added": u - prev_u, "uss": u, "rss": rss,
                    "modules_added": n - prev_n})
        prev_u, prev_n = u, n
    return {"stages": res}


# ---------------------------------------------------------------------- throughput
def iperf(server_ns: str, client_ns: str, addr: str, seconds: int) -> float:
    """Gbit/s received, one TCP stream, ``client_ns`` -> server in ``server_ns`` at addr."""
    srv = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-B", addr,
                            "-p", "5201"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            r = benchcommon.run("nsenter", f"--net={server_ns}", "ss", "-Htln",
                                "sport", "= :5201", check=False)
            if r.stdout.strip():
                break
            time.sleep(0.05)
        r = benchcommon.run("nsenter", f"--net={client_ns}", "iperf3", "-c", addr, "-p", "5201",
                            "-t", str(seconds), "-J", timeout=seconds + 30)
        res = json.loads(r.stdout)
        return float(res["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def throughput(lab: Lab, reps: int, seconds: int) -> dict[str, Any]:
    a, b = lab.hosts[1], lab.hosts[2]
    a.client().create_sandbox(name="ipa", network="ov")
    b.client().create_sandbox(name="ipb", network="ov")
    sa = a.client().sandbox("ipa")
    ov_addr = str(next(e for e in sa["endpoints"] if e["network"] == "ov")["ipv4"]).split("/")[0]
    ns_a, ns_b = a.netns("ipa"), b.netns("ipb")
    host_a, host_b = f"/run/netns/{a.ns.name}", f"/run/netns/{b.ns.name}"
    # (ip, not /sys: nsenter --net keeps this mount namespace's sysfs, the machine's own)
    mtu_ov = json.loads(benchcommon.run("nsenter", f"--net={ns_a}", "ip", "-j", "link", "show",
                                        "eth0").stdout)[0]["mtu"]
    out: dict[str, list[float]] = {"overlay": [], "underlay": []}
    for r in range(reps):
        progress(f"iperf3 round {r + 1}/{reps}")
        out["overlay"].append(iperf(ns_a, ns_b, ov_addr, seconds))
        out["underlay"].append(iperf(host_a, host_b, a.addr, seconds))
    ov, ul = statistics.median(out["overlay"]), statistics.median(out["underlay"])
    return {"overlay_gbps": out["overlay"], "underlay_gbps": out["underlay"],
            "overlay_median": ov, "underlay_median": ul, "ratio": ov / ul,
            "seconds": seconds, "overlay_mtu": int(mtu_ov), "underlay_mtu": lab.underlay.mtu,
            "pair": f"{a.name} ({a.addr}) <- {b.name} ({b.addr})"}


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=3, help="hosts (cnmds) in the cluster")
    ap.add_argument("-n", type=int, default=50, help="connects for overlay vs bridge")
    ap.add_argument("-w", "--watch", type=int, default=300, help="puts for the watch floor")
    ap.add_argument("-c", "--connects", type=int, default=0,
                    help="connects timed for convergence (default: 200, at least 200 "
                         "host-arrivals)")
    ap.add_argument("--anchors", type=int, default=0,
                    help="hosts that get a sandbox on ov and converge (default: all)")
    ap.add_argument("--connectors", type=int, default=10, help="hosts that connect in turn")
    ap.add_argument("--iperf-reps", type=int, default=3)
    ap.add_argument("--iperf-seconds", type=int, default=5)
    ap.add_argument("--no-iperf", action="store_true")
    ap.add_argument("--no-plain", action="store_true", help="skip the cnmd without a cluster")
    ap.add_argument("--profile", action="store_true", help="py-spy during convergence")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/overlay.py needs root (namespaces)", file=sys.stderr)
        return 2
    if not benchcommon.need_peers("bench/overlay.py", "etcd", "iperf3", "nsenter", "ss"):
        return 2
    anchors = args.anchors or args.hosts
    connects_n = args.connects or max(200, -(-200 // max(1, anchors - 1)))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    janitor = Janitor()
    workdir = Path(tempfile.mkdtemp(prefix="cnmbench-overlay-"))
    res: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        "host": platform.node(), "kernel": platform.release(),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "hosts": args.hosts, "loadavg_start": os.getloadavg()}
    try:
        t0 = time.monotonic()
        progress(f"{args.hosts} hosts, etcd, {args.hosts} cnmds")
        lab = make_lab(janitor, args.hosts)
        res["startup_s"] = time.monotonic() - t0
        progress(f"started in {res['startup_s']:.1f} s (namespaces "
                 f"{lab.hosts[0].ns.name.rsplit('-', 1)[0]}-h*, {lab.underlay.name})")
        time.sleep(1.0)
        res["memory_cluster_idle"] = memory(lab)
        lab.hosts[0].client().create_network(name="ov", driver="overlay")
        time.sleep(1.0)
        progress("etcd watch latency")
        w = watch_latency(lab, args.watch)
        res["watch_m1"], res["watch_m2"] = summary(w["m1"]), summary(w["m2"])
        res["convergence"] = convergence(
            lab, anchors, args.connectors, connects_n,
            workdir / "profiles" if args.profile else None)
        res["loadavg_after_convergence"] = os.getloadavg()
        progress("connect overlay vs bridge")
        res["connect"] = connects(lab, args.n)
        if not args.no_iperf and args.hosts >= 3:
            res["throughput"] = throughput(lab, args.iperf_reps, args.iperf_seconds)
        res["memory_cluster_end"] = memory(lab)
        res["sandboxes_end"] = {h.name: count_sandboxes(h) for h in lab.hosts}
        janitor.clean()
        if not args.no_plain:
            progress("a cnmd without a cluster store")
            plain = plain_cnmd_memory(janitor)
            res["memory_plain"] = plain
        res["loadavg_end"] = os.getloadavg()
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        janitor.clean()
        if args.profile:
            progress(f"profiles kept in {workdir / 'profiles'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(res)
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


def report(res: dict[str, Any]) -> None:
    n = res["hosts"]
    conv = res["convergence"]

    def line(what: str, s: dict[str, float], extra: str = "") -> None:
        print(f"{what:<44} median {s['median']:7.2f}  p99 {s['p99']:7.2f}  max "
              f"{s['max']:7.2f} ms  (N={s['n']}){extra}")

    print(f"\n{res['date']}  {n} hosts  {res['cpus']} CPUs  load {res['loadavg_start']}"
          f" -> {res.get('loadavg_end', '?')}  "
          f"start-up {res['startup_s']:.1f} s")
    line("etcd watch, put m1 -> watch m1 (cnmd's path)", res["watch_m1"])
    line("etcd watch, put m1 -> watch m2", res["watch_m2"])
    line(f"convergence per host-arrival ({conv['hosts'] - 1} others)", conv["per_arrival"])
    line("convergence per connect (every other host)", conv["per_connect"],
         f"  before return {conv['arrived_before_return']}, missing {conv['missing']}")
    sg = conv["signed_per_arrival"]
    print(f"  arrival - return, signed: median {sg['median']:.2f}  p1 {sg['p01']:.2f}  p99 "
          f"{sg['p99']:.2f} ms (negative: in the FDB before the connect returned)")
    line("connect call -> FDB, per host-arrival", conv["from_call_per_arrival"])
    line("connect call -> FDB on every other host", conv["from_call_per_connect"])
    line(f"connect on ov during it ({conv['connectors']} hosts)", conv["connect_ov"])
    print(f"slowest hosts (median ms from the call): {conv['slowest_hosts_median_ms']}")
    cp = conv["cpu_ms_per_connect"]
    print(f"CPU per connect: a receiving cnmd {cp['receiving_cnmd_median']:.2f} ms, a "
          f"connecting one {cp['connecting_cnmd_median']:.2f}, all cnmds {cp['all_cnmds']:.1f},"
          f" etcd {cp['etcd']:.1f} ms")
    c = res["connect"]
    line("connect overlay (host 1)", c["overlay"])
    line("connect bridge (host 1)", c["bridge"])
    print(f"overlay / bridge: {c['ratio']:.2f}x")
    if "throughput" in res:
        t = res["throughput"]
        print(f"iperf3 overlay {t['overlay_gbps']} Gbit/s (MTU {t['overlay_mtu']}), underlay "
              f"{t['underlay_gbps']} (MTU {t['underlay_mtu']}): medians {t['overlay_median']:.2f}"
              f" / {t['underlay_median']:.2f} = {t['ratio']:.2f}")
    for key in ("memory_cluster_idle", "memory_cluster_end"):
        m = res[key]
        print(f"{key}: RSS {m['rss']['median']:.1f}/{m['rss']['max']:.1f}  PSS "
              f"{m['pss']['median']:.1f}/{m['pss']['max']:.1f}  USS {m['uss']['median']:.1f}/"
              f"{m['uss']['max']:.1f} MiB (median/max)")
    h1 = res["memory_cluster_end"]["per_host"][f"h{1}"]
    print(f"h1 at the end ({res['sandboxes_end']['h1']} sandboxes): RSS {h1['rss']:.1f} PSS "
          f"{h1['pss']:.1f} USS {h1['uss']:.1f} MiB")
    if "memory_plain" in res:
        p = res["memory_plain"]
        print(f"cnmd without a cluster store: idle RSS {p['idle']['rss']:.1f} PSS "
              f"{p['idle']['pss']:.1f} USS {p['idle']['uss']:.1f}; 1 sandbox RSS "
              f"{p['one_sandbox']['rss']:.1f} MiB; modules {p['imports']['modules']} "
              f"{p['imports']['by_package'][:8]}")
        print(f"  its bridge connect: median {p['connect_bridge']['median']:.2f} ms (N=30)")
        print("  what cnmd's imports cost, in a bare interpreter (USS added, MiB; modules):")
        for st in p["import_stages"]["stages"]:
            print(f"    {st['stage']:<48} +{st['uss_added']:5.1f}  (USS {st['uss']:5.1f}, RSS "
                  f"{st['rss']:5.1f})  +{st['modules_added']} modules")
    for label, prof in conv.get("profiles", {}).items():
        print(f"\nprofile {label}: {prof['samples']} samples ({prof['file']})")
        for f, k in prof["inclusive"][:20]:
            print(f"  {k:6d}  {f}")


if __name__ == "__main__":
    sys.exit(main())
