"""`cnm lab` itself: labs up at once do not collide, down is idempotent, Ctrl-C during up
leaves nothing, a check that must fail is reported FAIL with exit status 1, a malformed
lab creates nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.labrun import LabEnv, lab_env

TWIN = """\
name: {name}
networks:
  web: {{subnet: 10.42.0.0/24}}
sandboxes:
  a: {{networks: [{{network: web, ip: 10.42.0.10}}], serve: [tcp/80]}}
  b: {{networks: [web]}}
checks:
  - {{tcp: a, port: 80, from: b, seen_as: b}}
  - {{ping: a, from: b, expect: {expect}}}
"""


@pytest.fixture
def labs() -> Iterator[LabEnv]:
    with tempfile.TemporaryDirectory(prefix="cnmlt-") as d, lab_env(Path(d)) as e:
        yield e


def write(labs: LabEnv, name: str, expect: str = "reach") -> str:
    p = labs.root.parent / f"{name}.yaml"
    p.write_text(TWIN.format(name=name, expect=expect))
    return str(p)


def test_two_labs_up_at_once_with_the_same_addresses_do_not_collide(labs: LabEnv) -> None:
    one, two = write(labs, "one"), write(labs, "two")
    assert labs.cnm("up", one).returncode == 0
    try:
        assert labs.cnm("up", two).returncode == 0
        ls = labs.cnm("ls").stdout
        assert "one" in ls and "two" in ls
        for f in (one, two):
            r = labs.cnm("check", f)
            assert r.returncode == 0, r.stdout + r.stderr
        r = labs.cnm("up", one)
        assert r.returncode != 0 and "lab one is already up" in r.stderr
        assert labs.cnm("down", one).returncode == 0
        r = labs.cnm("check", two)
        assert r.returncode == 0, "down of one touched two: " + r.stdout
    finally:
        labs.cnm("down", one)
        labs.cnm("down", two)
    assert labs.leftovers() == []


def test_down_is_idempotent(labs: LabEnv) -> None:
    f = write(labs, "idem")
    assert labs.cnm("up", f).returncode == 0
    first = labs.cnm("down", f)
    assert first.returncode == 0 and "down in" in first.stdout
    again = labs.cnm("down", f)
    assert again.returncode == 0 and "was not up" in again.stdout
    assert labs.leftovers() == []


def test_a_check_that_must_fail_is_reported_fail_with_exit_status_1(labs: LabEnv) -> None:
    r = labs.cnm("run", write(labs, "wrong", expect="blocked"))
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ping b → a"))
    assert line.split()[-1] == "FAIL" and "blocked" in line and "reach" in line
    assert "1/2 checks passed" in r.stdout
    assert labs.leftovers() == [], "run must go down even when a check fails"


def test_ctrl_c_during_up_leaves_nothing(labs: LabEnv) -> None:
    f = write(labs, "intr")
    p = labs.popen("up", f)
    assert p.stdout is not None
    # Interrupt once the namespaces are made and the cnmd is starting.
    for line in p.stdout:
        if line.strip().startswith("links"):
            break
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130, out
    assert "tearing down" in out
    time.sleep(0.2)
    assert labs.leftovers() == []


def test_a_malformed_lab_creates_nothing(labs: LabEnv) -> None:
    p = labs.root.parent / "bad.yaml"
    p.write_text(TWIN.format(name="bad", expect="reach").replace("from: b", "from: c"))
    r = labs.cnm("up", str(p))
    assert r.returncode == 2
    assert f"{p}:8:" in r.stderr and "'c' is not a host or a sandbox" in r.stderr
    assert labs.leftovers() == []


# Three hosts on an underlay with a three-member etcd, h1 also running a dockerd: every
# kind of process the runner starts. {bad} makes the networks step fail (the plugin refuses
# the option), after etcd, the cnmds and the dockerd are up.
PEERS = """\
name: {name}
hosts:
  h1: {{docker: true}}
  h2: {{}}
  h3: {{}}
switches:
  ul: {{}}
links:
  - ends: [{{node: h1, ifname: eth0, address: 192.168.97.1/24}}, ul]
  - ends: [{{node: h2, ifname: eth0, address: 192.168.97.2/24}}, ul]
  - ends: [{{node: h3, ifname: eth0, address: 192.168.97.3/24}}, ul]
cluster: {{store: etcd, members: [h1, h2, h3]}}
networks:
  ov: {{driver: overlay, subnet: 10.97.0.0/24}}
  web: {{subnet: 10.98.0.0/24, hosts: h1{bad}}}
sandboxes:
  a: {{host: h2, networks: [ov]}}
  ctr: {{host: h1, docker: busybox, networks: [web]}}
