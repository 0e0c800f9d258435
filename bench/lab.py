"""A 50-sandbox lab, up + pingall + down: cnm beside mininet 2.3, one run, side by side.

- **cnm**: a lab file generated for the run (one host, one bridge network, N sandboxes on
  it, and N·(N-1) ping checks: every sandbox pings every other, as mininet's pingall does)
  run with the real `cnm lab run FILE` (a subprocess: up, all checks, down), timed end to
  end, its state under a temp dir (CNM_LAB_DIR) and its namespaces under a prefix of its
  own (CNM_LAB_PREFIX). The up and down figures are the ones it prints; check is the rest.
  Each sandbox runs a loop flushing its neighbours (--flush): see the ARP note below.
- **mininet**: `mn --switch lxbr --controller none --topo single,N --test pingall`
  (Debian's mininet, Linux bridge, no controller, no Open vSwitch), timed end to end.
  It runs under `ip netns exec` in a throwaway namespace, so its bridge and links are
  made there and its hosts' namespaces hang off it; `ip netns exec` gives it a private
  mount namespace, in which /proc/sys/{fs,kernel,net/core} are bound read-only:
  mininet raises machine-wide limits (fs.file-max, kernel.pty.max, net.core.*mem_max,
  netdev_max_backlog), which this run must not change (it says "Error setting resource
  limits" and goes on).

As root, after `bash bench/install.sh`:

    .venv/bin/python bench/lab.py            # N=50: about 2.5 minutes (mininet ~2 of them)
    .venv/bin/python bench/lab.py --n 10 --cnm-only   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchcommon import Janitor, need_peers, progress, run  # noqa: E402

# mininet's machine-wide sysctls (util.fixLimits) live under these; the rest of
# /proc/sys/net follows the reader's network namespace and stays writable.
READ_ONLY = ("/proc/sys/fs", "/proc/sys/kernel", "/proc/sys/net/core")
# The kernel's ARP table is one for all namespaces, 1,024 entries at most
# (net.ipv4.neigh.default.gc_thresh3, machine-wide): all pairs of 50 sandboxes make 2,450
# (one per side), faster than its garbage collector frees them (a reachable entry is not
# collected), and past the limit a new neighbour is not resolved: the ping fails after
# its 2 s timeout. The lab's checks cannot flush between pings, so each sandbox of the
# lab runs a loop (its `run:`) that flushes its neighbours every --flush seconds; those
# loops run, and cost, inside the timed run. (mininet raises the limit to 16,384 for
# itself; here it may not: see mininet_lab.)


def settle(limit: float = 30.0) -> None:
    """Wait until the kernel has cleaned up deleted namespaces (its work would be charged
    to whatever runs next): until /proc/stat shows the CPUs mostly idle."""
    def cpu() -> tuple[int, int]:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return f[2] + f[5] + f[6], sum(f)

    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        k0, a0 = cpu()
        time.sleep(0.5)
        k1, a1 = cpu()
        if a1 > a0 and (k1 - k0) / (a1 - a0) < 0.05:
            return


def lab_file(n: int, name: str, flush: float) -> str:
    """A lab of N sandboxes on one bridge network; a ping check for every ordered pair;
    with FLUSH > 0 each sandbox runs a loop flushing its neighbours every FLUSH seconds."""
    run = (f', run: [sh, -c, "while :; do ip neigh flush all; sleep {flush:g}; done"]'
           if flush > 0 else "")
    sandboxes = "".join(f"  h{i}: {{networks: [lab]{run}}}\n" for i in range(1, n + 1))
    checks = "".join(f"  - {{ping: h{j}, from: h{i}}}\n" for i in range(1, n + 1)
                     for j in range(1, n + 1) if i != j)
    return (f"name: {name}\ntitle: {n} sandboxes on one network, pingall\n"
            "networks:\n  lab: {subnet: 10.123.0.0/24}\n"
            f"sandboxes:\n{sandboxes}checks:\n{checks}")


def cnm_lab(n: int, janitor: Janitor, flush: float,
            profile: str | None = None) -> dict[str, Any]:
    """`cnm lab run` of the generated lab, timed end to end; seconds per part, failures."""
    mark = janitor.mark()
    root = Path(tempfile.mkdtemp(prefix="cnmbench-lab-"))
    janitor.push("remove the temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    path = root / "pingall.yaml"
    path.write_text(lab_file(n, "pingall", flush))
    env = {**os.environ, "CNM_LAB_DIR": str(root / "labs"),
           "CNM_LAB_PREFIX": f"cnmbench{secrets.token_hex(2)}"}
    argv = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []),
            "-m", "cnm", "lab", "run", str(path)]
    janitor.push("take the lab down", lambda: run(sys.executable, "-m", "cnm", "lab", "down",
                                                  str(path), check=False, env=env))
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    total = time.perf_counter() - t0
    janitor.clean(mark)
    out = r.stdout + r.stderr
    passed = re.search(r"(\d+)/(\d+) checks passed", out)
    if passed is None:
        raise RuntimeError(f"cnm lab run exited {r.returncode}: {out[-1500:]}")
    up = re.search(r"up in ([\d.]+) s", out)
    down = re.search(r"down in ([\d.]+) s", out)
    t_up = float(up.group(1)) if up else float("nan")
    t_down = float(down.group(1)) if down else float("nan")
    return {"up": t_up, "check": total - t_up - t_down, "down": t_down, "total": total,
            "pings": int(passed.group(2)), "failed": int(passed.group(2)) - int(passed.group(1)),
            "exit": r.returncode,
            "failures": [ln for ln in r.stdout.splitlines() if ln.endswith("FAIL")][:10]}


def mininet_lab(n: int, janitor: Janitor) -> dict[str, Any]:
    """`mn … --topo single,N --test pingall` in a throwaway namespace; seconds, drops."""
    mark = janitor.mark()
    ns = f"cnmbench-mn-{secrets.token_hex(3)}"
    run("ip", "netns", "add", ns)
    janitor.push("delete mininet's namespace", lambda: run("ip", "netns", "del", ns,
                                                           check=False))
    binds = "; ".join(f"mount --bind {p} {p} && mount -o remount,bind,ro {p}"
                      for p in READ_ONLY)
    script = (f"set -e; {binds}; ip link set lo up; "
              f"exec mn --switch lxbr --controller none --topo single,{n} --test pingall")
    t0 = time.perf_counter()
    r = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", script], capture_output=True,
                       text=True, cwd=tempfile.gettempdir(), timeout=3600)
    total = time.perf_counter() - t0
    janitor.clean(mark)
    out = r.stdout + r.stderr
    m = re.search(r"Results: (\d+)% dropped \((\d+)/(\d+) received\)", out)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"mn exited {r.returncode}: {out[-1500:]}")
    received, sent = int(m.group(2)), int(m.group(3))
    done = re.search(r"completed in ([\d.]+) seconds", out)
    return {"total": total, "mn_reported": float(done.group(1)) if done else None,
            "pings": sent, "failed": sent - received}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50, help="sandboxes / mininet hosts (50)")
    p.add_argument("--json", metavar="PATH", help="write the figures here")
    p.add_argument("--profile", metavar="PATH",
                   help="run `cnm lab run` under cProfile, its stats written here")
    p.add_argument("--flush", type=float, default=2.0, metavar="S",
                   help="each sandbox flushes its neighbours every S seconds (2; 0: never)")
    p.add_argument("--cnm-only", action="store_true", help="skip mininet (a smoke run)")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("bench/lab.py needs root", file=sys.stderr)
        return 2
    if not need_peers("lab.py", "mn", "mnexec", "brctl", "ifconfig", "ping"):
        return 2
    # Cleanup on SIGTERM, and on Ctrl-C even when started in the background by a shell
    # (which starts background jobs with SIGINT ignored).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    janitor = Janitor()
    try:
        progress(f"cnm: {a.n} sandboxes, up + pingall + down")
        cnm = cnm_lab(a.n, janitor, a.flush, a.profile)
        if a.cnm_only:
            print(json.dumps(cnm, indent=1))
            return 0 if cnm["failed"] == 0 else 1
        settle()
        progress(f"mininet: single,{a.n} pingall (lxbr, no controller)")
        mn = mininet_lab(a.n, janitor)
    finally:
        janitor.clean()
    ratio = cnm["total"] / mn["total"]
    print(f"\n{a.n} sandboxes on one network, up + pingall ({cnm['pings']} pings) + down, "
          "one run (s)\n")
    print(f"  cnm      up {cnm['up']:7.2f}  check {cnm['check']:7.2f}  down {cnm['down']:7.2f}"
          f"  total {cnm['total']:7.2f}  failed pings {cnm['failed']}")
    for line in cnm["failures"]:
        print(f"           {line}")
    print(f"  mininet  total {mn['total']:7.2f} (mn says {mn['mn_reported']})"
          f"  failed pings {mn['failed']}")
    print(f"  cnm / mininet = {ratio:.3f}  (goal <= 0.5: {'met' if ratio <= 0.5 else 'missed'})")
    if a.json:
        Path(a.json).write_text(json.dumps({"n": a.n, "cnm": cnm, "mininet": mn,
                                            "ratio": ratio}, indent=1))
    return 0 if cnm["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
