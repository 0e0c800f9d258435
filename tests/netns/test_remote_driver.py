"""cnm's remote driver against a real out-of-process plugin: a second cnmd serving its
Docker plugin on the same throwaway host namespace, driven by a cnm core on the real kernel
(`-d cnm`). The plugin makes the veth pair on its bridge and leaves the inner end in the
host namespace; the remote driver moves it into the sandbox; packets cross the plugin's
bridge.

One cnm per host namespace: the client core is not started (its reconcile would take the
plugin daemon's links for stale ones of its own), so it has no networks but the remote
ones, and no firewall or DNS server of its own.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnm import wiring
from cnm.core import Config, Controller
from cnm.drivers.registry import builtin
from cnm.drivers.remote import Drivers
from cnm.errors import InvalidArgument
from cnm.model import NetworkSpec, SandboxSpec
from cnm.testing.netns import Daemon, HostNs, can_ping, in_ns, links, unbind_all


@dataclass
class Remote:
    client: Controller
    plugin: Daemon


@pytest.fixture
def remote(host_ns: HostNs, tmp_path: Path) -> Iterator[Remote]:
    sock_dir = Path(tempfile.mkdtemp(prefix="cnmtest-"))
    plugin = Daemon(host_ns, tmp_path / "pstate", tmp_path / "prun",
                    str(sock_dir / "cnm.sock"), tmp_path / "cnmd.log")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# no upstream\n")
    built = None
    try:
        plugin.start("--docker-plugin", str(sock_dir / "plugins" / "cnm.sock"))
        cfg = Config(state_dir=str(tmp_path / "cstate"), run_dir=str(tmp_path / "crun"),
                     host_netns=host_ns.path, resolv_conf=str(resolv))
        built = wiring.build(cfg, firewall=False, dns=False, start=False,
                             drivers=Drivers(builtin(), str(sock_dir / "plugins")))
        yield Remote(built.controller, plugin)
    finally:
        if built is not None:
            built.close()
            unbind_all(tmp_path / "crun")
        plugin.stop()
        unbind_all(plugin.run_dir)
        shutil.rmtree(sock_dir, ignore_errors=True)


def plugin_json(d: Daemon, *args: str) -> list[dict[str, object]]:
    r = d.cli(*args, "--format", "json")
    assert r.returncode == 0, r.stderr
    out: list[dict[str, object]] = json.loads(r.stdout)
    return out


def test_sandboxes_on_a_plugins_network_reach_each_other(remote: Remote,
                                                         host_ns: HostNs) -> None:
    c = remote.client
    before = set(links(host_ns.path))
    net = c.create_network(NetworkSpec(name="r", driver="cnm", subnets=("10.77.0.0/24",)))
    assert c.state.caps(net).link == "moved"
    theirs = [n for n in plugin_json(remote.plugin, "network", "ls")
              if n["labels"] == {"com.docker.network.id": net.id}]
    assert len(theirs) == 1
    a = c.create_sandbox(SandboxSpec(name="a", network="r", mac="02:00:00:00:77:0a"))
    b = c.create_sandbox(SandboxSpec(name="b", network="r"))
    pa, pb = c.netns_path(a), c.netns_path(b)
    inside = links(pa)
    assert inside["eth0"]["address"] == "02:00:00:00:77:0a"
    assert "10.77.0.2/24" in in_ns(pa, "ip", "-br", "addr", "show", "eth0").stdout
    assert "default via 10.77.0.1 dev eth0" in in_ns(pa, "ip", "route").stdout
    assert can_ping(pa, "10.77.0.3")
    assert can_ping(pb, "10.77.0.2")
    assert can_ping(pa, "10.77.0.1")  # the plugin's bridge holds the gateway
    # Nothing of the handed-over ends is left in the host namespace.
    assert not [n for n in links(host_ns.path) if n.startswith("cnmc")]
    c.remove_sandbox("a")
    assert not can_ping(pb, "10.77.0.2", timeout_s=1)
    c.remove_sandbox("b")
    c.remove_network("r")
    assert plugin_json(remote.plugin, "endpoint", "ls") == []
    assert plugin_json(remote.plugin, "sandbox", "ls") == []
    assert set(links(host_ns.path)) == before


def test_the_plugins_refusal_reaches_the_user(remote: Remote, host_ns: HostNs) -> None:
    before = set(links(host_ns.path))
    with pytest.raises(InvalidArgument, match='plugin "cnm": unknown option .color. for '
                                              "driver bridge"):
        remote.client.create_network(NetworkSpec(name="r", driver="cnm",
                                                 subnets=("10.77.0.0/24",),
                                                 options={"color": "blue"}))
    assert remote.client.list_networks() == []
    assert set(links(host_ns.path)) == before
