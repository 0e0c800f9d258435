"""cnm-cni fuzzed by hypothesis through its real entry (cnm.cni.plugin.run, what main calls
with os.environ, stdin and stdout): the CNI_* environment (CNI_COMMAND, CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH), the configuration on stdin (valid-ish and
broken) and cnmd's socket (a real API server over the fake kernel, or none there). Every
run ends with exit 0 and a valid result (or nothing, as the spec has DEL, CHECK, STATUS and
GC), or exit 1 and one CNI error on stdout (cniVersion, code, msg); never an internal error
or a traceback. Counted: CNM_FUZZ_EXAMPLES (300 in CI)."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnm.cni import attach, look, spec
from cnm.cni.plugin import run
from cnm.model import NetworkSpec
from cnm.testing import FakeKernel
from cnm.testing.fakestack import fake_stack, serving

EXAMPLES = int(os.environ.get("CNM_FUZZ_EXAMPLES", "300"))
COUNT: dict[str, int] = {"runs": 0, "results": 0, "errors": 0}
# The spec's codes and cnm-cni's own (cnm/cni/spec.py).
CODES = {spec.INCOMPATIBLE_VERSION, spec.UNSUPPORTED_FIELD, spec.UNKNOWN_CONTAINER,
         spec.BAD_ENVIRONMENT, spec.IO_FAILURE, spec.DECODE_FAILURE, spec.BAD_CONFIG,
         spec.TRY_AGAIN, spec.NOT_AVAILABLE, spec.CHECK_MISMATCH, spec.INTERNAL}
CONTAINERS = 12  # each with its namespace, as a runtime gives them
# The results of the ADDs that worked (CHECK's prevResults), and by (netns, ifname).
ADDS: list[dict[str, Any]] = []
ADDS_BY: dict[tuple[str | None, str | None], tuple[str, dict[str, Any]]] = {}


class World:
    def __init__(self, tmp: Path, kernel: FakeKernel, socket: str) -> None:
        self.kernel, self.socket = kernel, socket
        # Namespaces of the fake kernel, at paths that exist (the plugin stats them).
        self.netns = []
        for i in range(CONTAINERS):
            path = tmp / f"netns-{i}"
            path.touch()
            kernel.add_namespace(str(path))
            self.netns.append(str(path))
        self.own = str(tmp / "netns-own")  # the fuzz never names it
        Path(self.own).touch()
        kernel.add_namespace(self.own)
        self.missing = str(tmp / "netns-missing")
        self.unreachable = f"unix://{tmp / 'nobody.sock'}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("cnifuzz")
    with fake_stack(tmp) as (built, kernel):
        built.controller.create_network(NetworkSpec(name="web", subnets=("10.66.0.0/24",)))
        with serving(built.controller, str(tmp / "api.sock")) as at:
            yield World(tmp, kernel, at)


@pytest.fixture(scope="module", autouse=True)
def fake_namespaces(world: World) -> Iterator[None]:
    """The plugin sees the fake kernel's namespaces as cnmd does: their identity is the
    fake's, and CHECK reads the interface from the fake kernel, not through nsenter (no
    fuzzed CNI_NETNS is ever entered on this machine)."""
    def link(netns: str, ifname: str) -> look.Link | None:
        ns = world.kernel.namespaces.get(netns)
        found = ns.links.get(ifname) if ns else None
        if found is None:
            return None
        return look.Link(found.mac, found.up, list(found.addresses))

    real_identity = attach.identity

    def identity(path: str) -> str | None:
        ns = world.kernel.namespaces.get(path)
        if ns is not None:
            return f"fake:{ns.serial}" if os.path.exists(path) else None
        return real_identity(path)

    saved = look.link
    look.link, attach.identity = link, identity
    yield
    look.link, attach.identity = saved, real_identity


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


NASTY = st.sampled_from(["../x", "/etc/passwd", "a/b", ".", "..", "x" * 16, "x" * 300,
                         "a\nb", "a b", "é", "-x", "", "$(reboot)", "a;b", "=", ";;",
                         "a=b=c", "\t", "x" * 5000])
TEXT = st.one_of(NASTY, st.text(max_size=20), st.text(alphabet="abc09-_.:/=;,", max_size=16))
JSONV = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)


def maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value, or a wrong-typed one now and then."""
    return st.one_of(values, values, values, JSONV)


