#!/usr/bin/env python3
"""Where unpublish's time goes at N mappings on one sandbox vs at 210: the core in-process
on the real kernel, in a throwaway host namespace, 200 unpublishes each under cProfile.

    .venv/bin/python bench/unpublish_profile.py [N]      (root; N defaults to 10,000)
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds a profile.py that would shadow the standard one cProfile imports.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import cProfile  # noqa: E402
import pstats  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from cnm import wiring  # noqa: E402
from cnm.core import Config  # noqa: E402
from cnm.model import NetworkSpec, SandboxSpec  # noqa: E402
from cnm.testing.netns import unbind_all  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    ns = f"cnmbench-up-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    d = Path(tempfile.mkdtemp(prefix="cnmbench-up-"))
    (d / "resolv.conf").write_text("# no upstream\n")
    cfg = Config(state_dir=str(d / "s"), run_dir=str(d / "r"), host_netns=f"/run/netns/{ns}",
                 resolv_conf=str(d / "resolv.conf"))
    try:
        st = wiring.build(cfg, dns=False)
        c = st.controller
        c.create_network(NetworkSpec("n", subnets=("10.88.0.0/24",)))
        c.create_sandbox(SandboxSpec("web", network="n"))
        for i in range(n):
            c.publish("web", [f"{10000 + i}:80"])

        def profile(label: str, ports: list[int]) -> None:
            pr = cProfile.Profile()
            t = time.perf_counter()
            pr.enable()
            for p in ports:
                c.unpublish("web", p)
            pr.disable()
            print(f"== {label}: {(time.perf_counter() - t) / len(ports) * 1e3:.3f} ms a call "
                  "(profiled)")
            pstats.Stats(pr).sort_stats("tottime").print_stats(8)

        profile(f"at {n}", [10000 + i for i in range(n - 1, n - 201, -1)])
        for i in range(n - 201, 209, -1):
            c.unpublish("web", 10000 + i)
        profile("at 210", [10000 + i for i in range(209, 9, -1)])
        st.close()
    finally:
        unbind_all(d / "r")
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
