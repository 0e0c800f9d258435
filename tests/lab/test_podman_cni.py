"""A real runtime drives cnm-cni: podman 4.3 with network_backend = "cni" and a conflist
naming `cnm`, in throwaway namespaces (see podmanlab.py). Containers on a cnm network reach
each other by address, by name and by --network-alias, a published port is reached from
the host namespace, and `podman rm` leaves nothing in cnm or in the kernel.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnm.testing.netns import Daemon, HostNs, unbind_all
from tests.lab.podmanlab import Podman, missing

pytestmark = pytest.mark.lab

SUBNET, GATEWAY = "10.74.0.0/24", "10.74.0.1"

# An HTTP GET from the lab's host namespace; prints the body's last line.
_GET = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 5
while True:
    try:
        s = socket.create_connection((host, port), timeout=2)
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        print(data.decode().strip().splitlines()[-1])
        break
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(f"no answer: {e!r}")
        time.sleep(0.2)
"""


@pytest.fixture
def lab(host_ns: HostNs, lab_dir: Path) -> Iterator[tuple[Podman, Daemon]]:
    if gone := missing():
        pytest.skip(f"needs {', '.join(gone)} (bash scripts/test.sh installs the lab step)")
    p = Podman(host_ns, lab_dir / "podman")
    d: Daemon | None = None
    try:
        p.start()
        # cnmd in the holder's mounts (to see podman's namespaces), on the lab's host
        # namespace by a /proc path that reads the same there.
        d = Daemon(HostNs(host_ns.name, p.netns), lab_dir / "cnm-state", lab_dir / "cnm-run",
                   str(lab_dir / "cnm.sock"), lab_dir / "cnmd.log")
        d.start(prefix=("nsenter", "-t", str(p.pid), "-m"))
        r = d.cli("network", "create", "--subnet", SUBNET, "cnmnet")
        assert r.returncode == 0, r.stderr
        p.write_network("cnmnet", "cnmnet", d.address)
        yield p, d
    finally:
        p.stop()
        if d is not None:
            d.stop()
            unbind_all(d.run_dir)


def _cnm(d: Daemon, *args: str) -> str:
    r = d.cli(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _sandboxes(d: Daemon) -> list[dict[str, object]]:
    c = d.client()
    try:
        out: list[dict[str, object]] = c.sandboxes()
        return out
    finally:
        c.close()


def _inspect_ip(p: Podman, name: str) -> str:
    out = json.loads(p.podman("inspect", name).stdout)[0]
    nets = out["NetworkSettings"]["Networks"]
    return str(nets["cnmnet"]["IPAddress"])


def test_podman_containers_on_a_cnm_network(lab: tuple[Podman, Daemon],
                                           host_ns: HostNs) -> None:
    p, d = lab
    alpha = p.run_container("alpha", "--network", "cnmnet", cmd=("/bin/sleep", "600"))
    p.run_container("beta", "--network", "cnmnet", "--network-alias", "web",
                    "-p", "8080:80", cmd=("/bin/httpd", "-f", "-p", "80", "-h", "/www"))
    # cnm holds both: adopted sandboxes labelled with podman's container ids.
    sbs = json.loads(_cnm(d, "sandbox", "inspect", *[str(s["name"]) for s in _sandboxes(d)]))
    assert alpha in {s["labels"]["cni.containerid"] for s in sbs}
    assert len(sbs) == 2 and all(s["kind"] == "external" for s in sbs)
    ip_b = _inspect_ip(p, "beta")
    assert ip_b.startswith("10.74.0.")
    # podman wrote the result's DNS into the container.
    resolv = p.exec("alpha", "cat", "/etc/resolv.conf").stdout
    assert resolv.splitlines()[0] == "nameserver 127.0.0.11", resolv
    # By address, by name (podman's container name), by --network-alias.
    for target in (ip_b, "beta", "web"):
        r = p.exec("alpha", "ping", "-c", "1", "-W", "2", target)
        assert r.returncode == 0, (target, r.stdout, r.stderr)
    assert p.exec("alpha", "ping", "-c", "1", "-W", "1", "nosuch").returncode != 0
    # The published port, from the lab's host namespace: the gateway and 127.0.0.1.
    for host in (GATEWAY, "127.0.0.1"):
        r = p.in_host(sys.executable, "-c", _GET, host, "8080")
        assert r.stdout.strip() == "hello-cnm", (host, r.stdout, r.stderr)
    # podman rm: DEL for each; nothing is left in cnm or in the kernel.
    p.podman("rm", "-f", "-t", "0", "alpha", "beta", timeout=120)
    assert _sandboxes(d) == []
    assert json.loads(_cnm(d, "endpoint", "ls", "--format", "json")) == []
    links = p.in_host("ip", "-br", "link").stdout
    assert "cnmv" not in links, links
    assert "8080" not in p.in_host("nft", "list", "table", "inet", "cnm").stdout
    r = p.in_host(sys.executable, "-c", _GET, GATEWAY, "8080", timeout=30)
    assert r.returncode != 0


def test_podman_restart_and_a_cnmd_restart_keep_containers_reachable(
        lab: tuple[Podman, Daemon]) -> None:
    p, d = lab
    p.run_container("one", "--network", "cnmnet", cmd=("/bin/sleep", "600"))
    p.run_container("two", "--network", "cnmnet", cmd=("/bin/sleep", "600"))
    # podman restart: DEL, then ADD in a new namespace under the same container id.
    p.podman("restart", "-t", "0", "two", timeout=120)
    assert p.exec("one", "ping", "-c", "1", "-W", "2", "two").returncode == 0
    assert len(_sandboxes(d)) == 2
    # cnmd restarted under running containers: they keep their addresses and reach each
    # other, and DEL still finds their attachments.
    d.stop()
    d.start(prefix=("nsenter", "-t", str(p.pid), "-m"))
    assert p.exec("two", "ping", "-c", "1", "-W", "2", "one").returncode == 0
    p.podman("rm", "-f", "-t", "0", "one", "two", timeout=120)
    assert _sandboxes(d) == []


def test_a_cnm_error_reaches_podman_and_leaves_nothing(lab: tuple[Podman, Daemon]) -> None:
    p, d = lab
    r = p.podman("run", "-d", "--name", "bad", "--network", "cnmnet", "--ip", "10.99.0.5",
                 "--rootfs", str(p.dir / "rootfs"), "/bin/sleep", "60", check=False)
    assert r.returncode != 0
    assert "10.99.0.5" in r.stderr, r.stderr
    assert _sandboxes(d) == []
