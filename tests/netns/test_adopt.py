"""Namespaces a runtime made, adopted by cnm; endpoints reserved before they join.

The runtime's namespaces here are made outside cnm: one with `ip netns add`, one held only
by a process (`unshare -n sleep`, adopted as /proc/PID/ns/net). cnm plumbs its interfaces
into them with the names asked for, and on removal takes only its own parts out: the
namespace and the process stay. Nothing here touches the machine's own namespace.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from cnm.testing.netns import Daemon, can_ping, in_ns, links, run


@pytest.fixture
def runtime_ns() -> Iterator[str]:
    """A namespace made the way `ip netns add` (or a runtime) makes one."""
    name = f"cnmtest-rt-{secrets.token_hex(3)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")  # as runtimes do
        yield f"/run/netns/{name}"
    finally:
        run("ip", "netns", "del", name, check=False)


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[bytes]]:
    """A process in a network namespace of its own, held by nothing else."""
    proc = subprocess.Popen(["unshare", "--net", "--", "sleep", "600"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # unshare has exec'd sleep once its ns differs
            here = run("readlink", "/proc/self/ns/net").stdout
            if run("readlink", f"/proc/{proc.pid}/ns/net", check=False).stdout not in ("", here):
                break
            time.sleep(0.02)
        in_ns(f"/proc/{proc.pid}/ns/net", "ip", "link", "set", "lo", "up")
        yield proc
    finally:
        proc.kill()
        proc.wait()


def ok(d: Daemon, *args: str) -> str:
    r = d.cli(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_adopted_namespaces_join_two_networks_and_are_left_as_found(
        daemon: Daemon, runtime_ns: str, holder: subprocess.Popen[bytes]) -> None:
    ok(daemon, "network", "create", "--subnet", "10.44.0.0/24", "front")
    ok(daemon, "network", "create", "--subnet", "10.45.0.0/24", "back")
    proc_ns = f"/proc/{holder.pid}/ns/net"
    ok(daemon, "sandbox", "create", "--netns", runtime_ns, "--network", "front",
       "--ifname", "net0", "--ip", "10.44.0.10", "a")
    ok(daemon, "network", "connect", "--ifname", "net1", "--ip", "10.45.0.10", "back", "a")
    ok(daemon, "sandbox", "create", "--netns", proc_ns, "--network", "front",
       "--ifname", "ctr0", "--ip", "10.44.0.20", "b")
    ok(daemon, "network", "connect", "--ifname", "ctr1", "--ip", "10.45.0.20", "back", "b")
    assert {"net0", "net1"} <= set(links(runtime_ns))
    assert {"ctr0", "ctr1"} <= set(links(proc_ns))
    assert can_ping(runtime_ns, "10.44.0.20") and can_ping(runtime_ns, "10.45.0.20")
    assert can_ping(proc_ns, "10.44.0.10")
    # The embedded DNS answers inside an adopted namespace too.
    r = in_ns(runtime_ns, "dig", "+short", "+time=2", "+tries=1", "@127.0.0.11", "b")
    assert sorted(r.stdout.split()) == ["10.44.0.20", "10.45.0.20"]  # on both networks

    ok(daemon, "sandbox", "rm", "a")
    ok(daemon, "sandbox", "rm", "b")
    # The namespaces and the process are still there, with nothing of cnm's left in them.
    assert holder.poll() is None
    for path in (runtime_ns, proc_ns):
        left = json.loads(in_ns(path, "ip", "-j", "link", "show").stdout)
        assert [x["ifname"] for x in left if not x["ifname"].startswith("cnmr")] == ["lo"]
        assert in_ns(path, "ip", "-j", "addr", "show", "scope", "global").stdout.strip() in (
            "[]", "")
        assert in_ns(path, "ip", "route", "show").stdout.strip() == ""
        assert "cnm_dns" not in in_ns(path, "nft", "list", "tables").stdout
    # Their addresses are free again.
    ok(daemon, "sandbox", "create", "--network", "front", "--ip", "10.44.0.10", "c")


def test_a_namespace_with_loopback_down_is_refused_clearly_and_left_as_it_was(
        daemon: Daemon) -> None:
    ok(daemon, "network", "create", "--subnet", "10.49.0.0/24", "front")
    name = f"cnmtest-rt-{secrets.token_hex(3)}"
    run("ip", "netns", "add", name)  # lo never brought up: no 127.0.0.11 to serve DNS on
    try:
        path = f"/run/netns/{name}"
        r = daemon.cli("sandbox", "create", "--netns", path, "--network", "front", "a")
        assert r.returncode != 0 and "its loopback is down" in r.stderr
        left = [n for n in links(path) if not n.startswith("cnmr")]  # retired: being reaped
        assert left == ["lo"]
        assert in_ns(path, "ip", "route", "show").stdout.strip() == ""
        assert "a" not in ok(daemon, "sandbox", "ls")
        ok(daemon, "sandbox", "create", "--network", "front", "b")  # nothing leaked
        assert "10.49.0.2/24" in ok(daemon, "sandbox", "ls")
    finally:
        run("ip", "netns", "del", name, check=False)


def test_a_namespace_whose_process_exits_frees_its_endpoints(
        daemon: Daemon, holder: subprocess.Popen[bytes]) -> None:
    ok(daemon, "network", "create", "--subnet", "10.46.0.0/24", "front")
    ok(daemon, "sandbox", "create", "--netns", f"/proc/{holder.pid}/ns/net",
       "--network", "front", "--ip", "10.46.0.10", "gone")
    holder.kill()
    holder.wait()
    r = daemon.cli("network", "connect", "front", "gone")
    assert r.returncode != 0 and "its endpoints were freed" in r.stderr
    assert "gone" not in ok(daemon, "sandbox", "ls")
    ok(daemon, "sandbox", "create", "--network", "front", "--ip", "10.46.0.10", "next")


def test_a_namespace_gone_while_the_daemon_was_down_is_freed_at_start(
        daemon: Daemon, holder: subprocess.Popen[bytes]) -> None:
    ok(daemon, "network", "create", "--subnet", "10.47.0.0/24", "front")
    ok(daemon, "sandbox", "create", "--netns", f"/proc/{holder.pid}/ns/net",
       "--network", "front", "--ip", "10.47.0.10", "gone")
    daemon.stop()
    holder.kill()
    holder.wait()
    daemon.start()
    assert "gone" not in ok(daemon, "sandbox", "ls")
    ok(daemon, "sandbox", "create", "--network", "front", "--ip", "10.47.0.10", "next")


def test_a_reserved_endpoint_keeps_its_address_across_a_restart_and_joins_with_it(
        daemon: Daemon) -> None:
    ok(daemon, "network", "create", "--subnet", "10.48.0.0/24", "front")
    ok(daemon, "endpoint", "create", "--ip", "10.48.0.77", "--alias", "db", "front", "spare")
    ok(daemon, "sandbox", "create", "--network", "front", "peer")
    ok(daemon, "sandbox", "create", "--network", "none", "app")
    daemon.stop()
    daemon.start()
    # Its address was handed to no one, and its name answers only once it joins.
    r = daemon.cli("sandbox", "create", "--network", "front", "--ip", "10.48.0.77", "thief")
    assert r.returncode != 0 and "already in use" in r.stderr
    dig = ("sandbox", "exec", "peer", "--", "dig", "+short", "+time=2", "+tries=1", "db")
    assert ok(daemon, *dig).strip() == ""
    ok(daemon, "network", "disconnect", "none", "app")
    ok(daemon, "endpoint", "join", "--ifname", "lan0", "spare", "app")
    app = json.loads(ok(daemon, "sandbox", "inspect", "app"))[0]
    assert [(e["ifname"], e["ipv4"]) for e in app["endpoints"]] == [("lan0", "10.48.0.77/24")]
    assert can_ping(app["netns"], "10.48.0.1")
    peer = json.loads(ok(daemon, "sandbox", "inspect", "peer"))[0]
    assert can_ping(peer["netns"], "10.48.0.77")
    assert ok(daemon, *dig).split() == ["10.48.0.77"]
    ok(daemon, "endpoint", "leave", "spare")
    assert not can_ping(peer["netns"], "10.48.0.77", timeout_s=1)
    assert ok(daemon, *dig).strip() == ""
    ok(daemon, "endpoint", "rm", "spare")
    assert "spare" not in ok(daemon, "endpoint", "ls")
