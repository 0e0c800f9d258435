"""The peers a lab runs beside its cnmds: the `cluster`'s etcd members and each docker
host's dockerd, and the Docker containers on it (`up`'s steps and `down`'s part)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnm.errors import CnmError, Unsupported
from cnm.lab import model as m
from cnm.lab.dockerd import BUSYBOX, Dockerd, Named, endpoint_args
from cnm.lab.dockerd import missing as docker_missing
from cnm.lab.etcd import Etcd
from cnm.lab.state import kill, netns_name, netns_path, ours, state_dir

if TYPE_CHECKING:
    from cnm.lab.runner import Up
    from cnm.testing.pki import Pki


def check_installed(lab: m.Lab) -> None:
    """Refuse, before anything is made, a lab whose peers are not installed here."""
    gone = []
    if lab.cluster is not None:
        gone += [p for p in ("etcd", "etcdctl") if shutil.which(p) is None]
    if any(h.docker for h in lab.hosts):
        gone += [*docker_missing(), *([BUSYBOX] if not os.access(BUSYBOX, os.X_OK) else [])]
    if gone:
        raise Unsupported(f"{lab.path}: needs {', '.join(gone)}, which this machine lacks",
                          hint="bash scripts/packages.sh install lab (etcd-server "
                               "etcd-client docker.io containerd runc busybox-static)")
    if lab.cluster is not None and lab.cluster.tls and importlib.util.find_spec("trustme") is None:
        raise Unsupported(f"{lab.path}: cluster.tls makes its certificates with trustme, "
                          "which is not installed", hint="pip install 'cnm[lab-tls]'")


def dockerd(lab: str, host: str) -> Dockerd:
    """The dockerd of a lab's host (everything it writes under the host's dir)."""
    return Dockerd(Named(netns_name(lab, host)), state_dir(lab) / host / "docker",
                   # Names Docker's DNS does not know go to a loopback server that is not
                   # there: never to the machine's resolvers.
                   config={"dns": ["127.0.0.1"]}, session=True)


def docker(lab: str, host: str, *args: str, timeout: float = 90) -> str:
    r = dockerd(lab, host).docker(*args, timeout=timeout)
    if r.returncode != 0:
        raise CnmError(f"docker {' '.join(args)} (host {host}): "
                       f"{r.stderr.strip() or 'exit ' + str(r.returncode)}")
    return r.stdout.strip()


def container(lab: str, sb: m.Sandbox) -> dict[str, Any]:
    """`docker inspect` of a docker sandbox's container."""
    out: list[dict[str, Any]] = json.loads(docker(lab, sb.host, "inspect", sb.name))
    return out[0]


def etcd_step(u: Up) -> None:
    """The cluster's etcd members, each in its host's namespace on the host's underlay
    address, data under the lab's dir; up once a member answers a linearizable read."""
    cl = u.lab.cluster
    if cl is None:
        return
    base = state_dir(u.lab.name) / "etcd"
    pki = _pki(base / "pki") if cl.tls else None
    etcd = Etcd.make([(netns_path(u.lab.name, h), u.lab.address_of(h)) for h in cl.members],
                     base=str(base), names=cl.members, tls=pki)
    if pki is not None:
        for h in u.lab.hosts:
            if h.cnmd:
                t = pki.issue(f"cnmd-{h.name}", f"{h.name}.cnm.lab")
                u.cluster_tls[h.name] = ("--cluster-store-ca", t.ca, "--cluster-store-cert",
                                         t.cert, "--cluster-store-key", t.key)
    etcd.token = f"cnm-lab-{u.lab.name}"
    try:
        etcd.start()
    finally:
        u.state.etcd = [mb.proc.pid for mb in etcd.members if mb.proc is not None]
        u.state.save()
    try:
        etcd.wait_healthy()
    except RuntimeError as e:
        raise CnmError(f"the lab's etcd cluster did not start: {e}") from None
    u.cluster_store = etcd.url


def _pki(base: Path) -> Pki:
    """A throwaway CA for `cluster: {tls: true}` (trustme: the `lab-tls` extra, which
    check_installed asked for before anything was made)."""
    from cnm.testing.pki import Pki

    return Pki(base)


def dockerd_step(u: Up) -> None:
    """A dockerd (and its containerd) in each docker host, cnm its network plugin; the
    busybox image made in each."""
    started = []
    for h in u.lab.hosts:
        if h.docker:
            d = dockerd(u.lab.name, h.name)
            u.state.dockerd[h.name] = d.launch()
            u.state.save()
            started.append(d)

    def ready(d: Dockerd) -> None:
        try:
            d.wait_ready()
            d.image("busybox")
        except (RuntimeError, subprocess.SubprocessError) as e:
            raise CnmError(f"dockerd of {d.host_ns.name}: {e}") from None

    with ThreadPoolExecutor(max(1, len(started))) as pool:
        for f in [pool.submit(ready, d) for d in started]:
            f.result()


def make_container(lab: str, sb: m.Sandbox) -> None:
    """A Docker container on its networks, each through `network connect` (the only way
    to give Docker's endpoint the ``cnm.aliases`` option that names it in cnm's DNS)."""
    first = sb.attachments[0]
    docker(lab, sb.host, "create", "--name", sb.name, "--hostname", sb.hostname or sb.name,
           "--network", first.network, *(("--mac-address", first.mac) if first.mac else ()),
           *(a for p in sb.ports for a in ("-p", p)), str(sb.docker),
           "sleep", "2147483647")
    docker(lab, sb.host, "network", "disconnect", first.network, sb.name)
    for a in sb.attachments:
        docker(lab, sb.host, "network", "connect",
               *endpoint_args(sb.name, a.ip, a.ip6, a.aliases), a.network, sb.name)
    docker(lab, sb.host, "start", sb.name)


def stop_dockerd(lab: str, host: str, pid: int) -> None:
    """The containers first (killed: busybox as pid 1 ignores SIGTERM), then dockerd and
    containerd (SIGTERM to the wrapper, which stops them in order)."""
    d = dockerd(lab, host)
    if not ours(pid, d.dir):
        return  # gone (what it left, the sweep finds by its dir)
    ids = d.docker("ps", "-aq", timeout=30).stdout.split()
    if ids:
        d.docker("rm", "-f", *ids, timeout=60)
    kill(pid, group=False, wait=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
