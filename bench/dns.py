#!/usr/bin/env python3
"""cnm's embedded DNS beside aardvark-dns and Docker's embedded DNS, in one run.

    .venv/bin/python bench/dns.py [--quick] [--profile] [--only cnm|aardvark|docker|floor]
                                  [--seconds S] [--rounds R] [--cnm-sandboxes K] [--json PATH]

Every server holds the same N names (n0 .. n{N-1}; N = 1,000, or 100 with --quick) and is
asked for them (type A) from inside a namespace on its network: a cnm sandbox (127.0.0.11),
a client namespace on aardvark-dns's bridge (the bridge address), a Docker container
(127.0.0.11). A bare Python dict loop on loopback ("floor", not a peer) shows what any
Python server can reach here. All servers are up at once and measured alike:

- cold: each name once, 1 ms apart (the first answer for a name);
- load: dnsperf (1 thread, 100 queries outstanding) for S seconds per server, in R rounds
  interleaved across the servers so the machine's other load falls on all of them;
  median queries/s, average latency, the server's CPU meanwhile;
- p50/p99 one query at a time, back to back (N x 20 queries), then spaced 1 ms apart
  (N x 5), then spaced with server and client SCHED_FIFO. Our own client times each
  query (dnsperf -q 1 idles ~7 ms between queries here).

For cnm also: cnmd's RSS and file descriptors with no sandbox, with 50 sandboxes without
a DNS listener (default bridge), and with K sandboxes with one (K = 200: each holds 5 of
the names, as its name and 4 aliases; see bench/DNS.md for why not 1,000 sandboxes).

Nothing leaves the namespaces made here: every server, daemon and client runs in
throwaway namespaces (cnmdns-<tag>-*) that are deleted at the end, on an error, on Ctrl-C
and on SIGTERM. Only names the servers hold are asked, and none of them has an upstream it
could forward to: cnmd gets an empty --resolv-conf, aardvark-dns and dockerd see an empty
/etc/resolv.conf (bind-mounted in their private mount namespace), dockerd is given --dns
to an address on its own bridge where nothing listens, and no namespace here has a route
out. Results and what they mean: bench/DNS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchcommon
from benchcommon import Janitor, progress

from cnm.client import Client

# dockerd here is started as the lab tier starts it; its cgroup mounts come from there.
from cnm.lab.cgroups import NoCgroups, cgroup_mounts
from cnm.lab.dockerd import BUSYBOX, CONTAINERD, CONTAINERD_TOML, DOCKER, DOCKERD, RUNC

PY = sys.executable
AARDVARK = "/usr/lib/podman/aardvark-dns"
DNSPERF = "dnsperf"
SEQ_RUNS = 20  # sequential passes over the names for the latency figures
RT_PRIORITY = 10  # SCHED_FIFO priority of the "quiet machine" latency pass
GAP = 0.001  # silence before each query of the spaced passes (s)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

CNM_SUBNET, DOCKER_SUBNET, AARD_SUBNET = "10.150.0.0/16", "10.151.0.0/16", "10.152.0.0/16"
DOCKER_NO_UPSTREAM = "10.151.255.254"  # on Docker's own bridge; nothing answers there


# ------------------------------------------------------------------------------ helpers
def run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("timeout", 120)
    return benchcommon.run(*cmd, check=check, **kw)


def pct(xs: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


def name_list(n: int) -> list[str]:
    return [f"n{i}" for i in range(n)]


def groups(n: int, per: int) -> list[tuple[str, list[str]]]:
    """n0 .. n{n-1} as holders of ``per`` names each: (name, [aliases])."""
    names = name_list(n)
    return [(names[k], names[k + 1:k + per]) for k in range(0, n, per)]


def _cpu() -> tuple[int, int]:
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return f[2] + f[5] + f[6], sum(f)


def settle(limit: float = 15.0, quiet: float = 0.05) -> float:
    """Wait until the kernel is idle: deleting namespaces leaves cleanup work to a kernel
    worker for seconds, which would be charged to whatever runs next."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        k0, a0 = _cpu()
        time.sleep(0.5)
        k1, a1 = _cpu()
        if a1 > a0 and (k1 - k0) / (a1 - a0) < quiet:
            break
    return time.monotonic() - t0


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def nfds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def owned(pid: int, marker: str) -> bool:
    """Whether ``pid`` is still a process whose command line names ``marker`` (our temp
    dir), so a stale pid can never make us signal somebody else's process."""
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_owned(pid: int, marker: str, timeout: float = 10) -> None:
    """SIGTERM ``pid`` if it is ours, SIGKILL it if it has not gone after ``timeout``."""
    if not owned(pid, marker):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and owned(pid, marker):
        time.sleep(0.05)
    if owned(pid, marker):
        os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------ cleanup
