"""A real dockerd (20.10) driving cnm as its network and IPAM plugin (`-d cnm --ipam-driver
cnm`), both daemons in a throwaway host namespace.

dockerd finds plugins at the fixed path /run/docker/plugins: its wrapper (cnm/lab/dockerd.py) runs
it with a private /run whose plugins dir is a bind mount of the lab's own, where cnmd
serves `cnm.sock` (`--docker-plugin`), so nothing is ever put in the machine's /run.
Containers are busybox (from busybox-static); every check is a packet, an address, a
kernel object or an error as `docker` prints it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cnm.lab.dockerd import Dockerd
from cnm.testing.netns import Daemon, HostNs, can_ping, in_ns

pytestmark = pytest.mark.lab


# --------------------------------------------------------------------------- helpers
class Lab:
    def __init__(self, dockerd: Dockerd, cnmd: Daemon, host_ns: HostNs) -> None:
        self.dk, self.cn, self.ns = dockerd, cnmd, host_ns
        self.plugin = str(dockerd.plugins / "cnm.sock")
        self.img = ""

    def start_cnmd(self) -> None:
        self.cn.start("--docker-plugin", self.plugin)

    def docker(self, *args: str) -> str:
        r = self.dk.docker(*args, timeout=90)
        assert r.returncode == 0, f"docker {' '.join(args)} -> {r.returncode}: {r.stderr}"
        return r.stdout.strip()

    def refused(self, *args: str) -> str:
        r = self.dk.docker(*args, timeout=90)
        assert r.returncode != 0, f"docker {' '.join(args)} was not refused: {r.stdout}"
        return r.stderr

    def cnm(self, *args: str) -> Any:
        r = self.cn.cli(*args)
        assert r.returncode == 0, f"cnm {' '.join(args)} -> {r.returncode}: {r.stderr}"
        return r.stdout

    def cnm_json(self, *args: str) -> Any:
        return json.loads(self.cnm(*args, "--format", "json"))

    def run(self, name: str, network: str, *flags: str, cmd: tuple[str, ...] = ("sleep",
                                                                                "100000")) -> str:
        return self.docker("run", "-d", "--name", name, "--network", network, *flags,
                           self.img, *cmd)

    def ip(self, container: str, network: str) -> str:
        return self.docker("inspect", "-f", "{{(index .NetworkSettings.Networks \"" + network
                           + "\").IPAddress}}", container)

    def pings(self, container: str, target: str) -> bool:
        r = self.dk.docker("exec", container, "ping", "-c", "1", "-W", "2", target, timeout=30)
        return r.returncode == 0

    def links(self) -> set[str]:
        out = in_ns(self.ns.path, "ip", "-j", "link", "show").stdout
        return {x["ifname"] for x in json.loads(out)}

    def networks(self) -> dict[str, Any]:
        return {n["name"]: n for n in self.cnm_json("network", "ls")}


@pytest.fixture
def lab(dockerd: Dockerd, cnmd: Daemon, host_ns: HostNs) -> Iterator[Lab]:
    lab = Lab(dockerd, cnmd, host_ns)
    lab.start_cnmd()
    dockerd.start()
    # As next to a dockerd that found forwarding off (REFERENCE §4), whatever this one
    # found: frames cnm's bridges forward pass only through cnm's DOCKER-USER accepts.
    in_ns(host_ns.path, "iptables", "-P", "FORWARD", "DROP")
    assert "policy DROP" in in_ns(host_ns.path, "iptables", "-L", "FORWARD", "-n").stdout
    lab.img = dockerd.image()
    yield lab


def cnm_links(lab: Lab) -> set[str]:
    """The links cnm made beyond its default bridge (networks' bridges, endpoints' veths)."""
    return {n for n in lab.links() if n.startswith("cnm") and n != "cnm0"}


def web(lab: Lab, subnet: str = "10.214.0.0/24", *extra: str) -> dict[str, Any]:
    lab.docker("network", "create", "-d", "cnm", "--ipam-driver", "cnm", "--subnet", subnet,
               "-o", "cnm.name=web", *extra, "web")
    return lab.networks()["web"]


def busybox_get(lab: Lab, url: str) -> subprocess.CompletedProcess[str]:
    """An HTTP GET from the host namespace (busybox wget: its own -T segfaults)."""
    return in_ns(lab.ns.path, "timeout", "5", "/bin/busybox", "wget", "-q", "-O-", url,
                 check=False, timeout=15)


def served(get: Callable[[], subprocess.CompletedProcess[str]], want: str,
           within: float = 10.0) -> subprocess.CompletedProcess[str]:
    """``get`` again until it answers ``want`` or ``within`` seconds pass: a container's
    server that was just (re)started may not listen yet. (A check that must fail never
    goes through here: it would only take longer to fail.)"""
    deadline = time.monotonic() + within
    while True:
        r = get()
        if r.stdout == want or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


# --------------------------------------------------------------------------- tests
def test_docker_containers_on_a_cnm_network(lab: Lab) -> None:
    net = web(lab)
    assert net["driver"] == "bridge"
    assert [s["subnet"] for s in net["subnets"]] == ["10.214.0.0/24"]
    lab.run("ca", "web")
    lab.run("cb", "web", "--ip", "10.214.0.50", "--mac-address", "02:42:0a:d6:00:32",
            "--network-alias", "bee")
    assert lab.ip("cb", "web") == "10.214.0.50"
    inside = lab.docker("exec", "cb", "ip", "addr", "show", "eth0")
    assert "10.214.0.50/24" in inside and "02:42:0a:d6:00:32" in inside
    route = lab.docker("exec", "ca", "ip", "route")
    assert "default via 10.214.0.1 dev eth0" in route  # Join gave the gateway
    assert "eth1" not in lab.docker("exec", "ca", "ip", "link")  # no docker_gwbridge
    assert lab.pings("ca", "10.214.0.50")
    assert lab.pings("ca", "bee")  # Docker's own DNS answers the alias on the network
    # cnm knows them: one endpoint each, in a handover sandbox, with Docker's addresses.
    eps = {e["ipv4"] for e in lab.cnm_json("endpoint", "ls")}
    assert eps == {f"{lab.ip('ca', 'web')}/24", "10.214.0.50/24"}
    # A cnm sandbox on the same network and the containers reach each other.
    lab.cnm("sandbox", "create", "--network", "web", "sbx")
    sbx = lab.cnm_json("sandbox", "inspect", "sbx")[0]
    sbx_ip = sbx["endpoints"][0]["ipv4"].split("/")[0]
    assert can_ping(sbx["netns"], "10.214.0.50")
    assert lab.pings("ca", sbx_ip)
    lab.cnm("sandbox", "rm", "sbx")
    lab.docker("rm", "-f", "ca", "cb")
    assert lab.cnm_json("endpoint", "ls") == []
    assert lab.cnm_json("sandbox", "ls") == []
    lab.docker("network", "rm", "web")
    assert "web" not in lab.networks()
    assert cnm_links(lab) == set()


def test_published_port_is_cnms_firewall_element(lab: Lab) -> None:
    web(lab)
    lab.run("ws", "web", "-p", "8081:80", cmd=("httpd", "-f", "-p", "80", "-h", "/www"))
    ws_ip = lab.ip("ws", "web")
    table = in_ns(lab.ns.path, "nft", "list", "table", "inet", "cnm").stdout
    assert f"8081 : {ws_ip} . 80" in table
    got = served(lambda: busybox_get(lab, "http://127.0.0.1:8081/"), "hello from docker\n")
    assert got.stdout == "hello from docker\n", got.stderr
    # A cnm sandbox reaches it through the host's port too (hairpin through the gateway).
    lab.cnm("sandbox", "create", "--network", "web", "sbx")
    r = served(lambda: lab.cn.cli("sandbox", "exec", "sbx", "--", "timeout", "5",
                                  "/bin/busybox", "wget", "-q", "-O-", f"http://{ws_ip}:80/"),
               "hello from docker\n")
    assert r.stdout == "hello from docker\n", r.stderr
    lab.cnm("sandbox", "rm", "sbx")
    # stop revokes it: the element goes, the port answers no more; start programs it again.
    lab.docker("stop", "-t", "0", "ws")
    assert "8081" not in in_ns(lab.ns.path, "nft", "list", "table", "inet", "cnm").stdout
    assert busybox_get(lab, "http://127.0.0.1:8081/").returncode != 0
    lab.docker("start", "ws")
    got = served(lambda: busybox_get(lab, "http://127.0.0.1:8081/"), "hello from docker\n")
    assert got.stdout == "hello from docker\n", got.stderr
    # A second container cannot take the same host port: refused, with the holder named.
    err = lab.refused("run", "-d", "--name", "w2", "--network", "web", "-p", "8081:80",
                      lab.img, "sleep", "100000")
    assert "8081" in err and "already" in err, err
    lab.docker("rm", "-f", "ws", "w2")
    lab.docker("network", "rm", "web")
    assert "8081" not in in_ns(lab.ns.path, "nft", "list", "table", "inet", "cnm").stdout
    assert cnm_links(lab) == set()


def test_connect_disconnect_internal_stop_start(lab: Lab) -> None:
    web(lab)
    lab.docker("network", "create", "-d", "cnm", "--ipam-driver", "cnm", "--internal",
               "--subnet", "10.215.0.0/24", "-o", "cnm.name=inner", "inner")
    assert lab.networks()["inner"]["internal"] is True
    lab.run("c1", "web")
    lab.run("c2", "inner")
    # An internal network gives no gateway: no default route at all.
    assert "default" not in lab.docker("exec", "c2", "ip", "route")
    lab.docker("network", "connect", "inner", "c1")
    routes = lab.docker("exec", "c1", "ip", "route")
    assert routes.count("default") == 1 and "default via 10.214.0.1 dev eth0" in routes
    assert lab.pings("c1", lab.ip("c2", "inner"))
    assert len(lab.cnm_json("endpoint", "ls")) == 3
    lab.docker("network", "disconnect", "inner", "c1")
    assert "eth1" not in lab.docker("exec", "c1", "ip", "link")
    assert not lab.pings("c1", lab.ip("c2", "inner"))
    assert len(lab.cnm_json("endpoint", "ls")) == 2
    lab.docker("stop", "-t", "0", "c1")
    assert len(lab.cnm_json("endpoint", "ls")) == 1
    assert len(lab.cnm_json("sandbox", "ls")) == 1
    lab.docker("start", "c1")
    assert lab.pings("c1", "10.214.0.1")
    lab.docker("rm", "-f", "c1", "c2")
    lab.docker("network", "rm", "web", "inner")
    assert cnm_links(lab) == set()
    assert lab.cnm_json("endpoint", "ls") == [] and lab.cnm_json("sandbox", "ls") == []


def test_bad_options_are_refused_with_the_reason_and_leave_nothing(lab: Lab) -> None:
    web(lab)
    before_links, before_nets = lab.links(), set(lab.networks())
    err = lab.refused("network", "create", "-d", "cnm", "--ipam-driver", "cnm",
                      "--subnet", "10.216.0.0/24", "-o", "cnm.driver=nosuch", "bad1")
    assert "unknown driver 'nosuch'" in err
    err = lab.refused("network", "create", "-d", "cnm", "--ipam-driver", "cnm",
                      "--subnet", "10.214.0.128/25", "bad2")
    assert 'subnet 10.214.0.128/25 overlaps network "web" (10.214.0.0/24)' in err
    err = lab.refused("network", "create", "-d", "cnm", "--ipam-driver", "cnm",
                      "--subnet", "10.217.0.0/24", "-o", "color=blue", "bad3")
    assert "unknown option 'color' for driver bridge" in err
    err = lab.refused("run", "-d", "--name", "cx", "--network", "web", "--ip", "10.99.0.5",
                      lab.img, "sleep", "100000")
    assert "10.99.0.5" in err
    err = lab.refused("run", "-d", "--name", "cy", "--network", "web", "--ip", "10.214.0.1",
                      lab.img, "sleep", "100000")
    assert "10.214.0.1" in err and "reserved" in err, err
    assert lab.links() == before_links
    assert set(lab.networks()) == before_nets
    assert lab.cnm_json("endpoint", "ls") == [] and lab.cnm_json("sandbox", "ls") == []
    # The refused networks' pools were given back: their subnets are free.
    for subnet, name in (("10.216.0.0/24", "ok1"), ("10.217.0.0/24", "ok2")):
        lab.docker("network", "create", "-d", "cnm", "--ipam-driver", "cnm", "--subnet",
                   subnet, name)
    lab.docker("rm", "-f", "cx", "cy")
    lab.docker("network", "rm", "web", "ok1", "ok2")
    assert cnm_links(lab) == set()


def test_dockerd_and_cnmd_restarts(lab: Lab) -> None:
    web(lab)
    lab.run("r1", "web", "--restart", "always", "--ip", "10.214.0.10")
    lab.run("r2", "web", "--restart", "always")
    # cnmd restarts while they run: nothing changes for them.
    before = lab.links()
    assert lab.cn.stop() == 0
    lab.start_cnmd()
    assert lab.links() == before
    assert lab.ip("r1", "web") == "10.214.0.10"
    assert lab.pings("r2", "10.214.0.10")
    # The network persisted in cnm (Docker never sends CreateNetwork again): new containers
    # join it after the restart.
    lab.run("r3", "web")
    assert lab.pings("r3", lab.ip("r2", "web"))
    lab.docker("rm", "-f", "r3")
    # dockerd restarts (no live-restore): it stops its containers (Leave, DeleteEndpoint)
    # and starts them again (CreateEndpoint, Join); --ip keeps its address, and they reach
    # each other again.
    lab.dk.stop()
    assert lab.cnm_json("endpoint", "ls") == []
    lab.dk.start()
    for _ in range(100):  # --restart always: dockerd starts them once it is up
        if len(lab.docker("ps", "-q").split()) == 2:
            break
        time.sleep(0.1)
    assert lab.ip("r1", "web") == "10.214.0.10"
    assert lab.pings("r2", "10.214.0.10")
    assert len(lab.cnm_json("endpoint", "ls")) == 2
    lab.docker("rm", "-f", "r1", "r2")
    lab.docker("network", "rm", "web")
    assert cnm_links(lab) == set()
    assert lab.cnm_json("sandbox", "ls") == []


def test_the_plugin_socket_lives_in_the_lab_only(lab: Lab) -> None:
    assert Path(lab.plugin).is_socket()
    assert not Path("/run/docker/plugins/cnm.sock").exists() or \
        not Path("/run/docker/plugins/cnm.sock").samefile(lab.plugin)
    # Docker found it there, as both its network and its IPAM driver.
    web(lab)
    assert lab.docker("network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}}",
                      "web") == "cnm cnm"
    lab.docker("network", "rm", "web")


def test_a_macvlan_network_through_docker(lab: Lab) -> None:
    # -o cnm.driver picks cnm's driver: macvlan slaves made in the host namespace and
    # handed over like a veth end. Their parent: one end of a veth pair standing in for
    # the host's LAN link (this kernel has no dummy links).
    for args in (("link", "add", "lan0", "type", "veth", "peer", "name", "lan1"),
                 ("link", "set", "lan0", "up"), ("link", "set", "lan1", "up")):
        in_ns(lab.ns.path, "ip", *args)
    lab.docker("network", "create", "-d", "cnm", "--ipam-driver", "cnm", "-o",
               "cnm.driver=macvlan", "-o", "parent=lan0", "-o", "cnm.name=mv",
               "--subnet", "10.218.0.0/24", "mv")
    assert lab.networks()["mv"]["driver"] == "macvlan"
    lab.run("m1", "mv")
    lab.run("m2", "mv", "--mac-address", "02:42:0a:da:00:09")
    assert "02:42:0a:da:00:09" in lab.docker("exec", "m2", "ip", "link", "show", "eth0")
    # No veth of cnm's in the host namespace: the containers' links are lan0's slaves.
    assert not [n for n in lab.links() if n.startswith(("cnmv", "cnmc"))]
    assert lab.pings("m1", lab.ip("m2", "mv"))
    lab.docker("rm", "-f", "m1", "m2")
    lab.docker("network", "rm", "mv")
    assert cnm_links(lab) == set()


def test_an_ipv6_network_through_docker(lab: Lab) -> None:
    lab.docker("network", "create", "-d", "cnm", "--ipam-driver", "cnm", "--ipv6",
               "--subnet", "10.219.0.0/24", "--subnet", "fd00:219::/64", "-o", "cnm.name=v6",
               "v6")
    assert sorted(s["subnet"] for s in lab.networks()["v6"]["subnets"]) == [
        "10.219.0.0/24", "fd00:219::/64"]
    lab.run("v1", "v6")
    lab.run("v2", "v6", "--ip6", "fd00:219::50")
    assert "default via fd00:219::1 dev eth0" in lab.docker("exec", "v1", "ip", "-6", "route")
    # Docker adds its addresses without DAD; a first probe may still meet a neighbour
    # entry being resolved, so up to three.
    assert any(lab.pings("v1", "fd00:219::50") for _ in range(3))
    assert any(f"{lab.ip('v1', 'v6')}/24" == e["ipv4"] and e["ipv6"]
               for e in lab.cnm_json("endpoint", "ls"))
    lab.docker("rm", "-f", "v1", "v2")
    lab.docker("network", "rm", "v6")
    assert cnm_links(lab) == set()


def test_dockerd_restart_with_live_restore_keeps_containers_as_they_are(lab: Lab) -> None:
    # Docker's way to restart itself under running containers: live-restore. dockerd
    # alone restarts (containerd and the containers stay); cnm is asked nothing again.
    lab.dk.stop()
    lab.dk.config = {"live-restore": True}
    lab.dk.start()
    web(lab)
    try:
        lab.run("l1", "web")
        lab.run("l2", "web", "-p", "8082:80", cmd=("httpd", "-f", "-p", "80", "-h", "/www"))
        before = (lab.ip("l1", "web"), lab.ip("l2", "web"))
        eps = sorted(e["id"] for e in lab.cnm_json("endpoint", "ls"))
        links = lab.links()
        lab.dk.restart_dockerd()
        assert (lab.ip("l1", "web"), lab.ip("l2", "web")) == before
        assert sorted(e["id"] for e in lab.cnm_json("endpoint", "ls")) == eps
        assert lab.links() == links
        assert lab.pings("l1", before[1])
        got = busybox_get(lab, "http://127.0.0.1:8082/")
        assert got.stdout == "hello from docker\n", got.stderr
    finally:
        lab.dk.docker("rm", "-f", "l1", "l2", timeout=60)
    lab.docker("network", "rm", "web")
    assert cnm_links(lab) == set()
    assert lab.cnm_json("endpoint", "ls") == [] and lab.cnm_json("sandbox", "ls") == []
