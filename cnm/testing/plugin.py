"""A pytest plugin: throwaway namespaces for tests that run the real code as root.

``pytest -p cnm.testing.plugin`` (or ``pytest_plugins = ["cnm.testing.plugin"]`` in a
root conftest.py) gives a test:

- ``host_ns``: a throwaway network namespace standing in for the host (named cnmtest-*,
  lo up), deleted with all it holds after the test, pass or fail;
- ``stack``: an in-process core on the real kernel adapters, managing ``host_ns``;
- ``daemon``: a real cnmd process managing ``host_ns``, stopped after the test.

Nothing here touches the machine's own namespace. A runtime author testing a plugin that
calls cnm, or a lab, can use the same fixtures cnm's own root tier uses. They need root
(CAP_NET_ADMIN, CAP_SYS_ADMIN): without it a test asking for one is skipped with that
reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from cnm import wiring
from cnm.core import Config
from cnm.kernel.link import HostLinks, SandboxLinks
from cnm.testing.netns import Daemon, HostNs, Stack, run, unbind_all


@pytest.fixture
def host_ns() -> Iterator[HostNs]:
    """A throwaway namespace standing in for the host; deleted with all it holds."""
    if os.geteuid() != 0:
        pytest.skip("throwaway namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")
    name = f"cnmtest-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        # A fresh namespace has lo down; a real host has it up (host-network sandboxes).
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield HostNs(name, f"/run/netns/{name}")
    finally:
        run("ip", "netns", "del", name, check=False)


@pytest.fixture
def stack(host_ns: HostNs, tmp_path: Path) -> Iterator[Stack]:
    """The core in-process on the real kernel adapters (no DNS server, no upstreams)."""
    resolv = tmp_path / "host-resolv-none.conf"
    resolv.write_text("# the test host has no upstream resolver\n")
    config = Config(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                    host_netns=host_ns.path, resolv_conf=str(resolv))
    try:
        built = wiring.build(config, dns=False)
    except BaseException:
        unbind_all(Path(config.run_dir))
        raise
    try:
        yield Stack(built.controller, cast(HostLinks, built.adapters.host),
                    cast(SandboxLinks, built.adapters.sandbox), host_ns, config)
    finally:
        built.close()
        unbind_all(Path(config.run_dir))


@pytest.fixture
def daemon(host_ns: HostNs, tmp_path: Path) -> Iterator[Daemon]:
    """A real cnmd (``python -m cnm daemon``) managing ``host_ns``, on a socket of its own."""
    # A unix socket's path has at most 107 bytes, and a test's tmp_path can be longer.
    sock_dir = tempfile.mkdtemp(prefix="cnmtest-")
    d = Daemon(host_ns, tmp_path / "state", tmp_path / "run",
               os.path.join(sock_dir, "cnm.sock"), tmp_path / "cnmd.log")
    try:
        d.start()
        yield d
    finally:
        d.stop()
        unbind_all(d.run_dir)
        shutil.rmtree(sock_dir, ignore_errors=True)