class Namespaces:
    """Throwaway namespaces, all named cnmdns-<tag>-*, all deleted by the janitor."""

    def __init__(self, tag: str, janitor: Janitor) -> None:
        self.prefix = f"cnmdns-{tag}"
        self.live: set[str] = set()
        janitor.push("delete namespaces", lambda: self.delete(list(self.live)))

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.live.add(name)  # before creating: a half-done add still gets deleted
        run("ip", "netns", "add", name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            run("ip", "netns", "del", name, check=False)
            self.live.discard(name)


# ------------------------------------------------------------------------------ clients
_RESOLVE = """
import socket, sys
from dnslib import DNSRecord
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(DNSRecord.question(sys.argv[1]).pack(), (sys.argv[2], 53))
r = DNSRecord.parse(s.recv(4096))
print(" ".join(str(a.rdata) for a in r.rr if a.rtype == 1))
"""


def resolve(netns: str, server: str, name: str) -> str:
    """The A records ``server`` gives for ``name``, asked from inside ``netns``."""
    return run("nsenter", f"--net={netns}", PY, "-c", _RESOLVE, name, server,
               timeout=20).stdout.strip()


def check_answers(netns: str, server: str, expect: dict[str, str]) -> None:
    """The server answers a few names with the addresses they should have."""
    for name, ip in expect.items():
        got = resolve(netns, server, name)
        if got != ip:
            raise RuntimeError(f"{server} answered {name} with {got!r}, expected {ip}")


def dnsperf_version() -> str:
    r = run(DNSPERF, "-h", check=False)
    m = re.search(r"Version (\S+)", r.stdout + r.stderr)
    return m.group(1) if m else "unknown"


def _dnsperf(netns: str, server: str, queries: Path, *args: str,
             timeout: float = 300) -> str:
    return run("nsenter", f"--net={netns}", DNSPERF, "-s", server, "-d", str(queries),
               *args, timeout=timeout).stdout


def load(netns: str, server: str, queries: Path, seconds: float, pid: int) -> dict[str, Any]:
    """dnsperf for ``seconds`` (its defaults: 1 thread, 100 queries outstanding), and the
    CPU the server process used meanwhile."""
    cpu0, t0 = proc_cpu(pid), time.monotonic()
    out = _dnsperf(netns, server, queries, "-l", str(seconds), "-t", "2",
                   timeout=seconds + 60)
    cpu = (proc_cpu(pid) - cpu0) / (time.monotonic() - t0)

    def field(label: str) -> str:
        m = re.search(rf"^\s*{re.escape(label)}:\s*(.*)$", out, re.M)
        if m is None:
            raise RuntimeError(f"dnsperf printed no {label!r}:\n{out}")
        return m.group(1)

    avg = field("Average Latency (s)")
    return {
        "qps": float(field("Queries per second")),
        "sent": int(field("Queries sent").split()[0]),
        "lost": int(field("Queries lost").split()[0]),
        "rcodes": field("Response codes"),
        "avg_ms": float(avg.split()[0]) * 1000,
        "max_ms": float(re.search(r"max ([\d.]+)", avg).group(1)) * 1000,  # type: ignore[union-attr]
        "stddev_ms": float(field("Latency StdDev (s)").split()[0]) * 1000,
        "server_cores": cpu,
    }


# One query at a time, timed around sendto/recvfrom. dnsperf -q 1 would do, but it idles
# ~7 ms between queries here, so 20,000 queries would take minutes per server.
_SEQUENTIAL = r"""
import json, socket, struct, sys, time
server, path, runs, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
names = [line.split()[0] for line in open(path) if line.strip()]
wires = []
for r in range(runs):
    for name in names:
        qid = len(wires) & 0xFFFF
        wires.append(struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0)
                     + b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
                     + b"\0" + struct.pack("!HH", 1, 1))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
lat, bad, lost = [], 0, 0
clock = time.perf_counter_ns
for w in wires:
    if gap:
        time.sleep(gap)
    t0 = clock()
    s.sendto(w, (server, 53))
    try:
        while True:
            d = s.recv(4096)
            if d[:2] == w[:2]:
                break
    except socket.timeout:
        lost += 1
        continue
    lat.append(clock() - t0)
    if d[3] & 0x0F or struct.unpack("!H", d[6:8])[0] < 1:  # not NOERROR with an answer
        bad += 1
print(json.dumps({"lat_ns": lat, "bad": bad, "lost": lost}))
"""


def sequential(netns: str, server: str, queries: Path, runs: int, gap: float = 0.0,
               rt_pid: int | None = None) -> dict[str, Any]:
    """``runs`` passes over the names, one query outstanding, each timed from send to
    answer by a small client of ours (in Python: the floor row shows its share). Back to
    back, or with ``gap`` seconds of silence before each query, as a program that
    resolves now and then: the server is asleep when the query comes.

    With ``rt_pid``, every thread of that server process and the client run SCHED_FIFO
    for the pass (restored after): other work on the machine can then not delay a
    wake-up, so the tail shows the server's own cost rather than the machine's load."""
    cmd = ["nsenter", f"--net={netns}", PY, "-c", _SEQUENTIAL, server, str(queries),
           str(runs), str(gap)]
    if rt_pid is None:
        out = run(*cmd, timeout=600).stdout
    else:
        run("chrt", "-a", "-f", "-p", str(RT_PRIORITY), str(rt_pid))
        try:
            out = run("chrt", "-f", str(RT_PRIORITY), *cmd, timeout=600).stdout
        finally:
            run("chrt", "-a", "-o", "-p", "0", str(rt_pid), check=False)
    got = json.loads(out)
    lat = [x / 1e6 for x in got["lat_ns"]]
    if not lat:
        raise RuntimeError(f"{server} answered none of the sequential queries")
    return {"n": len(lat), "not_noerror": got["bad"], "lost": got["lost"],
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
            "p999_ms": pct(lat, 99.9), "max_ms": max(lat), "mean_ms": statistics.fmean(lat)}


@dataclass
class Target:
    """A server that is up, and where to ask it from."""

    name: str
    netns: str  # the client's network namespace
    server: str  # the address dnsperf asks
    pid: int  # the process that answers (CPU, scheduling)
    info: dict[str, Any] = field(default_factory=dict)


def measure_all(targets: list[Target], queries: Path, n: int, seconds: float, rounds: int,
                runs: int) -> dict[str, dict[str, Any]]:
    """Every server measured the same way, interleaved so that the machine's other load
    falls on all of them alike: a cold pass, ``rounds`` dnsperf load runs per server in
    rotating order, then the sequential passes (plain, then SCHED_FIFO)."""
    out: dict[str, dict[str, Any]] = {t.name: {"names": n, **t.info} for t in targets}
    for t in targets:
        progress(f"{t.name}: cold pass over {n} names")
        out[t.name]["cold"] = sequential(t.netns, t.server, queries, 1, GAP)
    loads: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    each = seconds / rounds
    for r in range(rounds):
        for t in targets[r % len(targets):] + targets[:r % len(targets)]:
            progress(f"{t.name}: dnsperf load {r + 1}/{rounds}, {each:g} s")
            loads[t.name].append(load(t.netns, t.server, queries, each, t.pid))
    for t in targets:
        out[t.name]["load"] = combine(loads[t.name])
    spaced = max(1, runs // 4)
    for t in targets:
        progress(f"{t.name}: {runs * n} sequential queries, back to back")
        out[t.name]["sequential"] = sequential(t.netns, t.server, queries, runs)
        progress(f"{t.name}: {spaced * n} sequential queries, {GAP * 1000:g} ms apart")
        out[t.name]["spaced"] = sequential(t.netns, t.server, queries, spaced, GAP)
        progress(f"{t.name}: the same, server and client SCHED_FIFO")
        out[t.name]["spaced_rt"] = sequential(t.netns, t.server, queries, spaced, GAP,
                                              rt_pid=t.pid)
    return out


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The load rounds of one server: median q/s (the headline), and the rest summed or
    averaged over the rounds."""
    qps = [r["qps"] for r in rounds]
    sent = sum(r["sent"] for r in rounds)
    return {
        "qps": statistics.median(qps), "qps_rounds": [round(q) for q in qps],
        "sent": sent, "lost": sum(r["lost"] for r in rounds),
        "rcodes": "; ".join(sorted({r["rcodes"].split()[0] for r in rounds})),
        "all_noerror": all(r["rcodes"].startswith("NOERROR") and "(100.00%)" in r["rcodes"]
                           for r in rounds),
        "avg_ms": sum(r["avg_ms"] * r["sent"] for r in rounds) / sent,
        "max_ms": max(r["max_ms"] for r in rounds),
        "server_cores": statistics.fmean(r["server_cores"] for r in rounds),
    }


# ------------------------------------------------------------------------------ cnm
def start_cnm(nss: Namespaces, root: Path, janitor: Janitor, n: int, sandboxes: int) -> Target:
    """cnmd on a throwaway host namespace; ``sandboxes`` sandboxes on a user-defined
    network hold the N names (each its name and aliases); dnsperf runs in the first."""
    host = nss.add("cnm")
    root.mkdir()
    empty = root / "resolv.conf"
    empty.write_text("# no nameserver: nothing may be forwarded\n")
    run_dir, sock, log = root / "run", root / "cnm.sock", root / "cnmd.log"
    address = f"unix://{sock}"
    # Under nsenter as well as --netns: even a stray call lands in the throwaway namespace.
    cmd = ["nsenter", f"--net=/run/netns/{host}", PY, "-m", "cnm", "daemon",
           "--netns", f"/run/netns/{host}", "--state-dir", str(root / "state"),
           "--run-dir", str(run_dir), "-H", address, "--resolv-conf", str(empty),
           "--docker-plugin", "none"]
    with open(log, "ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=logf)

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        ns_dir = run_dir / "netns"
        if ns_dir.is_dir():
            for entry in ns_dir.iterdir():
                run("umount", "-l", str(entry), check=False)
                entry.unlink(missing_ok=True)

    janitor.push("stop cnmd", stop)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"cnmd exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            c = Client(address, timeout=60)
            c.call("GET", "/v1/_ping")
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise RuntimeError("cnmd did not answer /v1/_ping within 30 s") from None
            time.sleep(0.05)
    pid = proc.pid  # nsenter execs cnmd: same process
    c.create_network(name="dnsnet", subnets=[CNM_SUBNET])
    # Sandboxes on the default bridge have no DNS listener: what a sandbox costs cnmd
    # without one, to tell the listener's own share apart.
    time.sleep(0.5)
    rss0, fds0 = rss_kib(pid), nfds(pid)
    plain = min(50, sandboxes)
    progress(f"cnm: {plain} sandboxes on the default bridge (no DNS listener)")
    for i in range(plain):
        c.create_sandbox(name=f"plain{i}", network="bridge")
    time.sleep(0.5)
    rss_plain, fds_plain = rss_kib(pid), nfds(pid)
    holders = groups(n, -(-n // sandboxes))
    progress(f"cnm: {len(holders)} sandboxes holding {n} names")
    t0 = time.monotonic()
    sbs: list[dict[str, Any]] = []
    try:
        for name, aliases in holders:
            sbs.append(c.create_sandbox(name=name, network="dnsnet", aliases=aliases))
    except Exception as e:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        died = f"cnmd exited {proc.poll()}" if proc.poll() is not None else "cnmd still runs"
        raise RuntimeError(f"create_sandbox failed after {len(sbs)} DNS sandboxes "
                           f"({plain} plain ones before): {e}; {died}; its log ends:\n"
                           f"{log.read_text()[-600:]}") from None
    create_s = time.monotonic() - t0
    time.sleep(0.5)  # the DNS thread registers new listeners asynchronously
    rss_n, fds_n = rss_kib(pid), nfds(pid)
    client_ns = sbs[0]["netns"]
    resolv = Path(sbs[0]["resolv_conf_path"]).read_text()
    if "nameserver 127.0.0.11" not in resolv:
        raise RuntimeError(f"sandbox resolv.conf does not name 127.0.0.11:\n{resolv}")
    ip = {sb["name"]: sb["endpoints"][0]["ipv4"].split("/")[0] for sb in sbs}
    last_name, last_aliases = holders[-1]
    check_answers(client_ns, "127.0.0.11", {
        holders[1][0]: ip[holders[1][0]],
        (last_aliases or [last_name])[-1]: ip[last_name]})
    c.close()
    k = len(sbs)
    out: dict[str, Any] = {"sandboxes": k, "plain_sandboxes": plain}
    out["rss_kib"] = {"start": rss0, "plain": rss_plain, "listeners_n": rss_n}
    # RSS with K listeners minus RSS with none, over K (each of the K sandboxes brings its
    # own state too); then with a plain sandbox's cost taken out.
    out["rss_per_listener_kib"] = (rss_n - rss_plain) / k
    out["rss_per_plain_sandbox_kib"] = (rss_plain - rss0) / plain
    out["rss_per_listener_only_kib"] = (rss_n - rss_plain) / k - (rss_plain - rss0) / plain
    out["fds"] = {"start": fds0, "plain": fds_plain, "listeners_n": fds_n}
    out["create_sandbox_s"] = create_s
    return Target("cnm", client_ns, "127.0.0.11", pid, out)


def profile_cnm(netns: str, queries: Path, pid: int, root: Path, seconds: float) -> str:
    """py-spy on cnmd's DNS thread during a second load run: where the time goes."""
    spy = Path(PY).with_name("py-spy")
    if not spy.exists():
        return "py-spy not installed in the venv (bash bench/install.sh installs it)"
    raw = root / "pyspy.txt"
    progress("cnm: py-spy during a second load run")
    rec = subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", str(int(seconds)),
                            "-f", "raw", "-o", str(raw), "--nonblocking", "-r", "250"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    _dnsperf(netns, "127.0.0.11", queries, "-l", str(seconds), timeout=seconds + 60)
    rec.wait(timeout=60)
    if not raw.exists():
        return "py-spy wrote nothing"
    # Leaf functions of the DNS thread (raw lines: "frame;frame;... count").
    leaves: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "_loop" not in stack:
            continue
        k = int(count)
        total += k
        leaf = stack.split(";")[-1]
        leaves[leaf] = leaves.get(leaf, 0) + k
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:12]
    return "\n".join(f"{100 * k / total:5.1f}%  {f}" for f, k in top) if total else "no samples"


# ------------------------------------------------------------------------------ floor
# The floor for any Python server (REFERENCE.md §2): one loop answering from a dict of
# wire replies keyed by the query after its ID, on plain loopback (no DNAT).
_FLOOR = r"""
import socket, struct, sys
n = int(sys.argv[1])
table = {}
for i in range(n):
    q = b"".join(bytes([len(p)]) + p.encode() for p in f"n{i}".split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 153, i >> 8, i & 255])
    table[struct.pack("!5H", 0x0100, 1, 0, 0, 0) + q] = (
        struct.pack("!5H", 0x8180, 1, 1, 0, 0) + q + answer)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    data, client = s.recvfrom(4096)
    hit = table.get(data[2:])
    if hit is not None:
        s.sendto(data[:2] + hit, client)
"""


def start_floor(nss: Namespaces, janitor: Janitor, n: int) -> Target:
    ns = nss.add("floor")
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", PY, "-c", _FLOOR, str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    janitor.push("stop the floor server", stop)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the floor server did not start")
    client = f"/run/netns/{ns}"
    check_answers(client, "127.0.0.1", {"n1": "10.153.0.1", f"n{n - 1}":
                                        f"10.153.{(n - 1) >> 8}.{(n - 1) & 255}"})
    return Target("floor", client, "127.0.0.1", proc.pid)


