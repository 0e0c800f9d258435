"""Shared fixtures of the unit tier: a controller over the fake kernel, in temp dirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cnm import wiring
from cnm.core import Config, Controller
from cnm.netfilter import Netfilter
from cnm.testing import FakeHostLinks, FakeKernel, FakeSandboxLinks

HOST_RESOLV = """# host resolv.conf
nameserver 127.0.0.53
nameserver 192.0.2.53
search example.org
options ndots:2
"""


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
def host(kernel: FakeKernel) -> FakeHostLinks:
    return FakeHostLinks(kernel)


@pytest.fixture
def sbx(kernel: FakeKernel) -> FakeSandboxLinks:
    return FakeSandboxLinks(kernel)


MakeController = Callable[..., Controller]


@pytest.fixture
def make_controller(tmp_path: Path, kernel: FakeKernel, host: FakeHostLinks,
                    sbx: FakeSandboxLinks,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeController]:
    """Start a controller on the test's store and run dirs; call it again to "restart".

    ``kernel=`` gives the new controller a different fake kernel (a host that rebooted);
    ``netfilter=`` gives it a firewall (``Netfilter(FakeNft())``; none by default);
    other keywords go to Config.
    """
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(HOST_RESOLV)
    host_ns = tmp_path / "host-netns"
    host_ns.touch()
    stacks: list[wiring.Stack] = []

    def make(kernel: FakeKernel | None = None, netfilter: Netfilter | None = None,
             **config: Any) -> Controller:
        h, s = host, sbx
        if kernel is not None:
            h, s = FakeHostLinks(kernel), FakeSandboxLinks(kernel)
        cfg = Config(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                     host_netns=str(host_ns), resolv_conf=str(resolv), **config)
        built = wiring.build(cfg, wiring.Adapters(h, s, netfilter.nft if netfilter else None))
        stacks.append(built)
        return built.controller

    yield make
    for built in stacks:
        built.close()


@pytest.fixture
def ctl(make_controller: MakeController) -> Controller:
    return make_controller()
