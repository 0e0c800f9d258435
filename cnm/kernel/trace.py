"""The kernel side of `cnm trace`: look at one sandbox's path and send one real probe.

Reads with `ip -j` and `bridge -j` (through nsenter, in the namespace they describe),
marks the probe's flow with a temporary chain in cnm's table and collects `nft monitor
trace` in the host namespace while the probe is sent. The chain is removed whatever
happens. One trace at a time: the monitor sees every traced packet of the namespace.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import socket
import subprocess
import threading
import time
from typing import Any, TypeVar

from cnm import trace
from cnm.errors import KernelError, NotFound, Unavailable
from cnm.kernel.netns import run_in
from cnm.netfilter import NftApi

T = TypeVar("T")
_LOCK = threading.Lock()
PROBE_TIMEOUT = 1.0
# NFNLGRP_NFTRACE (9): its bit in /proc/net/netlink's Groups column.
_NFTRACE_GROUP = 1 << (9 - 1)
_NETLINK_NETFILTER = 12


def _ip(netns: str, *args: str, program: str = "ip") -> tuple[Any, str | None]:
    """`ip -j ARGS` in the namespace: (its JSON, None) or (None, its error)."""
    done = subprocess.run(["nsenter", f"--net={netns}", program, "-j", *args],
                          capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        err = done.stderr.strip().removeprefix("RTNETLINK answers: ")
        return None, err or f"{program} {' '.join(args)} failed"
    return (json.loads(done.stdout) if done.stdout.strip() else []), None


def _subscribed(pid: int) -> bool:
    """Whether the monitor's netlink socket has joined the trace group."""
    try:
        with open(f"/proc/{pid}/net/netlink") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        cols = row.split()
        if (len(cols) > 3 and cols[1] == str(_NETLINK_NETFILTER) and cols[2] == str(pid)
                and int(cols[3], 16) & _NFTRACE_GROUP):
            return True
    return False


def _monitor(host_netns: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(["nsenter", f"--net={host_netns}", "nft", "monitor", "trace"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 5
    while not _subscribed(p.pid):
        if p.poll() is not None or time.monotonic() > deadline:
            _, err = _stop(p)
            raise KernelError(f"nft monitor trace did not start in {host_netns}: "
                              f"{err.strip() or 'no subscription after 5 s'}")
        time.sleep(0.01)
    return p


def _stop(p: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop the monitor: what it printed, and its errors."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return out or "", err or ""


def _probe_socket(t: trace.Target) -> str:
    family = socket.AF_INET6 if t.version == 6 else socket.AF_INET
    kind = socket.SOCK_STREAM if t.proto == "tcp" else socket.SOCK_DGRAM
    assert t.port is not None
    with socket.socket(family, kind) as s:
        # Below the kernel's first SYN retransmission (1 s): one packet only.
        s.settimeout(PROBE_TIMEOUT * 0.9 if t.proto == "tcp" else PROBE_TIMEOUT)
        try:
            if t.proto == "tcp":
                s.connect((t.addr, t.port))
                return "answered"
            s.connect((t.addr, t.port))
            s.send(b"cnm trace\n")
            s.recv(2048)
            return "answered"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "no answer"
        except OSError as e:
            return e.strerror or str(e)


def probe(netns: str, t: trace.Target) -> str:
    """Send one packet from the namespace: answered, refused, no answer or the error."""
    if t.proto == "icmp":
        argv = ["nsenter", f"--net={netns}", "ping", *(["-6"] if t.version == 6 else []),
                "-n", "-c", "1", "-W", str(int(PROBE_TIMEOUT)), t.addr]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        if done.returncode == 0:
            return "answered"
        err = done.stderr.strip().rpartition("ping: ")[2] if done.stderr.strip() else ""
        return err or "no answer"
    return run_in(netns, lambda: _probe_socket(t), "cnm-trace-probe")


def run(p: trace.TracePath, t: trace.Target, nft: NftApi) -> trace.Observed:
    """Look, trace one probe, look again (the neighbour the probe resolved)."""
    routes, route_error = _ip(p.netns, "route", "get", t.addr)
    route = routes[0] if routes else None
    if route_error is None and route is None:
        route_error = f"no route to {t.addr}"
    ifname = route.get("dev") if route else None
    link = next((x for x in p.links if x[0] == ifname), None)
    network, host_link, bridge = (link[1], link[2], link[3]) if link else (None, None, None)
    if host_link and bridge:
        # The bridge the kernel has the host end on, which is what the packet meets.
        found, _ = _ip(p.host_netns, "link", "show", host_link)
        bridge = (found[0].get("master") if found else None) or None
    source = (route or {}).get("prefsrc")
    next_hop = (route or {}).get("gateway") or t.addr
    chain = f"trace_{secrets.token_hex(4)}"
    events, result = "", "not sent"
    if route_error is None and route is not None and source and ifname != "lo":
        with _LOCK:
            events, result = _traced(p, t, nft, chain, bridge, source)
    elif route is not None:
        result = probe(p.netns, t)  # inside the sandbox itself: nothing to trace
    neighbour = fdb = None
    if route is not None and ifname and ifname != "lo":
        found, _ = _ip(p.netns, "neigh", "show", next_hop, "dev", ifname)
        neighbour = found[0] if found else None
    mac = (neighbour or {}).get("lladdr")
    if bridge and mac:
        entries, _ = _ip(p.host_netns, "fdb", "show", "br", bridge, program="bridge")
        fdb = next((e for e in entries or [] if e.get("mac") == mac
                    and e.get("master") == bridge), None)
    return trace.Observed(p.sandbox, t, route, route_error, ifname, network, host_link,
                          bridge, next_hop if route and ifname != "lo" else None, neighbour,
                          fdb, events, chain,
                          result)


def _traced(p: trace.TracePath, t: trace.Target, nft: NftApi, chain: str, bridge: str | None,
            source: str) -> tuple[str, str]:
    hook = "output" if p.same_namespace else "prerouting"
    iif = None if p.same_namespace else bridge
    try:
        nft.run(trace.trace_chain(chain, hook, iif, source, t))
    except NotFound as e:
        raise Unavailable("cnm's nftables table is missing: cannot trace",
                          hint="cnm firewall reload") from e
    try:
        # Started after the chain exists, so the monitor knows its rules by name.
        monitor = _monitor(p.host_netns)
        try:
            result = probe(p.netns, t)
            time.sleep(0.2)  # the last events of the probe reach the monitor
        finally:
            events, _ = _stop(monitor)
    finally:
        # Gone already is fine (a table rebuilt meanwhile); anything else is raised.
        with contextlib.suppress(NotFound):
            nft.run(f"flush chain inet cnm {chain}\ndelete chain inet cnm {chain}\n")
    return events, result
