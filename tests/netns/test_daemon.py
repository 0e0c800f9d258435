"""The real cnmd over its socket, driven by the real `cnm` CLI and the API client.

Each test has its own throwaway host namespace and daemon (the ``daemon`` fixture). Traffic
is checked with real packets between sandboxes the test made.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cnm import names
from cnm.client import Client
from cnm.kernel.netns import is_netns
from cnm.testing.netns import Daemon, HostNs, addresses, can_ping, in_ns, links, run

HOST_RESOLV = """# resolv.conf of the test's "host"
nameserver 127.0.0.53
nameserver 192.0.2.53
search example.test
options ndots:2
"""


def ok(d: Daemon, *args: str) -> str:
    """Run the CLI; it must succeed. Returns stdout."""
    r = d.cli(*args)
    assert r.returncode == 0, f"cnm {' '.join(args)} -> {r.returncode}: {r.stderr}"
    return r.stdout


def fails(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; it must fail like the contract says: `error: ...`, no traceback."""
    r = d.cli(*args)
    assert r.returncode != 0, f"cnm {' '.join(args)} succeeded: {r.stdout}"
    assert r.stderr.startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return r


def inspect(d: Daemon, kind: str, *refs: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(ok(d, kind, "inspect", *refs))
    return out


def ip_of(d: Daemon, sandbox: str, network: str | None = None) -> str:
    """The IPv4 address (no prefix) of a sandbox's endpoint (on ``network``)."""
    eps = inspect(d, "sandbox", sandbox)[0]["endpoints"]
    ep = next(e for e in eps if network is None or e["network"] == network)
    return str(ep["ipv4"]).split("/")[0]


def netns_of(d: Daemon, sandbox: str) -> str:
    return str(inspect(d, "sandbox", sandbox)[0]["netns"])


def listing(d: Daemon) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(networks, sandboxes) as the API lists them."""
    c = d.client()
    try:
        return c.networks(), c.sandboxes()
    finally:
        c.close()


def restart_with(d: Daemon, *extra: str) -> None:
    assert d.stop() == 0
    d.start(*extra)


def cnmd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run another cnmd in the foreground (one that is expected to refuse to start)."""
    # Never on the machine's /run/docker/plugins (a later --docker-plugin in args wins).
    return subprocess.run([sys.executable, "-m", "cnm", "daemon", "--docker-plugin", "none",
                           *args], capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- socket, info
def test_socket_is_0660_and_ping_answers(daemon: Daemon) -> None:
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    c = daemon.client()
    try:
        pong = c.call("GET", "/v1/_ping")
    finally:
        c.close()
    assert pong["ok"] is True and pong["version"]


def test_info_names_the_managed_namespace(daemon: Daemon, host_ns: HostNs) -> None:
    assert host_ns.path in ok(daemon, "info")
    info = json.loads(ok(daemon, "info", "--format", "json"))
    assert info["host_netns"] == host_ns.path
    assert info["state_dir"] == str(daemon.state_dir)
    # The predefined networks exist, and nothing else yet.
    assert (info["networks"], info["sandboxes"], info["endpoints"]) == (3, 0, 0)


# --------------------------------------------------------------------------- CLI flow
def test_cli_network_and_sandbox_lifecycle(daemon: Daemon, host_ns: HostNs,
                                           tmp_path: Path) -> None:
    resolv = tmp_path / "host-resolv.conf"
    resolv.write_text(HOST_RESOLV)
    restart_with(daemon, "--resolv-conf", str(resolv))
    d = daemon

    net_id = ok(d, "network", "create", "--subnet", "10.41.0.0/24", "web").strip()
    assert len(net_id) == 64

    table = ok(d, "network", "ls")
    assert table.splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE",
                                             "SUBNETS"]
    rows = {line.split()[1]: line.split() for line in table.splitlines()[1:]}
    assert set(rows) == {"bridge", "host", "none", "web"}
    assert rows["web"] == [net_id[:12], "web", "bridge", "local", "10.41.0.0/24"]
    listed = json.loads(ok(d, "network", "ls", "--format", "json"))
    assert {n["name"] for n in listed} == {"bridge", "host", "none", "web"}
    assert ok(d, "network", "ls", "-q").split() == [n["id"][:12] for n in listed]

    # inspect prints JSON by default; by name, full id and id prefix alike.
    [web] = inspect(d, "network", "web")
    assert web["id"] == net_id and web["driver"] == "bridge" and web["endpoints"] == []
    assert web["subnets"][0]["subnet"] == "10.41.0.0/24"
    assert inspect(d, "network", net_id)[0]["name"] == "web"
    assert inspect(d, "network", net_id[:8])[0]["name"] == "web"
    detail = ok(d, "network", "inspect", "--format", "table", "web")
    assert "Name: web" in detail and f"ID: {net_id}" in detail
    assert "Subnet: 10.41.0.0/24 gateway 10.41.0.1" in detail
    assert names.bridge_name(net_id) in links(host_ns.path)

    ok(d, "sandbox", "create", "--network", "web", "--hostname", "alpha", "a")
    ok(d, "sandbox", "create", "--network", "web", "b")
    a_ip, b_ip = ip_of(d, "a"), ip_of(d, "b")
    assert a_ip != b_ip
    sb_rows = ok(d, "sandbox", "ls").splitlines()
    assert sb_rows[0].split() == ["SANDBOX", "ID", "NAME", "NETWORKS", "ADDRESSES"]
    assert [r.split()[1:] for r in sb_rows[1:]] == [["a", "web", f"{a_ip}/24"],
                                                    ["b", "web", f"{b_ip}/24"]]
    assert "Hostname: alpha" in ok(d, "sandbox", "inspect", "--format", "table", "a")
    endpoints = inspect(d, "network", "web")[0]["endpoints"]
    assert sorted(e["sandbox"] for e in endpoints) == ["a", "b"]

    # exec runs in the sandbox: real packets to b, b's own view of the files and hostname.
    r = d.cli("sandbox", "exec", "a", "--", "ping", "-c1", "-i0.2", "-w2", b_ip)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 received" in r.stdout
    hosts = ok(d, "sandbox", "exec", "a", "--", "cat", "/etc/hosts")
    assert f"{a_ip}\talpha" in hosts.splitlines()
    assert b_ip not in hosts
    [a] = inspect(d, "sandbox", "a")
    seen = ok(d, "sandbox", "exec", "a", "--", "cat", "/etc/resolv.conf")
    assert seen == Path(a["resolv_conf_path"]).read_text()
    # On a user-defined network the sandbox asks the embedded DNS (which forwards to the
    # host's resolvers); the host's search domains are kept, ndots is Docker's 0.
    assert "nameserver 127.0.0.11" in seen and "192.0.2.53" not in seen
    assert "search example.test" in seen and "options ndots:0" in seen
    assert ok(d, "sandbox", "exec", "a", "--", "hostname").strip() == "alpha"
    assert ok(d, "sandbox", "exec", "b", "--", "hostname").strip() == "b"
    # exec's mounts stayed in its own mount namespace.
    assert "example.test" not in Path("/etc/resolv.conf").read_text()
    assert ok(d, "sandbox", "exec", "a", "--", "ip", "-br", "link").split()[0] == "lo"

    # rm and prune.
    a_ns = a["netns"]
    assert ok(d, "sandbox", "rm", "a", "b").split() == ["a", "b"]
    assert not is_netns(a_ns) and not os.path.exists(a_ns)
    assert not any(n.startswith("cnmv") for n in links(host_ns.path))
    ok(d, "network", "create", "--subnet", "10.42.0.0/24", "spare")
    assert ok(d, "network", "rm", "spare").strip() == "spare"
    ok(d, "network", "create", "--subnet", "10.43.0.0/24", "unused")
    # prune asks first (docker's question): no answer keeps everything; -f does not ask.
    r = d.cli("network", "prune")
    assert r.returncode == 0 and r.stdout.startswith("WARNING! This will remove")
    assert {n["name"] for n in json.loads(ok(d, "network", "ls", "--format", "json"))} >= {
        "unused", "web"}
    assert sorted(ok(d, "network", "prune", "-f").split()) == ["unused", "web"]
    assert {n["name"] for n in json.loads(ok(d, "network", "ls", "--format", "json"))} == {
        "bridge", "host", "none"}
    assert names.bridge_name(net_id) not in links(host_ns.path)


def test_sandbox_exec_passes_the_exit_status_and_refuses_no_command(daemon: Daemon) -> None:
    ok(daemon, "sandbox", "create", "--network", "none", "n")
    # The CLI becomes the command: its status is the command's.
    assert daemon.cli("sandbox", "exec", "n", "--", "sh", "-c", "exit 7").returncode == 7
    # On the none network there is nothing to reach but loopback.
    assert ok(daemon, "sandbox", "exec", "n", "--", "ip", "-br", "link").split()[0] == "lo"
    assert ok(daemon, "sandbox", "exec", "n", "--", "ip", "-4", "route").strip() == ""
    r = fails(daemon, "sandbox", "exec", "n")
    assert r.returncode == 2
    assert "no command" in r.stderr


def test_sandbox_exec_exits_126_and_127_like_docker(daemon: Daemon, tmp_path: Path) -> None:
    ok(daemon, "sandbox", "create", "--network", "none", "n")
    r = fails(daemon, "sandbox", "exec", "n", "--", "no-such-command-here", "x")
    assert r.returncode == 127
    assert r.stderr == "error: command not found: no-such-command-here\n"
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    r = fails(daemon, "sandbox", "exec", "n", "--", str(script))
    assert r.returncode == 126
    assert r.stderr.startswith(f"error: cannot run {script}: Permission denied")
    r = fails(daemon, "sandbox", "exec", "n", "--", str(tmp_path))
    assert r.returncode == 126
    # cnm's own failure to enter the sandbox (its namespace gone behind cnm's back): 125.
    netns = json.loads(ok(daemon, "sandbox", "inspect", "n"))[0]["netns"]
    run("umount", netns)
    os.unlink(netns)
    r = fails(daemon, "sandbox", "exec", "n", "--", "true")
    assert r.returncode == 125
    assert r.stderr.startswith("error: cannot enter sandbox n: ")


# --------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize("argv", [
    ["network", "create", "--subnet", "10.300.0.0/24", "bad"],
    ["network", "create", "--subnet", "10.44.0.1/24", "hostbits"],
    ["network", "create", "-o", "nosuch=1", "opt"],
    ["network", "create", "-o", "novalue", "opt"],
    ["network", "create", "--no-such-flag", "flag"],
    ["network", "frobnicate"],
    ["sandbox", "create", "--network", "none", "bad name"],
], ids=["bad-subnet", "host-bits", "unknown-option", "malformed-o", "unknown-flag",
        "unknown-command", "bad-name"])