# ------------------------------------------------------------------------------ aardvark
def start_aardvark(nss: Namespaces, root: Path, janitor: Janitor, n: int) -> Target:
    """aardvark-dns started by hand on a bridge, as netavark would, with one config file
    holding the N names; the client is a namespace on that bridge whose address is the
    first name's (aardvark answers only the containers it knows, by source address)."""
    if not os.access(AARDVARK, os.X_OK):
        raise Skip(f"{AARDVARK} is missing (Debian package aardvark-dns; "
                   "bash bench/install.sh installs it)")
    host, cli = nss.add("aard"), nss.add("aardc")
    root.mkdir()
    run("ip", "-n", host, "link", "add", "aardbr0", "type", "bridge")
    run("ip", "-n", host, "addr", "add", "10.152.0.1/16", "dev", "aardbr0")
    run("ip", "-n", host, "link", "set", "aardbr0", "up")
    run("ip", "-n", host, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0",
        "netns", cli)
    run("ip", "-n", host, "link", "set", "veth0", "master", "aardbr0", "up")
    run("ip", "-n", cli, "addr", "add", "10.152.0.2/16", "dev", "eth0")
    run("ip", "-n", cli, "link", "set", "eth0", "up")
    conf = root / "conf"
    conf.mkdir()
    ips = [f"10.152.{(i + 2) >> 8}.{(i + 2) & 255}" for i in range(n)]
    lines = ["10.152.0.1"] + [f"{secrets.token_hex(32)} {ip}  {name}"
                              for name, ip in zip(name_list(n), ips, strict=True)]
    (conf / "dnsnet").write_text("\n".join(lines) + "\n")
    empty = root / "resolv.conf"
    empty.write_text("# no nameserver: nothing may be forwarded\n")
    pidfile = conf / "aardvark.pid"

    def stop() -> None:
        with contextlib.suppress(OSError, ValueError):
            kill_owned(int(pidfile.read_text().strip()), str(conf))

    janitor.push("stop aardvark-dns", stop)
    # `ip netns exec` gives a private mount namespace: the empty resolv.conf is seen by
    # aardvark only. `run` forks; the parent returns once the server is ready.
    script = (f"mount --bind {shlex.quote(str(empty))} /etc/resolv.conf && "
              f"exec {AARDVARK} --config {shlex.quote(str(conf))} -p 53 run")
    r = run("ip", "netns", "exec", host, "sh", "-c", script, check=False, timeout=30)
    if r.returncode != 0 or not pidfile.exists():
        raise RuntimeError(f"aardvark-dns did not start ({r.returncode}): {r.stderr.strip()}")
    pid = int(pidfile.read_text().strip())
    client = f"/run/netns/{cli}"
    check_answers(client, "10.152.0.1", {"n1": ips[1], f"n{n - 1}": ips[-1]})
    version = run(AARDVARK, "--version", check=False).stdout.strip()
    return Target("aardvark", client, "10.152.0.1", pid, {"version": version})


