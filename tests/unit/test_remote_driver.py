"""cnm's remote driver driving cnm's own Docker plugin over a real unix socket, each side
with its own core, both over one fake kernel (the plugin makes the link in the host
namespace, the remote driver moves it into the sandbox). The requests the remote driver
sends are checked against what a real dockerd sent (the capture in tests/fixtures)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cnm import wiring
from cnm.core import Config, Controller
from cnm.docker.plugin import DockerPlugin
from cnm.docker.server import serve
from cnm.drivers.registry import builtin
from cnm.drivers.remote import Drivers
from cnm.errors import CnmError, InvalidArgument, Unavailable
from cnm.model import NetworkSpec, SandboxSpec
from cnm.netfilter import Netfilter
from cnm.testing import HOST, FakeHostLinks, FakeKernel, FakeNft, FakeSandboxLinks

# A real dockerd's capture, kept in the repo (tests/fixtures/).
TRACE = Path(__file__).resolve().parents[1] / "fixtures" / "docker-remote-driver-trace.json"


@dataclass
class Pair:
    client: Controller
    plugin: Controller
    kernel: FakeKernel
    calls: list[tuple[str, dict[str, Any]]]
    plugin_dir: Path


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    kernel = FakeKernel()
    host = tmp_path / "host-netns"
    host.touch()
    kernel.namespaces[str(host)] = kernel.namespaces[HOST]
    (tmp_path / "resolv.conf").write_text("")
    stacks = []

    def build(tag: str, drivers: dict[str, Any], start: bool, bridge: str) -> Controller:
        cfg = Config(state_dir=str(tmp_path / tag / "state"), run_dir=str(tmp_path / tag /
                                                                          "run"),
                     host_netns=str(host), resolv_conf=str(tmp_path / "resolv.conf"),
                     default_bridge_name=bridge)
        nf = Netfilter(FakeNft())
        built = wiring.build(cfg, wiring.Adapters(FakeHostLinks(kernel),
                                                  FakeSandboxLinks(kernel), nf.nft),
                             drivers=drivers, start=start)
        stacks.append(built)
        return built.controller

    plugin_ctl = build("plugin", builtin(), True, "cnm0")
    plugin = DockerPlugin(plugin_ctl)
    calls: list[tuple[str, dict[str, Any]]] = []
    handle = plugin.handle

    def recording(method: str, body: Any) -> tuple[int, dict[str, Any]]:
        calls.append((method, body))
        return handle(method, body)

    plugin.handle = recording  # type: ignore[method-assign]
    server = serve(plugin, str(tmp_path / "plugins" / "cnm.sock"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # One cnm per host namespace: the client is not started, or its reconcile would take
    # the plugin's links for stale ones of its own.
    client = build("client", Drivers(builtin(), str(tmp_path / "plugins")), False, "cnmc0")
    try:
        yield Pair(client, plugin_ctl, kernel, calls, tmp_path / "plugins")
    finally:
        server.shutdown()
        server.server_close()
        for s in reversed(stacks):
            s.close()


def test_a_sandbox_on_a_plugins_network(pair: Pair) -> None:
    c = pair.client
    net = c.create_network(NetworkSpec(name="r", driver="cnm", subnets=("10.77.0.0/24",)))
    # The plugin's own network: the bridge it made, the subnet cnm's IPAM gave it.
    theirs = [n for n in pair.plugin.list_networks() if n.labels.get(
        "com.docker.network.id") == net.id]
    assert [s.subnet for s in theirs[0].subnets] == ["10.77.0.0/24"]
    assert c.state.caps(net).link == "moved"  # read from the plugin at run time
    sb = c.create_sandbox(SandboxSpec(name="s1", network="r", mac="02:00:00:00:77:02"))
    path = c.netns_path(sb)
    eth0 = pair.kernel.namespaces[path].links["eth0"]
    assert eth0.kind == "veth" and eth0.up and eth0.mac == "02:00:00:00:77:02"
    assert eth0.addresses == ["10.77.0.2/24"]
    assert pair.kernel.namespaces[path].routes[4][0] == "10.77.0.1"
    # Its peer is on the plugin's bridge; nothing is left of it in the host namespace.
    assert eth0.peer is not None and eth0.peer.master is not None
    assert not [n for n in pair.kernel.namespaces[HOST].links if n.startswith("cnmc")]
    c.remove_sandbox("s1")
    c.remove_network("r")
    assert {n.name for n in pair.plugin.list_networks()} == {"bridge", "host", "none"}
    assert pair.plugin.list_endpoints() == [] and pair.plugin.list_sandboxes() == []
    assert not [n for n in pair.kernel.namespaces[HOST].links
                if n.startswith("cnm") and n != "cnm0"]


def shape(body: Any) -> Any:
    """A request's keys, nested (values differ run to run)."""
    if isinstance(body, dict):
        return {k: shape(v) for k, v in body.items() if k != "Options"}
    return type(body).__name__


