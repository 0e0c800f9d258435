"""cnm-cni's protocol data without a daemon: the CNI_* environment, the configuration,
capability arguments into cnm's terms, results per spec version, errors; and the plugin's
import set (its start-up is the budget)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cnm.cni import spec
from cnm.cni.plugin import run
from cnm.cni.spec import CniError, Invocation

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0"}


def conf(**more: Any) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": "web", "type": "cnm", **more}


def code_of(fn: Any, *args: Any) -> int:
    with pytest.raises(CniError) as e:
        fn(*args)
    return e.value.code


def test_environment() -> None:
    inv = spec.parse_env({**ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=a;X=1"})
    assert (inv.command, inv.container_id, inv.netns, inv.ifname) == (
        "ADD", "abc", "/run/netns/x", "eth0")
    assert inv.args["K8S_POD_NAME"] == "a"
    assert spec.parse_env({"CNI_COMMAND": "GC"}).command == "GC"
    del_env = {k: v for k, v in ENV.items() if k != "CNI_NETNS"}
    assert spec.parse_env({**del_env, "CNI_COMMAND": "DEL"}).netns == ""
    for bad in ({}, {**ENV, "CNI_COMMAND": "add"}, del_env, {**ENV, "CNI_CONTAINERID": ""},
                {**ENV, "CNI_CONTAINERID": "_x"}, {**ENV, "CNI_IFNAME": ".."},
                {**ENV, "CNI_IFNAME": "a b"}, {**ENV, "CNI_IFNAME": "e:1"},
                {**ENV, "CNI_ARGS": "X=1"}, {**ENV, "CNI_ARGS": "=1"}):
        assert code_of(spec.parse_env, bad) == spec.BAD_ENVIRONMENT, bad


def test_configuration_codes() -> None:
    inv = Invocation("ADD", "abc", "/x", "eth0")
    c = spec.parse_config(conf(), inv)
    assert (c.version, c.name, c.network, c.socket) == ("1.1.0", "web", "web", None)
    assert spec.parse_config(conf(network="back", socket="unix:///s"), inv).network == "back"
    cases = [
        (conf(cniVersion="0.2.0"), spec.INCOMPATIBLE_VERSION),
        ({"name": "web", "type": "cnm"}, spec.BAD_CONFIG),
        (conf(ipam={"type": "host-local"}), spec.UNSUPPORTED_FIELD),
        (conf(ipMasq=True), spec.UNSUPPORTED_FIELD),
        (conf(runtimeConfig={"bandwidth": {}}), spec.UNSUPPORTED_FIELD),
        (conf(name=""), spec.BAD_CONFIG),
        (conf(network="a b"), spec.BAD_CONFIG),
        (conf(socket="/s"), spec.BAD_CONFIG),
        (conf(prevResult=[]), spec.BAD_CONFIG),
        (conf(runtimeConfig={"ips": "10.0.0.1"}), spec.BAD_CONFIG),
        (conf(runtimeConfig={"ips": ["10.0.0.1", "10.0.0.2"]}), spec.BAD_CONFIG),
        (conf(runtimeConfig={"ips": ["10.0.0.1/x"]}), spec.BAD_CONFIG),
        (conf(runtimeConfig={"mac": 5}), spec.BAD_CONFIG),
        (conf(runtimeConfig={"portMappings": [{"hostPort": 1}]}), spec.BAD_CONFIG),
        (conf(runtimeConfig={"portMappings": [{"hostPort": True, "containerPort": 1}]}),
         spec.BAD_CONFIG),
        (conf(runtimeConfig={"aliases": [1]}), spec.BAD_CONFIG),
    ]
    for data, code in cases:
        assert code_of(spec.parse_config, data, inv) == code, data
    assert "ipam" in str(pytest.raises(CniError, spec.parse_config,
                                       conf(ipam={"type": "x"}), inv).value.msg)
    # Version floors of the newer commands.
    assert code_of(spec.parse_config, conf(cniVersion="1.0.0"),
                   Invocation("STATUS")) == spec.INCOMPATIBLE_VERSION
    assert code_of(spec.parse_config, conf(cniVersion="0.3.1"),
                   Invocation("CHECK", "a", "/x", "eth0")) == spec.INCOMPATIBLE_VERSION
    # GC needs its list, well formed.
    gc = Invocation("GC")
    assert code_of(spec.parse_config, conf(), gc) == spec.BAD_CONFIG
    assert code_of(spec.parse_config, conf(**{"cni.dev/valid-attachments": [{"x": 1}]}),
                   gc) == spec.BAD_CONFIG
    ok = spec.parse_config(conf(**{"cni.dev/valid-attachments": [
        {"containerID": "a", "ifname": "eth0"}]}), gc)
    assert ok.valid == {("a", "eth0")}


def test_capabilities_become_cnm_terms() -> None:
    inv = Invocation("ADD", "abc", "/x", "eth0", {"K8S_POD_NAME": "alpha"})
    c = spec.parse_config(conf(runtimeConfig={
        "ips": ["10.1.0.5/24", "fd00::5/64"], "mac": "02:00:00:00:00:05",
        "aliases": {"web": ["db", "primary"], "other": ["x"]},
        "portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "TCP"},
            {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            {"hostPort": 8443, "containerPort": 443, "hostIP": "::1"}]}), inv)
    w = c.want
    assert (w.ip, w.ip6, w.mac, w.hostname) == ("10.1.0.5", "fd00::5", "02:00:00:00:00:05",
                                                "alpha")
    assert w.aliases == ["db", "primary"]
    assert w.ports == ["8080:80/tcp", "127.0.0.1:53:53/udp", "[::1]:8443:443/tcp"]
    # A list of aliases (the CNI conventions), and CNI_ARGS IP/MAC (podman's one static IP).
    c = spec.parse_config(conf(runtimeConfig={"aliases": ["a"]}),
                          Invocation("ADD", "abc", "/x", "eth0",
                                     {"IP": "10.1.0.9", "MAC": "02:00:00:00:00:09"}))
    assert (c.want.aliases, c.want.ip, c.want.mac) == (["a"], "10.1.0.9", "02:00:00:00:00:09")


def test_sandbox_names_fit_and_stay_apart() -> None:
    assert spec.sandbox_name("abc") == "cni-abc"
    long1, long2 = "a" * 50 + "1" * 14, "a" * 50 + "2" * 14
    n1, n2 = spec.sandbox_name(long1), spec.sandbox_name(long2)
    assert len(n1) <= 64 and n1 != n2 and n1 == spec.sandbox_name(long1)


def _ep(**kw: Any) -> dict[str, Any]:
    return {"id": "e1", "ifname": "eth0", "mac": "02:00:00:00:00:01", "ipv4": "10.1.0.2/24",
            "ipv6": None, "gateway4": "10.1.0.1", "gateway6": None, "order": 1,
            "dns": True, **kw}


def test_results_per_version_and_the_default_route() -> None:
    inv = Invocation("ADD", "abc", "/x", "eth0")
    new = spec.add_result(spec.parse_config(conf(), inv), "/x", _ep(), [_ep()])
    assert new == {"cniVersion": "1.1.0",
                   "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/x"}],
                   "ips": [{"address": "10.1.0.2/24", "interface": 0, "gateway": "10.1.0.1"}],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
                   "dns": {"nameservers": ["127.0.0.11"], "options": ["ndots:0"]}}
    old = spec.add_result(spec.parse_config(conf(cniVersion="0.4.0"), inv), "/x", _ep(),
                          [_ep()])
    assert old["ips"][0]["version"] == "4"
    # A second network: the first endpoint keeps the default route; no DNS on this one.
    first = _ep(id="e0", order=1)
    second = _ep(id="e2", order=2, ifname="net1", gateway4="10.2.0.1", dns=False)
    r = spec.add_result(spec.parse_config(conf(), inv), "/x", second, [first, second])
    assert "routes" not in r and "dns" not in r
    # ipvlan l3's 0.0.0.0 "gateway": a route out of the interface, no gateway.
    l3 = _ep(gateway4="0.0.0.0")
    r = spec.add_result(spec.parse_config(conf(), inv), "/x", l3, [l3])
    assert "gateway" not in r["ips"][0] and r["routes"] == [{"dst": "0.0.0.0/0"}]


def _call(env: dict[str, str], stdin: bytes) -> tuple[int, Any]:
    out = io.StringIO()
    rc = run(env, io.BytesIO(stdin), out)
    text = out.getvalue()
    return rc, json.loads(text) if text.strip() else None


def test_the_plugin_answers_errors_in_the_spec_shape_without_a_daemon() -> None:
    rc, out = _call({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.4.0"}')
    assert rc == 0 and out["cniVersion"] == "0.4.0" and "1.1.0" in out["supportedVersions"]
    # A version it does not speak is not echoed back as the answer's (the CNI fuzz found
    # " " answered as cniVersion " ").
    for asked in (b'{"cniVersion": " "}', b'{"cniVersion": "9.9.9"}', b'{"cniVersion": 1}'):
        rc, out = _call({"CNI_COMMAND": "VERSION"}, asked)
        assert (rc, out["cniVersion"]) == (0, spec.LATEST), asked
    rc, out = _call({"CNI_COMMAND": "VERSION"}, b"{nope")
    assert (rc, out["code"]) == (1, spec.DECODE_FAILURE)
    socket = "unix:///nonexistent/cnm.sock"
    rc, out = _call({"CNI_COMMAND": "STATUS"}, json.dumps(conf(socket=socket)).encode())
    assert (rc, out["code"]) == (1, spec.NOT_AVAILABLE) and "not ready" in out["msg"]
    rc, out = _call({**ENV, "CNI_NETNS": "/"}, json.dumps(conf(socket=socket)).encode())
    assert (rc, out["code"]) == (1, spec.TRY_AGAIN)  # cnmd unreachable (the table's 11)
    rc, out = _call({**ENV, "CNI_COMMAND": "DEL"}, json.dumps(
        conf(cniVersion="0.3.1", socket=socket)).encode())
    assert (rc, out["cniVersion"], out["code"]) == (1, "0.3.1", spec.TRY_AGAIN)
    rc, out = _call({**ENV, "CNM_HOST": "tcp://x"}, json.dumps(conf()).encode())
    assert (rc, out["code"]) == (1, spec.BAD_ENVIRONMENT) and "CNM_HOST" in out["msg"]


def test_the_plugin_imports_nothing_of_the_daemon_side() -> None:
    """Start-up is the plugin's budget (bench/cni.py has the figures): its modules pull in
    no netlink, core, API, http.client, dataclasses, typing or socket (enum)."""
    code = ("import sys; import cnm.cni.plugin, cnm.cni.attach, cnm.cni.wire, cnm.address; "
            "print(' '.join(sorted(sys.modules)))")
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.split())
    for heavy in ("pyroute2", "cnm.core", "cnm.kernel", "cnm.api", "cnm.model", "http.client",
                  "dataclasses", "typing", "socket", "hashlib", "subprocess"):
        assert heavy not in mods, heavy
    assert Path(sys.executable).with_name("cnm-cni").exists()
