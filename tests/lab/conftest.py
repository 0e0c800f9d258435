"""Fixtures for the lab tier: cnm beside real peers, all inside throwaway namespaces.

Every test gets a host namespace named cnmtest-dock-*, one temp dir for everything the
daemons write, and unstarted daemons (the test chooses the order). Teardown runs even when
the test fails: cnmd stops, its sandboxes are unbound, dockerd and containerd stop, the
namespace and the temp dir go. Around each test the machine's own namespace (its nft
ruleset and links) is compared before and after: it must not change.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnm.lab.dockerd import Dockerd, missing

# The lab tier reuses the root tier's helpers (namespaces, the cnmd process).
from cnm.testing.netns import Daemon, HostNs, run, unbind_all

if os.geteuid() != 0:
    pytest.skip("the lab tier needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)",
                allow_module_level=True)


def _machine() -> tuple[str, str]:
    """The machine's own firewall and links, read only."""
    return run("nft", "list", "ruleset").stdout, run("ip", "-br", "link").stdout


@pytest.fixture(autouse=True)
def machine_unchanged() -> Iterator[None]:
    before = _machine()
    yield
    after = _machine()
    assert after[0] == before[0], "the machine's own nft ruleset changed"
    assert after[1] == before[1], "the machine's own links changed"


@pytest.fixture
def lab_dir() -> Iterator[Path]:
    # Short, so the daemons' socket paths stay under the 108-byte limit.
    d = Path(tempfile.mkdtemp(prefix="cnmlab-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def host_ns() -> Iterator[HostNs]:
    """A throwaway namespace standing in for the host both daemons manage."""
    name = f"cnmtest-dock-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield HostNs(name, f"/run/netns/{name}")
    finally:
        run("ip", "netns", "del", name, check=False)


@pytest.fixture
def dockerd(host_ns: HostNs, lab_dir: Path) -> Iterator[Dockerd]:
    """containerd + dockerd for ``host_ns``, not started yet; always stopped after."""
    if gone := missing():
        pytest.skip(f"needs {', '.join(gone)} (apt-get install docker.io containerd runc)")
    d = Dockerd(host_ns, lab_dir / "docker")
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def cnmd(host_ns: HostNs, lab_dir: Path) -> Iterator[Daemon]:
    """cnmd for ``host_ns``, not started yet; always stopped (and its sandboxes unbound)."""
    d = Daemon(host_ns, lab_dir / "cnm-state", lab_dir / "cnm-run", str(lab_dir / "cnm.sock"),
               lab_dir / "cnmd.log")
    try:
        yield d
    finally:
        d.stop()
        unbind_all(d.run_dir)
