"""cnm's Docker plugin against the requests a real dockerd 20.10 sent (the captures in
tests/fixtures), over the fake kernel: every call answered without an error, the
objects Docker made are cnm's while they live and gone after, and the answers Docker acts
on (Join's interface and gateway, the pools and addresses) are right. Plus the error shapes
and the socket server itself."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnm.core import Controller
from cnm.docker import wire
from cnm.docker.plugin import DockerPlugin
from cnm.docker.server import serve
from cnm.netfilter import Netfilter
from cnm.testing import HOST, FakeHostLinks, FakeKernel, FakeNft
from tests.unit.conftest import MakeController

# Captures of a real dockerd 20.10 talking to a network plugin (kept in the repo: a clean
# checkout has them, and a missing one fails the test rather than skipping it).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRACE = FIXTURES / "docker-remote-driver-trace.json"
RESTART = FIXTURES / "docker-remote-driver-restart-trace.json"



@pytest.fixture
def plugin_ctl(make_controller: MakeController, kernel: FakeKernel,
               tmp_path: Path) -> Controller:
    # The controller's host namespace path is the fake kernel's host namespace: a handover
    # join makes the link's inner end there.
    kernel.namespaces[str(tmp_path / "host-netns")] = kernel.namespaces[HOST]
    return make_controller(netfilter=Netfilter(FakeNft()))


class Replay:
    """Sends a capture's requests to a plugin, putting the plugin's own answers (pools,
    gateways, addresses) where the capture's stub answered something else."""

    def __init__(self, plugin: DockerPlugin) -> None:
        self.plugin = plugin
        self.subst: dict[str, str] = {}
        self.answers: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def swap(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.subst.get(value, value)
        if isinstance(value, list):
            return [self.swap(v) for v in value]
        if isinstance(value, dict):
            return {k: self.swap(v) for k, v in value.items()}
        return value

    def learn(self, theirs: Any, ours: Any) -> None:
        """Where the stub answered ``theirs`` and cnm ``ours``, later requests say ours."""
        if isinstance(theirs, dict) and isinstance(ours, dict):
            for k in theirs:
                if k in ours:
                    self.learn(theirs[k], ours[k])
        elif isinstance(theirs, str) and isinstance(ours, str) and theirs != ours:
            self.subst[theirs] = ours
            if "/" in theirs and "/" in ours:  # an address also travels without its prefix
                self.subst[theirs.split("/")[0]] = ours.split("/")[0]

    def run(self, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            if "path" not in e:
                continue
            method = e["path"].lstrip("/")
            body = self.swap(e["body"])
            if isinstance(body, dict):
                body = strip_made_up(body)
            status, answer = self.plugin.handle(method, body)
            assert status == 200, (method, answer)
            assert "Err" not in answer and "Error" not in answer, (method, body, answer)
            self.learn(e["response"], answer)
            self.answers.append((method, body, answer))


# The capture's stub took any option; cnm refuses options it does not know (checked in
# test_made_up_options_are_refused), so the replay leaves these two out.
MADE_UP = {"io", "drvopt"}


def strip_made_up(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    opts = out.get("Options")
    if isinstance(opts, dict):
        opts = {k: v for k, v in opts.items() if k not in MADE_UP}
        if isinstance(opts.get(wire.GENERIC), dict):
            opts[wire.GENERIC] = {k: v for k, v in opts[wire.GENERIC].items()
                                  if k not in MADE_UP}
        out["Options"] = opts
    return out


def left_behind(ctl: Controller, kernel: FakeKernel) -> tuple[Any, ...]:
    links = {n for n in kernel.namespaces[HOST].links if n.startswith("cnm") and n != "cnm0"}
    nets = {n.name for n in ctl.list_networks()} - {"bridge", "host", "none"}
    return links, nets, ctl.list_endpoints(), ctl.list_sandboxes()


def test_the_captured_session_replays_cleanly(plugin_ctl: Controller,
                                              kernel: FakeKernel) -> None:
    plugin = DockerPlugin(plugin_ctl)
    replay = Replay(plugin)
    trace = json.loads(TRACE.read_text())
    # Up to `docker run s3 -p 8081:80`: everything Docker made is cnm's now.
    upto = next(i for i, e in enumerate(trace) if e.get("mark", "").startswith("connectivity"))
    replay.run(trace[:upto])
    nets = {n.labels.get(wire.NETWORK_LABEL): n for n in plugin_ctl.list_networks()}
    stubnet3 = nets["4e4cf9b68ec48f909067af5970da759117f505f3a7e348f8827b7b73ed002bc3"]
    assert stubnet3.internal and stubnet3.ipv6 and len(stubnet3.subnets) == 2
    stubnet2 = nets["53a0ac7ab46562450aee51cfa2e1c7ee495d6e66173f291df32391fd82c2895a"]
    assert [x.gateway for x in stubnet2.subnets] == ["10.214.0.1"]
    eps = {e.name: e for e in plugin_ctl.list_endpoints()}
    s2 = eps["83fa8e3553f9cb8a1a57356aa8aef8e248bb27aa8e4442c54f3bf9093302db2f"]
    assert (s2.ipv4, s2.mac) == ("10.214.0.50/24", "02:42:0a:d6:00:32")
    s3 = eps["2cea08e6e7ffb8885dec6244f2237bc196cfc2135e7d829fe67acfd8fb33ccf3"]
    assert [(m.host_port, m.container_port, m.proto) for m in s3.ports] == [(8081, 80, "tcp")]
    joins = {b["EndpointID"]: a for m, b, a in replay.answers if m == "NetworkDriver.Join"}
    # Join hands over a link that is in the host namespace, with the gateway, except on
    # the internal network.
    for eid, answer in joins.items():
        src = answer["InterfaceName"]["SrcName"]
        assert answer["InterfaceName"]["DstPrefix"] == "eth"
        assert src in kernel.namespaces[HOST].links
        internal = eid.startswith("d909715a")
        assert ("Gateway" in answer) is not internal, answer
    assert joins[s2.name]["Gateway"] == "10.214.0.1"
    info = [a for m, b, a in replay.answers if m == "NetworkDriver.EndpointOperInfo"
            and b["EndpointID"] == s3.name][-1]
    assert info["Value"][wire.PORTMAP][0]["HostPort"] == 8081
    # The rest: disconnect, stop, start, rm, network rm. Nothing is left.
    replay.run(trace[upto:])
    assert left_behind(plugin_ctl, kernel) == (set(), set(), [], [])
    assert plugin.pools == {} and plugin.held == set()


def test_a_network_outlives_a_plugin_restart(plugin_ctl: Controller,
                                             make_controller: MakeController,
                                             kernel: FakeKernel) -> None:
    trace = json.loads(RESTART.read_text())
    Replay(DockerPlugin(plugin_ctl)).run(trace["part1_before_plugin_stop"])
    # cnmd restarts (its state: the store); Docker never sends CreateNetwork again.
    again = make_controller(netfilter=Netfilter(FakeNft()))
    Replay(DockerPlugin(again)).run(trace["part2_after_plugin_restart"])
    assert left_behind(again, kernel) == (set(), set(), [], [])


def call(plugin: DockerPlugin, method: str, body: Any = None) -> dict[str, Any]:
    status, answer = plugin.handle(method, body)
    assert status == 200
    return answer


def test_errors_are_dockers_shapes_and_leave_nothing(plugin_ctl: Controller,
                                                     kernel: FakeKernel) -> None:
    p = DockerPlugin(plugin_ctl)
    assert p.handle("NetworkDriver.Frobnicate", {})[0] == 404
    pool = call(p, "IpamDriver.RequestPool", {"AddressSpace": "cnm-local",
                                               "Pool": "10.9.0.0/24", "V6": False})
    assert pool["Pool"] == "10.9.0.0/24"
    # The pool is held: another network cannot take an overlapping subnet meanwhile.
    err = call(p, "IpamDriver.RequestPool", {"Pool": "10.9.0.0/16"})
    assert err == {"Error": "subnet 10.9.0.0/16 overlaps a pool Docker holds for a network "
                            "in the making (10.9.0.0/24)"}
    assert "unknown IPAM option 'color'" in call(
        p, "IpamDriver.RequestPool", {"Pool": "10.10.0.0/24", "Options": {"color": "x"}})["Error"]
    gw = call(p, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                                "Options": {wire.REQUEST_TYPE: wire.GATEWAY_TYPE}})
    assert gw["Address"] == "10.9.0.1/24"
    create = {"NetworkID": "n" * 64, "IPv4Data": [{"Pool": "10.9.0.0/24",
                                                   "Gateway": "10.9.0.1/24"}],
              "Options": {wire.GENERIC: {"cnm.driver": "nosuch"}}}
    assert "unknown driver 'nosuch'" in call(p, "NetworkDriver.CreateNetwork", create)["Err"]
    create["Options"] = {wire.GENERIC: {"cnm.name": "web"}}
    assert call(p, "NetworkDriver.CreateNetwork", create) == {}
    assert p.pools == {}
    out = call(p, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"],
                                                 "Address": "10.8.0.5"})
    assert out["Error"] == "address 10.8.0.5 is not a usable address of 10.9.0.0/24"
    out = call(p, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": ""})
    assert out["Address"] == "10.9.0.2/24"
    # Held until CreateEndpoint takes it: a second request gets another address.
    assert call(p, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"]})["Address"] == \
        "10.9.0.3/24"
    ep = {"NetworkID": "n" * 64, "EndpointID": "e" * 64,
          "Interface": {"Address": "10.9.0.2/24", "MacAddress": "01:00:5e:00:00:01"}}
    assert "invalid MAC address '01:00:5e:00:00:01'" in call(
        p, "NetworkDriver.CreateEndpoint", ep)["Err"]
    ep["Interface"] = {"Address": "10.9.0.2/24"}
    answer = call(p, "NetworkDriver.CreateEndpoint", ep)
    assert answer["Interface"]["MacAddress"].startswith("02:")
    assert "Address" not in answer["Interface"]  # Docker's IPAM gave it
    join = {"NetworkID": "n" * 64, "EndpointID": "e" * 64, "SandboxKey": "/x/netns/abc123"}
    answer = call(p, "NetworkDriver.Join", join)
    assert answer["Gateway"] == "10.9.0.1" and answer["DisableGatewayService"] is True
    # Published by ProgramExternalConnectivity; programmed twice, the new list replaces the old.
    prog = {"NetworkID": "n" * 64, "EndpointID": "e" * 64, "Options": {wire.PORTMAP: [
        {"Proto": 6, "Port": 80, "HostPort": 8080, "HostPortEnd": 8080}]}}
    assert call(p, "NetworkDriver.ProgramExternalConnectivity", prog) == {}
    assert call(p, "NetworkDriver.ProgramExternalConnectivity", prog) == {}  # again: same
    assert [m.host_port for m in plugin_ctl.endpoint("e" * 64).ports] == [8080]
    for m in ("RevokeExternalConnectivity", "Leave", "DeleteEndpoint"):
        assert call(p, f"NetworkDriver.{m}", join) == {}
    assert call(p, "NetworkDriver.DeleteEndpoint", join) == {}  # gone already: fine
    assert call(p, "IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"],
                                                  "Address": "10.9.0.3"}) == {}
    assert call(p, "NetworkDriver.DeleteNetwork", {"NetworkID": "n" * 64}) == {}
    assert left_behind(plugin_ctl, kernel) == (set(), set(), [], [])
    assert p.held == set()


def test_made_up_options_are_refused(plugin_ctl: Controller, kernel: FakeKernel) -> None:
    trace = [e for e in json.loads(TRACE.read_text()) if "path" in e]
    p = DockerPlugin(plugin_ctl)
    pool = next(e["body"] for e in trace if e["path"] == "/IpamDriver.RequestPool"
                and e["body"]["Options"])
    assert call(p, "IpamDriver.RequestPool", pool) == {
        "Error": "unknown IPAM option 'io': cnm's IPAM takes none"}
    create = next(e["body"] for e in trace if e["path"] == "/NetworkDriver.CreateNetwork"
                  and e["body"]["Options"][wire.GENERIC])
    err = call(p, "NetworkDriver.CreateNetwork", create)["Err"]
    assert err.startswith("unknown option 'drvopt' for driver bridge")
    assert left_behind(plugin_ctl, kernel) == (set(), set(), [], [])


def test_port_bindings_round_trip() -> None:
    specs = wire.port_specs([{"Proto": 6, "Port": 80, "HostIP": "", "HostPort": 8081,
                              "HostPortEnd": 8081},
                             {"Proto": 17, "Port": 53, "HostIP": "::1", "HostPort": 0},
                             {"Proto": 132, "Port": 9, "HostIP": "127.0.0.1",
                              "HostPort": 9000, "HostPortEnd": 9010}])
    assert specs == ["8081:80/tcp", "[::1]::53/udp", "127.0.0.1:9000-9010:9/sctp"]
    with pytest.raises(Exception, match="unknown protocol number 99"):
        wire.port_specs([{"Proto": 99, "Port": 1}])


@pytest.fixture
def served(plugin_ctl: Controller, tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "plugins" / "cnm.sock")
    server = serve(DockerPlugin(plugin_ctl), path)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def post(path: str, method: str, body: bytes = b"") -> tuple[int, str, Any]:
    c = UnixConnection(path)
    try:
        c.request("POST", f"/{method}", body,
                  {"Accept": wire.CONTENT_TYPE, "Content-Type": wire.CONTENT_TYPE})
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", json.loads(r.read())
    finally:
        c.close()


def test_the_socket_speaks_dockers_http(served: str) -> None:
    status, ctype, body = post(served, "Plugin.Activate")  # Docker sends no body
    assert (status, ctype, body) == (200, wire.CONTENT_TYPE,
                                     {"Implements": ["NetworkDriver", "IpamDriver"]})
    status, ctype, body = post(served, "NetworkDriver.Nope", b"{}")
    assert status == 404 and ctype == wire.CONTENT_TYPE and "Nope" in body["Err"]
    status, _, body = post(served, "NetworkDriver.CreateNetwork", b"{not json")
    assert status == 200 and "not JSON" in body["Err"]
    status, _, body = post(served, "IpamDriver.GetDefaultAddressSpaces", b"null")
    assert body == {"LocalDefaultAddressSpace": "cnm-local",
                    "GlobalDefaultAddressSpace": "cnm-global"}


def test_ip_range_and_aux_addresses_reach_cnms_ipam(plugin_ctl: Controller) -> None:
    # docker network create --subnet 10.11.0.0/24 --ip-range 10.11.0.128/25
    #   --aux-address router=10.11.0.200: Docker asks for the pool with its sub-pool, the
    # gateway and the aux address before CreateNetwork.
    p = DockerPlugin(plugin_ctl)
    assert "not inside subnet" in call(p, "IpamDriver.RequestPool", {
        "Pool": "10.11.0.0/24", "SubPool": "10.12.0.0/25"})["Error"]
    pool = call(p, "IpamDriver.RequestPool", {"Pool": "10.11.0.0/24",
                                               "SubPool": "10.11.0.128/25"})
    assert pool["PoolID"] == "cnm-local/10.11.0.0/24/10.11.0.128/25"
    call(p, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Options": {
        wire.REQUEST_TYPE: wire.GATEWAY_TYPE}})
    assert call(p, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"],
                                                  "Address": "10.11.0.200"}) == {
        "Address": "10.11.0.200/24", "Data": {}}
    call(p, "NetworkDriver.CreateNetwork", {
        "NetworkID": "r" * 64, "Options": {}, "IPv4Data": [{
            "Pool": "10.11.0.0/24", "Gateway": "10.11.0.1/24",
            "AuxAddresses": {"router": "10.11.0.200/24"}}]})
    net = p.network("r" * 64)
    assert (net.subnets[0].ip_range, net.subnets[0].aux_addresses) == (
        "10.11.0.128/25", {"router": "10.11.0.200"})
    # A container's address comes from the range.
    got = call(p, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"]})["Address"]
    assert got.endswith("/24") and int(got.split("/")[0].split(".")[3]) >= 128, got


def test_ipvlan_l3_gets_an_on_link_default_route(plugin_ctl: Controller,
                                                  host: FakeHostLinks) -> None:
    # ipvlan L3 has no gateway: Join gives Docker a default route out of the interface.
    host.add_parent("eth1")
    p = DockerPlugin(plugin_ctl)
    ids = {"NetworkID": "i" * 64, "EndpointID": "e" * 64}
    assert call(p, "NetworkDriver.CreateNetwork", {
        "NetworkID": "i" * 64, "IPv4Data": [{"Pool": "10.20.0.0/24",
                                             "Gateway": "10.20.0.1/24"}],
        "Options": {wire.GENERIC: {"cnm.driver": "ipvlan", "parent": "eth1",
                                   "ipvlan_mode": "l3"}}}) == {}
    call(p, "NetworkDriver.CreateEndpoint", {**ids, "Interface": {"Address": "10.20.0.5/24"}})
    answer = call(p, "NetworkDriver.Join", {**ids, "SandboxKey": "/x/netns/ipv"})
    assert "Gateway" not in answer
    assert answer["StaticRoutes"] == [{"Destination": "0.0.0.0/0", "RouteType": 1}]
    # The slave is in the host namespace, named for Docker to move.
    assert answer["InterfaceName"]["SrcName"] in host.kernel.namespaces[HOST].links


def test_the_cnm_aliases_endpoint_option_names_a_container_in_cnms_dns(
        plugin_ctl: Controller, kernel: FakeKernel) -> None:
    # Docker never tells a plugin a container's name: `--driver-opt cnm.aliases=…` does,
    # so cnm's sandboxes on the network resolve the container.
    p = DockerPlugin(plugin_ctl)
    assert call(p, "NetworkDriver.CreateNetwork", {
        "NetworkID": "n" * 64, "IPv4Data": [{"Pool": "10.9.0.0/24", "Gateway": "10.9.0.1/24"}],
        "Options": {wire.GENERIC: {"cnm.name": "web"}}}) == {}
    ids = {"NetworkID": "n" * 64, "EndpointID": "e" * 64}
    bad = {**ids, "Interface": {"Address": "10.9.0.2/24"},
           "Options": {wire.ALIASES_OPTION: "ok,not_a/name"}}
    assert "invalid alias 'not_a/name'" in call(p, "NetworkDriver.CreateEndpoint", bad)["Err"]
    assert plugin_ctl.list_endpoints() == []
    bad["Options"] = {wire.ALIASES_OPTION: ["ctr"]}
    assert "must be a string" in call(p, "NetworkDriver.CreateEndpoint", bad)["Err"]
    good = {**ids, "Interface": {"Address": "10.9.0.2/24"},
            "Options": {wire.ALIASES_OPTION: "ctr www,"}}
    assert "Err" not in call(p, "NetworkDriver.CreateEndpoint", good)
    assert plugin_ctl.endpoint("e" * 64).aliases == ("ctr", "www")
    net = plugin_ctl.network("web")
    assert plugin_ctl.records.lookup([net.id], "ctr") == []  # reserved: no name yet
    join = {**ids, "SandboxKey": "/x/netns/abc123"}
    assert "Err" not in call(p, "NetworkDriver.Join", join)
    for name in ("ctr", "www"):
        assert [h.ipv4 for h in plugin_ctl.records.lookup([net.id], name)] == ["10.9.0.2"]
    for m in ("Leave", "DeleteEndpoint"):
        assert call(p, f"NetworkDriver.{m}", join) == {}
    assert plugin_ctl.records.lookup([net.id], "ctr") == []


# Found by tests/unit/test_fuzz_docker.py: each was an internal error (a traceback in the log).
@pytest.mark.parametrize("method, body, needle", [
    ("NetworkDriver.CreateNetwork", {"NetworkID": "n" * 64, "IPv4Data": True},
     "field IPv4Data must be a list of objects"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "n" * 64, "IPv6Data": ["x"]},
     "field IPv6Data must be a list of objects"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "n" * 64, "Options": {wire.GENERIC: "x"}},
     f"field {wire.GENERIC} must be an object"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "n" * 64, "IPv4Data": [{"Pool": 5}]},
     "field Pool must be a string"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "n" * 64, "IPv4Data": [
        {"Pool": "10.9.0.0/24", "AuxAddresses": {"r": 1}}]}, "field r must be a string"),
    ("IpamDriver.RequestAddress", {"PoolID": "cnm-local/10.9.0.0/24", "Options": "x"},
     "field Options must be an object"),
])
def test_wrong_types_are_refused_by_field_not_internal_errors(
        plugin_ctl: Controller, method: str, body: dict[str, Any], needle: str) -> None:
    status, answer = DockerPlugin(plugin_ctl).handle(method, body)
    key = "Error" if method.startswith("IpamDriver.") else "Err"
    assert status == 200 and answer == {key: needle}
    assert plugin_ctl.list_networks() and all(
        wire.NETWORK_LABEL not in n.labels for n in plugin_ctl.list_networks())


