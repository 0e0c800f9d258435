#!/usr/bin/env python3
"""cnm beside its peers, in one run: connect/disconnect vs CNI ADD/DEL, 1,000 endpoints on
one bridge, network create vs podman. Prints medians and ratios; writes JSON.

    .venv/bin/python bench/run.py [--quick] [--json PATH] [--no-cni-scale]

Everything runs against throwaway namespaces named cnmbench-<tag>-*: the cnm daemon and
each peer get their own "host" namespace, deleted at the end even on failure or Ctrl-C.
Nothing touches the machine's own namespace, routes or firewall; no packet leaves the
namespaces made here. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from benchcommon import Janitor, median, ms, need_peers, progress, run

from cnm.client import Client
from cnm.errors import CnmError

PY = sys.executable
CNM_CLI = str(Path(PY).with_name("cnm"))
CNI_PATH = "/usr/lib/cni"
GRAVEYARD_GROUP = 0x636E6D  # cnm.names.GRAVEYARD_GROUP: retired links awaiting the reaper
CLONE_NEWNET, CLONE_NEWNS = 0x40000000, 0x00020000
MS_REC, MS_SLAVE = 16384, 1 << 19


# ------------------------------------------------------------------------------ helpers
def summary(xs: Sequence[float]) -> dict[str, Any]:
    """Median, spread and the raw samples (ms)."""
    s = sorted(xs)
    if not s:
        return {"n": 0}
    return {"n": len(s), "median": median(s), "p10": s[len(s) // 10],
            "p90": s[min(len(s) - 1, (len(s) * 9) // 10)], "min": s[0], "max": s[-1],
            "samples": [round(x, 3) for x in xs]}


def series(xs: Sequence[float]) -> dict[str, Any]:
    """A growth series: medians of the first/last 10 and 100, and their ratios."""
    out = summary(xs)
    k100 = min(100, len(xs) // 2) or 1
    out.update({
        "first10": median(xs[:10]), "last10": median(xs[-10:]),
        "first100": median(xs[:k100]), "last100": median(xs[-k100:]),
    })
    out["ratio_last10_first10"] = out["last10"] / out["first10"]
    out["ratio_last100_first100"] = out["last100"] / out["first100"]
    return out


def timed(fn: Callable[..., Any], *args: Any, **kw: Any) -> float:
    """Milliseconds that ``fn(*args, **kw)`` took."""
    t0 = time.perf_counter()
    fn(*args, **kw)
    return ms(time.perf_counter() - t0)


def ns_batch(verb: str, names: Iterable[str]) -> None:
    """`ip netns add|del` for many namespaces in one ip process (-force: carry on)."""
    lines = "".join(f"netns {verb} {n}\n" for n in names)
    if lines:
        run("ip", "-force", "-batch", "-", input=lines, check=verb == "add")


def _cpu() -> tuple[int, int]:
    """(kernel-side jiffies: system + irq + softirq, all jiffies) from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return f[2] + f[5] + f[6], sum(f)


