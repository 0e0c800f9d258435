#!/usr/bin/env python3
"""cnm-cni beside its peers, in one run: ADD/DEL against the reference bridge + host-local
plugins called the same way (a new process, the CNI_* environment, the configuration on
stdin, under the same `nsenter --net=HOST` wrapper), cnm-cni's start-up and import
profile, and `podman run --network` with cnm (CNI) against podman with netavark.

    .venv/bin/python bench/cni.py [--n 40] [--podman 10] [--json PATH] [--no-podman]

Everything runs in throwaway namespaces named cnmbench-cni-*, deleted at the end even on
failure or Ctrl-C; podman runs in private mounts (tests/lab/podmanlab.py). Nothing touches
the machine's own namespace, routes or firewall; no packet leaves the namespaces made here.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchcommon import Janitor, median, ms, need_peers, progress, run

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))  # the tests package: the lab's podman (tests/lab/podmanlab.py)
from cnm.testing.netns import Daemon, HostNs, unbind_all  # noqa: E402
from tests.lab.podmanlab import Podman  # noqa: E402

PY = sys.executable
PLUGIN = str(Path(PY).with_name("cnm-cni"))
CNI_PATH = "/usr/lib/cni"


def timed(cmd: list[str], env: dict[str, str], data: bytes) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, input=data, capture_output=True, env=env)
    dt = ms(time.perf_counter() - t0)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[-1]} {env['CNI_COMMAND']}: {r.stdout!r} {r.stderr!r}")
    return dt, r.stdout


def stats(xs: list[float]) -> dict[str, Any]:
    s = sorted(xs)
    return {"n": len(s), "median": median(s), "p10": s[len(s) // 10],
            "p90": s[(len(s) * 9) // 10], "samples": [round(x, 3) for x in xs]}


class Side:
    """One plugin in its own throwaway host namespace, called as a runtime calls it."""

    def __init__(self, name: str, host: str, plugin: str, conf: dict[str, Any]) -> None:
        self.name, self.host, self.plugin = name, host, plugin
        self.conf = json.dumps(conf).encode()

    def call(self, command: str, ns: str) -> tuple[float, bytes]:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": ns, "CNI_NETNS": f"/run/netns/{ns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH,
               "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        return timed(["nsenter", f"--net=/run/netns/{self.host}", self.plugin], env,
                     self.conf)


def namespaces(janitor: Janitor, names: list[str]) -> None:
    lines = "".join(f"netns add {n}\n" for n in names)
    janitor.push("delete namespaces", lambda: run(
        "ip", "-force", "-batch", "-", input="".join(f"netns del {n}\n" for n in names),
        check=False))
    run("ip", "-force", "-batch", "-", input=lines)
    for n in names:
        run("ip", "-n", n, "link", "set", "lo", "up")


def bench_add_del(janitor: Janitor, root: Path, n: int, tag: str) -> dict[str, Any]:
    cnm_host, ref_host = f"cnmbench-cni-{tag}-cnm", f"cnmbench-cni-{tag}-ref"
    ctrs = [f"cnmbench-cni-{tag}-c{i}" for i in range(2 * n + 6)]
    namespaces(janitor, [cnm_host, ref_host, *ctrs])
    root.mkdir(parents=True, exist_ok=True)
    d = Daemon(HostNs(cnm_host, f"/run/netns/{cnm_host}"), root / "state", root / "run",
               str(root / "cnm.sock"), root / "cnmd.log")
    janitor.push("stop cnmd", lambda: (d.stop(), unbind_all(d.run_dir)))
    d.start()
    if d.cli("network", "create", "--subnet", "10.97.0.0/16", "web").returncode != 0:
        raise RuntimeError("network create failed")
    cnm = Side("cnm-cni", cnm_host, PLUGIN, {
        "cniVersion": "1.0.0", "name": "web", "type": "cnm", "socket": d.address})
    ref = Side("bridge+host-local", ref_host, f"{CNI_PATH}/bridge", {
        "cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cnibr0",
        "isGateway": True, "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": "10.98.0.0/16",
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(root / "ipam")}})
    sides = {"cnm": (cnm, ctrs[:n + 3]), "ref": (ref, ctrs[n + 3:])}
    out: dict[str, Any] = {}
    for side, mine in sides.values():  # warm-up: the first ADD makes cnibr0
        for ns in mine[:3]:
            side.call("ADD", ns)
            side.call("DEL", ns)
    progress(f"ADD x{n} each, alternating")
    adds: dict[str, list[float]] = {"cnm": [], "ref": []}
    dels: dict[str, list[float]] = {"cnm": [], "ref": []}
    for i in range(n):
        for key, (side, mine) in sides.items():
            adds[key].append(side.call("ADD", mine[3 + i])[0])
    ping = run("nsenter", f"--net=/run/netns/{sides['cnm'][1][3]}", "ping", "-c", "1",
               "-W", "2", "-q", "10.97.0.1", check=False).returncode == 0
    progress(f"DEL x{n} each, alternating")
    for i in range(n):
        for key, (side, mine) in sides.items():
            dels[key].append(side.call("DEL", mine[3 + i])[0])
    wrapper = [timed(["nsenter", f"--net=/run/netns/{cnm_host}", "/bin/true"],
                     {"PATH": "/usr/bin:/bin"}, b"")[0] for _ in range(20)]
    for key in sides:
        out[key] = {"add": stats(adds[key]), "del": stats(dels[key])}
    out["wrapper_nsenter_true"] = stats(wrapper)
    out["cnm_sanity_ping_gateway"] = ping
    return out


def installed_view(root: Path) -> Path:
    """The package laid out as installed (cnm/, drivers/ as cnm/drivers, dns/ as cnm/dns):
    with it on PYTHONPATH and `python -S`, the plugin starts without the editable
    install's import hook, which costs ~8 ms of site at every start (pathlib, fnmatch, re,
    importlib.util); a regular install's site costs ~2 ms."""
    view = root / "view"
    (view / "cnm").mkdir(parents=True)
    for entry in (TOP / "cnm").iterdir():
        (view / "cnm" / entry.name).symlink_to(entry)
    (view / "cnm" / "drivers").symlink_to(TOP / "drivers")
    (view / "cnm" / "dns").symlink_to(TOP / "dns")
    return view


