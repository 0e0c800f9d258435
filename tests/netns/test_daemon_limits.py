"""cnmd outgrows the usual soft open-file limit: every sandbox on a user-defined network
holds two DNS sockets in the daemon."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cnm.testing.netns import Daemon, HostNs, unbind_all


def test_more_sandboxes_than_the_soft_file_limit_would_allow(host_ns: HostNs,
                                                              tmp_path: Path) -> None:
    d = Daemon(host_ns, tmp_path / "state", tmp_path / "run", str(tmp_path / "cnm.sock"),
               tmp_path / "cnmd.log")
    try:
        # A soft limit of 64 (the hard one stays): at ~3 files a sandbox, 40 would not fit.
        d.start(prefix=("prlimit", "--nofile=64:4096", "--"))
        c = d.client()
        c.create_network(name="big", subnets=["10.120.0.0/16"])
        for i in range(40):
            c.create_sandbox(name=f"s{i}", network="big")
        assert len(c.sandboxes()) == 40
        assert d.proc is not None
        limits = Path(f"/proc/{d.proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"]
        c.close()
    finally:
        d.stop()
        unbind_all(d.run_dir)


def test_past_a_thousand_descriptors_the_daemon_lives_and_answers(host_ns: HostNs,
                                                                   tmp_path: Path) -> None:
    """libnftables waits with select(), which aborts the process on a descriptor of 1024
    or more: cnm keeps its long-lived ones above 1023 (cnm/kernel/fds.py). It died after
    ~370 sandboxes on a user-defined network before."""
    d = Daemon(host_ns, tmp_path / "state", tmp_path / "run", str(tmp_path / "cnm.sock"),
               tmp_path / "cnmd.log")
    try:
        d.start(prefix=("prlimit", "--nofile=1024:8192", "--"))
        c = d.client()
        c.create_network(name="big", subnets=["10.121.0.0/16"])
        for i in range(450):
            c.create_sandbox(name=f"s{i}", network="big")
        assert d.proc is not None and d.proc.poll() is None, d.log.read_text()[-2000:]
        last = c.sandbox("s449")["netns"]
        c.close()
        # @127.0.0.11: nsenter keeps the machine's /etc/resolv.conf, which must never be asked.
        r = subprocess.run(["nsenter", f"--net={last}", "dig", "@127.0.0.11", "+short",
                            "+tries=1", "s0"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout.strip() == "10.121.0.2", r
    finally:
        d.stop()
        unbind_all(d.run_dir)