def settle(limit: float = 30.0, quiet: float = 0.05) -> float:
    """Wait until the kernel is idle again: deleting namespaces leaves cleanup work (and the
    rtnl lock) to a kernel worker for seconds after `ip netns del` returns, which would be
    charged to whatever runs next. Seconds waited (gives up after ``limit``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        k0, a0 = _cpu()
        time.sleep(0.5)
        k1, a1 = _cpu()
        if a1 > a0 and (k1 - k0) / (a1 - a0) < quiet:
            break
    return time.monotonic() - t0


# ------------------------------------------------------------------------------ cleanup
class Namespaces:
    """Throwaway namespaces, all named cnmbench-<tag>-*, all deleted by the janitor."""

    def __init__(self, tag: str, janitor: Janitor) -> None:
        self.prefix = f"cnmbench-{tag}"
        self.live: set[str] = set()
        janitor.push("delete namespaces", lambda: self.delete(list(self.live)))

    def add(self, *suffixes: str) -> list[str]:
        names = [f"{self.prefix}-{s}" for s in suffixes]
        self.live.update(names)  # before creating: a half-done batch still gets deleted
        ns_batch("add", names)
        return names

    def delete(self, names: Sequence[str]) -> None:
        ns_batch("del", names)
        self.live.difference_update(names)


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p]
    return libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


# ------------------------------------------------------------------------------ cnm
class CnmDaemon:
    """cnmd on a throwaway host namespace, with its own state, run dir and socket."""

    def __init__(self, ns: str, root: Path, janitor: Janitor) -> None:
        self.ns, self.root = ns, root
        self.run_dir = root / "run"
        self.sock = root / "cnm.sock"
        self.address = f"unix://{self.sock}"
        self.log = root / "cnmd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        janitor.push("stop cnmd", self.stop)

    def start(self) -> None:
        # Under nsenter as well as --netns: even a stray call in the daemon's own namespace
        # lands in the throwaway one.
        cmd = ["nsenter", f"--net=/run/netns/{self.ns}", PY, "-m", "cnm", "daemon",
               "--netns", f"/run/netns/{self.ns}", "--state-dir", str(self.root / "state"),
               "--run-dir", str(self.run_dir), "-H", self.address,
               "--docker-plugin", "none"]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cnmd exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-2000:]}")
            try:
                c = Client(self.address, timeout=2)
                c.call("GET", "/v1/_ping")
                c.close()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.05)
        raise RuntimeError("cnmd did not answer /v1/_ping within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        ns_dir = self.run_dir / "netns"
        if ns_dir.is_dir():
            for entry in ns_dir.iterdir():
                subprocess.run(["umount", "-l", str(entry)], capture_output=True)
                entry.unlink(missing_ok=True)

    def graveyard(self) -> int:
        """Retired links in the host namespace still waiting for the reaper."""
        out = run("ip", "-n", self.ns, "-o", "link", "show", "group", str(GRAVEYARD_GROUP)).stdout
        return len([line for line in out.splitlines() if line.strip()])

    def wait_reaped(self, timeout: float = 60) -> float:
        """Seconds until the reaper has deleted every retired link."""
        t0 = time.perf_counter()
        while self.graveyard():
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError("cnm's reaper left retired links behind")
            time.sleep(0.01)
        return time.perf_counter() - t0

    def bridge_ports(self, network: str, c: Client) -> int:
        net = c.network(network)
        bridge = net["options"].get("bridge_name") or f"cnmb{net['id'][:11]}"
        out = run("ip", "-n", self.ns, "-o", "link", "show", "master", bridge).stdout
        return len(out.splitlines())


# ------------------------------------------------------------------------------ CNI
class Cni:
    """The reference bridge + host-local plugins, called as a runtime would."""

    def __init__(self, host_ns: str, root: Path) -> None:
        self.host_ns = host_ns
        self.conf = json.dumps({
            "cniVersion": "1.0.0", "name": "cnibench", "type": "bridge", "bridge": "cnibr0",
            "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "subnet": "10.98.0.0/16",
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(root / "ipam")},
        })

    def _call(self, command: str, ns: str) -> subprocess.CompletedProcess[str]:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": ns, "CNI_NETNS": f"/run/netns/{ns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        return run("ip", "netns", "exec", self.host_ns, f"{CNI_PATH}/bridge", input=self.conf,
                   env=env)

    def add(self, ns: str) -> str:
        result = json.loads(self._call("ADD", ns).stdout)
        return str(result["ips"][0]["address"])

    def delete(self, ns: str) -> None:
        self._call("DEL", ns)

    def wrapper(self) -> None:
        """`ip netns exec HOST true`: the cost the wrapper adds to every plugin call."""
        run("ip", "netns", "exec", self.host_ns, "/bin/true")


# ------------------------------------------------------------------------------ podman
class Podman:
    """podman with every directory it writes under a temp root.

    The child enters the host namespace (as `nsenter --net` would) and gets a private mount
    namespace with a tmpfs on /run: rootful podman hard-codes netavark's run directory as
    /run/containers/networks and creates it at start, which must not land on the machine.
    """

    def __init__(self, host_ns: str, root: Path) -> None:
        self.root = root
        self.ns_path = f"/run/netns/{host_ns}"
        for d in ("tmp", "net"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.base = ["podman", "--root", str(root / "root"), "--runroot", str(root / "runroot"),
                     "--tmpdir", str(root / "libpod"), "--volumepath", str(root / "vol"),
                     "--network-config-dir", str(root / "net"), "--storage-driver", "vfs",
                     "--events-backend", "none", "--cgroup-manager", "cgroupfs"]
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": str(root / "tmp"),
                    "HOME": str(root)}

    def _enter(self) -> None:
        # Runs in the forked child before exec; the benchmark is single-threaded here.
        libc = _libc()
        fd = os.open(self.ns_path, os.O_RDONLY)
        _check(libc.setns(fd, CLONE_NEWNET), "setns")
        os.close(fd)
        _check(libc.unshare(CLONE_NEWNS), "unshare")
        _check(libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
        _check(libc.mount(b"tmpfs", b"/run", b"tmpfs", 0, None), "mount tmpfs /run")

    def __call__(self, *args: str) -> None:
        r = subprocess.run([*self.base, *args], capture_output=True, text=True, env=self.env,
                           preexec_fn=self._enter)
        if r.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {r.returncode}: {r.stderr}")


# ------------------------------------------------------------------------------ benches
def bench_connect(d: CnmDaemon, cni: Cni, nss: Namespaces, n: int, warm: int) -> dict[str, Any]:
    """connect/disconnect (second network) vs CNI bridge+host-local ADD/DEL, N each."""
    c = Client(d.address)
    c.create_network(name="base", subnets=["10.99.0.0/16"])
    c.create_network(name="bench", subnets=["10.97.0.0/16"])
    sbs = [f"cb{i}" for i in range(warm + n)]
    for name in sbs:
        c.create_sandbox(name=name, network="base")
    progress(f"cnm connect x{n}")
    for name in sbs[:warm]:
        c.connect("bench", name)
    connect = [timed(c.connect, "bench", name) for name in sbs[warm:]]
    ports = d.bridge_ports("bench", c)
    for name in sbs[:warm]:
        c.disconnect("bench", name)
    d.wait_reaped()
    progress(f"cnm disconnect x{n}")
    t0 = time.perf_counter()
    disconnect = [timed(c.disconnect, "bench", name) for name in sbs[warm:]]
    burst = time.perf_counter() - t0
    drain = d.wait_reaped()
    join: list[float] = []
    reserve: list[float] = []
    if _has_endpoints(c):
        # Docker's CreateEndpoint long before Join: the join of a reserved endpoint alone.
        progress(f"cnm endpoint create + join x{n}")
        reserve = [timed(c.call, "POST", "/v1/networks/bench/endpoints", {"name": f"r{name}"})
                   for name in sbs]
        for name in sbs[:warm]:
            c.call("POST", f"/v1/endpoints/r{name}/join", {"sandbox": name})
        join = [timed(c.call, "POST", f"/v1/endpoints/r{name}/join", {"sandbox": name})
                for name in sbs[warm:]]
    for name in sbs:
        c.remove_sandbox(name)
        if join:
            c.call("DELETE", f"/v1/endpoints/r{name}")
    c.remove_network("bench")
    c.remove_network("base")
    # The floor under every cnm figure: one HTTP request on the keep-alive connection.
    ping = [timed(c.call, "GET", "/v1/_ping") for _ in range(max(50, n))]
    c.close()

    settle()
    progress(f"CNI ADD/DEL x{n}")
    ns = nss.add(*(f"c{i}" for i in range(warm + n)))
    for x in ns[:warm]:  # the first ADD also creates cnibr0
        cni.add(x)
        cni.delete(x)
    add = [timed(cni.add, x) for x in ns[warm:]]
    dele = [timed(cni.delete, x) for x in ns[warm:]]
    nss.delete(ns)
    wrapper = [timed(cni.wrapper) for _ in range(max(10, n // 5))]
    return {
        "cnm_connect": summary(connect), "cni_add": summary(add),
        "cnm_disconnect": summary(disconnect), "cni_del": summary(dele),
        **({"cnm_endpoint_create": summary(reserve[warm:]), "cnm_join": summary(join)}
           if join else {}),
        "ip_netns_exec_wrapper": summary(wrapper), "cnm_api_ping": summary(ping),
        "bench_bridge_ports_after_connect": ports,
        # The disconnect retires the veth; the reaper deletes the batch just after. This is
        # that deletion spread over the disconnects: the throughput cost, not the latency.
        "cnm_disconnect_amortized_incl_reap": ms(burst + drain) / n,
    }


def _has_endpoints(c: Client) -> bool:
    """Whether this cnmd has reserve-then-join endpoints (an older tree has not)."""
    try:
        c.call("GET", "/v1/endpoints")
    except CnmError:
        return False
    return True


def bench_scale(d: CnmDaemon, cni: Cni | None, nss: Namespaces, n: int) -> dict[str, Any]:
    """n sandboxes (namespace + endpoint) on one /16 bridge, then n connects to another."""
    c = Client(d.address)
    c.create_network(name="big", subnets=["10.100.0.0/16"])
    c.create_network(name="big2", subnets=["10.101.0.0/16"])
    names = [f"s{i}" for i in range(n)]
    progress(f"cnm create_sandbox(network=big) x{n}")
    create = [timed(c.create_sandbox, name=name, network="big") for name in names]
    progress(f"cnm connect(big2) x{n}")
    connect = [timed(c.connect, "big2", name) for name in names]
    # network create/rm with 2n endpoints on the host, against an empty host (netcreate)
    probe = [(timed(c.create_network, name=f"probe{i}", subnets=[f"10.102.{i}.0/24"]),
              timed(c.remove_network, f"probe{i}")) for i in range(5)]
    out: dict[str, Any] = {
        "cnm_create_sandbox": series(create), "cnm_connect": series(connect),
        "cnm_network_create_with_endpoints": summary([a for a, _ in probe]),
        "cnm_network_rm_with_endpoints": summary([b for _, b in probe]),
        "ports": {"big": d.bridge_ports("big", c), "big2": d.bridge_ports("big2", c)},
        "sanity_ping_first_to_last": _ping_sandboxes(c, names[0], names[-1], "big"),
    }
    progress(f"cnm remove_sandbox x{n}")
    out["cnm_remove_sandbox"] = series([timed(c.remove_sandbox, name) for name in names])
    c.remove_network("big2")
    c.remove_network("big")
    c.close()
    if cni is not None:
        settle()
        progress(f"CNI ADD x{n} on one bridge")
        ns = nss.add(*(f"k{i}" for i in range(n)))
        add = [timed(cni.add, x) for x in ns]
        ok = _ping_ns(f"/run/netns/{ns[0]}", _cni_ip(cni, ns[-1]))
        progress(f"CNI DEL x{n}")
        dele = [timed(cni.delete, x) for x in ns]
        nss.delete(ns)
        out.update({"cni_add": series(add), "cni_del": series(dele),
                    "cni_sanity_ping_first_to_last": ok})
    return out


def _cni_ip(cni: Cni, ns: str) -> str:
    out = run("ip", "-n", ns, "-j", "addr", "show", "dev", "eth0").stdout
    return str(json.loads(out)[0]["addr_info"][0]["local"])


def _ping_ns(netns: str, ip: str) -> bool:
    return run("nsenter", f"--net={netns}", "ping", "-c", "1", "-W", "2", "-q", ip,
               check=False).returncode == 0


def _ping_sandboxes(c: Client, a: str, b: str, network: str) -> bool:
    """A packet between two sandboxes of the bench (their namespaces only)."""
    sa, sb = c.sandbox(a), c.sandbox(b)
    ip = next(e["ipv4"] for e in sb["endpoints"] if e["network"] == network).split("/")[0]
    return _ping_ns(sa["netns"], ip)


def _compile_cnm() -> str:
    """Byte-compile cnm's modules, as pip does when it installs a wheel (and Debian's
    python3 packages ship): the CLI is timed as installed. Without it, a machine whose
    environment says PYTHONDONTWRITEBYTECODE (this kind does) compiles every cnm module
    from source in every CLI process, ~10 ms that no installed cnm pays."""
    import cnm
    import cnm.dns
    import cnm.drivers

    dirs = [os.path.dirname(m.__file__ or "") for m in (cnm, cnm.drivers, cnm.dns)]
    run(PY, "-m", "compileall", "-q", *dirs)
    return (f"compiled ({', '.join(dirs)}); PYTHONDONTWRITEBYTECODE="
            f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")


def installed_cli(root: Path) -> str:
    """The `cnm` of a wheel of this tree installed into a new venv under ``root``: the CLI
    as a user installs it (bytecode compiled by pip, no editable-install finder in site:
    that finder alone is ~10 ms of every process of the development venv)."""
    wheels, venv = root / "wheels", root / "venv"
    run(PY, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
        str(wheels), str(Path(__file__).resolve().parent.parent))
    run(PY, "-m", "venv", "--without-pip", str(venv))
    run(PY, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
        "--no-deps", "--no-index", *map(str, wheels.glob("cnm-*.whl")))
    return str(venv / "bin" / "cnm")


def bench_network_create(d: CnmDaemon, podman: Podman, n: int, warm: int,
                         root: Path) -> dict[str, Any]:
    """network create + rm: cnm API, cnm CLI (python start included) as installed from a
    wheel and from the development venv, podman."""
    out: dict[str, Any] = {"cli_bytecode": _compile_cnm()}
    c = Client(d.address)
    cli = [installed_cli(root), "-H", d.address, "network"]
    dev = [CNM_CLI, "-H", d.address, "network"]
    ways: dict[str, tuple[Callable[[str, str], Any], Callable[[str], Any]]] = {
        "cnm_api": (lambda name, s: c.create_network(name=name, subnets=[s]),
                    lambda name: c.remove_network(name)),
        "cnm_cli": (lambda name, s: run(*cli, "create", "--subnet", s, name),
                    lambda name: run(*cli, "rm", name)),
        "cnm_cli_dev_venv": (lambda name, s: run(*dev, "create", "--subnet", s, name),
                             lambda name: run(*dev, "rm", name)),
        "podman": (lambda name, s: podman("network", "create", "--subnet", s, name),
                   lambda name: podman("network", "rm", name)),
    }
    # Interleaved: the i-th create of every way, then the next i, so a busy moment of a
    # shared machine falls on all the ways alike (measured one way after the other, the
    # ratio moved 1.2 -> 1.5 between two runs minutes apart).
    progress(f"network create/rm: {', '.join(ways)}, interleaved, x{n}")
    plan = {way: ([f"{way.replace('_', '-')}-{i}" for i in range(warm + n)],
                  [f"10.{110 + k}.{i}.0/24" for i in range(warm + n)])
            for k, way in enumerate(ways)}
    created: dict[str, list[float]] = {way: [] for way in ways}
    removed: dict[str, list[float]] = {way: [] for way in ways}
    for i in range(warm + n):
        for way, (create, _) in ways.items():
            names, subnets = plan[way]
            took = timed(create, names[i], subnets[i])
            if i >= warm:
                created[way].append(took)
        for way, (_, remove) in ways.items():
            took = timed(remove, plan[way][0][i])
            if i >= warm:
                removed[way].append(took)
    for way in ways:
        out[way] = {"create": summary(created[way]), "rm": summary(removed[way])}
    c.close()
    # What the CLI's figure is made of: the interpreter alone, and the CLI's imports.
    installed_py = str(Path(cli[0]).with_name("python"))
    starts: dict[str, list[float]] = {"python_startup": [], "python_startup_installed": [],
                                      "cnm_cli_version": []}
    for _ in range(n):
        starts["python_startup"].append(timed(run, PY, "-c", "pass"))
        starts["python_startup_installed"].append(timed(run, installed_py, "-c", "pass"))
        starts["cnm_cli_version"].append(timed(run, cli[0], "--version"))
    out.update({k: summary(v) for k, v in starts.items()})
    return out


# ------------------------------------------------------------------------------ report
GOALS = [
    # (label, cnm path, peer path, goal: cnm/peer at most)
    ("connect vs CNI ADD", ("connect", "cnm_connect"), ("connect", "cni_add"), 0.2),
    ("disconnect vs CNI DEL", ("connect", "cnm_disconnect"), ("connect", "cni_del"), 0.2),
    ("join (reserved endpoint) vs connect", ("connect", "cnm_join"), ("connect", "cnm_connect"),
     1.0),
    ("network create: API vs podman", ("netcreate", "cnm_api", "create"),
     ("netcreate", "podman", "create"), 0.3),
    ("network create: CLI vs podman", ("netcreate", "cnm_cli", "create"),
     ("netcreate", "podman", "create"), 1.0),
]


def dig(d: dict[str, Any], path: Sequence[str]) -> Any:
    for p in path:
        d = d[p]
    return d


def report(res: dict[str, Any]) -> list[str]:
    lines = [f"{'measure':<38} {'cnm ms':>9} {'peer ms':>9} {'ratio':>7} {'goal':>7}  ok"]
    for label, mine, peer, goal in GOALS:
        with contextlib.suppress(KeyError):
            a, b = dig(res, mine)["median"], dig(res, peer)["median"]
            lines.append(f"{label:<38} {a:9.2f} {b:9.2f} {a / b:7.3f} {'<=' + str(goal):>7}  "
                         f"{'yes' if a / b <= goal else 'NO'}")
    con = res.get("connect", {})
    if con:
        w = con["ip_netns_exec_wrapper"]["median"]
        lines.append(f"  `ip netns exec` wrapper alone: {w:.2f} ms of each CNI call; cnm API "
                     f"round trip (GET /v1/_ping): {con['cnm_api_ping']['median']:.2f} ms;")
        lines.append(f"  disconnect amortised incl. the reaper's batched delete: "
                     f"{con['cnm_disconnect_amortized_incl_reap']:.2f} ms")
    sc = res.get("scale")
    if sc:
        lines.append("")
        lines.append(f"{'1,000-endpoint series':<38} {'first10':>9} {'last10':>9} "
                     f"{'f100':>7} {'l100':>7} {'l10/f10':>8} {'l100/f100':>9}")
        for key in ("cnm_create_sandbox", "cnm_connect", "cnm_remove_sandbox", "cni_add",
                    "cni_del"):
            if key in sc:
                s = sc[key]
                lines.append(f"{key + ' (n=' + str(s['n']) + ')':<38} {s['first10']:9.2f} "
                             f"{s['last10']:9.2f} {s['first100']:7.2f} {s['last100']:7.2f} "
                             f"{s['ratio_last10_first10']:8.3f} {s['ratio_last100_first100']:9.3f}")
        lines.append(f"  cnm network create / rm with {2 * sc['cnm_connect']['n']} endpoints on "
                     f"the host: {sc['cnm_network_create_with_endpoints']['median']:.2f} / "
                     f"{sc['cnm_network_rm_with_endpoints']['median']:.2f} ms")
        lines.append(f"  goal: cnm last10/first10 <= 1.1; bridge ports {sc['ports']}; "
                     f"ping first->last: cnm {sc['sanity_ping_first_to_last']}"
                     + (f", CNI {sc['cni_sanity_ping_first_to_last']}"
                        if "cni_sanity_ping_first_to_last" in sc else ""))
    nc = res.get("netcreate")
    if nc:
        lines.append("")
        lines.append(f"{'network (n=' + str(nc['podman']['create']['n']) + ')':<38} "
                     f"{'create':>9} {'rm':>9}")
        for way in ("cnm_api", "cnm_cli", "cnm_cli_dev_venv", "podman"):
            lines.append(f"{way:<38} {nc[way]['create']['median']:9.2f} "
                         f"{nc[way]['rm']['median']:9.2f}")
        lines.append(f"  python -c pass: {nc['python_startup']['median']:.2f} ms (dev venv), "
                     f"{nc['python_startup_installed']['median']:.2f} ms (wheel's venv); "
                     f"cnm --version: {nc['cnm_cli_version']['median']:.2f} ms")
    return lines


# ------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small N: a smoke run")
    p.add_argument("--json", default=str(Path(__file__).with_name("results.json")),
                   help="where to write the results (default bench/results.json)")
    p.add_argument("--no-cni-scale", action="store_true",
                   help="skip CNI ADD/DEL over the 1,000 namespaces (the slowest part)")
    p.add_argument("--only", choices=("connect", "scale", "netcreate"), action="append",
                   help="run only these parts (repeatable)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py needs root (namespaces, veths)", file=sys.stderr)
        return 2
    parts = args.only or ["connect", "scale", "netcreate"]
    peers = [f"{CNI_PATH}/bridge", f"{CNI_PATH}/host-local"] if {"connect", "scale"} & set(
        parts) else []
    if "netcreate" in parts:
        peers += ["podman", "/usr/lib/podman/netavark"]
    if not need_peers("bench/run.py", *peers):
        return 2
    n_conn, n_scale, n_net, warm = (10, 50, 5, 2) if args.quick else (100, 1000, 20, 5)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    janitor = Janitor()
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix=f"cnmbench-{tag}-"))
    janitor.push("remove temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    nss = Namespaces(tag, janitor)
    res: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick, "host": platform.node(), "kernel": platform.release(),
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "n": {"connect": n_conn, "scale": n_scale, "netcreate": n_net, "warmup": warm},
    }
    try:
        cnm_host, cni_host, pod_host = nss.add("cnm", "cni", "pod")
        run("ip", "-n", cnm_host, "link", "set", "lo", "up")
        d = CnmDaemon(cnm_host, root / "cnm", janitor)
        d.root.mkdir()
        d.start()
        cni = Cni(cni_host, root / "cni")
        waited = res["settled_s"] = {}
        # Cheapest first: the 1,000-namespace part leaves the most kernel cleanup behind.
        if "netcreate" in parts:
            waited["netcreate"] = settle()
            res["netcreate"] = bench_network_create(d, Podman(pod_host, root / "podman"),
                                                    n_net, max(2, warm // 2), root / "wheel")
        if "connect" in parts:
            waited["connect"] = settle()
            res["connect"] = bench_connect(d, cni, nss, n_conn, warm)
        if "scale" in parts:
            waited["scale"] = settle()
            res["scale"] = bench_scale(d, None if args.no_cni_scale else cni, nss, n_scale)
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        janitor.clean()
        return 130
    finally:
        janitor.clean()
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(f"\ncnm bench, {res['date']}, {'quick' if args.quick else 'full'} run "
          f"(medians in ms; ratio = cnm / peer)")
    print("\n".join(report(res)))
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