def test_invalid_input_exits_2_without_traceback(daemon: Daemon, argv: list[str]) -> None:
    r = fails(daemon, *argv)
    assert r.returncode == 2, r.stderr
    # Nothing was created by a refused request.
    nets, sbs = listing(daemon)
    assert [n["name"] for n in nets] == ["bridge", "host", "none"]
    assert sbs == []


def test_errors_about_state_exit_1(daemon: Daemon) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.1.0.0/24", "web")
    ok(d, "sandbox", "create", "--network", "web", "a")

    r = fails(d, "network", "create", "--subnet", "10.1.0.0/25", "web2")
    assert r.returncode == 1
    assert r.stderr.startswith('error: subnet 10.1.0.0/25 overlaps network "web"')

    for argv in (["network", "inspect", "nope"], ["sandbox", "inspect", "nope"],
                 ["network", "rm", "nope"], ["sandbox", "rm", "nope"],
                 ["network", "connect", "web", "nope"],
                 ["sandbox", "exec", "nope", "--", "true"]):
        r = fails(d, *argv)
        assert r.returncode == 1, (argv, r.stderr)
        assert "not found" in r.stderr

    r = fails(d, "network", "rm", "web")
    assert r.returncode == 1
    assert 'network "web" has active endpoints (a)' in r.stderr
    r = fails(d, "network", "create", "web")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = fails(d, "sandbox", "create", "--network", "web", "--ip", ip_of(d, "a"), "b")
    assert r.returncode == 1 and "in use" in r.stderr
    # A partly failing inspect prints what it found and still exits 1.
    r = d.cli("network", "inspect", "web", "nope")
    assert r.returncode == 1 and json.loads(r.stdout)[0]["name"] == "web"


