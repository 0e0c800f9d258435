"""cnm-cni called exactly as a CNI runtime calls it (a process per call, CNI_* environment,
configuration on stdin), against a real cnmd on a throwaway host namespace, with container
namespaces made the way runtimes make them: every command, every error code, packets.

Nothing here touches the machine's own namespace.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnm.testing.netns import Daemon, HostNs, addresses, can_ping, default_route, in_ns, links
from tests.netns.cnitools import (
    Containers,
    Runtime,
    address_of,
    containers,
    failed,
    ok,
    resolve_and_ping,
)
from tests.netns.fwtools import Servers, probe

SUBNET, GATEWAY = "10.71.0.0/24", "10.71.0.1"


@pytest.fixture
def ctrs() -> Iterator[Containers]:
    with containers() as c:
        yield c


@pytest.fixture
def rt(daemon: Daemon) -> Runtime:
    r = daemon.cli("network", "create", "--subnet", SUBNET, "web")
    assert r.returncode == 0, r.stderr
    return Runtime(daemon.address, "web")


def sandboxes(d: Daemon) -> list[dict[str, Any]]:
    c = d.client()
    try:
        out: list[dict[str, Any]] = c.sandboxes()
        return out
    finally:
        c.close()


def host_veths(host: HostNs) -> list[str]:
    return [n for n in links(host.path) if n.startswith("cnmv")]


def assert_nothing_left(d: Daemon, host: HostNs) -> None:
    assert sandboxes(d) == []
    c = d.client()
    try:
        assert c.endpoints() == []
    finally:
        c.close()
    assert host_veths(host) == []


# ---------------------------------------------------------------------------- ADD, packets
def test_two_containers_reach_each_other_by_address_and_by_name(
        rt: Runtime, ctrs: Containers, daemon: Daemon, host_ns: HostNs,
        tmp_path: Path) -> None:
    a, b = ctrs.new(), ctrs.new()
    ra = ok(rt.add("ctr-a", a, args="IgnoreUnknown=1;K8S_POD_NAME=alpha",
                   conf=rt.conf(runtimeConfig={"aliases": {"web": ["db"]}})))
    rb = ok(rt.add("ctr-b", b, args="K8S_POD_NAME=beta"))
    # The spec's result: the interface in its sandbox, its address with the gateway, the
    # default route, and the embedded DNS of a user-defined network.
    assert ra["cniVersion"] == "1.1.0"
    assert ra["interfaces"] == [{"name": "eth0", "mac": links(a)["eth0"]["address"],
                                 "sandbox": a}]
    ip_a = address_of(ra)
    assert ra["ips"] == [{"address": f"{ip_a}/24", "gateway": GATEWAY, "interface": 0}]
    assert ra["routes"] == [{"dst": "0.0.0.0/0", "gw": GATEWAY}]
    assert ra["dns"]["nameservers"] == ["127.0.0.11"]
    assert addresses(a, "eth0") == [f"{ip_a}/24"]
    assert default_route(a) == f"{GATEWAY} dev eth0"
    ip_b = address_of(rb)
    assert can_ping(a, ip_b) and can_ping(b, ip_a)
    # By name, through the resolv.conf a runtime writes from the result.
    assert resolve_and_ping(a, ra, "beta", tmp_path).returncode == 0
    assert resolve_and_ping(b, rb, "alpha", tmp_path).returncode == 0
    assert resolve_and_ping(b, rb, "db", tmp_path).returncode == 0  # the aliases capability
    assert resolve_and_ping(b, rb, "nosuch", tmp_path).returncode != 0
    # Both DELs take everything away: sandboxes, endpoints, host veths.
    ok(rt.delete("ctr-a", a))
    ok(rt.delete("ctr-b", b))
    assert_nothing_left(daemon, host_ns)
    assert "eth0" not in links(a)


def test_a_published_port_is_reached_from_the_host_namespace(
        rt: Runtime, ctrs: Containers, daemon: Daemon, host_ns: HostNs) -> None:
    a = ctrs.new()
    conf = rt.conf(runtimeConfig={"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]})
    ok(rt.add("ctr-p", a, conf=conf))
    with Servers() as servers:
        servers.start(a, 80, 53)
        assert probe(host_ns.path, "tcp", GATEWAY, 8080) == f"{GATEWAY} 80"
        assert probe(host_ns.path, "tcp", "127.0.0.1", 8080) is not None
        assert probe(host_ns.path, "udp", GATEWAY, 5353) == f"{GATEWAY} 53"
        ok(rt.delete("ctr-p", a, conf=conf))
        assert probe(host_ns.path, "tcp", GATEWAY, 8080, timeout=1.5) is None
    assert_nothing_left(daemon, host_ns)


def test_static_address_and_mac_from_capabilities_and_cni_args(
        rt: Runtime, ctrs: Containers) -> None:
    a, b = ctrs.new(), ctrs.new()
    ra = ok(rt.add("ctr-s", a, conf=rt.conf(
        runtimeConfig={"ips": ["10.71.0.50/24"], "mac": "02:00:00:00:71:50"})))
    assert ra["ips"][0]["address"] == "10.71.0.50/24"
    assert links(a)["eth0"]["address"] == "02:00:00:00:71:50"
    rb = ok(rt.add("ctr-t", b, args="IP=10.71.0.51;MAC=02:00:00:00:71:51"))
    assert addresses(b, "eth0") == ["10.71.0.51/24"]
    assert rb["interfaces"][0]["mac"] == "02:00:00:00:71:51"


def test_a_container_on_two_networks_and_each_del_takes_its_own(
        rt: Runtime, ctrs: Containers, daemon: Daemon, host_ns: HostNs) -> None:
    assert daemon.cli("network", "create", "--subnet", "10.72.0.0/24", "back").returncode == 0
    back = Runtime(daemon.address, "back")
    a = ctrs.new()
    ok(rt.add("ctr-2", a))
    r2 = ok(back.add("ctr-2", a, ifname="net1"))
    assert r2["interfaces"][0]["name"] == "net1"
    assert "routes" not in r2  # the default route stays with the first network
    assert addresses(a, "net1") == [r2["ips"][0]["address"]]
    assert default_route(a) == f"{GATEWAY} dev eth0"
    [sb] = sandboxes(daemon)
    assert sorted(e["ifname"] for e in sb["endpoints"]) == ["eth0", "net1"]
    ok(rt.delete("ctr-2", a))
    assert set(links(a)) >= {"net1"} and "eth0" not in links(a)
    ok(back.delete("ctr-2", a, ifname="net1"))
    assert_nothing_left(daemon, host_ns)


def test_the_default_bridge_has_no_embedded_dns_in_the_result(
        daemon: Daemon, ctrs: Containers) -> None:
    rt = Runtime(daemon.address, "bridge", version="0.4.0")
    r = ok(rt.add("ctr-d", ctrs.new()))
    assert "dns" not in r
    assert r["ips"][0]["version"] == "4"  # the 0.x result format


def test_prev_result_is_passed_through_when_chained(rt: Runtime, ctrs: Containers) -> None:
    a = ctrs.new()
    prev = {"cniVersion": "1.1.0",
            "interfaces": [{"name": "other0", "mac": "02:00:00:00:00:01", "sandbox": a}],
            "ips": [{"address": "192.0.2.5/24", "interface": 0}],
            "routes": [{"dst": "192.0.2.0/24"}], "dns": {"search": ["example.test"]}}
    r = ok(rt.add("ctr-c", a, conf=rt.conf(prevResult=prev)))
    assert r["interfaces"][0] == prev["interfaces"][0]
    assert r["interfaces"][1]["name"] == "eth0"
    assert r["ips"][0] == prev["ips"][0] and r["ips"][1]["interface"] == 1
    assert r["routes"] == [{"dst": "192.0.2.0/24"}, {"dst": "0.0.0.0/0", "gw": GATEWAY}]
    assert r["dns"] == {"search": ["example.test"], "nameservers": ["127.0.0.11"],
                        "options": ["ndots:0"]}


# ---------------------------------------------------------------------------- DEL
def test_del_is_idempotent_and_needs_no_netns(rt: Runtime, ctrs: Containers,
                                              daemon: Daemon, host_ns: HostNs) -> None:
    a = ctrs.new()
    ok(rt.add("ctr-i", a))
    assert ok(rt.delete("ctr-i", None)) is None  # no CNI_NETNS, as the spec allows
    assert ok(rt.delete("ctr-i", a)) is None
    assert ok(rt.delete("never-added", a)) is None
    assert_nothing_left(daemon, host_ns)


def test_del_after_the_namespace_is_gone_frees_everything(
        rt: Runtime, ctrs: Containers, daemon: Daemon, host_ns: HostNs) -> None:
    a = ctrs.new()
    ip = address_of(ok(rt.add("ctr-g", a, conf=rt.conf(runtimeConfig={"portMappings": [
        {"hostPort": 8081, "containerPort": 80}]}))))
    ctrs.remove(a)  # the container's namespace went away before the DEL
    ok(rt.delete("ctr-g", a))
    assert_nothing_left(daemon, host_ns)
    # Its address and host port are free again.
    b = ctrs.new()
    r = ok(rt.add("ctr-h", b, conf=rt.conf(runtimeConfig={
        "ips": [ip], "portMappings": [{"hostPort": 8081, "containerPort": 80}]})))
    assert address_of(r) == ip


def test_del_after_the_endpoint_was_removed_by_hand(
        rt: Runtime, ctrs: Containers, daemon: Daemon, host_ns: HostNs) -> None:
    a = ctrs.new()
    ok(rt.add("ctr-e", a))
    assert daemon.cli("sandbox", "rm", "cni-ctr-e").returncode == 0
    ok(rt.delete("ctr-e", a))
    assert_nothing_left(daemon, host_ns)


def test_del_and_check_after_cnmd_restarted(rt: Runtime, ctrs: Containers, daemon: Daemon,
                                            host_ns: HostNs) -> None:
    a, b = ctrs.new(), ctrs.new()
    ra = ok(rt.add("ctr-r", a))
    rb = ok(rt.add("ctr-q", b))
    daemon.stop()
    daemon.start()
    ok(rt.call("CHECK", rt.conf(prevResult=ra), cid="ctr-r", netns=a))
    assert can_ping(a, address_of(rb))
    ok(rt.delete("ctr-r", a))
    ok(rt.delete("ctr-q", b))
    assert_nothing_left(daemon, host_ns)


# ---------------------------------------------------------------------------- CHECK
def test_check_compares_the_kernel_with_the_recorded_attachment(
        rt: Runtime, ctrs: Containers) -> None:
    a = ctrs.new()
    ports = {"portMappings": [{"hostPort": 8082, "containerPort": 80}]}
    r = ok(rt.add("ctr-k", a, conf=rt.conf(runtimeConfig=ports)))
    conf = rt.conf(prevResult=r, runtimeConfig=ports)
    assert ok(rt.call("CHECK", conf, cid="ctr-k", netns=a)) is None
    # prevResult that disagrees with what cnm recorded.
    other = json.loads(json.dumps(r))
    other["ips"][0]["address"] = "10.71.0.99/24"
    failed(rt.call("CHECK", rt.conf(prevResult=other), cid="ctr-k", netns=a), 100)
    # A port mapping the ADD never had.
    failed(rt.call("CHECK", rt.conf(prevResult=r, runtimeConfig={"portMappings": [
        {"hostPort": 9999, "containerPort": 80}]}), cid="ctr-k", netns=a), 100)
    # The kernel changed behind cnm's back: the address, then the MAC, then the link.
    ip = r["ips"][0]["address"]
    in_ns(a, "ip", "addr", "del", ip, "dev", "eth0")
    err = failed(rt.call("CHECK", conf, cid="ctr-k", netns=a), 100)
    assert ip in err["msg"]
    in_ns(a, "ip", "addr", "add", ip, "dev", "eth0")
    assert ok(rt.call("CHECK", conf, cid="ctr-k", netns=a)) is None
    in_ns(a, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:99")
    assert "MAC" in failed(rt.call("CHECK", conf, cid="ctr-k", netns=a), 100)["msg"]
    in_ns(a, "ip", "link", "del", "eth0")
    assert "missing" in failed(rt.call("CHECK", conf, cid="ctr-k", netns=a), 100)["msg"]
    # No such attachment: code 3 (the container is unknown).
    failed(rt.call("CHECK", conf, cid="ctr-unknown", netns=a), 3)
    failed(rt.call("CHECK", conf, cid="ctr-k", netns=a, ifname="eth5"), 3)
    # CHECK without prevResult is a bad configuration.
    failed(rt.call("CHECK", rt.conf(), cid="ctr-k", netns=a), 7)


def test_check_of_a_container_whose_namespace_is_gone(rt: Runtime, ctrs: Containers) -> None:
    a = ctrs.new()
    r = ok(rt.add("ctr-n", a))
    ctrs.remove(a)
    failed(rt.call("CHECK", rt.conf(prevResult=r), cid="ctr-n", netns=a), 3)


# ---------------------------------------------------------------------------- GC, STATUS
def test_gc_removes_the_attachments_not_listed(rt: Runtime, ctrs: Containers,
                                               daemon: Daemon, host_ns: HostNs) -> None:
    keep, drop1, drop2 = ctrs.new(), ctrs.new(), ctrs.new()
    ok(rt.add("ctr-keep", keep))
    ok(rt.add("ctr-drop1", drop1))
    ok(rt.add("ctr-drop2", drop2))
    mine = ctrs.new()  # a sandbox cnm-cni did not make stays whatever GC is told
    assert daemon.cli("sandbox", "create", "--network", "web", "--netns", mine,
                      "by-hand").returncode == 0
    gc = rt.conf(**{"cni.dev/valid-attachments": [
        {"containerID": "ctr-keep", "ifname": "eth0"},
        {"containerID": "ctr-drop1", "ifname": "eth9"}]})  # another ifname: not this one
    assert ok(rt.call("GC", gc)) is None
    assert sorted(s["name"] for s in sandboxes(daemon)) == ["by-hand", "cni-ctr-keep"]
    assert "eth0" not in links(drop1) and "eth0" not in links(drop2)
    assert can_ping(keep, address_of_sandbox(daemon, "by-hand"))
    ok(rt.call("GC", rt.conf(**{"cni.dev/valid-attachments": []})))
    assert [s["name"] for s in sandboxes(daemon)] == ["by-hand"]
    failed(rt.call("GC", rt.conf()), 7)  # no valid-attachments: refused, nothing removed
    assert len(host_veths(host_ns)) == 1


def address_of_sandbox(d: Daemon, name: str) -> str:
    [sb] = [s for s in sandboxes(d) if s["name"] == name]
    return str(sb["endpoints"][0]["ipv4"].split("/")[0])


def test_status_fails_with_50_while_cnmd_is_not_ready(rt: Runtime, daemon: Daemon,
                                                      ctrs: Containers) -> None:
    assert ok(rt.call("STATUS")) is None
    err = failed(Runtime(daemon.address, "nosuch").call("STATUS"), 50)
    assert "nosuch" in err["msg"]
    daemon.stop()
    assert "not ready" in failed(rt.call("STATUS"), 50)["msg"]
    # ADD and DEL while cnmd is down: try again later.
    failed(rt.add("ctr-down", ctrs.new()), 11)
    failed(rt.delete("ctr-down", None), 11)
    daemon.start()
    assert ok(rt.call("STATUS")) is None


# ---------------------------------------------------------------------------- errors
def test_version_answers_every_version(rt: Runtime) -> None:
    for v in ("0.3.1", "0.4.0", "1.0.0", "1.1.0"):
        out = ok(rt.call("VERSION", {"cniVersion": v}))
        assert out["cniVersion"] == v and "1.1.0" in out["supportedVersions"]
    assert ok(rt.call("VERSION", stdin=b""))["cniVersion"] == "1.1.0"


def test_bad_environment_is_code_4_naming_the_variable(rt: Runtime, ctrs: Containers,
                                                       daemon: Daemon,
                                                       host_ns: HostNs) -> None:
    a = ctrs.new()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cid": None, "netns": a}, "CNI_CONTAINERID"),
        ({"cid": "ctr-x", "netns": a, "ifname": None}, "CNI_IFNAME"),
        ({"cid": "ctr-x", "netns": None}, "CNI_NETNS"),
        ({"cid": "-bad id", "netns": a}, "CNI_CONTAINERID"),
        ({"cid": "ctr-x", "netns": a, "ifname": "a/b"}, "CNI_IFNAME"),
        ({"cid": "ctr-x", "netns": a, "ifname": "x" * 16}, "CNI_IFNAME"),
        ({"cid": "ctr-x", "netns": a, "args": "FOO=1"}, "CNI_ARGS"),
        ({"cid": "ctr-x", "netns": a, "args": "novalue"}, "CNI_ARGS"),
        ({"cid": "ctr-x", "netns": "/nonexistent/ns"}, "CNI_NETNS"),
    ]
    err = failed(rt.call("NOPE"), 4)
    assert "CNI_COMMAND" in err["msg"]
    for kw, var in cases:
        err = failed(rt.call("ADD", **kw), 4)
        assert var in err["msg"], (kw, err)
    assert_nothing_left(daemon, host_ns)


def test_bad_configuration_codes_and_nothing_is_left(rt: Runtime, ctrs: Containers,
                                                     daemon: Daemon,
                                                     host_ns: HostNs) -> None:
    a = ctrs.new()

    def add(code: int, conf: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return failed(rt.add("ctr-bad", a, conf=conf, **kw), code)

    add(6, stdin=b"{not json")
    add(6, stdin=b"[1, 2]")
    add(1, rt.conf(cniVersion="0.2.0"))
    add(7, {k: v for k, v in rt.conf().items() if k != "cniVersion"})
    assert "ipam" in add(2, rt.conf(ipam={"type": "host-local"}))["msg"]
    assert "bandwidth" in add(2, rt.conf(runtimeConfig={"bandwidth": {}}))["msg"]
    add(7, rt.conf(socket="tcp://127.0.0.1:1"))
    add(7, rt.conf(network="no such"))
    assert "nosuch" in add(7, rt.conf(network="nosuch"))["msg"]
    add(7, rt.conf(runtimeConfig={"portMappings": [{"hostPort": 0, "containerPort": 80}]}))
    add(7, rt.conf(runtimeConfig={"portMappings": [{"hostPort": 80, "containerPort": 80,
                                                     "protocol": "icmp"}]}))
    add(7, rt.conf(runtimeConfig={"ips": ["10.71.0.5", "10.71.0.6"]}))
    # Refused by cnmd, with its reason: an address outside the subnet, a bad MAC.
    assert "10.99.0.5" in add(7, rt.conf(runtimeConfig={"ips": ["10.99.0.5"]}))["msg"]
    assert "MAC" in add(7, rt.conf(runtimeConfig={"mac": "zz"}))["msg"]
    # I/O failure reading stdin (the write end of a pipe as stdin: EBADF on read).
    r, w = os.pipe()
    try:
        failed(rt.call("ADD", cid="ctr-bad", netns=a, stdin_fd=w), 5)
    finally:
        os.close(r)
        os.close(w)
    # None of it left anything: no sandbox, no endpoint, no link, no address.
    assert_nothing_left(daemon, host_ns)
    assert set(links(a)) == {"lo"}
    # STATUS and GC are 1.1 commands; CHECK came in 0.4.0.
    failed(rt.call("GC", rt.conf(cniVersion="1.0.0")), 1)
    failed(rt.call("CHECK", rt.conf(cniVersion="0.3.1"), cid="ctr-bad", netns=a), 1)


def test_an_interface_name_the_container_already_has_is_refused(
        rt: Runtime, ctrs: Containers, daemon: Daemon, host_ns: HostNs) -> None:
    a = ctrs.new()
    in_ns(a, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other")
    err = failed(rt.add("ctr-dup", a), 999)
    assert "eth0" in err["msg"]
    assert_nothing_left(daemon, host_ns)


def test_the_socket_comes_from_cnm_host_when_the_configuration_names_none(
        daemon: Daemon, ctrs: Containers) -> None:
    rt = Runtime(daemon.address, "bridge")
    conf = {k: v for k, v in rt.conf().items() if k != "socket"}
    a = ctrs.new()
    ok(rt.add("ctr-env", a, conf=conf, env={"CNM_HOST": daemon.address}))
    failed(rt.add("ctr-env2", ctrs.new(), conf=conf,
                  env={"CNM_HOST": "unix:///nonexistent/cnm.sock"}), 11)
    ok(rt.delete("ctr-env", a, conf=conf, env={"CNM_HOST": daemon.address}))


def test_no_traceback_even_for_a_broken_answer(tmp_path: Path, ctrs: Containers) -> None:
    """A socket that answers garbage (not cnmd): the spec's error, never a traceback."""
    import socket
    import threading

    path = str(tmp_path / "fake.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{nope")
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        rt = Runtime(f"unix://{path}", "web")
        err = failed(rt.add("ctr-z", ctrs.new()), 999)
        assert "not JSON" in err["msg"]
    finally:
        srv.close()
