"""The real sandbox port's namespace checks, and the reads cnm doctor makes, which no driver
test reaches on its own."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cnm import names
from cnm.model import NetworkSpec, SandboxSpec
from cnm.testing.netns import Stack, in_ns


def test_identity_tells_namespaces_apart_and_from_a_leftover_file(stack: Stack,
                                                                  tmp_path: Path) -> None:
    c, sbx = stack.controller, stack.sandbox
    c.create_sandbox(SandboxSpec(name="a"))
    path = stack.netns("a")
    mine, host = sbx.identity(path), sbx.identity(stack.host_ns.path)
    assert mine is not None and host is not None and mine != host
    # The same namespace through another path: /proc/PID/ns/net of a process inside it.
    here = subprocess.Popen(["nsenter", f"--net={path}", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while sbx.identity(f"/proc/{here.pid}/ns/net") != mine and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sbx.identity(f"/proc/{here.pid}/ns/net") == mine
    finally:
        here.kill()
        here.wait()
    c.remove_sandbox("a")
    assert sbx.identity(path) is None
    leftover = tmp_path / "leftover"
    leftover.touch()
    assert sbx.identity(str(leftover)) is None
    assert sbx.identity(str(tmp_path / "missing")) is None


def test_delete_netns_of_a_leftover_file_removes_it(stack: Stack, tmp_path: Path) -> None:
    # umount fails EINVAL (not a mount point): the namespace is gone already, the file goes.
    leftover = tmp_path / "leftover"
    leftover.touch()
    stack.sandbox.delete_netns(str(leftover))
    assert not leftover.exists()


def test_the_reads_doctor_makes_see_what_ip_sees(stack: Stack) -> None:
    """HostPort.link_state and SandboxPort.inspect, against what `ip` shows and changes."""
    c, host, sbx = stack.controller, stack.host, stack.sandbox
    net = c.create_network(NetworkSpec(name="web", subnets=("10.72.0.0/24", "fd00:72::/64"),
                                       ipv6=True))
    c.create_sandbox(SandboxSpec(name="a", network="web"))
    (ep,) = c.endpoints_of(sandbox=c.sandbox("a").id)
    bridge = host.link_state(names.bridge_name(net.id))
    assert bridge is not None and bridge.up and bridge.master is None
    assert sorted(bridge.addresses) == ["10.72.0.1/24", "fd00:72::1/64"]
    veth = host.link_state(names.veth_name(ep.id))
    assert veth is not None and veth.up and veth.master == names.bridge_name(net.id)
    assert host.link_state("nosuch0") is None

    path = stack.netns("a")
    seen = sbx.inspect(path)
    assert set(seen.links) == {"eth0"}  # loopback left out
    assert sorted(seen.links["eth0"].addresses) == sorted(ep.cidrs)
    assert sorted(seen.routes) == [(4, "10.72.0.1", "eth0"), (6, "fd00:72::1", "eth0")]
    assert seen.dns_port is None  # the stack runs no DNS server
    for sock in sbx.open_dns(path):  # a redirect to the sockets' port
        sock.close()
    port = sbx.inspect(path).dns_port
    assert port is not None and f"127.0.0.11:{port}" in in_ns(
        path, "nft", "list", "table", "ip", "cnm_dns").stdout
    in_ns(path, "ip", "addr", "flush", "dev", "eth0", "scope", "global")
    in_ns(path, "ip", "link", "set", "eth0", "down")
    seen = sbx.inspect(path)
    assert seen.links["eth0"].addresses == () and not seen.links["eth0"].up
    assert seen.routes == ()