def test_debug_shows_the_traceback(daemon: Daemon) -> None:
    r = daemon.cli("--debug", "network", "disconnect", "nope", "a")
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "error: network 'nope' not found" in r.stderr


def test_unreachable_daemon_exits_3(daemon: Daemon, tmp_path: Path) -> None:
    r = fails(daemon, "-H", "unix:///nonexistent", "network", "ls")
    assert r.returncode == 3
    assert "/nonexistent" in r.stderr
    # A socket file nobody listens on is unreachable too.
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(tmp_path / "nobody.sock"))
    dead.close()
    r = fails(daemon, "-H", f"unix://{tmp_path / 'nobody.sock'}", "sandbox", "ls")
    assert r.returncode == 3


@pytest.mark.parametrize("argv", [
    ["sandbox", "create", "--alias", "db", "c"],
    ["network", "connect", "--alias", "db", "bridge", "a"],
])
def test_aliases_on_the_default_bridge_are_refused_it_has_no_dns(daemon: Daemon,
                                                                  argv: list[str]) -> None:
    ok(daemon, "network", "create", "--subnet", "10.46.0.0/24", "other")
    ok(daemon, "sandbox", "create", "--network", "other", "a")
    r = fails(daemon, *argv)
    assert r.returncode == 2
    assert r.stderr.startswith('error: network "bridge" has no embedded DNS'), r.stderr
    sbs = {s["name"]: s for s in listing(daemon)[1]}
    assert set(sbs) == {"a"}
    assert [e["network"] for e in sbs["a"]["endpoints"]] == ["other"]