PORT = st.one_of(st.integers(1, 65535), st.integers(-5, 70000), JSONV)
PORT_MAPPING = st.fixed_dictionaries({}, optional={
    "hostPort": PORT, "containerPort": PORT,
    "protocol": maybe(st.sampled_from(["tcp", "udp", "sctp", "TCP", "icmp", ""])),
    "hostIP": maybe(st.sampled_from(["", "127.0.0.1", "::1", "0.0.0.0", "300.1.1.1"]))})
RUNTIME = st.fixed_dictionaries({}, optional={
    "ips": maybe(st.lists(st.sampled_from(["10.66.0.9", "10.66.0.10/24", "fd00::9/64",
                                           "10.1.0.5", "x/y", "10.66.0.9/x", ""]),
                          max_size=3)),
    "mac": maybe(st.sampled_from(["02:00:00:00:00:09", "01:00:5e:00:00:01", "zz", ""])),
    "portMappings": maybe(st.lists(PORT_MAPPING, max_size=3)),
    "aliases": maybe(st.one_of(st.lists(TEXT, max_size=3),
                               st.dictionaries(st.sampled_from(["web", "bridge"]),
                                               st.lists(TEXT, max_size=2), max_size=2))),
    "bandwidth": JSONV})


def prev_results(env: dict[str, str]) -> st.SearchStrategy[Any]:
    """The result of the last ADD that worked for this attachment (CHECK's input), of
    another, one made up, or junk."""
    key = (env.get("CNI_NETNS"), env.get("CNI_IFNAME"))
    mine = st.builds(lambda: ADDS_BY.get(key, ("", {}))[1])  # looked up when drawn
    earlier = st.integers(0, 10**6).map(lambda i: ADDS[i % len(ADDS)] if ADDS else {})
    return st.one_of(mine, mine, earlier, st.dictionaries(TEXT, JSONV, max_size=3), JSONV)


GOOD_RUNTIME = st.fixed_dictionaries({}, optional={
    "ips": st.sampled_from([["10.66.0.9/24"], ["fd00::9/64"], []]),
    "mac": st.sampled_from(["02:00:00:00:00:09", ""]),
    "portMappings": st.lists(st.fixed_dictionaries({
        "hostPort": st.integers(8000, 8010), "containerPort": st.integers(1, 100),
        "protocol": st.sampled_from(["tcp", "udp"])}), max_size=2),
    "aliases": st.lists(st.sampled_from(["db", "www"]), max_size=2, unique=True)})


