"""A 50-sandbox lab, up + pingall + down: cnm beside mininet 2.3, one run, side by side.

- **cnm**: a throwaway host namespace with its own cnmd, one bridge network, N sandboxes
  on it (up); one ICMP echo from every sandbox to every other (N·(N-1) `ping -c1 -W1`
  processes, one after the other, as mininet's pingall does, the neighbour tables flushed
  every 8 sources: see FLUSH_EVERY; the check); the sandboxes, the network, cnmd and the
  namespace removed (down).
- **mininet**: `mn --switch lxbr --controller none --topo single,N --test pingall`
  (Debian's mininet, Linux bridge, no controller, no Open vSwitch), timed end to end.
  It runs under `ip netns exec` in a throwaway namespace, so its bridge and links are
  made there and its hosts' namespaces hang off it; `ip netns exec` gives it a private
  mount namespace, in which /proc/sys/{fs,kernel,net/core} are bound read-only:
  mininet raises machine-wide limits (fs.file-max, kernel.pty.max, net.core.*mem_max,
  netdev_max_backlog), which this run must not change (it says "Error setting resource
  limits" and goes on).

The lab runner (`cnm lab run`) is not used yet: the cnm side does what a generated lab
file of N sandboxes on one network would do, through cnm's API (see bench/README.md).

As root, after `bash bench/install.sh`:

    .venv/bin/python bench/lab.py            # N=50: about 2.5 minutes (mininet ~2 of them)
    .venv/bin/python bench/lab.py --n 10     # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchcommon import Janitor, need_peers, progress, run  # noqa: E402
from cnm.testing.netns import Daemon, HostNs, unbind_all  # noqa: E402

# mininet's machine-wide sysctls (util.fixLimits) live under these; the rest of
# /proc/sys/net follows the reader's network namespace and stays writable.
READ_ONLY = ("/proc/sys/fs", "/proc/sys/kernel", "/proc/sys/net/core")
# The kernel's ARP table is one for all namespaces, 1,024 entries at most
# (net.ipv4.neigh.default.gc_thresh3, machine-wide): all pairs of 50 sandboxes make 2,450
# (one per side), faster than its garbage collector frees stale ones, and past the limit a
# new neighbour cannot be resolved ("neighbor table overflow!"). So every 8 sources the
# check flushes every sandbox's neighbours (8 x 49 x 2 = 784 entries at most); the flushes
# are part of the time. (mininet raises the limit to 16,384 for itself; here it may not.)
FLUSH_EVERY = 8


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


def cnm_lab(n: int, janitor: Janitor) -> dict[str, Any]:
    """Up, pingall and down of N sandboxes on one cnm bridge network; seconds per part."""
    mark = janitor.mark()
    t_up = time.perf_counter()
    ns = f"cnmbench-lab-{secrets.token_hex(3)}"
    run("ip", "netns", "add", ns)
    janitor.push("delete the host namespace", lambda: run("ip", "netns", "del", ns,
                                                          check=False))
    run("ip", "-n", ns, "link", "set", "lo", "up")
    root = Path(tempfile.mkdtemp(prefix="cnmbench-lab-"))
    janitor.push("remove the temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    d = Daemon(HostNs(ns, f"/run/netns/{ns}"), root / "state", root / "run",
               str(root / "cnm.sock"), root / "cnmd.log")
    d.start()

    def stop() -> None:
        d.stop()
        unbind_all(d.run_dir)

    janitor.push("stop cnmd", stop)
    c = d.client()
    c.create_network(name="lab", driver="bridge", subnets=["10.123.0.0/24"])
    hosts: list[tuple[str, str]] = []  # (netns path, address)
    for i in range(n):
        sb = c.create_sandbox(name=f"h{i + 1}", network="lab")
        path = sb.get("netns") or str(d.run_dir / "netns" / sb["id"])
        hosts.append((path, sb["endpoints"][0]["ipv4"].split("/")[0]))
    up = time.perf_counter() - t_up

    t_check = time.perf_counter()
    failed = 0
    each: list[float] = []
    for i, (src, _) in enumerate(hosts):
        if i and i % FLUSH_EVERY == 0:
            for path, _ in hosts:
                run("nsenter", f"--net={path}", "ip", "neigh", "flush", "all")
        for dst_path, dst in hosts:
            if dst_path == src:
                continue
            t0 = time.perf_counter()
            r = subprocess.run(["nsenter", f"--net={src}", "ping", "-n", "-c1", "-W1", "-q", dst],
                               capture_output=True)
            each.append(time.perf_counter() - t0)
            failed += r.returncode != 0
    check = time.perf_counter() - t_check

    t_down = time.perf_counter()
    c.close()
    c = d.client()  # cnmd has closed the connection, idle for the whole check
    for i in range(n):
        c.remove_sandbox(f"h{i + 1}")
    c.remove_network("lab")
    c.close()
    janitor.clean(mark)
    down = time.perf_counter() - t_down
    return {"up": up, "check": check, "down": down, "total": up + check + down,
            "pings": n * (n - 1), "failed": failed, "ping_median": statistics.median(each),
            "pings_over_0.5s": sum(t > 0.5 for t in each)}


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
        cnm = cnm_lab(a.n, janitor)
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
    print(f"           a ping: median {cnm['ping_median'] * 1000:.1f} ms, "
          f"{cnm['pings_over_0.5s']} took over 0.5 s")
    print(f"  mininet  total {mn['total']:7.2f} (mn says {mn['mn_reported']})"
          f"  failed pings {mn['failed']}")
    print(f"  cnm / mininet = {ratio:.3f}  (goal <= 0.5: {'met' if ratio <= 0.5 else 'missed'})")
    if a.json:
        Path(a.json).write_text(json.dumps({"n": a.n, "cnm": cnm, "mininet": mn,
                                            "ratio": ratio}, indent=1))
    return 0 if cnm["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