@pytest.mark.parametrize("bindings", ["x", [1], [{"Proto": "tcp", "Port": 80}],
                                      [{"Proto": 6, "Port": "80"}],
                                      [{"Proto": 6, "Port": 80, "HostPort": [1]}]])
def test_port_bindings_of_the_wrong_type_are_invalid_arguments(bindings: Any) -> None:
    from cnm.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        wire.port_specs(bindings)


def raw_post(path: str, data: bytes) -> tuple[int, Any]:
    from tests.unit.test_http_limits import read_answer

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        status, headers, body = read_answer(s)
    return status, json.loads(body[:int(headers["content-length"])])


def test_the_socket_refuses_a_bad_length_and_answers_ipam_in_its_field(
        served: str, capsys: pytest.CaptureFixture[str]) -> None:
    for length in ("abc", "-1", "99999999999", "0x10"):
        status, body = raw_post(served, f"POST /NetworkDriver.Join HTTP/1.1\r\nHost: d\r\n"
                                        f"Content-Length: {length}\r\n\r\n".encode())
        assert status == 400 and "is not a number of bytes" in body["Err"], length
    status, body = raw_post(served, b"POST /IpamDriver.RequestPool HTTP/1.1\r\nHost: d\r\n"
                                    b"Content-Length: 5\r\n\r\n{nope")
    assert status == 200 and set(body) == {"Error"} and "not JSON" in body["Error"]
    # A body without a length: the rest is a malformed request, answered in JSON (or to
    # a client gone already), never a traceback on stderr.
    status, body = raw_post(served, b"POST /Plugin.Activate HTTP/1.1\r\nHost: d\r\n\r\n"
                                    b"\x00\x01 garbage garbage\r\n\r\n")
    assert status == 200 and body["Implements"]
    import time

    time.sleep(0.2)  # the server's thread reads the garbage after the client went
    assert "Traceback" not in capsys.readouterr().err