# --------------------------------------------------------------------------- restart
def _snapshot(d: Daemon) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nets = [n["name"] for n in json.loads(ok(d, "network", "ls", "--format", "json"))]
    sbs = [s["name"] for s in json.loads(ok(d, "sandbox", "ls", "--format", "json"))]
    return inspect(d, "network", *nets), inspect(d, "sandbox", *sbs)


def test_a_sigterm_taken_by_another_thread_stops_cnmd(daemon: Daemon) -> None:
    """The kernel gives a process's signal to any of its threads. Sent to one that is not
    the main thread (tgkill), cnmd still stops at once: its main thread must not sleep in a
    lock wait that only a signal of its own would interrupt (the CI hang of test_dns)."""
    import ctypes
    import signal
    import time

    assert daemon.proc is not None
    pid = daemon.proc.pid
    others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert others, "cnmd runs threads besides its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    sys_tgkill = 234  # x86_64
    assert libc.syscall(sys_tgkill, pid, others[-1], signal.SIGTERM) == 0, ctypes.get_errno()
    deadline = time.monotonic() + 10
    while daemon.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.proc.poll() == 0, "cnmd did not stop on a SIGTERM a thread took"
    assert "stopping; networks and sandboxes stay" in daemon.log.read_text()


def test_sigterm_leaves_everything_and_a_restart_picks_it_up(daemon: Daemon,
                                                             host_ns: HostNs) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.50.0.0/24", "web")
    ok(d, "network", "create", "db")  # a subnet from the default pools
    ok(d, "network", "create", "--ipv6", "--subnet", "10.51.0.0/24", "--subnet",
       "fd00:51::/64", "dual")
    ok(d, "sandbox", "create", "--network", "web", "a")
    ok(d, "sandbox", "create", "--network", "web", "--ip", "10.50.0.3", "b")
    ok(d, "sandbox", "create", "--network", "web", "c")
    db_subnet = inspect(d, "network", "db")[0]["subnets"][0]["subnet"]
    static_db = str(ipaddress.ip_network(db_subnet)[77])
    ok(d, "network", "connect", "--ip", static_db, "db", "a")
    ok(d, "sandbox", "create", "--network", "db", "e")
    ok(d, "sandbox", "create", "--network", "dual", "v6")
    ok(d, "sandbox", "create", "--network", "none", "loner")
    ok(d, "sandbox", "create", "--network", "host", "h")
    ok(d, "sandbox", "create", "--network", "bridge", "plain")
    nets, sbs = _snapshot(d)
    assert [e["ipv4"] for s in sbs if s["name"] == "a" for e in s["endpoints"]] == [
        "10.50.0.2/24", f"{static_db}/{db_subnet.split('/')[1]}"]
    ns = {s["name"]: s["netns"] for s in sbs}
    eps = [e for s in sbs for e in s["endpoints"]]
    e_db_ip = ip_of(d, "e")

    assert d.stop() == 0
    assert not os.path.exists(d.socket)
    # The kernel objects stay: bridges and host ends of veths, live sandbox namespaces.
    host_links = links(host_ns.path)
    for n in nets:
        if n["driver"] == "bridge":
            bridge = n["options"].get("bridge_name") or names.bridge_name(n["id"])
            assert bridge in host_links, n["name"]
    for e in eps:
        if e["ifname"]:
            assert names.veth_name(e["id"]) in host_links
    for name, path in ns.items():
        assert is_netns(path), name
    assert addresses(ns["a"], "eth0") == ["10.50.0.2/24"]
    assert can_ping(ns["a"], "10.50.0.3")
    assert can_ping(ns["e"], static_db)
    assert can_ping(ns["c"], "10.50.0.2")

    d.start()
    assert _snapshot(d) == (nets, sbs)
    assert can_ping(ns["a"], "10.50.0.3")
    assert can_ping(ns["a"], e_db_ip)
    r = d.cli("sandbox", "exec", "b", "--", "ping", "-c1", "-i0.2", "-w2", "10.50.0.4")
    assert r.returncode == 0, r.stdout + r.stderr
    in_ns(ns["v6"], "ping", "-6", "-c1", "-i0.2", "-w2", "fd00:51::1")

    # The allocator remembers what is in use: new endpoints get fresh addresses.
    used = {e["ipv4"] for e in eps} | {e["ipv6"] for e in eps}
    ok(d, "sandbox", "create", "--network", "web", "f")
    ok(d, "network", "connect", "db", "c")
    ok(d, "sandbox", "create", "--network", "dual", "v6b")
    old = {e["id"] for e in eps}
    fresh = [e for s in inspect(d, "sandbox", "f", "c", "v6b") for e in s["endpoints"]
             if e["id"] not in old]
    assert len(fresh) == 3
    for e in fresh:
        assert e["ipv4"] not in used, e
        assert e["ipv6"] is None or e["ipv6"] not in used, e
    assert can_ping(netns_of(d, "f"), "10.50.0.2")
    # Removing after a restart tears down what was made before it.
    ok(d, "sandbox", "rm", "a", "b", "c", "e", "f", "v6", "v6b", "loner", "h", "plain")
    assert not any(n.startswith("cnmv") for n in links(host_ns.path))
    assert all(not os.path.exists(p) for k, p in ns.items() if k != "h")


