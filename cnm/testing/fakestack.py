"""A whole core over the fake kernel, and its API served on a unix socket: what the unit
tier's fuzz campaigns (API, schemathesis, CLI, CNI) run against."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from cnm import wiring
from cnm.api import server as api_server
from cnm.core import Config, Controller
from cnm.testing import FakeHostLinks, FakeKernel, FakeNft, FakeSandboxLinks


@contextlib.contextmanager
def fake_stack(tmp: Path) -> Iterator[tuple[wiring.Stack, FakeKernel]]:
    """The core over a new FakeKernel, its state and run dir under ``tmp``, a resolver
    file of its own (192.0.2.53: documentation space, never asked)."""
    resolv = tmp / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    kernel = FakeKernel()
    config = Config(state_dir=str(tmp / "state"), run_dir=str(tmp / "run"),
                    host_netns=str(tmp / "host-netns"), resolv_conf=str(resolv))
    built = wiring.build(config, wiring.Adapters(FakeHostLinks(kernel),
                                                 FakeSandboxLinks(kernel), FakeNft()))
    try:
        yield built, kernel
    finally:
        built.close()


@contextlib.contextmanager
def serving(controller: Controller, path: str) -> Iterator[str]:
    """The real API server for ``controller`` on the unix socket ``path``, on a thread;
    yields its address (unix://PATH)."""
    srv = api_server.serve(controller, path)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"unix://{path}"
    finally:
        srv.shutdown()
        srv.server_close()
