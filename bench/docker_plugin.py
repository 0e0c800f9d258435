"""cnm as Docker's network and IPAM plugin vs Docker's own bridge driver, one dockerd, one run.

- `docker network create -d cnm --ipam-driver cnm --subnet S` vs `-d bridge --subnet S`
  (then `docker network rm`), interleaved;
- `docker run -d --network NET` on a cnm network vs on a Docker bridge network, minus
  `docker run -d --network none` (the container's own cost): the networking cost, as in
  REFERENCE §3; each container removed after (`docker rm -f`), not timed. Interleaved.

Everything runs in a throwaway namespace (dockerd with a private /run whose plugins dir is
the run's own, cnmd serving its plugin there): the lab tier's recipe (tests/lab). As root:

    .venv/bin/python bench/docker_plugin.py [--n 15]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchcommon import Janitor, median, ms, need_peers, progress, run  # noqa: E402
from cnm.lab.dockerd import BUSYBOX, CONTAINERD, DOCKER, DOCKERD, RUNC, Dockerd  # noqa: E402
from cnm.testing.netns import Daemon, HostNs, unbind_all  # noqa: E402


def timed(d: Dockerd, *args: str) -> float:
    t = time.perf_counter()
    r = d.docker(*args, timeout=120)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=15, help="samples of each (default 15)")
    p.add_argument("--json", metavar="PATH", help="write the samples here")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("bench/docker_plugin.py needs root", file=sys.stderr)
        return 2
    if not need_peers("docker_plugin.py", DOCKERD, CONTAINERD, RUNC, DOCKER, BUSYBOX):
        return 2
    janitor = Janitor()
    try:
        ns = f"cnmbench-dock-{secrets.token_hex(3)}"
        run("ip", "netns", "add", ns)
        janitor.push("delete the namespace", lambda: run("ip", "netns", "del", ns, check=False))
        run("ip", "-n", ns, "link", "set", "lo", "up")
        host = HostNs(ns, f"/run/netns/{ns}")
        root = Path(tempfile.mkdtemp(prefix="cnmbench-"))
        janitor.push("remove the temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
        d = Dockerd(host, root / "docker")
        (root / "docker" / "plugins").mkdir(parents=True)
        cn = Daemon(host, root / "state", root / "run", str(root / "cnm.sock"),
                    root / "cnmd.log")
        cn.start("--docker-plugin", str(d.plugins / "cnm.sock"))

        def stop_cnmd() -> None:
            cn.stop()
            unbind_all(cn.run_dir)

        janitor.push("stop cnmd", stop_cnmd)
        progress("starting dockerd")
        d.start()
        janitor.push("stop dockerd", d.stop)
        img = d.image()
        version = d.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

        # ---- network create
        create: dict[str, list[float]] = {"cnm": [], "bridge": []}
        progress(f"network create x{a.n} each")
        for i in range(a.n + 2):
            for kind in ("cnm", "bridge"):
                subnet = f"10.{200 + (kind == 'bridge')}.{i}.0/24"
                flags = (["-d", "cnm", "--ipam-driver", "cnm"] if kind == "cnm"
                         else ["-d", "bridge"])
                took = timed(d, "network", "create", *flags, "--subnet", subnet, f"n{kind}{i}")
                timed(d, "network", "rm", f"n{kind}{i}")
                if i >= 2:  # warm-up
                    create[kind].append(took)

        # ---- docker run
        d.docker("network", "create", "-d", "cnm", "--ipam-driver", "cnm", "--subnet",
                 "10.210.0.0/16", "cnet")
        d.docker("network", "create", "-d", "bridge", "--subnet", "10.211.0.0/16", "bnet")
        runs: dict[str, list[float]] = {"none": [], "bnet": [], "cnet": []}
        progress(f"docker run x{a.n} each (none, bridge, cnm)")
        for i in range(a.n + 2):
            for net in ("none", "bnet", "cnet"):
                name = f"c{net}{i}"
                took = timed(d, "run", "-d", "--name", name, "--network", net, img, "sleep",
                             "100000")
                timed(d, "rm", "-f", name)
                if i >= 2:
                    runs[net].append(took)
        d.docker("network", "rm", "cnet", "bnet")
    finally:
        janitor.clean()

    med = {k: ms(median(v)) for k, v in {**create, **runs}.items()}
    net_cnm, net_bridge = med["cnet"] - med["none"], med["bnet"] - med["none"]
    print(f"\ndocker {version}, n={a.n} each (medians, ms; one run)\n")
    print(f"{'':38}{'cnm':>9}{'bridge':>9}{'ratio':>8}")
    print(f"{'docker network create':38}{med['cnm']:9.1f}{med['bridge']:9.1f}"
          f"{med['cnm'] / med['bridge']:8.2f}")
    print(f"{'docker run -d (whole)':38}{med['cnet']:9.1f}{med['bnet']:9.1f}"
          f"{med['cnet'] / med['bnet']:8.2f}")
    print(f"{'docker run -d --network none':38}{med['none']:9.1f}")
    print(f"{'networking cost (run minus none)':38}{net_cnm:9.1f}{net_bridge:9.1f}"
          f"{net_cnm / net_bridge:8.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"version": version, "create": create,
                                            "run": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