# --------------------------------------------------------------------------- concurrency
def test_fifty_parallel_connects_get_distinct_addresses(daemon: Daemon) -> None:
    d = daemon
    c = d.client()
    c.create_network(name="seed", subnets=["10.60.0.0/24"])
    c.create_network(name="web", subnets=["10.61.0.0/24"])
    count = 50
    for i in range(count):
        c.create_sandbox(name=f"s{i}", network="seed")
    c.close()

    barrier = threading.Barrier(count)
    results: dict[int, Any] = {}

    def connect(i: int) -> None:
        client = Client(d.address)
        try:
            barrier.wait(timeout=30)
            results[i] = client.connect("web", f"s{i}")
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            results[i] = e
        finally:
            client.close()

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    errors = {i: r for i, r in results.items() if isinstance(r, Exception)}
    assert not errors
    assert len(results) == count
    ips = [r["ipv4"] for r in results.values()]
    assert len(set(ips)) == count
    assert all(ip.startswith("10.61.0.") and ip.endswith("/24") for ip in ips)
    assert all(r["ifname"] == "eth1" for r in results.values())
    client = d.client()
    try:
        web = client.network("web")
    finally:
        client.close()
    assert sorted(e["ipv4"] for e in web["endpoints"]) == sorted(ips)
    # The addresses are real: the first sandbox reaches the last over the new network.
    s0 = netns_of(d, "s0")
    assert can_ping(s0, results[count - 1]["ipv4"].split("/")[0])