# ------------------------------------------------------------------------------ docker
# Runs as `ip netns exec NS bash -c WRAPPER bash DIR` (the recipe of cnm/lab/dockerd.py,
# plus an empty /etc/resolv.conf): a private mount namespace with the machine's cgroup
# hierarchies mounted again, tmpfs on /run and /etc/docker (dockerd writes there whatever
# its flags say), then containerd and dockerd with private paths. SIGTERM stops both.
WRAPPER = """set -eu
dir=$1
{mounts}
mount -t tmpfs -o mode=755 cnmdns-run /run
mount -t tmpfs -o mode=755 cnmdns-etc-docker /etc/docker
mount --bind "$dir/resolv.conf" /etc/resolv.conf
containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
cpid=$!
echo $cpid >"$dir/containerd.pid"
for _ in $(seq 300); do [ -S "$dir/containerd.sock" ] && break; sleep 0.1; done
dockerd --containerd "$dir/containerd.sock" --data-root "$dir/data" \\
  --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" -H "unix://$dir/docker.sock" \\
  --config-file "$dir/daemon.json" >"$dir/dockerd.log" 2>&1 &
dpid=$!
stop() {{ kill -TERM $dpid 2>/dev/null; wait $dpid; kill -TERM $cpid 2>/dev/null; wait $cpid;
         exit 0; }}
trap stop TERM INT
wait
"""