checks:
  - {{ping: ctr, from: h1}}
"""


def peers(labs: LabEnv, name: str, bad: bool) -> str:
    p = labs.root.parent / f"{name}.yaml"
    p.write_text(PEERS.format(name=name, bad=", options: {nosuch: x}" if bad else ""))
    return str(p)


def running(labs: LabEnv, program: str) -> list[str]:
    """Processes of ``program`` started for this test's labs (their command line names the
    labs' dir)."""
    return [x for x in labs.leftovers() if x.startswith("process ")
            and f"{program} " in x.split(":", 1)[1] + " "]


def test_a_failed_up_takes_etcd_dockerd_and_the_namespaces_down(labs: LabEnv) -> None:
    f = peers(labs, "pfail", bad=True)
    r = labs.cnm("up", f)
    assert r.returncode != 0, r.stdout
    assert "unknown option 'nosuch'" in r.stderr, r.stderr
    # It got as far as the peers: each was up, so each had to be taken down.
    assert "  etcd " in r.stdout and "  dockerd " in r.stdout, r.stdout
    assert "tearing down" in r.stdout
    assert labs.leftovers() == []
    again = labs.cnm("down", f)
    assert again.returncode == 0 and "was not up" in again.stdout


def test_down_after_up_was_killed_leaves_nothing(labs: LabEnv) -> None:
    f = peers(labs, "pkill", bad=False)
    p = labs.popen("up", f)
    assert p.stdout is not None
    # kill -9 once dockerd is up (etcd and the cnmds are too): no teardown of its own.
    for line in p.stdout:
        if line.strip().startswith("dockerd"):
            break
    p.kill()
    p.wait(timeout=30)
    assert running(labs, "etcd") and running(labs, "dockerd"), labs.leftovers()
    r = labs.cnm("down", f)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(0.2)
    assert labs.leftovers() == []


def test_a_lab_whose_peers_are_missing_is_refused_before_anything_is_made(
        labs: LabEnv) -> None:
    f = peers(labs, "pmiss", bad=False)
    env = {**labs.env, "PATH": "/nonexistent"}  # no etcd, no etcdctl on it
    r = subprocess.run([sys.executable, "-m", "cnm", "lab", "up", f], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode != 0
    assert f"{f}: needs etcd, etcdctl, which this machine lacks" in r.stderr, r.stderr
    assert "packages.sh install lab" in r.stderr
    assert labs.leftovers() == []


def test_ctrl_c_once_the_peers_are_up_leaves_nothing(labs: LabEnv) -> None:
    f = peers(labs, "pintr", bad=False)
    p = labs.popen("up", f)
    assert p.stdout is not None
    for line in p.stdout:
        if line.strip().startswith("dockerd"):
            break
    assert running(labs, "etcd") and running(labs, "dockerd"), labs.leftovers()
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 130, out
    assert "tearing down" in out
    time.sleep(0.2)
    assert labs.leftovers() == []


TLS = """\
name: {name}
hosts: {{h1: , h2: }}
switches: {{ul: }}
links:
  - ends: [{{node: h1, ifname: eth0, address: 192.168.96.1/24}}, ul]
  - ends: [{{node: h2, ifname: eth0, address: 192.168.96.2/24}}, ul]
cluster: {{store: etcd, members: [h1, h2], tls: true}}
networks:
  ov: {{driver: overlay, subnet: 10.96.0.0/24}}
sandboxes:
  a: {{host: h1, networks: [ov], serve: [tcp/80]}}
  b: {{host: h2, networks: [ov]}}
checks:
  - {{ping: a, from: b}}
  - {{tcp: a, port: 80, from: b, seen_as: b}}
"""


def test_a_cluster_with_tls_runs_its_members_and_cnmds_over_tls(labs: LabEnv) -> None:
    p = labs.root.parent / "tls.yaml"
    p.write_text(TLS.format(name="tls"))
    r = labs.cnm("up", str(p))
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        cmdlines = [c for c in (_cmdline(d) for d in Path("/proc").iterdir()
                                if d.name.isdigit()) if str(labs.root) in c]
        etcds = [c for c in cmdlines if c.startswith("etcd ")]
        assert len(etcds) == 2 and all("--client-cert-auth" in c and "https://" in c
                                       for c in etcds), etcds
        cnmds = [c for c in cmdlines if " cnm daemon " in c]
        assert len(cnmds) == 2 and all("--cluster-store-cert" in c for c in cnmds), cnmds
        r = labs.cnm("check", str(p))
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        labs.cnm("down", str(p))
    assert labs.leftovers() == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