def startup(root: Path) -> dict[str, Any]:
    """Where cnm-cni's start-up goes: interpreter floors, VERSION end to end, imports."""
    def t(cmd: list[str], data: bytes = b"", env: dict[str, str] | None = None) -> float:
        xs = []
        for _ in range(20):
            t0 = time.perf_counter()
            subprocess.run(cmd, input=data, capture_output=True,
                           env=env or {"PATH": "/usr/bin:/bin"})
            xs.append(ms(time.perf_counter() - t0))
        return median(xs)

    out = {
        "python_-I_-S_pass": t([PY, "-I", "-S", "-c", "pass"]),
        "python_pass (venv site)": t([PY, "-c", "pass"]),
        "python_import_cnm_cni": t([PY, "-c", "import cnm.cni.plugin, cnm.cni.attach, "
                                    "cnm.cni.wire"]),
        "cnm-cni_VERSION": t([PLUGIN], b'{"cniVersion":"1.1.0"}',
                             {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}),
        "cnm-cni_VERSION_python_-S_installed_layout": t(
            [PY, "-S", "-c", "from cnm.cni.plugin import main; main()"],
            b'{"cniVersion":"1.1.0"}', {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin",
                                        "PYTHONPATH": str(installed_view(root))}),
        "cni_bridge_VERSION": t([f"{CNI_PATH}/bridge"], b'{"cniVersion":"1.0.0"}',
                                {"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"}),
    }
    r = subprocess.run([PY, "-X", "importtime", "-c",
                        "import cnm.cni.plugin, cnm.cni.attach, cnm.cni.wire"],
                       capture_output=True, text=True)
    rows = []
    for line in r.stderr.splitlines()[1:]:
        self_us, cum_us, name = line.split(":", 1)[1].split("|")
        rows.append((int(cum_us), int(self_us), name[1:].rstrip()))
    # Top level: the modules site and the plugin's own imports pull in, not their children.
    top = sorted((x for x in rows if not x[2].startswith(" ")), reverse=True)[:12]
    out["importtime_top_level"] = [{"module": n, "cumulative_us": c, "self_us": s}
                                   for c, s, n in top]
    return out


