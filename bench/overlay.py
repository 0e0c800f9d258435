"""Overlay benchmark, one run: three hosts (throwaway namespaces, each its own cnmd) on an
underlay bridge, a 3-member etcd on their underlay addresses (cnm.testing.cluster.Lab).

- convergence: from a sandbox create (connect) returning on host 1 until its MAC is in the
  FDB of hosts 2 and 3 (each polled by a thread with a netlink socket in that namespace);
  median and p99 over N; beside it etcd's own watch latency (a put on one member until a
  watch on another sees it: the floor).
- connect on an overlay vs on a bridge network, same daemon, same run: medians and ratio.

Usage (root): .venv/bin/python bench/overlay.py [-n N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

from pyroute2 import NetNS

from cnm.kernel.link import host_socket_factory
from cnm.kernel.netns import NsThread
from cnm.store.etcdclient import EtcdClient
from cnm.testing.cluster import Lab


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


def watch_latency(lab: Lab, n: int) -> list[float]:
    """A put through member 1 until a watch through member 2 sees it."""
    m1, m2 = lab.etcd.members[0], lab.etcd.members[1]
    t1, t2 = NsThread(m1.netns, name="b1"), NsThread(m2.netns, name="b2")
    try:
        c1 = EtcdClient([(m1.addr, 2379)], socket_factory=host_socket_factory(t1))
        c2 = EtcdClient([(m2.addr, 2379)], socket_factory=host_socket_factory(t2))
        rev, _, _ = c1.range("/bench/none")
        seen: dict[str, float] = {}
        stop = threading.Event()
        holder: list[object] = []

        def watch() -> None:
            for _, events in c2.watch("/bench/", rev + 1, stop, holder):  # type: ignore[arg-type]
                for _, kv in events:
                    seen[kv.key] = time.perf_counter()
                if stop.is_set():
                    return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        time.sleep(0.5)
        out = []
        for i in range(n):
            key = f"/bench/k{i}"
            t0 = time.perf_counter()
            c1.put(key, "{}")
            while key not in seen:
                time.sleep(0.0002)
            out.append(seen[key] - t0)
        stop.set()
        return out
    finally:
        t1.stop()
        t2.stop()


def fdb_macs(ns: NetNS, ifindex: int) -> set[str]:
    return {m.get_attr("NDA_LLADDR") for m in ns.fdb("dump", ifindex=ifindex)}


def convergence(lab: Lab, n: int) -> list[float]:
    h1, h2, h3 = lab.hosts
    nss = [NetNS(h.ns.name) for h in (h2, h3)]
    try:
        # The VXLAN devices of hosts 2 and 3 exist while they have a local endpoint.
        h2.client().create_sandbox(name="anchor2", network="ov")
        h3.client().create_sandbox(name="anchor3", network="ov")
        vx = h2.vxlan("ov")
        idx = [ns.link_lookup(ifname=vx)[0] for ns in nss]
        c = h1.client()
        out = []
        for i in range(n):
            sb = c.create_sandbox(name=f"cv{i}", network="ov")
            t0 = time.perf_counter()  # the connect has returned
            mac = sb["endpoints"][0]["mac"]
            pending = [0, 1]
            while pending:
                pending = [k for k in pending if mac not in fdb_macs(nss[k], idx[k])]
                if pending:
                    time.sleep(0.0005)
            out.append(time.perf_counter() - t0)
        return out
    finally:
        for ns in nss:
            ns.close()


def connects(lab: Lab, n: int) -> tuple[list[float], list[float]]:
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
            t0 = time.perf_counter()
            c.connect(net, f"s{i}")
            res[net].append(time.perf_counter() - t0)
    return res["ovb"], res["brb"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    args = ap.parse_args()
    lab = Lab.make(3, ttl=10, timeout=5.0)
    try:
        h1 = lab.hosts[0]
        h1.client().create_network(name="ov", driver="overlay")
        time.sleep(0.5)
        w = watch_latency(lab, args.n)
        conv = convergence(lab, args.n)
        ov, br = connects(lab, args.n)
    finally:
        lab.close()
    ms = 1000.0
    print(f"etcd watch latency      median {statistics.median(w) * ms:7.2f} ms  "
          f"p99 {p99(w) * ms:7.2f} ms  (N={len(w)})")
    print(f"convergence (3 hosts)   median {statistics.median(conv) * ms:7.2f} ms  "
          f"p99 {p99(conv) * ms:7.2f} ms  (connect returned on host 1 .. its MAC in the "
          "FDB of hosts 2 and 3)")
    print(f"connect overlay         median {statistics.median(ov) * ms:7.2f} ms")
    print(f"connect bridge          median {statistics.median(br) * ms:7.2f} ms")
    print(f"overlay / bridge        {statistics.median(ov) / statistics.median(br):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