class Skip(Exception):
    """A peer that cannot run here; the message says why."""


def start_docker(nss: Namespaces, root: Path, janitor: Janitor, n: int,
                 per_container: int) -> Target:
    """dockerd 20.10 in its own namespace; ceil(N / per_container) busybox containers on a
    user-defined network, each with its name and per_container - 1 network aliases, so the
    names are n0 .. n{N-1} as for the others. dnsperf runs in the first container's
    network namespace."""
    gone = [p for p in (DOCKERD, CONTAINERD, RUNC, DOCKER, BUSYBOX) if not os.access(p, os.X_OK)]
    if gone:
        raise Skip(f"missing {', '.join(benchcommon.missing_peers(*gone))}: "
                   "bash bench/install.sh installs them")
    try:
        mounts = cgroup_mounts()
    except NoCgroups as e:
        raise Skip(str(e)) from e
    host = nss.add("dock")
    d = root / "docker"
    d.mkdir(parents=True)
    (d / "containerd.toml").write_text(CONTAINERD_TOML.format(dir=d))
    (d / "daemon.json").write_text(json.dumps({"dns": [DOCKER_NO_UPSTREAM]}) + "\n")
    (d / "resolv.conf").write_text("# no nameserver: nothing may be forwarded\n")
    env = {**os.environ, "DOCKER_CONFIG": str(d / "client")}
    env.pop("DOCKER_HOST", None)

    def docker(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run(DOCKER, "-H", f"unix://{d}/docker.sock", *args, env=env, timeout=timeout,
                   **kw)

    with open(d / "wrapper.log", "ab") as logf:
        wrapper = subprocess.Popen(
            ["ip", "netns", "exec", host, "bash", "-c", WRAPPER.format(mounts=mounts),
             "bash", str(d)], stdout=logf, stderr=logf)
    containers: list[str] = []

    def stop() -> None:
        if containers:  # sleep as PID 1 ignores SIGTERM: kill them rather than wait 10 s each
            docker("rm", "-f", *containers, check=False, timeout=120)
        if wrapper.poll() is None:
            wrapper.send_signal(signal.SIGTERM)
            try:
                wrapper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for name in ("dockerd.pid", "containerd.pid"):
                    with contextlib.suppress(OSError, ValueError):
                        kill_owned(int((d / name).read_text().strip()), str(d), timeout=5)
                wrapper.kill()
                wrapper.wait()

    janitor.push("stop dockerd and containerd", stop)
    deadline = time.monotonic() + 90
    while docker("info", "--format", "{{.ServerVersion}}", check=False,
                 timeout=10).returncode != 0:
        if wrapper.poll() is not None or time.monotonic() > deadline:
            logs = "\n".join((d / f).read_text()[-1500:] for f in ("wrapper.log", "dockerd.log")
                             if (d / f).exists())
            raise RuntimeError(f"dockerd did not come up:\n{logs}")
        time.sleep(0.2)
    version = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    rootfs = d / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    docker("import", "-", "bb:local", stdin=tar.stdout)
    tar.wait()
    docker("network", "create", "--subnet", DOCKER_SUBNET, "dnsnet")
    holders = groups(n, per_container)
    progress(f"docker: {len(holders)} containers holding {n} names")
    for name, aliases in holders:
        flags = [f for a in aliases for f in ("--network-alias", a)]
        docker("run", "-d", "--name", name, "--network", "dnsnet", *flags,
               "bb:local", "/bin/sleep", "1000000")
        containers.append(name)
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", containers[0]).stdout)
    client = f"/proc/{pid}/ns/net"
    dockerd_pid = int((d / "dockerd.pid").read_text().strip())

    def ip_of(container: str) -> str:
        return docker("inspect", "-f", "{{(index .NetworkSettings.Networks \"dnsnet\")"
                      ".IPAddress}}", container).stdout.strip()

    last = containers[-1]
    check_answers(client, "127.0.0.11", {holders[0][1][0]: ip_of(containers[0]),
                                         holders[-1][1][-1]: ip_of(last), last: ip_of(last)})
    return Target("docker", client, "127.0.0.11", dockerd_pid,
                  {"version": version, "containers": len(containers)})


# ------------------------------------------------------------------------------ report
def report(res: dict[str, Any]) -> list[str]:
    peers = [p for p in ("cnm", "aardvark", "docker", "floor") if isinstance(res.get(p), dict)]
    lines = [f"{'server':<9} {'names':>5} {'q/s':>8} {'avg ms':>6} {'lost':>4} {'cores':>5} "
             f"{'p50':>6} {'p99':>6} {'p99.9':>6} {'sp p50':>6} {'sp p99':>6} {'rt p99':>6} "
             f"{'cold p99':>8}"]
    for p in peers:
        r = res[p]
        ld, seq, sp, rt = r["load"], r["sequential"], r["spaced"], r["spaced_rt"]
        lines.append(f"{p:<9} {r['names']:>5} {ld['qps']:8.0f} {ld['avg_ms']:6.3f} "
                     f"{ld['lost']:>4} {ld['server_cores']:5.2f} {seq['p50_ms']:6.3f} "
                     f"{seq['p99_ms']:6.3f} {seq['p999_ms']:6.3f} {sp['p50_ms']:6.3f} "
                     f"{sp['p99_ms']:6.3f} {rt['p99_ms']:6.3f} {r['cold']['p99_ms']:8.3f}")
    lines.append("  q/s, avg: dnsperf load runs; cores: server CPU meanwhile; p50/p99/p99.9 (ms): "
                 "one query at a time, back to back; sp: one query every ~1 ms; rt: spaced, "
                 "server and client SCHED_FIFO; cold: first query of each name; floor: a bare "
                 "Python dict loop on loopback, not a peer")
    for p in peers:
        lines.append(f"  {p}: q/s per round {res[p]['load']['qps_rounds']}"
                     + (f"; {res[p]['version']}" if "version" in res[p] else ""))
    for p in ("cnm", "aardvark", "docker"):
        if isinstance(res.get(p), str):
            lines.append(f"{p} did not run: {res[p]}")
    for p in peers:
        seqs = [res[p][k] for k in ("cold", "sequential", "spaced", "spaced_rt")]
        if not res[p]["load"]["all_noerror"] or any(x["not_noerror"] or x["lost"]
                                                    for x in seqs):
            lines.append(f"  WARNING {p}: not every answer was NOERROR "
                         f"({res[p]['load']['rcodes']}); see the JSON")
    cnm = res.get("cnm")
    if isinstance(cnm, dict):
        others = [(res[p]["load"]["qps"], p) for p in peers if p in ("aardvark", "docker")]
        lines.append("")
        if others:
            best, who = max(others)
            ratio = cnm["load"]["qps"] / best
            lines.append(f"cnm q/s / faster peer ({who}): {ratio:.2f}  (goal >= 1.5: "
                         f"{'yes' if ratio >= 1.5 else 'NO'})")
        for key, how in (("sequential", "back to back"), ("spaced", "1 ms apart"),
                         ("spaced_rt", "1 ms apart, SCHED_FIFO")):
            p99 = cnm[key]["p99_ms"]
            lines.append(f"cnm p99, one query at a time, {how}: {p99:.3f} ms  (goal <= 1 ms: "
                         f"{'yes' if p99 <= 1 else 'NO'})")
        rss, fds = cnm["rss_kib"], cnm["fds"]
        lines.append(f"cnm memory per sandbox listener: {cnm['rss_per_listener_kib']:.1f} KiB "
                     f"(cnmd RSS {rss['plain'] / 1024:.1f} MiB with 0 listeners, "
                     f"{rss['listeners_n'] / 1024:.1f} MiB with {cnm['sandboxes']}, over "
                     f"{cnm['sandboxes']}; {rss['after'] / 1024:.1f} MiB after the queries)")
        lines.append(f"  of which a sandbox without a listener costs "
                     f"{cnm['rss_per_plain_sandbox_kib']:.1f} KiB ({cnm['plain_sandboxes']} on "
                     f"the default bridge): the listener itself ~"
                     f"{cnm['rss_per_listener_only_kib']:.1f} KiB")
        per_dns = (fds["listeners_n"] - fds["plain"]) / cnm["sandboxes"]
        per_plain = (fds["plain"] - fds["start"]) / cnm["plain_sandboxes"]
        lines.append(f"  cnmd file descriptors: {fds['listeners_n']} ({per_dns:.1f} per sandbox "
                     f"with a listener, {per_plain:.1f} without)")
        if "profile" in cnm:
            lines.append("cnm DNS thread, leaf functions under load (py-spy):")
            lines += [f"  {x}" for x in cnm["profile"].splitlines()]
    return lines


# ------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 names, 2 x 1.5 s: a smoke run")
    p.add_argument("--seconds", type=float,
                   help="dnsperf load time per server, split over the rounds (default 15)")
    p.add_argument("--rounds", type=int, help="interleaved load rounds (default 5; 2 quick)")
    p.add_argument("--only", choices=("cnm", "aardvark", "docker", "floor"), action="append",
                   help="run only these servers (repeatable)")
    p.add_argument("--cnm-sandboxes", type=int, metavar="K",
                   help="cnm sandboxes holding the names (default 200, 25 quick; see DNS.md "
                        "for why not 1,000)")
    p.add_argument("--json", default=str(Path(__file__).with_name("results-dns.json")),
                   help="where to write the results (default bench/results-dns.json)")
    p.add_argument("--profile", action="store_true",
                   help="also run py-spy on cnmd during one more load run")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/dns.py needs root (namespaces)", file=sys.stderr)
        return 2
    if not benchcommon.need_peers("bench/dns.py", DNSPERF):
        return 2
    n, seconds, rounds, sandboxes, per_container = (100, 3.0, 2, 25, 50) if args.quick \
        else (1000, 15.0, 5, 200, 100)
    seconds, rounds = args.seconds or seconds, args.rounds or rounds
    sandboxes = min(n, args.cnm_sandboxes or sandboxes)
    runs = SEQ_RUNS
    parts = args.only or ["cnm", "aardvark", "docker", "floor"]

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    janitor = Janitor()
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix=f"cnmdns-{tag}-"))
    janitor.push("remove temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    nss = Namespaces(tag, janitor)
    queries = root / "queries.txt"
    queries.write_text("".join(f"{name} A\n" for name in name_list(n)))
    res: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([PY, sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick, "host": platform.node(), "kernel": platform.release(),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "dnsperf": dnsperf_version(),
        "n": n, "seconds": seconds, "rounds": rounds, "sequential_runs": runs,
        "loadavg_start": os.getloadavg(),
    }
    starts: dict[str, Callable[[], Target]] = {
        "docker": lambda: start_docker(nss, root / "docker", janitor, n, per_container),
        "aardvark": lambda: start_aardvark(nss, root / "aardvark", janitor, n),
        "cnm": lambda: start_cnm(nss, root / "cnm", janitor, n, sandboxes),
        "floor": lambda: start_floor(nss, janitor, n),
    }
    try:
        res["settled_s"] = settle()
        targets = []
        for part in parts:
            progress(f"starting {part}")
            try:
                targets.append(starts[part]())
            except Skip as e:
                res[part] = f"cannot run here: {e}"
            except RuntimeError as e:
                if part == "cnm":
                    raise
                res[part] = f"failed to start: {e}"
            if isinstance(res.get(part), str):
                print(f"{part}: {res[part]}", file=sys.stderr)
        res.update(measure_all(targets, queries, n, seconds, rounds, runs))
        for t in targets:
            if t.name == "cnm":
                res["cnm"]["rss_kib"]["after"] = rss_kib(t.pid)
                if args.profile:
                    res["cnm"]["profile"] = profile_cnm(t.netns, queries, t.pid, root, 10)
        res["loadavg_end"] = os.getloadavg()
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        janitor.clean()
        return 130
    finally:
        janitor.clean()
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(f"\ncnm embedded DNS beside its peers, {res['date']}, "
          f"{'quick' if args.quick else 'full'} run: {n} names; dnsperf {seconds:g} s per "
          f"server in {rounds} interleaved rounds (median q/s); p50/p99 over {runs * n} "
          f"sequential queries; load average {res['loadavg_start'][0]:.1f} -> "
          f"{res['loadavg_end'][0]:.1f} on {res['cpus']} CPUs")
    print("\n".join(report(res)))
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
