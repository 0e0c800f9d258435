#!/usr/bin/env python3
"""cnmd restart time (issue 13): from the start of the process to READY=1 (systemd's
sd_notify, sent once reconcile is done and the API listens), with 10 and with 1,000
sandboxes on one user-defined bridge (one endpoint each, DNS on). Goal with 1,000: <= 2 s.

    .venv/bin/python bench/restart.py [--n 1000] [--restarts 3] [--json PATH]

After every restart, before the next: the embedded DNS answers in the newest sandbox for
the first one's name and the first sandbox pings the last (the listeners and links came
back, not only the process). Everything runs in a throwaway host namespace
(cnmbench-rst-*), deleted at the end, on an error, on Ctrl-C and SIGTERM; the only packets
are those DNS queries and pings between the run's own sandboxes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchcommon import Janitor, need_peers, progress, throwaway_daemon  # noqa: E402
from cnm.client import Client  # noqa: E402
from cnm.testing.netns import Daemon, can_ping, in_ns  # noqa: E402


def restart(d: Daemon, notify: socket.socket) -> float:
    """Stop cnmd, start it again; seconds from the start to its READY=1."""
    d.stop()
    while True:  # nothing stale from the previous process
        try:
            notify.recv(4096, socket.MSG_DONTWAIT)
        except (BlockingIOError, TimeoutError):
            break
    t0 = time.perf_counter()
    notify.settimeout(60)
    d.start(env={"NOTIFY_SOCKET": notify.getsockname()})
    while True:
        msg = notify.recv(4096).decode()
        if "READY=1" in msg.split("\n"):
            return time.perf_counter() - t0


def check(c: Client, names: list[str], network: str) -> tuple[bool, bool]:
    """(DNS answers in the last sandbox for the first's name, first pings last)."""
    first, last = c.sandbox(names[0]), c.sandbox(names[-1])
    want = next(e["ipv4"] for e in first["endpoints"] if e["network"] == network)
    dig = in_ns(last["netns"], "dig", "+short", "+time=1", "+tries=2", "@127.0.0.11",
                names[0], check=False)
    to = next(e["ipv4"] for e in last["endpoints"] if e["network"] == network)
    return dig.stdout.split() == [want.split("/")[0]], can_ping(first["netns"],
                                                                 to.split("/")[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="sandboxes of the big case (1000)")
    p.add_argument("--small", type=int, default=10, help="sandboxes of the small case (10)")
    p.add_argument("--restarts", type=int, default=3, help="restarts per case (3)")
    p.add_argument("--json", metavar="PATH", help="write the figures here")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("bench/restart.py needs root", file=sys.stderr)
        return 2
    if not need_peers("restart.py", "dig", "ping"):
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    janitor = Janitor()
    out: dict[str, Any] = {"restarts": a.restarts, "cases": {}}
    try:
        d = throwaway_daemon(janitor, "rst")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(d.state_dir.parent / "notify.sock"))
        janitor.push("close the notify socket", notify.close)
        d.start()
        c = d.client()
        c.create_network(name="big", subnets=["10.104.0.0/16"])
        names: list[str] = []
        for n in (a.small, a.n):
            progress(f"sandboxes on 'big': {len(names)} -> {n}")
            for i in range(len(names), n):
                c.create_sandbox(name=f"s{i}", network="big")
                names.append(f"s{i}")
            c.close()
            times, dns_ok, ping_ok = [], [], []
            for k in range(a.restarts):
                took = restart(d, notify)
                c = d.client()
                dns, ping = check(c, names, "big")
                progress(f"  restart {k + 1} with {n}: {took:.3f} s to READY=1; "
                         f"DNS {'ok' if dns else 'FAILED'}, ping {'ok' if ping else 'FAILED'}")
                times.append(took)
                dns_ok.append(dns)
                ping_ok.append(ping)
                c.close()
            out["cases"][str(n)] = {"seconds": times, "median": statistics.median(times),
                                    "dns_ok": all(dns_ok), "ping_ok": all(ping_ok)}
            c = d.client()
        rss = subprocess.run(["ps", "-o", "rss=", "-p", str(d.proc.pid if d.proc else 0)],
                             capture_output=True, text=True).stdout.strip()
        out["rss_kib_after"] = int(rss) if rss.isdigit() else None
        c.close()
    finally:
        janitor.clean()
    small, big = out["cases"][str(a.small)], out["cases"][str(a.n)]
    print(f"\ncnmd restart to READY=1 (reconcile done, API listening), median of "
          f"{a.restarts}:\n")
    for n, case in ((a.small, small), (a.n, big)):
        print(f"  {n:>5} sandboxes  {case['median']:.3f} s   "
              f"(all: {', '.join(f'{t:.3f}' for t in case['seconds'])}; DNS after each: "
              f"{'ok' if case['dns_ok'] else 'FAILED'}, ping: "
              f"{'ok' if case['ping_ok'] else 'FAILED'})")
    goal = big["median"] <= 2.0
    print(f"\n  goal with {a.n}: <= 2 s: {'met' if goal else 'MISSED'}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0 if small["dns_ok"] and big["dns_ok"] and small["ping_ok"] and big["ping_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