# --------------------------------------------------------------------------- host network
def test_host_network_sandbox_sees_the_host_links(daemon: Daemon, host_ns: HostNs) -> None:
    ok(daemon, "sandbox", "create", "--network", "host", "h")
    [h] = inspect(daemon, "sandbox", "h")
    assert h["kind"] == "host" and h["netns"] == host_ns.path and h["endpoints"][0]["ifname"] == ""
    out = ok(daemon, "sandbox", "exec", "h", "--", "ip", "-br", "link")
    seen = {line.split()[0] for line in out.splitlines()}
    assert "cnm0" in seen
    assert seen == set(links(host_ns.path))


# --------------------------------------------------------------------------- reconcile
def test_start_reconciles_a_lost_namespace_and_stale_links(daemon: Daemon,
                                                           host_ns: HostNs) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.70.0.0/24", "web")
    ok(d, "sandbox", "create", "--network", "web", "a")
    ok(d, "sandbox", "create", "--network", "web", "lost")
    ok(d, "sandbox", "create", "--network", "web", "b")
    [lost] = inspect(d, "sandbox", "lost")
    lost_ip = lost["endpoints"][0]["ipv4"].split("/")[0]
    lost_veth = names.veth_name(lost["endpoints"][0]["id"])
    a_ns, b_ip = netns_of(d, "a"), ip_of(d, "b")

    assert d.proc is not None
    d.proc.kill()
    d.proc.wait()
    d.proc = None
    # Behind the dead daemon's back: a sandbox loses its namespace, a stale link appears.
    run("umount", lost["netns"])
    assert not is_netns(lost["netns"])
    h = host_ns.name
    run("ip", "-n", h, "link", "add", "cnmvstale0000", "type", "veth", "peer", "name",
        "cnmpstale")
    run("ip", "-n", h, "link", "set", "cnmvstale0000", "alias", "cnm:endpoint:deadbeef")

    d.start()  # over the stale socket file the killed daemon left
    # Ready means reconciled: once _ping answered, the stale links were already gone.
    host_links = links(host_ns.path)
    assert "cnmvstale0000" not in host_links and "cnmpstale" not in host_links
    assert lost_veth not in host_links
    assert [s["name"] for s in listing(d)[1]] == ["a", "b"]
    assert not os.path.exists(lost["netns"])
    assert not os.path.exists(os.path.dirname(lost["hosts_path"]))
    assert [e["sandbox"] for e in inspect(d, "network", "web")[0]["endpoints"]] == ["a", "b"]
    # Everything else works: traffic, and the lost sandbox's address is free again.
    assert can_ping(a_ns, b_ip)
    ok(d, "sandbox", "create", "--network", "web", "--ip", lost_ip, "again")
    assert can_ping(a_ns, lost_ip)
    ok(d, "sandbox", "rm", "a", "b", "again")
    ok(d, "network", "rm", "web")


# --------------------------------------------------------------------------- exclusivity
def test_second_daemon_on_the_same_state_dir_is_refused(daemon: Daemon, host_ns: HostNs,
                                                        tmp_path: Path) -> None:
    ok(daemon, "network", "create", "--subnet", "10.80.0.0/24", "web")
    r = cnmd("--netns", host_ns.path, "--state-dir", str(daemon.state_dir),
             "--run-dir", str(tmp_path / "run2"), "-H", f"unix://{tmp_path / 'other.sock'}")
    assert r.returncode != 0
    assert f"another cnmd already uses the state dir {daemon.state_dir}" in r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "other.sock")
    assert [n["name"] for n in listing(daemon)[0]] == ["bridge", "host", "none", "web"]


def test_second_daemon_on_the_same_socket_is_refused_before_touching_the_kernel(
        daemon: Daemon, host_ns: HostNs, tmp_path: Path) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.81.0.0/24", "web")
    ok(d, "sandbox", "create", "--network", "web", "a")
    ok(d, "sandbox", "create", "--network", "web", "b")
    before = set(links(host_ns.path))
    # Own state and run dirs and bridge name, so only the socket is shared.
    r = cnmd("--netns", host_ns.path, "--state-dir", str(tmp_path / "state2"),
             "--run-dir", str(tmp_path / "run2"), "--bridge-name", "cnmother",
             "-H", d.address)
    assert r.returncode != 0
    assert f"another daemon is already listening on {d.socket}" in r.stderr
    assert "Traceback" not in r.stderr
    # The running daemon's objects were not reconciled away as "stale".
    assert set(links(host_ns.path)) == before
    assert can_ping(netns_of(d, "a"), ip_of(d, "b"))
    assert os.path.exists(d.socket)
    ok(d, "network", "ls")