def bench_podman(janitor: Janitor, root: Path, n: int, tag: str) -> dict[str, Any]:
    """`podman run -d` + `podman rm -f -t 0` of a busybox rootfs: --network none, a cnm
    network through cnm-cni, a netavark network; alternating, N each."""
    labs: dict[str, Podman] = {}
    hosts = {k: f"cnmbench-cni-{tag}-pod{k}" for k in ("cnm", "nav")}
    namespaces(janitor, list(hosts.values()))
    root.mkdir(parents=True, exist_ok=True)
    for key, backend in (("cnm", "cni"), ("nav", "netavark")):
        p = Podman(HostNs(hosts[key], f"/run/netns/{hosts[key]}"), root / f"pod-{key}",
                   backend)
        janitor.push(f"stop podman ({backend})", p.stop)
        p.start()
        labs[key] = p
    cp = labs["cnm"]
    d = Daemon(HostNs(hosts["cnm"], cp.netns), root / "pstate", root / "prun",
               str(root / "pcnm.sock"), root / "pcnmd.log")
    janitor.push("stop cnmd (podman)", lambda: (d.stop(), unbind_all(d.run_dir)))
    d.start(prefix=("nsenter", "-t", str(cp.pid), "-m"))
    if d.cli("network", "create", "--subnet", "10.95.0.0/24", "cnmnet").returncode != 0:
        raise RuntimeError("cnm network create failed")
    cp.write_network("cnmnet", "cnmnet", d.address)
    labs["nav"].podman("network", "create", "--subnet", "10.96.0.0/24", "navnet")
    ways = {"cnm none": (cp, "none"), "cnm-cni": (cp, "cnmnet"),
            "netavark none": (labs["nav"], "none"), "netavark": (labs["nav"], "navnet")}
    runs: dict[str, list[float]] = {k: [] for k in ways}
    rms: dict[str, list[float]] = {k: [] for k in ways}
    for i in range(n + 2):
        for key, (p, net) in ways.items():
            name = f"c{i}-{key.replace(' ', '-')}"
            t0 = time.perf_counter()
            p.run_container(name, "--network", net, cmd=("/bin/sleep", "600"))
            t1 = time.perf_counter()
            p.podman("rm", "-f", "-t", "0", name, timeout=120)
            t2 = time.perf_counter()
            if i >= 2:  # two warm-up rounds
                runs[key].append(ms(t1 - t0))
                rms[key].append(ms(t2 - t1))
    out: dict[str, Any] = {k: {"run": stats(runs[k]), "rm": stats(rms[k])} for k in ways}
    return out


def report(res: dict[str, Any]) -> list[str]:
    lines = []
    ad = res.get("add_del")
    if ad:
        w = ad["wrapper_nsenter_true"]["median"]
        for op in ("add", "del"):
            c, r = ad["cnm"][op]["median"], ad["ref"][op]["median"]
            lines.append(f"CNI {op.upper():<4} cnm-cni {c:7.2f} ms   bridge+host-local {r:7.2f} ms"
                         f"   ratio {c / r:5.2f}x   (minus the nsenter wrapper {w:.2f} ms:"
                         f" {(c - w) / (r - w):5.2f}x)")
    st = res.get("startup")
    if st:
        lines.append("start-up: " + ", ".join(f"{k} {v:.1f} ms" for k, v in st.items()
                                                if isinstance(v, float)))
    pd = res.get("podman")
    if pd:
        for way in pd:
            lines.append(f"podman {way:<14} run {pd[way]['run']['median']:7.1f} ms   "
                         f"rm {pd[way]['rm']['median']:7.1f} ms")
        c = pd["cnm-cni"]["run"]["median"] - pd["cnm none"]["run"]["median"]
        nv = pd["netavark"]["run"]["median"] - pd["netavark none"]["run"]["median"]
        raw = pd["cnm-cni"]["run"]["median"] / pd["netavark"]["run"]["median"]
        lines.append(f"podman run --network: cnm-cni / netavark {raw:.2f}x; networking cost "
                     f"(minus --network none) {c:.1f} vs {nv:.1f} ms = {c / nv:.2f}x")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="ADD/DEL pairs per plugin")
    ap.add_argument("--podman", type=int, default=10, help="podman runs per way")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args()
    peers = [f"{CNI_PATH}/bridge", f"{CNI_PATH}/host-local"]
    if not a.no_podman:
        peers += ["podman", "/usr/lib/podman/netavark", "/bin/busybox"]
    if not need_peers("bench/cni.py", *peers):
        return 2
    # Byte-compiled modules, as a package install leaves them (PYTHONDONTWRITEBYTECODE may
    # be set where this runs: then every call would compile cnm-cni's sources again).
    compileall.compile_dir(str(TOP / "cnm"), quiet=1)
    janitor = Janitor()
    root = Path(tempfile.mkdtemp(prefix="cnmbench-cni-"))
    janitor.push("remove the temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    tag = secrets.token_hex(2)
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        progress("cnm-cni start-up and imports")
        res["startup"] = startup(root)
        res["add_del"] = bench_add_del(janitor, root / "cni", a.n, tag)
        if not a.no_podman:
            progress(f"podman run x{a.podman} per way")
            res["podman"] = bench_podman(janitor, root / "pod", a.podman, tag)
    finally:
        janitor.clean()
    print("\n".join(report(res)))
    print("cnm-cni imports (cumulative us): " + ", ".join(
        f"{x['module']} {x['cumulative_us']}" for x in res["startup"]["importtime_top_level"]))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
