"""Fixtures for the root tier: the real code against throwaway namespaces.

Every test gets its own "host" namespace (named cnmtest-*), its own state and run dirs, and
either an in-process controller (``stack``) or a real cnmd process (``daemon``). Teardown
runs even when the test fails. Nothing here touches the machine's own namespace.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from nstools import Daemon, HostNs, Stack, run, unbind_all

from cnm import wiring
from cnm.core import Config
from cnm.kernel.link import HostLinks, SandboxLinks

if os.geteuid() != 0:
    pytest.skip("the netns tier needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)",
                allow_module_level=True)


@pytest.fixture
def host_ns() -> Iterator[HostNs]:
    """A throwaway namespace standing in for the host; deleted with all it holds."""
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
    d = Daemon(host_ns, tmp_path / "state", tmp_path / "run", str(tmp_path / "cnm.sock"),
               tmp_path / "cnmd.log")
    try:
        d.start()
        yield d
    finally:
        d.stop()
        unbind_all(d.run_dir)