def test_second_daemon_on_the_same_namespace_is_refused_before_touching_the_kernel(
        daemon: Daemon, host_ns: HostNs, tmp_path: Path) -> None:
    d = daemon
    ok(d, "network", "create", "--subnet", "10.82.0.0/24", "web")
    ok(d, "sandbox", "create", "--network", "web", "a")
    ok(d, "sandbox", "create", "--network", "web", "b")
    before = set(links(host_ns.path))
    # Nothing shared but the namespace: its reconcile would take the first one's links
    # for stale ones.
    r = cnmd("--netns", host_ns.path, "--state-dir", str(tmp_path / "state2"),
             "--run-dir", str(tmp_path / "run2"), "--bridge-name", "cnmother",
             "-H", f"unix://{tmp_path / 'other.sock'}")
    assert r.returncode != 0
    assert f"another cnmd already manages the network namespace {host_ns.path}" in r.stderr
    assert "Traceback" not in r.stderr
    assert set(links(host_ns.path)) == before
    assert can_ping(netns_of(d, "a"), ip_of(d, "b"))


@pytest.mark.parametrize("args, message", [
    (["--netns", "/nonexistent"], "--netns /nonexistent: not a network namespace"),
    (["--netns", "/etc/hostname"], "--netns /etc/hostname: not a network namespace"),
    (["-H", "tcp://127.0.0.1:2375"], "unsupported address 'tcp://127.0.0.1:2375'"),
])
def test_cnmd_refuses_bad_arguments_clearly(host_ns: HostNs, tmp_path: Path,
                                            args: list[str], message: str) -> None:
    # Always a throwaway --netns first (a later one in ``args`` wins): were the refusal
    # missing, this cnmd must not start on the machine's own namespace.
    r = cnmd("--netns", host_ns.path, "--state-dir", str(tmp_path / "state"),
             "--run-dir", str(tmp_path / "run"), "-H", f"unix://{tmp_path / 'cnm.sock'}",
             *args)
    assert r.returncode == 2
    assert f"cnmd: error: {message}" in r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "cnm.sock")


def test_inspect_names_the_real_host_links(daemon: Daemon, host_ns: HostNs) -> None:
    """What inspect says to run tcpdump on is there: the bridge, and each endpoint's veth
    on it, in the host namespace cnmd manages."""
    ok(daemon, "network", "create", "--subnet", "10.46.0.0/24", "web")
    ok(daemon, "sandbox", "create", "--network", "web", "a")
    [web] = inspect(daemon, "network", "web")
    [(sb_id, c)] = web["containers"].items()
    assert c["name"] == "a" and sb_id == inspect(daemon, "sandbox", "a")[0]["id"]
    on_bridge = json.loads(run("ip", "-n", host_ns.name, "-j", "link", "show", "master",
                               web["link"]).stdout)
    assert [link["ifname"] for link in on_bridge] == [c["host_link"]]
    mac_in_sandbox = json.loads(in_ns(inspect(daemon, "sandbox", "a")[0]["netns"], "ip", "-j",
                                      "link", "show", "eth0").stdout)[0]["address"]
    assert mac_in_sandbox == c["mac_address"]


