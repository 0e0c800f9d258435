"""Load on the real cnmd: N concurrent clients, each doing M operations (create a sandbox on
a shared network, connect it to a second one, publish a port, disconnect, remove), while a
slowloris holds idle sockets: 0 errors but the expected conflicts, 0 duplicate addresses, the
daemon's memory back near where it started, and the idle sockets never stop anyone.

Counted: CNM_LOAD_CLIENTS x CNM_LOAD_OPS (10 x 20 in CI; bench/README.md's RELIABILITY has
the run by hand)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from cnm.client import Client
from cnm.errors import AlreadyExists, CnmError, Conflict
from cnm.testing.netns import Daemon
from tests.netns.kernelcheck import drift, duplicates

CLIENTS = int(os.environ.get("CNM_LOAD_CLIENTS", "10"))
OPS = int(os.environ.get("CNM_LOAD_OPS", "20"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.timeout(120 + CLIENTS * OPS // 2)
def test_concurrent_clients_and_a_slowloris(daemon: Daemon) -> None:
    c = daemon.client()
    c.create_network(name="front", subnets=["10.66.0.0/16"])
    c.create_network(name="back", subnets=["10.67.0.0/16"])
    c.close()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    loris = []
    for _ in range(200):  # idle sockets, half with half a request
        s = socket.socket(socket.AF_UNIX)
        s.connect(daemon.socket)
        loris.append(s)
    for s in loris[::2]:
        s.sendall(b"POST /v1/networks HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
    start = rss_kib(pid)
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def worker(i: int) -> None:
        cl = Client(daemon.address, timeout=120)
        try:
            for j in range(OPS):
                name = f"l{i}-{j}"
                try:
                    cl.create_sandbox(name=name, network="front")
                    cl.connect("back", name)
                    cl.publish(name, ["80"], network="back")
                    cl.disconnect("back", name)
                    cl.remove_sandbox(name, force=True)
                except (AlreadyExists, Conflict):
                    pass  # expected under contention
                except CnmError as e:
                    with lock:
                        errors.append(f"{name}: {e.code}: {e.message}")
                with lock:
                    done[0] += 1
        finally:
            cl.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in loris:
        s.close()
    end = rss_kib(pid)
    print(f"\nload: {CLIENTS} clients x {OPS} rounds of 5 operations, {len(errors)} errors, "
          f"{duplicates(daemon.state_dir)} duplicate addresses, RSS {start} -> {end} KiB")
    assert not errors, errors[:5]
    assert done[0] == CLIENTS * OPS
    assert duplicates(daemon.state_dir) == 0
    assert drift(daemon.host_ns.path, daemon.state_dir, daemon.run_dir) == []
    # Back near its start: every sandbox is gone again; a leak would grow with the count.
    assert end < start + 64 * 1024, (start, end)
