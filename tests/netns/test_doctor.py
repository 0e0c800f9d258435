"""cnm doctor against a real cnmd on a throwaway host namespace: things broken by hand
behind cnm's back (a sandbox's host veth deleted, cnm's nft table flushed or deleted, an
address removed inside a sandbox, a DNS redirect deleted, a resolv.conf removed, a bridge
deleted, a stray cnm link) are each reported with their kind, `--format json` parses,
`--fix` repairs them (doctor then reports nothing and traffic between the sandboxes works
again), and each fix is a reconcile event on the event stream.

Every packet goes between sandboxes of the test's own host namespace; every nft and ip
command runs inside namespaces the test made.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cnm import names
from cnm.testing.netns import Daemon, HostNs, can_ping, in_ns, run
from tests.netns import lantools
from tests.netns.dnstools import ok, sandbox_info
from tests.netns.lantools import PARENT, Lan

SUBNET = "10.71.0.0/24"


@pytest.fixture
def d(daemon: Daemon) -> Daemon:
    """Two sandboxes on a user-defined network (DNS), one publishing a port."""
    ok(daemon, "network", "create", "--subnet", SUBNET, "web")
    ok(daemon, "sandbox", "create", "--network", "web", "-p", "8080:80", "a")
    ok(daemon, "sandbox", "create", "--network", "web", "b")
    assert doctor(daemon) == (0, [])
    return daemon


def doctor(d: Daemon, *flags: str) -> tuple[int, list[dict[str, Any]]]:
    """`cnm doctor --format json [flags]`: its exit code and the drift it leaves."""
    r = d.cli("doctor", "--format", "json", *flags)
    assert r.returncode in (0, 1), r.stderr
    answer = json.loads(r.stdout)
    assert answer.get("errors", []) == []
    return r.returncode, answer["drift"]


def kinds(drift: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(x["kind"], x["object"]["name"]) for x in drift}


def netns(d: Daemon, sandbox: str) -> str:
    return str(sandbox_info(d, sandbox)["netns"])


def ip4(d: Daemon, sandbox: str) -> str:
    return str(sandbox_info(d, sandbox)["endpoints"][0]["ipv4"])


def fix(d: Daemon, *want: tuple[str, str]) -> list[dict[str, Any]]:
    """Doctor reports each of ``want`` (and its text output says so); --fix repairs all;
    doctor then reports nothing. The reconcile events of the fix."""
    rc, drift = doctor(d)
    assert rc == 1 and kinds(drift) >= set(want), drift
    for x in drift:
        assert x["wrong"] and x["means"] and x["fix"], x
    text = d.cli("doctor")
    assert text.returncode == 1
    for kind, _ in want:
        assert f"drift: {kind}: " in text.stdout, text.stdout
    start = time.time()
    r = d.cli("doctor", "--fix")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "no drift: the kernel matches the store" in r.stdout
    for kind, _ in want:
        assert f"fixed: {kind}: " in r.stdout, r.stdout
    assert doctor(d) == (0, [])
    events = d.cli("events", "--since", repr(start), "--until", "0s", "--filter",
                   "type=reconcile", "--format", "json")
    assert events.returncode == 0, events.stderr
    return [json.loads(line) for line in events.stdout.splitlines()]


def reasons(events: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(e["action"], e["attributes"]["object"], e["attributes"]["reason"])
            for e in events}


def test_a_deleted_host_veth(d: Daemon) -> None:
    ep = sandbox_info(d, "a")["endpoints"][0]
    in_ns(d.host_ns.path, "ip", "link", "del", names.veth_name(ep["id"]))
    assert not can_ping(netns(d, "b"), ip4(d, "a").split("/")[0], timeout_s=1)
    events = fix(d, ("endpoint-link-missing", ep["name"]), ("default-routes", "a"))
    assert ("replumb", "endpoint", "endpoint-link-missing") in reasons(events)
    assert [e["id"] for e in events if e["action"] == "replumb"] == [ep["id"]]
    assert can_ping(netns(d, "b"), ip4(d, "a").split("/")[0])
    assert can_ping(netns(d, "a"), "10.71.0.1")


def test_a_veth_taken_off_its_bridge(d: Daemon) -> None:
    ep = sandbox_info(d, "b")["endpoints"][0]
    in_ns(d.host_ns.path, "ip", "link", "set", names.veth_name(ep["id"]), "nomaster")
    assert not can_ping(netns(d, "a"), ip4(d, "b").split("/")[0], timeout_s=1)
    events = fix(d, ("endpoint-link-detached", ep["name"]))
    assert ("replumb", "endpoint", "endpoint-link-detached") in reasons(events)
    assert can_ping(netns(d, "a"), ip4(d, "b").split("/")[0])


def test_a_flushed_and_a_deleted_nft_table(d: Daemon) -> None:
    in_ns(d.host_ns.path, "nft", "flush", "table", "inet", "cnm")
    events = fix(d, ("firewall-table", "inet cnm"))
    assert reasons(events) == {("rebuild", "firewall", "firewall-table")}
    table = in_ns(d.host_ns.path, "nft", "list", "table", "inet", "cnm").stdout
    assert ": " + ip4(d, "a").split("/")[0] + " . 80" in table  # the published port
    # A published port DNATed elsewhere: the element is there, but not the records' one.
    in_ns(d.host_ns.path, "nft", "delete", "element", "inet", "cnm", "pub4_any",
          "{ tcp . 8080 }")
    in_ns(d.host_ns.path, "nft", "add", "element", "inet", "cnm", "pub4_any",
          "{ tcp . 8080 : 10.71.0.99 . 80 }")
    rc, drift = doctor(d)
    assert rc == 1 and sorted(x["wrong"] for x in drift) == [
        "map pub4_any holds tcp . 8080 : 10.71.0.99 . 80, which no record explains",
        f"map pub4_any lacks tcp . 8080 : {ip4(d, 'a').split('/')[0]} . 80"]
    fix(d, ("firewall-table", "inet cnm"))
    in_ns(d.host_ns.path, "nft", "delete", "table", "inet", "cnm")
    rc, drift = doctor(d)
    assert rc == 1 and [x["wrong"] for x in drift] == ["table inet cnm is missing"]
    fix(d, ("firewall-table", "inet cnm"))
    assert "dnat" in in_ns(d.host_ns.path, "nft", "list", "table", "inet", "cnm").stdout


def test_a_deleted_and_a_thinned_guard_table(d: Daemon) -> None:
    """The anti-spoofing table: b takes an address that is not its own; with the guard in
    place its pings from there get nowhere, with the table gone they do (what doctor
    reports as guard-table), and after --fix they get nowhere again."""
    b, a_ip = netns(d, "b"), ip4(d, "a").split("/")[0]
    ep = sandbox_info(d, "b")["endpoints"][0]
    # On lo, so that doctor (which checks the endpoint's interface) has nothing to say of
    # it; b's kernel still sends from it out of eth0 and answers ARP for it there.
    in_ns(b, "ip", "addr", "add", "10.71.0.250/32", "dev", "lo")

    def spoofs() -> bool:
        in_ns(netns(d, "a"), "ip", "neigh", "flush", "all")
        return in_ns(b, "ping", "-c", "1", "-W", "1", "-I", "10.71.0.250", a_ip,
                     check=False).returncode == 0

    assert not spoofs()
    in_ns(d.host_ns.path, "nft", "delete", "table", "bridge", "cnm")
    rc, drift = doctor(d)
    assert rc == 1 and [x["wrong"] for x in drift] == ["table bridge cnm is missing"]
    assert spoofs()
    events = fix(d, ("guard-table", "bridge cnm"))
    assert reasons(events) == {("rebuild", "firewall", "guard-table")}
    assert not spoofs()
    port = names.veth_name(ep["id"])
    in_ns(d.host_ns.path, "nft", "delete", "element", "bridge", "cnm", "addrs4",
          f'{{ "{port}" . {ip4(d, "b").split("/")[0]} }}')
    rc, drift = doctor(d)
    assert rc == 1 and [x["wrong"] for x in drift] == [
        f"set addrs4 lacks {port} . {ip4(d, 'b').split('/')[0]}"]
    fix(d, ("guard-table", "bridge cnm"))
    assert can_ping(b, a_ip)


def test_an_address_removed_inside_a_sandbox(d: Daemon) -> None:
    b = netns(d, "b")
    ep = sandbox_info(d, "b")["endpoints"][0]
    in_ns(b, "ip", "addr", "del", ep["ipv4"], "dev", "eth0")
    assert not can_ping(netns(d, "a"), ep["ipv4"].split("/")[0], timeout_s=1)
    events = fix(d, ("interface-addresses", ep["name"]))
    assert ("replumb", "endpoint", "interface-addresses") in reasons(events)
    assert can_ping(netns(d, "a"), ep["ipv4"].split("/")[0])
    assert can_ping(b, "10.71.0.1")  # its default route is back too


def dig(netns: str, name: str) -> str:
    r = in_ns(netns, "dig", "@127.0.0.11", name, "+short", "+time=1", "+tries=1",
              check=False)
    return r.stdout.strip()


def test_a_stopped_dns_listener(d: Daemon) -> None:
    a, b_ip = netns(d, "a"), ip4(d, "b").split("/")[0]
    assert dig(a, "b") == b_ip
    # The redirect of 127.0.0.11:53 to the listener goes: the sandbox's queries go nowhere.
    in_ns(a, "nft", "delete", "table", "ip", "cnm_dns")
    assert "no servers could be reached" in dig(a, "b")
    events = fix(d, ("dns-listener", "a"))
    assert reasons(events) == {("relisten", "sandbox", "dns-listener")}
    assert dig(a, "b") == b_ip


def test_a_removed_resolv_conf(d: Daemon) -> None:
    info = sandbox_info(d, "b")
    with open(info["resolv_conf_path"]) as f:
        want = f.read()
    os.remove(info["resolv_conf_path"])
    events = fix(d, ("sandbox-file", "b"))
    assert reasons(events) == {("refresh", "sandbox", "sandbox-file")}
    with open(info["resolv_conf_path"]) as f:
        assert f.read() == want
    assert "nameserver 127.0.0.11" in want


def test_a_deleted_bridge_and_a_stray_cnm_link(d: Daemon) -> None:
    net = json.loads(ok(d, "network", "inspect", "web"))[0]
    host = d.host_ns.path
    in_ns(host, "ip", "link", "del", net["link"])
    in_ns(host, "ip", "link", "add", "cnmbdeadbeef0", "type", "bridge")
    in_ns(host, "ip", "link", "set", "cnmbdeadbeef0", "alias", "cnm:network:" + "d" * 64)
    events = fix(d, ("network-link-missing", "web"), ("stale-link", "cnmbdeadbeef0"))
    assert {("recreate", "network"), ("replumb", "endpoint"), ("remove", "link")} <= {
        (a, o) for a, o, _ in reasons(events)}
    assert can_ping(netns(d, "a"), ip4(d, "b").split("/")[0])
    assert "cnmbdeadbeef0" not in in_ns(host, "ip", "-br", "link").stdout


def test_reconcile_at_start_publishes_its_fixes(d: Daemon) -> None:
    ep = sandbox_info(d, "a")["endpoints"][0]
    d.stop()
    in_ns(d.host_ns.path, "ip", "link", "del", names.veth_name(ep["id"]))
    d.start()
    c = d.client()
    try:
        events = list(c.stream(f"/v1/events?since=0&until={time.time()}&type=reconcile"))
    finally:
        c.close()
    assert [(e["action"], e["id"], e["attributes"]) for e in events] == [
        ("replumb", ep["id"], {"object": "endpoint", "reason": "start", "network": "web",
                               "sandbox": "a"})]
    assert doctor(d) == (0, [])
    assert can_ping(netns(d, "b"), ip4(d, "a").split("/")[0])


@pytest.fixture
def lan(host_ns: HostNs) -> Iterator[Lan]:
    with lantools.lan(host_ns.name, "10.77.0.200/24") as it:
        yield it


@pytest.fixture
def runtime_ns() -> Iterator[str]:
    """A namespace made outside cnm (as a runtime makes one), lo up, deleted after."""
    name = f"cnmtest-rt-{os.urandom(4).hex()}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield f"/run/netns/{name}"
    finally:
        run("ip", "netns", "del", name, check=False)


def test_no_drift_on_every_kind_of_sandbox(daemon: Daemon, runtime_ns: str,
                                           lan: Lan) -> None:
    """No false alarm: dual-stack, internal, the default bridge, the host network, none,
    macvlan, an adopted namespace, a sandbox on two networks, published ports."""
    d = daemon
    ok(d, "network", "create", "--subnet", "10.73.0.0/24", "--subnet", "fd00:73::/64",
       "--ipv6", "dual")
    ok(d, "network", "create", "--internal", "--subnet", "10.74.0.0/24", "quiet")
    ok(d, "network", "create", "-d", "macvlan", "--subnet", "10.77.0.0/24", "-o",
       f"parent={PARENT}", "lan")
    ok(d, "sandbox", "create", "--network", "dual", "-p", "8081:81", "-p", "9000-9002:9000-9002",
       "a")
    ok(d, "network", "connect", "quiet", "a")
    ok(d, "sandbox", "create", "--network", "bridge", "-p", "127.0.0.1:8082:82", "b")
    ok(d, "sandbox", "create", "--network", "host", "h")
    ok(d, "sandbox", "create", "--network", "none", "n")
    ok(d, "sandbox", "create", "--network", "lan", "m")
    ok(d, "sandbox", "create", "--netns", runtime_ns, "--network", "dual", "r")
    assert doctor(d) == (0, [])
    r = d.cli("doctor")
    assert (r.returncode, r.stdout) == (0, "no drift: the kernel matches the store\n")
    r = d.cli("doctor", "--format", "{{.Kind}}")
    assert (r.returncode, r.stdout) == (0, "")
    assert can_ping(netns(d, "r"), ip4(d, "a").split("/")[0])