def test_a_real_cnmds_answers_match_the_document(daemon: Daemon) -> None:
    """The real daemon on the real kernel: each answer of a scripted session (successes and
    errors) validated against openapi.yaml's schema for its route and status."""
    from tests.unit.test_http_contract import request
    from tests.unit.test_http_limits import Daemon as Raw
    from tests.unit.test_openapi import _template, response_schema, violations

    raw = Raw(daemon.address.removeprefix("unix://"), None)
    script: list[tuple[str, str, Any]] = [
        ("GET", "/v1/_ping", None), ("GET", "/v1/info", None),
        ("POST", "/v1/networks", {"name": "web", "subnets": ["10.47.0.0/24"]}),
        ("POST", "/v1/networks", {"name": "web"}),
        ("POST", "/v1/sandboxes", {"name": "a", "network": "web", "ports": ["8080:80"]}),
        ("POST", "/v1/networks/web/connect?dry_run=true", {"sandbox": "a"}),
        ("GET", "/v1/networks/web", None), ("GET", "/v1/sandboxes/a", None),
        ("GET", "/v1/endpoints", None), ("GET", "/v1/sandboxes/a/ports", None),
        ("GET", "/v1/doctor", None), ("POST", "/v1/doctor/fix", None),
        ("POST", "/v1/sandboxes/a/trace", {"destination": "10.47.0.1"}),
        ("DELETE", "/v1/networks/web", None), ("POST", "/v1/firewall/reload", None),
        ("DELETE", "/v1/sandboxes/a", None), ("DELETE", "/v1/networks/web", None),
        ("GET", "/v1/networks/web", None),
    ]
    statuses = []
    for method, path, body in script:
        status, _, answer = request(raw, method, path, body)
        problems = violations(json.loads(answer),
                              response_schema(method, _template(method, path), status))
        assert problems == [], (method, path, status)
        statuses.append(status)
    assert statuses[:4] == [200, 200, 201, 409] and statuses[-1] == 404


def test_cnm_events_follows_a_real_cnmd_in_order(daemon: Daemon) -> None:
    """`cnm events` (a separate process, following live) sees each change of a scripted
    sequence on the real kernel, in order, in docker's line format; --until ends it."""
    import time

    env = {**os.environ, "CNM_HOST": daemon.address}
    start = time.time()
    follower = subprocess.Popen([sys.executable, "-m", "cnm", "events", "--since", str(start),
                                 "--format", "{{.Type}} {{.Action}} {{.Name}}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    try:
        ok(daemon, "network", "create", "--subnet", "10.48.0.0/24", "web")
        ok(daemon, "sandbox", "create", "--network", "web", "a")
        ok(daemon, "port", "add", "a", "8080:80")
        ok(daemon, "network", "disconnect", "web", "a")
        ok(daemon, "sandbox", "rm", "a")
        ok(daemon, "network", "rm", "web")
        want = ["network create web", "sandbox create a", "port publish a",
                "endpoint disconnect a", "sandbox remove a", "network remove web"]
        assert follower.stdout is not None
        got = [follower.stdout.readline().strip() for _ in want]
        assert got == want
    finally:
        follower.terminate()
        follower.wait(10)
    # The same from the kept events, in docker's text form, ended by --until.
    lines = ok(daemon, "events", "--since", str(start), "--until", "0s").splitlines()
    assert len(lines) == len(want)
    assert lines[0].endswith(" (driver=bridge, name=web)") and " network create " in lines[0]


def test_cnmd_as_a_service_config_file_notify_and_json_logs(
        daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started as systemd would (NOTIFY_SOCKET) with a configuration file: READY=1 arrives
    once it answers (reconciled and listening), each change is one INFO line with who,
    what, result and duration, in JSON; STOPPING=1 on SIGTERM."""
    daemon.stop()
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"log-format": "json", "log-level": "info",
                               "default-address-pool": ["base=10.210.0.0/16,size=24"]}))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    try:
        daemon.start("--config-file", str(cfg))
        assert notify.recv(100) == b"READY=1"
        info = json.loads(ok(daemon, "info", "--format", "json"))
        assert info["default_address_pools"] == ["base=10.210.0.0/16,size=24"]  # the file's
        ok(daemon, "network", "create", "--subnet", "10.49.0.0/24", "web")
        fails(daemon, "network", "create", "web")
        rc = daemon.stop()
        assert rc == 0 and notify.recv(100) == b"STOPPING=1"
    finally:
        notify.close()
    records = [json.loads(x) for x in daemon.log.read_text().splitlines()
               if x.startswith("{")]
    changes = [r for r in records if r["logger"] == "cnm.api" and r["level"] == "info"]
    assert [(r["method"], r["path"], r["status"]) for r in changes] == [
        ("POST", "/v1/networks", 201), ("POST", "/v1/networks", 409)]
    assert changes[0]["who"].startswith(f"uid={os.getuid()} pid=")
    assert changes[0]["ms"] >= 0 and "already-exists" in changes[1]["message"]
    daemon.start()  # for the fixture's teardown