def recorded_check(env: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """CHECK as a runtime sends it: the configuration of the attachment's ADD, with its
    result as prevResult (looked up when drawn)."""
    def build() -> dict[str, Any]:
        name, result = ADDS_BY.get((env.get("CNI_NETNS"), env.get("CNI_IFNAME")),
                                   ("web", {}))
        return {"cniVersion": result.get("cniVersion", "1.1.0"), "name": name, "type": "cnm",
                "prevResult": result}

    return st.builds(build)


def good_configs(world: World, env: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """What a runtime sends: mostly right, so ADD, CHECK, DEL, STATUS and GC get through."""
    if env.get("CNI_COMMAND") == "CHECK":
        return recorded_check(env) | good_configs(world, {})
    return st.fixed_dictionaries(
        {"cniVersion": st.sampled_from(["1.1.0", "1.1.0", "1.0.0", "0.4.0"]),
         "name": st.sampled_from(["web", "bridge"]), "type": st.just("cnm")},
        optional={"runtimeConfig": GOOD_RUNTIME, "prevResult": prev_results(env),
                  "cni.dev/valid-attachments": st.lists(st.fixed_dictionaries(
                      {"containerID": st.sampled_from(["c1", "c2"]),
                       "ifname": st.sampled_from(["eth0", "net1"])}), max_size=2)})


def one_wrong(world: World, env: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """A runtime's configuration with one field of it wild (or one more field): each
    check of the plugin is reached past the others."""
    def wild(c: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        def put(key: str, value: Any) -> dict[str, Any]:
            if key.startswith("runtimeConfig."):
                return {**c, "runtimeConfig": {**c.get("runtimeConfig", {}),
                                               key.split(".", 1)[1]: value}}
            return {**c, key: value}

        fields = ["cniVersion", "name", "type", "network", "socket", "prevResult", "args",
                  "dns", "cni.dev/valid-attachments", "runtimeConfig", "ipam",
                  "runtimeConfig.ips", "runtimeConfig.mac", "runtimeConfig.aliases",
                  "runtimeConfig.bandwidth"]
        port = st.lists(PORT_MAPPING, min_size=1, max_size=2).map(
            lambda m: put("runtimeConfig.portMappings", m))
        return port | st.builds(put, st.sampled_from(fields), JSONV)

    return good_configs(world, env).flatmap(wild)


def configs(world: World, env: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    return good_configs(world, env) | one_wrong(world, env) | st.fixed_dictionaries(
        {"cniVersion": maybe(st.sampled_from([*spec.VERSIONS, "0.2.0", "9.9.9", ""])),
         "name": maybe(st.sampled_from(["web", "bridge", "none", "nope", ""]))},
        optional={
            "type": maybe(st.just("cnm")),
            "network": maybe(st.one_of(st.sampled_from(["web", "bridge", "host", "nope"]),
                                       TEXT)),
            "socket": maybe(st.sampled_from([world.socket, world.unreachable, "/x",
                                             "unix://", "tcp://x"])),
            "runtimeConfig": maybe(RUNTIME),
            "prevResult": prev_results(env),
            "args": maybe(st.fixed_dictionaries({}, optional={"cni": maybe(RUNTIME)})),
            "dns": maybe(st.dictionaries(st.sampled_from(["nameservers", "search",
                                                          "options", "domain"]),
                                         maybe(st.lists(TEXT, max_size=2)), max_size=3)),
            "cni.dev/valid-attachments": maybe(st.lists(st.fixed_dictionaries(
                {"containerID": maybe(st.sampled_from(["c1", "c2"])),
                 "ifname": maybe(st.sampled_from(["eth0", "net1"]))}), max_size=2)),
            "ipam": JSONV, "ipMasq": JSONV,
        })


def stdins(world: World, env: dict[str, str]) -> st.SearchStrategy[bytes]:
    valid = configs(world, env).map(lambda c: json.dumps(c).encode())
    broken = st.one_of(
        st.binary(max_size=100),
        valid.flatmap(lambda raw: st.integers(0, max(0, len(raw) - 1)).map(
            lambda cut: raw[:cut])),                          # cut short
        JSONV.map(lambda v: json.dumps(v).encode()),          # any JSON, mostly no object
        st.just(b'{"cniVersion": "1.1.0", "name": "\xff\xfe"}'),
    )
    return st.one_of(valid, valid, valid, broken)


def environs(world: World) -> st.SearchStrategy[dict[str, str]]:
    def container(i: int) -> dict[str, str]:
        cid = f"c{i}" if i % 4 else f"{i:x}" * 64  # a runtime's 64-hex id now and then
        return {"CNI_CONTAINERID": cid[:64], "CNI_NETNS": world.netns[i]}

    good = st.builds(lambda c, rest: {**c, **rest},
                     st.integers(0, CONTAINERS - 1).map(container), st.fixed_dictionaries({
                         "CNI_COMMAND": st.sampled_from(["ADD", "ADD", "ADD", *spec.COMMANDS]),
                         "CNI_IFNAME": st.sampled_from(["eth0", "eth0", "net1"]),
                         "CNM_HOST": st.just(world.socket)},
                         optional={"CNI_ARGS": st.sampled_from([
                             "IgnoreUnknown=1;K8S_POD_NAME=pod-a", "K8S_POD_NAME=pod-b"]),
                             "CNI_PATH": st.just("/opt/cni/bin")}))
    return good | good | st.fixed_dictionaries({}, optional={
        "CNI_COMMAND": st.one_of(st.sampled_from([*spec.COMMANDS, "ADD", "DEL", "CHECK"]),
                                 st.sampled_from(["add", "", "NOPE"]), TEXT),
        "CNI_CONTAINERID": st.one_of(st.sampled_from(["c1", "c2", "c3", "0" * 64, "_x"]),
                                     TEXT),
        "CNI_NETNS": st.one_of(st.sampled_from(world.netns), st.sampled_from(world.netns),
                               st.sampled_from([world.missing, "/", ""]), TEXT),
        "CNI_IFNAME": st.one_of(st.sampled_from(["eth0", "net1", "lo"]), TEXT),
        "CNI_ARGS": st.one_of(st.sampled_from([
            "", "IgnoreUnknown=1;K8S_POD_NAME=pod-a", "IP=10.66.0.20", "MAC=02:00:00:00:00:20",
            "X=1", "=1", "K8S_POD_NAME=" + "p" * 70, "IgnoreUnknown=true;X=1"]), TEXT),
        "CNI_PATH": st.one_of(st.just("/opt/cni/bin"), TEXT),
        "CNM_HOST": st.sampled_from([world.socket, world.unreachable, "tcp://x", ""]),
    })


def check_answer(rc: int, text: str, env: dict[str, str], raw: bytes) -> None:
    what = (env, raw[:300])
    assert rc in (0, 1), what
    assert "Traceback" not in text, what
    if rc == 0:
        COUNT["results"] += 1
        COUNT[env["CNI_COMMAND"]] = COUNT.get(env["CNI_COMMAND"], 0) + 1
    if rc == 0 and env["CNI_COMMAND"] in ("DEL", "CHECK", "STATUS", "GC"):
        assert text == "", what  # success prints nothing
        return
    assert text.endswith("\n") and text.count("\n") == 1, what  # one JSON document
    out = json.loads(text)
    assert isinstance(out, dict) and out.get("cniVersion") in spec.VERSIONS, (what, out)
    if rc == 0:
        if env["CNI_COMMAND"] == "VERSION":
            assert out["supportedVersions"] == list(spec.VERSIONS), (what, out)
            return
        assert env["CNI_COMMAND"] == "ADD", (what, out)
        assert isinstance(out["interfaces"], list) and out["interfaces"], (what, out)
        assert all(isinstance(ip["address"], str) and "/" in ip["address"]
                   for ip in out["ips"]), (what, out)
        ADDS.append(out)
        ADDS_BY[(env.get("CNI_NETNS"), env.get("CNI_IFNAME"))] = (json.loads(raw)["name"],
                                                                  out)
        return
    COUNT["errors"] += 1
    assert set(out) <= {"cniVersion", "code", "msg", "details"}, (what, out)
    assert out["code"] in CODES, (what, out)
    assert isinstance(out["msg"], str) and out["msg"], (what, out)
    assert isinstance(out.get("details", ""), str), (what, out)
    assert "internal error" not in out["msg"], (what, out)


def test_any_environment_and_stdin_end_with_a_result_or_a_cni_error(world: World) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(call=environs(world).flatmap(lambda env: st.tuples(st.just(env),
                                                               stdins(world, env))))
    def run_one(call: tuple[dict[str, str], bytes]) -> None:
        env, raw = call
        out = io.StringIO()
        rc = run(dict(env), io.BytesIO(raw), out)
        COUNT["runs"] += 1
        check_answer(rc, out.getvalue(), env, raw)

    run_one()


def test_an_attachment_made_by_the_fuzz_checks_and_deletes_cleanly(world: World) -> None:
    """The path through ADD, CHECK, DEL works as a runtime drives it (the fuzz above must
    be able to reach success, or its 'valid result' branch proves nothing)."""
    env = {"CNI_CONTAINERID": "ok1", "CNI_NETNS": world.own, "CNI_IFNAME": "eth0",
           "CNM_HOST": world.socket, "CNI_PATH": "/opt/cni/bin"}
    conf = {"cniVersion": "1.1.0", "name": "web", "type": "cnm"}
    for command in ("ADD", "CHECK", "DEL"):
        out = io.StringIO()
        body = {**conf, "prevResult": ADDS[-1]} if command == "CHECK" else conf
        raw = json.dumps(body).encode()
        rc = run({**env, "CNI_COMMAND": command}, io.BytesIO(raw), out)
        check_answer(rc, out.getvalue(), {**env, "CNI_COMMAND": command}, raw)
        assert rc == 0, out.getvalue()


def test_zz_report_the_count() -> None:
    done = {c: COUNT.get(c, 0) for c in spec.COMMANDS}
    print(f"\nCNI fuzz: {COUNT['runs']} runs, {COUNT['results']} results {done}, "
          f"{COUNT['errors']} CNI errors, 0 internal errors or tracebacks")
    assert COUNT["runs"] > 0 and COUNT["errors"] > 0
    # The fuzz itself got through ADD (one in ~20 runs does; the test above adds one).
    assert COUNT.get("ADD", 0) > (1 if EXAMPLES >= 100 else 0), done