def test_the_requests_are_dockers(pair: Pair) -> None:
    c = pair.client
    c.create_network(NetworkSpec(name="r", driver="cnm", subnets=("10.77.0.0/24",)))
    c.create_sandbox(SandboxSpec(name="s1", network="r"))
    c.remove_sandbox("s1")
    c.remove_network("r")
    ours = [m for m, _ in pair.calls]
    assert ours == ["Plugin.Activate", "NetworkDriver.GetCapabilities",
                    "NetworkDriver.CreateNetwork", "NetworkDriver.CreateEndpoint",
                    "NetworkDriver.Join", "NetworkDriver.Leave",
                    "NetworkDriver.DeleteEndpoint", "NetworkDriver.DeleteNetwork"]
    docker = {}
    for e in json.loads(TRACE.read_text()):
        if "path" in e:
            docker.setdefault(e["path"].lstrip("/"), e["body"])
    for method, body in pair.calls:
        want = shape(docker[method])
        if method == "NetworkDriver.CreateNetwork":  # Docker's default IPAM, as cnm's
            assert shape(body)["IPv4Data"] == want["IPv4Data"]
        got = shape(body)
        assert (set(got) == set(want)) if isinstance(want, dict) else got == want, method


def test_the_plugins_refusals_refuse_and_leave_nothing(pair: Pair) -> None:
    c = pair.client
    with pytest.raises(InvalidArgument, match='plugin "cnm": unknown option .color.'):
        c.create_network(NetworkSpec(name="r", driver="cnm", subnets=("10.77.0.0/24",),
                                     options={"color": "blue"}))
    assert [n.name for n in c.list_networks()] == []
    c.create_network(NetworkSpec(name="r", driver="cnm", subnets=("10.77.0.0/24",)))
    # The plugin refuses the MAC: no endpoint on either side, the address is free again.
    with pytest.raises(CnmError, match="invalid MAC address"):
        c.create_sandbox(SandboxSpec(name="s1", network="r", mac="03:00:00:00:00:01"))
    assert c.list_endpoints() == [] and pair.plugin.list_endpoints() == []
    sb = c.create_sandbox(SandboxSpec(name="s1", network="r"))
    assert c.endpoints_of(sandbox=sb.id)[0].ipv4 == "10.77.0.2/24"


def test_an_unknown_name_and_a_plugin_that_is_gone(pair: Pair) -> None:
    c = pair.client
    with pytest.raises(InvalidArgument, match="unknown driver 'nosuch'") as e:
        c.create_network(NetworkSpec(name="r", driver="nosuch"))
    assert e.value.hint is not None and str(pair.plugin_dir) in e.value.hint
    (pair.plugin_dir / "cnm.sock").rename(pair.plugin_dir / "gone.sock")
    (pair.plugin_dir / "gone.sock").unlink()
    (pair.plugin_dir / "gone.sock").touch()
    with pytest.raises(InvalidArgument, match="unknown driver 'gone'"):  # not a socket
        c.create_network(NetworkSpec(name="r", driver="gone"))
    (pair.plugin_dir / "gone.sock").unlink()
    import socket as _socket
    dead = _socket.socket(_socket.AF_UNIX)
    dead.bind(str(pair.plugin_dir / "dead.sock"))  # a socket no one listens on
    try:
        with pytest.raises(Unavailable, match='plugin "dead" at .* does not answer'):
            c.create_network(NetworkSpec(name="r", driver="dead", subnets=("10.78.0.0/24",)))
    finally:
        dead.close()
    assert [n.name for n in c.list_networks()] == []


def test_a_dry_run_never_asks_the_plugin(pair: Pair) -> None:
    c = pair.client
    spec = NetworkSpec(name="r", driver="cnm", subnets=("10.77.0.0/24",))
    with pytest.raises(CnmError, match='--dry-run cannot plan a network on plugin "cnm"'):
        c.dry_run(lambda: c.create_network(spec))
    assert not [m for m, _ in pair.calls if m == "NetworkDriver.CreateNetwork"]
    assert c.list_networks() == []
    assert {n.name for n in pair.plugin.list_networks()} == {"bridge", "host", "none"}


def test_cnmd_never_drives_its_own_plugin(pair: Pair) -> None:
    own = str(pair.plugin_dir / "cnm.sock")
    drivers = Drivers(builtin(), str(pair.plugin_dir), own=own)
    with pytest.raises(InvalidArgument, match="driver 'cnm' is this cnmd's own Docker plugin"):
        drivers.find("cnm")
    assert drivers.find("bridge") is drivers["bridge"]
    assert drivers.find("../cnm") is None  # a name, never a path
