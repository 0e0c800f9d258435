"""openapi.yaml stays honest: it documents exactly the routes, request bodies and responses
that cnm.api.server implements. Responses come from ``dispatch`` over a controller on the
fake kernel, checked by a small schema checker (required, property names, types, $ref)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnm import wiring
from cnm.api.server import (
    CONNECT,
    DISCONNECT,
    ENDPOINT_CREATE,
    JOIN,
    NETWORK_CREATE,
    PUBLISH,
    ROUTES,
    SANDBOX_CREATE,
    TRACE,
    EventStream,
    check_body,
    dispatch,
    openapi_document,
)
from cnm.core import Config, Controller
from cnm.errors import InvalidArgument
from cnm.netfilter import NftApi
from cnm.testing import FakeHostLinks, FakeKernel, FakeNft, FakeSandboxLinks
from cnm.trace import Observed, Target, TracePath

DOC: dict[str, Any] = openapi_document()
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# The body field table of each route that takes a body.
BODIES = {
    ("POST", "/v1/networks"): NETWORK_CREATE,
    ("POST", "/v1/networks/{ref}/connect"): CONNECT,
    ("POST", "/v1/networks/{ref}/disconnect"): DISCONNECT,
    ("POST", "/v1/networks/{ref}/endpoints"): ENDPOINT_CREATE,
    ("POST", "/v1/endpoints/{ref}/join"): JOIN,
    ("POST", "/v1/sandboxes"): SANDBOX_CREATE,
    ("POST", "/v1/sandboxes/{ref}/ports"): PUBLISH,
    ("POST", "/v1/sandboxes/{ref}/trace"): TRACE,
}


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in DOC["paths"].items()
            for method in item if method in HTTP_METHODS}


def operation(method: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = DOC["paths"][path][method.lower()]
    return op


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref (local references only) to the schema it names."""
    seen = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), f"only local references are used: {ref}"
        assert ref not in seen, f"reference loop at {ref}"
        seen.add(ref)
        node: Any = DOC
        for part in ref[2:].split("/"):
            assert part in node, f"dangling reference {ref}"
            node = node[part]
        schema = node
    return schema


# --------------------------------------------------------------------------- checker
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float),
}


def violations(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What in ``value`` disagrees with ``schema``: required properties missing, properties
    not documented (unless additionalProperties allows them), wrong types, enum values."""
    schema = resolve(schema)
    if "oneOf" in schema:
        tries = [violations(value, branch, where) for branch in schema["oneOf"]]
        if sum(not t for t in tries) == 1:
            return []
        return [f"{where}: matches {sum(not t for t in tries)} of the oneOf branches, not 1"]
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null is not allowed"]
    out: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind])
        if kind in ("integer", "number") and isinstance(value, bool):
            ok = False
        if not ok:
            return [f"{where}: {type(value).__name__} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", not props)
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{where}: required property {key!r} is missing")
        for key, item in value.items():
            if key in props:
                out += violations(item, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += violations(item, extra, f"{where}.{key}")
            elif not extra:
                out.append(f"{where}: property {key!r} is not documented")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += violations(item, schema["items"], f"{where}[{i}]")
    return out


def response_schema(method: str, path: str, status: int) -> dict[str, Any]:
    responses = operation(method, path)["responses"]
    assert str(status) in responses, f"{method} {path} answers {status}, not documented"
    response = resolve(responses[str(status)])
    content = response["content"]
    # The event stream documents one line's schema.
    schema: dict[str, Any] = (content.get("application/json") or
                              content["application/x-ndjson"])["schema"]
    return schema


def test_checker_reports_what_is_wrong() -> None:
    """The checker must be able to fail, or the response tests below prove nothing."""
    ping = {"$ref": "#/components/schemas/Ping"}
    assert violations({"ok": True, "version": "1"}, ping) == []
    assert violations({"ok": True}, ping) == ["$: required property 'version' is missing"]
    assert violations({"ok": True, "version": "1", "x": 1}, ping) == [
        "$: property 'x' is not documented"]
    assert violations({"ok": "yes", "version": "1"}, ping) == ["$.ok: str is not boolean"]
    assert violations([], ping) == ["$: list is not object"]
    sub = {"$ref": "#/components/schemas/Subnet"}
    good = {"subnet": "10.0.0.0/24", "gateway": None, "ip_range": None, "aux_addresses": {}}
    assert violations(good, sub) == []
    assert violations({**good, "subnet": None}, sub) == ["$.subnet: null is not allowed"]
    assert violations({**good, "aux_addresses": {"a": 1}}, sub) == [
        "$.aux_addresses.a: int is not string"]
    sb = {"$ref": "#/components/schemas/Sandbox"}
    assert "$.kind: 'vm' is not one of ['netns', 'host', 'external']" in violations(
        {"kind": "vm"}, sb)
    info = {"$ref": "#/components/schemas/Info"}
    assert "$.networks: bool is not integer" in violations({"networks": True}, info)
    with pytest.raises(AssertionError, match="dangling"):
        resolve({"$ref": "#/components/schemas/Nope"})


# --------------------------------------------------------------------------- the document
def test_the_document_is_valid_openapi() -> None:
    """openapi-spec-validator, not only this file's own checker: a YAML slip (an unquoted
    `description: name, id or unique id prefix` parsed as a mapping) is invalid OpenAPI
    that every other tool rejects."""
    from openapi_spec_validator import OpenAPIV30SpecValidator

    problems = [f"{'/'.join(map(str, e.path))}: {e.message[:200]}"
                for e in OpenAPIV30SpecValidator(DOC).iter_errors()]
    assert problems == []


def test_the_validator_rejects_what_the_issue_found() -> None:
    import copy

    import yaml
    from openapi_spec_validator import OpenAPIV30SpecValidator

    bad = copy.deepcopy(DOC)
    bad["components"]["parameters"]["Ref"] = yaml.safe_load(
        "{name: ref, in: path, required: true, schema: {type: string}, "
        "description: name, id or unique id prefix}")
    assert list(OpenAPIV30SpecValidator(bad).iter_errors())


def test_every_route_is_documented_and_every_documented_operation_routed() -> None:
    routed = {(method, path) for method, path, _ in ROUTES}
    assert len(routed) == len(ROUTES), "a route is listed twice"
    assert routed - documented() == set(), "routes missing from openapi.yaml"
    assert documented() - routed == set(), "openapi.yaml documents routes that do not exist"


def test_every_reference_resolves() -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    found = list(refs(DOC))
    assert found
    for ref in found:
        resolve({"$ref": ref})


@pytest.mark.parametrize("method, path", sorted(documented()))
def test_path_parameters_are_declared(method: str, path: str) -> None:
    item = DOC["paths"][path]
    params = [resolve(p) for p in item.get("parameters", []) +
              operation(method, path).get("parameters", [])]
    in_path = {p["name"] for p in params if p["in"] == "path"}
    assert in_path == set(re.findall(r"\{(\w+)\}", path))
    assert all(p["required"] for p in params if p["in"] == "path")


@pytest.mark.parametrize("method, path", sorted(documented()))
def test_request_body_is_documented_for_exactly_the_routes_that_read_one(
        method: str, path: str) -> None:
    body = operation(method, path).get("requestBody")
    assert (body is not None) == ((method, path) in BODIES)


@pytest.mark.parametrize("route", sorted(BODIES), ids=lambda r: f"{r[0]} {r[1]}")
def test_request_body_schema_equals_the_field_table(route: tuple[str, str]) -> None:
    fields = BODIES[route]
    body = operation(*route)["requestBody"]
    assert body["required"] is True
    schema = resolve(body["content"]["application/json"]["schema"])
    assert schema["type"] == "object"
    # check_body refuses unknown fields; the document must say so.
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(fields)
    assert sorted(schema.get("required", [])) == sorted(k for k, (_, req) in fields.items()
                                                        if req)
    for name, (kind, _) in fields.items():
        prop = resolve(schema["properties"][name])
        assert prop["type"] == kind, name
        # check_body wants arrays of strings and string-to-string maps.
        if kind == "array":
            assert resolve(prop["items"])["type"] == "string", name
        if kind == "object":
            assert resolve(prop["additionalProperties"])["type"] == "string", name


# --------------------------------------------------------------------------- responses
class Api:
    """``dispatch`` over a controller on the fake kernel; every answer is checked against
    the document before it is returned."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, method: str, path: str, body: Any = None,
                 expect: int | None = 200) -> Any:
        raw = json.dumps(body).encode() if body is not None else b""
        status, payload = dispatch(self.controller, method, path, raw)
        if isinstance(payload, EventStream):  # a line each: check every one
            payload = [e for e in payload.events if e is not None]
            template = _template(method, path)
            for line in payload:
                problems = violations(json.loads(json.dumps(line)),
                                      response_schema(method, template, status))
                assert problems == [], f"{method} {path} -> {line}"
            self.seen.add((method, template))
            return payload
        # The handler serialises the payload with json.dumps: check the wire form.
        payload = json.loads(json.dumps(payload))
        assert status == expect if expect is not None else 200 <= status < 300, payload
        template = _template(method, path)
        problems = violations(payload, response_schema(method, template, status))
        assert problems == [], f"{method} {path} -> {status}"
        self.seen.add((method, template))
        return payload


def _template(method: str, path: str) -> str:
    bare = path.split("?")[0]
    for m, template, _ in ROUTES:
        rx = "^" + re.sub(r"\{(\w+)\}", r"[^/]+", template) + "$"
        if m == method and re.match(rx, bare):
            return template
    raise AssertionError(f"no route for {method} {path}")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    kernel = FakeKernel()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    config = Config(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                    host_netns=str(tmp_path / "host-netns"), resolv_conf=str(resolv))
    built = wiring.build(config, wiring.Adapters(FakeHostLinks(kernel), FakeSandboxLinks(kernel),
                                                 FakeNft()))
    try:
        yield Api(built.controller)
    finally:
        built.close()


def test_responses_match_the_documented_schemas(api: Api) -> None:
    api("GET", "/v1/_ping")
    api("GET", "/v1/openapi")
    net = api("POST", "/v1/networks", {"name": "web", "subnets": ["10.1.0.0/24"],
                                       "labels": {"team": "a"}, "options": {"mtu": "1400"}},
              expect=201)
    assert set(net) == set(resolve({"$ref": "#/components/schemas/Network"})["required"])
    api("POST", "/v1/networks", {"name": "db", "ipv6": True, "internal": True}, expect=201)
    sb = api("POST", "/v1/sandboxes", {"name": "a", "network": "web", "hostname": "alpha"},
             expect=201)
    assert set(sb) == set(resolve({"$ref": "#/components/schemas/Sandbox"})["required"])
    api("POST", "/v1/sandboxes", {"name": "h", "network": "host"}, expect=201)
    api("POST", "/v1/sandboxes", {"name": "n", "network": "none"}, expect=201)
    ep = api("POST", "/v1/networks/db/connect", {"sandbox": "a"}, expect=201)
    assert set(ep) == set(resolve({"$ref": "#/components/schemas/Endpoint"})["required"])
    assert ep["ipv6"] and ep["gateway4"] is None  # internal: no gateway, still documented
    # An endpoint's life: reserved, listed, joined, left, deleted.
    res = api("POST", "/v1/networks/web/endpoints", {"name": "spare", "ip": "10.1.0.50"},
              expect=201)
    assert set(res) == set(resolve({"$ref": "#/components/schemas/Endpoint"})["required"])
    assert res["sandbox_id"] is None and res["ipv4"] == "10.1.0.50/24"
    assert [(e["network"], e["name"], e["sandbox"]) for e in api("GET", "/v1/endpoints")] == [
        ("db", "a", "a"), ("host", "h", "h"), ("none", "n", "n"), ("web", "a", "a"),
        ("web", "spare", None)]
    api("POST", "/v1/sandboxes", {"name": "j", "network": "none"}, expect=201)
    api("POST", "/v1/networks/none/disconnect", {"sandbox": "j"})
    joined = api("POST", "/v1/endpoints/spare/join", {"sandbox": "j", "ifname": "lan0"})
    assert (joined["sandbox"], joined["ifname"]) == ("j", "lan0")
    assert api("GET", "/v1/endpoints/spare")["sandbox"] == "j"
    assert api("POST", "/v1/endpoints/spare/leave")["sandbox_id"] is None
    assert api("DELETE", "/v1/endpoints/spare") == {"id": res["id"], "name": "spare"}
    api("DELETE", "/v1/sandboxes/j")

    # Lists and inspects, now with endpoints in them (the nested schemas get checked).
    nets = api("GET", "/v1/networks")
    assert {n["name"] for n in nets} == {"bridge", "host", "none", "web", "db"}
    web = api("GET", "/v1/networks/web")
    assert [e["sandbox"] for e in web["endpoints"]] == ["a"]
    assert api("GET", f"/v1/networks/{net['id'][:12]}")["name"] == "web"
    sbs = api("GET", "/v1/sandboxes")
    assert {s["name"] for s in sbs} == {"a", "h", "n"}
    a = api("GET", "/v1/sandboxes/a")
    assert [e["network"] for e in a["endpoints"]] == ["web", "db"]
    info = api("GET", "/v1/info")
    assert (info["networks"], info["sandboxes"], info["endpoints"]) == (5, 3, 4)

    # Published ports: on create, added later, listed, withdrawn; the firewall rebuilt.
    api("POST", "/v1/sandboxes", {"name": "p", "network": "web", "ports": ["8080:80"]},
        expect=201)
    added = api("POST", "/v1/sandboxes/p/ports", {"ports": ["127.0.0.1:5353:53/udp"]},
                expect=201)
    assert added == [{"network": "web", "proto": "udp", "host_ip": "127.0.0.1",
                      "host_port": 5353, "host_port_end": 5353, "container_port": 53,
                      "container_port_end": 53}]
    assert [m["host_port"] for m in api("GET", "/v1/sandboxes/p/ports")] == [8080, 5353]
    assert api("POST", "/v1/firewall/reload") == {"networks": 3, "ports": 2, "guards": 3}
    assert api("GET", "/v1/doctor") == {"drift": []}
    # A drift and its fix: the documented Drift objects, and nothing left after.
    c = api.controller
    os.remove(os.path.join(c.files_dir(c.sandbox("p")), "resolv.conf"))
    assert [d["kind"] for d in api("GET", "/v1/doctor")["drift"]] == ["sandbox-file"]
    fixed = api("POST", "/v1/doctor/fix")
    assert ([d["kind"] for d in fixed["found"]], fixed["drift"], fixed["errors"]) == (
        ["sandbox-file"], [], [])
    assert api("DELETE", "/v1/sandboxes/p/ports/udp/5353")[0]["container_port"] == 53
    # A trace: refused without the kernel's side (the fakes have none), then with a fixed
    # observation standing in for it (tests/netns/test_trace.py traces for real).
    assert api("POST", "/v1/sandboxes/p/trace", {"destination": "10.1.0.9"},
               expect=501)["error"]["code"] == "unsupported"
    api("POST", "/v1/sandboxes/p/trace", {"destination": "10.1.0.9:80/tcpp"}, expect=400)
    api.controller.tracer = _fixed_trace
    done = api("POST", "/v1/sandboxes/p/trace", {"destination": "10.1.0.9:80"})
    assert (done["verdict"], done["by"]["meaning"]) == ("dropped", "inter-network isolation")
    api("DELETE", "/v1/sandboxes/p")

    api("POST", "/v1/networks/db/disconnect", {"sandbox": "a"})
    api("DELETE", "/v1/sandboxes/a")
    api("DELETE", "/v1/sandboxes/h?force=true")
    api("DELETE", "/v1/networks/db")
    assert api("POST", "/v1/networks/prune")["removed"] == ["web"]
    # Every change above is an event, in order (the kept ones, since the start).
    events = api("GET", f"/v1/events?since=0&until={time.time()}")
    assert [(e["type"], e["action"], e["name"]) for e in events][:3] == [
        ("network", "create", "web"), ("network", "create", "db"),
        ("sandbox", "create", "a")]
    assert tuple(
        events[-1][k] for k in ("type", "action", "name")) == ("network", "remove", "web")

    # Every route answered once with a documented body.
    assert api.seen == {(m, p) for m, p, _ in ROUTES}


def _fixed_trace(path: TracePath, target: Target, nft: NftApi) -> Observed:
    lines = ('trace id 1 inet cnm forward packet: iif "a" oif "b" ip saddr 10.1.0.2 '
             "ip daddr 10.1.0.9 tcp dport 80\n"
             "trace id 1 inet cnm forward rule iifname @bridges oifname @bridges drop "
             'comment "inter-network isolation" (verdict drop)\n')
    route = {"dst": target.addr, "dev": "eth0", "prefsrc": "10.1.0.2"}
    if target.proto == "icmp":  # delivered (the CLI's exit 0)
        lines = lines.splitlines()[0]
    return Observed(path.sandbox, target, route, None, "eth0", "web", "veth0", "br0",
                    target.addr, None, None, lines, "trace_x",
                    "answered" if target.proto == "icmp" else "no answer")


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/v1/networks/nope", None, 404),
    ("GET", "/v1/sandboxes/nope", None, 404),
    ("DELETE", "/v1/networks/nope", None, 404),
    ("DELETE", "/v1/sandboxes/nope", None, 404),
    ("POST", "/v1/networks/nope/disconnect", {"sandbox": "x"}, 404),
    ("POST", "/v1/networks/nope/connect", {"sandbox": "x"}, 404),
    ("POST", "/v1/networks", {"name": "x", "subnets": ["10.300.0.0/24"]}, 400),
    ("POST", "/v1/networks", {"name": "bridge"}, 409),
    ("POST", "/v1/networks", {"nmae": "x"}, 400),
    ("POST", "/v1/sandboxes", {"name": "x", "aliases": ["y"]}, 400),
    ("POST", "/v1/sandboxes", {"name": "bad name"}, 400),
    ("POST", "/v1/sandboxes", {"name": "x", "network": "nope"}, 404),
    ("POST", "/v1/sandboxes", {"name": "s"}, 409),
    ("POST", "/v1/networks", {"name": "x", "driver": "nope"}, 400),
    ("DELETE", "/v1/networks/bridge", None, 400),
    ("POST", "/v1/networks/bridge/connect", {}, 400),
    ("POST", "/v1/networks/bridge/connect", {"sandbox": "s", "aliases": ["y"]}, 400),
    ("POST", "/v1/networks/bridge/connect", {"sandbox": "s"}, 400),
    ("POST", "/v1/networks/none/connect", {"sandbox": "s"}, 409),
    ("POST", "/v1/networks/bridge/disconnect", {}, 400),
    ("POST", "/v1/networks/bridge/disconnect", {"sandbox": "s"}, 404),
], ids=lambda v: str(v))
def test_errors_have_the_error_body(api: Api, method: str, path: str, body: Any,
                                    status: int) -> None:
    """Each error answer is a documented status of its route, with the Error body."""
    api("POST", "/v1/sandboxes", {"name": "s", "network": "none"}, expect=201)
    payload = api(method, path, body, expect=status)
    assert payload["error"]["message"]


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/v1/networks", 400),
    ("POST", "/v1/networks", 409),
    ("GET", "/v1/networks/{ref}", 404),
    ("DELETE", "/v1/networks/{ref}", 409),
    ("POST", "/v1/networks/{ref}/connect", 404),
    ("POST", "/v1/sandboxes", 409),
    ("DELETE", "/v1/sandboxes/{ref}", 404),
])
def test_documented_error_responses_use_the_error_schema(method: str, path: str,
                                                         status: int) -> None:
    schema = resolve(response_schema(method, path, status))
    assert schema is resolve({"$ref": "#/components/schemas/Error"})


def test_an_unknown_path_and_a_bad_json_body_are_errors(api: Api) -> None:
    status, payload = dispatch(api.controller, "GET", "/v1/nothing", b"")
    assert (status, payload["error"]["code"]) == (404, "not-found")
    # A method the path does not have: 405 (the HTTP layer adds Allow), not a 400.
    status, payload = dispatch(api.controller, "PUT", "/v1/networks", b"")
    assert (status, payload["error"]["code"]) == (405, "method-not-allowed")
    assert payload["error"]["hint"] == "allowed: GET, HEAD, POST"
    status, payload = dispatch(api.controller, "POST", "/v1/networks", b"{not json")
    assert (status, payload["error"]["code"]) == (400, "invalid-argument")
    assert "not valid JSON" in payload["error"]["message"]


# --------------------------------------------------------------------------- check_body
@pytest.mark.parametrize("body, fields, needle", [
    ({"name": "x", "colour": "red"}, NETWORK_CREATE, "unknown field 'colour'"),
    ({}, NETWORK_CREATE, "field 'name' is required"),
    ({"name": None}, NETWORK_CREATE, "field 'name' is required"),
    ({"name": 7}, NETWORK_CREATE, "field 'name' must be a string"),
    ({"name": True}, NETWORK_CREATE, "field 'name' must be a string"),
    ({"name": "x", "ipv6": "yes"}, NETWORK_CREATE, "field 'ipv6' must be a boolean"),
    ({"name": "x", "ipv6": 1}, NETWORK_CREATE, "field 'ipv6' must be a boolean"),
    ({"name": "x", "subnets": "10.0.0.0/8"}, NETWORK_CREATE, "field 'subnets' must be a"),
    ({"name": "x", "subnets": [10]}, NETWORK_CREATE,
     "field 'subnets' must be an array of strings"),
    ({"name": "x", "options": ["mtu"]}, NETWORK_CREATE, "field 'options' must be a"),
    ({"name": "x", "labels": {"a": 1}}, NETWORK_CREATE,
     "field 'labels' must map strings to strings"),
    ({"name": "a", "hostname": ["h"]}, SANDBOX_CREATE, "field 'hostname' must be a string"),
    ({"sandbox": "a", "ip": 10}, CONNECT, "field 'ip' must be a string"),
    ({"sandbox": "a", "aliases": [None]}, CONNECT,
     "field 'aliases' must be an array of strings"),
    ({}, DISCONNECT, "field 'sandbox' is required"),
    ({"sandbox": "a", "force": True}, DISCONNECT, "unknown field 'force'"),
])
def test_check_body_names_the_field(body: Any, fields: dict[str, tuple[str, bool]],
                                    needle: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        check_body(body, fields, "thing")
    assert e.value.message.startswith("thing: ")
    assert needle in e.value.message


def test_check_body_refuses_a_body_that_is_not_an_object() -> None:
    for body in ([], "x", 1, None):
        with pytest.raises(InvalidArgument, match="must be a JSON object"):
            check_body(body, NETWORK_CREATE, "network create")


def test_check_body_lists_the_fields_in_its_hint() -> None:
    with pytest.raises(InvalidArgument) as e:
        check_body({"sandbox": "a", "nope": 1}, CONNECT, "connect")
    assert e.value.hint == "fields: " + ", ".join(CONNECT)


def test_check_body_accepts_every_field_of_its_type() -> None:
    sample = {"string": "s", "boolean": True, "array": ["a"], "object": {"k": "v"}}
    for fields in (NETWORK_CREATE, CONNECT, DISCONNECT, SANDBOX_CREATE):
        body = {k: sample[kind] for k, (kind, _) in fields.items()}
        assert check_body(body, fields, "x") is body


def test_the_api_rejects_a_bad_field_by_name(api: Api) -> None:
    status, payload = dispatch(api.controller, "POST", "/v1/networks",
                               json.dumps({"name": "x", "ipv6": "yes"}).encode())
    assert status == 400
    assert payload["error"]["message"] == "network create: field 'ipv6' must be a boolean"


# --------------------------------------------------------------------------- the CLI
# Every command and flag of the CLI, run through the client against the fake-kernel core:
# each request body it sends is checked against the document's request schema and each
# answer against the response schema, so the CLI and the client name no field the document
# does not. (`sandbox exec` and `--netns` need a real namespace: the root tier runs them.)
CLI_RUN = [
    ["network", "create", "-d", "bridge", "--subnet", "10.9.0.0/24", "--gateway", "10.9.0.1",
     "--ip-range", "10.9.0.128/25", "--aux-address", "router=10.9.0.2", "--subnet",
     "fd00:9::/64", "--ipv6", "-o", "com.docker.network.driver.mtu=1400",
     "--label", "team=a", "lan"],
    ["network", "create", "--internal", "--dry-run", "quiet"],
    ["network", "create", "--internal", "quiet"],
    ["network", "ls"], ["network", "ls", "-q", "--format", "json"],
    ["network", "ls", "--no-trunc", "--filter", "driver=bridge", "--filter", "label=team",
     "--format", "{{.ID}} {{.Name}} {{json .Labels}}"],
    ["network", "inspect", "--format", "table", "lan"],
    ["network", "inspect", "-f", "{{range .Subnets}}{{.Subnet}} {{end}}", "lan"],
    ["sandbox", "create", "--network", "lan", "--ip", "10.9.0.130", "--ip6", "fd00:9::5",
     "--alias", "www", "-p", "8080:80", "--hostname", "w", "--mac-address",
     "02:42:0a:09:00:82", "--label", "app=web", "--ifname", "eth0", "web"],
    ["sandbox", "create", "--network", "quiet", "lone"],
    ["network", "connect", "--ip", "10.9.0.140", "--ip6", "fd00:9::6", "--alias", "db",
     "--mac-address", "02:42:0a:09:00:8c", "-p", "5432:5432", "--ifname", "lan0", "--dry-run",
     "lan", "lone"],
    ["network", "connect", "quiet", "web"],
    ["network", "disconnect", "--dry-run", "quiet", "web"],
    ["network", "disconnect", "quiet", "web"],
    ["endpoint", "create", "--ip", "10.9.0.150", "--ip6", "fd00:9::7", "--mac-address",
     "02:42:0a:09:00:96", "--alias", "spare", "-p", "9090:90", "lan", "spare"],
    ["endpoint", "ls"], ["endpoint", "ls", "-q", "--format", "json"],
    ["endpoint", "ls", "--no-trunc", "--filter", "network=lan", "--filter", "sandbox=web"],
    ["endpoint", "inspect", "--format", "table", "spare"],
    ["endpoint", "join", "--ifname", "eth3", "--dry-run", "spare", "lone"],
    ["endpoint", "join", "--ifname", "eth3", "spare", "lone"],
    ["endpoint", "leave", "--dry-run", "spare"],
    ["endpoint", "leave", "spare"],
    ["endpoint", "rm", "spare"],
    ["port", "add", "--network", "lan", "web", "8081:81", "53:53/udp"],
    ["port", "ls", "--format", "json", "web"], ["port", "ls", "web"],
    ["port", "rm", "web", "8081", "53/udp"],
    ["sandbox", "ls"], ["sandbox", "ls", "-q", "--format", "json"],
    ["sandbox", "ls", "--no-trunc", "--filter", "name=^we", "--format", "table {{.Name}}"],
    ["network", "create", "--internal", "gone"], ["network", "connect", "gone", "lone"],
    ["network", "rm", "-f", "gone"],
    ["sandbox", "inspect", "--format", "table", "web"],
    ["trace", "web", "10.9.0.1"], ["trace", "--format", "json", "web", "10.9.0.1"],
    ["firewall", "reload"], ["doctor"], ["doctor", "--fix", "--format", "json"],
    ["doctor", "-f", "{{.Kind}}"], ["info"], ["info", "--format", "json"],
    ["info", "-f", "{{.Networks}} {{join .Drivers \",\"}}"],
    ["version"], ["version", "-f", "{{.Server.Version}}"],
    ["events", "--since", "0", "--until", "0s", "--filter", "type=network", "--filter",
     "action=create", "--format", "{{.Type}} {{.Action}} {{.Name}}"],
    ["events", "--since", "1h", "--until", "0s"],
    ["sandbox", "rm", "-f", "web", "lone"],
    ["network", "rm", "--dry-run", "lan"], ["network", "rm", "lan"],
    ["network", "prune", "-f", "--filter", "label=nope", "--filter", "until=1s"],
    ["network", "prune", "-f"],
]
# Flags that never reach a body: how the CLI prints or whom it calls.
CLI_LOCAL_FLAGS = {"-h", "--help", "-H", "--host", "--debug", "--version", "-q", "--quiet",
                   "--format", "-f", "--force", "--netns"}


def _cli_flags() -> set[tuple[str, str, str]]:
    """(group, command, flag) of every option of every CLI command."""
    import argparse

    from cnm.cli import build_parser

    def subs(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                return dict(a.choices)
        return {}

    out = set()
    seen: set[int] = set()  # an alias ("rm" and "remove") is the same parser
    for group, gp in subs(build_parser()).items():
        for cmd, cp in (subs(gp) or {"": gp}).items():
            if id(cp) in seen:
                continue
            seen.add(id(cp))
            for a in cp._actions:
                out |= {(group, cmd, s) for s in a.option_strings}
    return out


def test_every_cli_flag_goes_through_the_documented_contract(
        api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cnm import cli
    from cnm.client import Client

    sent: list[tuple[str, str, Any]] = []

    class Documented(Client):
        def __init__(self, host: str = "", timeout: float = 0) -> None:
            pass

        def close(self) -> None:
            pass

        def call(self, method: str, path: str, body: Any = None) -> Any:
            template = _template(method, path)
            if body is not None:
                schema = resolve(operation(method, template)["requestBody"]["content"][
                    "application/json"]["schema"])
                assert violations(body, schema) == [], f"the CLI sent {method} {path} {body}"
            sent.append((method, template, body))
            return api(method, path, body, expect=None)

        def stream(self, path: str) -> Any:
            sent.append(("GET", _template("GET", path), None))
            return iter(api("GET", path, None, expect=None))

    monkeypatch.setattr(cli, "Client", Documented)
    api.controller.tracer = _fixed_trace
    used: set[tuple[str, str, str]] = set()
    for argv in CLI_RUN:
        assert cli.main(argv) == 0, (argv, capsys.readouterr().err)
        top = argv[0] in ("info", "version", "events", "trace", "doctor")  # no sub-command
        used |= {(argv[0], argv[1] if len(argv) > 1 and not top else "", a)
                 for a in argv if a.startswith("-")}
    flags = {f for f in _cli_flags() if f[2] not in CLI_LOCAL_FLAGS}
    missing = {f for f in flags if f not in used and (f[0], f[1]) != ("sandbox", "exec")}
    # A flag and its short form are one flag: either spelling covers both.
    missing = {f for f in missing if not any(
        (f[0], f[1], other) in used for g, c, other in flags
        if (g, c) == (f[0], f[1]) and _same_flag(f[2], other))}
    assert missing == set(), "CLI flags no invocation here sends through the contract"
    assert {m for m, _, _ in sent} >= {"GET", "POST", "DELETE"}


def _same_flag(a: str, b: str) -> bool:
    from cnm.cli import build_parser

    p = build_parser()
    for group in p._subparsers._group_actions[0].choices.values():  # type: ignore[union-attr]
        for action in group._subparsers._group_actions[0].choices.values() \
                if group._subparsers else [group]:  # type: ignore[union-attr]
            for act in action._actions:
                if a in act.option_strings and b in act.option_strings:
                    return True
    return False


# --------------------------------------------------------------------------- error statuses
# The errors the server gives a route whatever its handler does: 400 for a query parameter
# the route does not list (check_query, every route), 413 for a body over limits.MAX_BODY
# (every route that reads one), 404 for a {ref} that names nothing. The fuzzers
# (test_fuzz_schemathesis.py) find the rest; these three are asked of the document here.
def errors_every_route_gives(method: str, path: str) -> set[str]:
    out = {"400"}
    if operation(method, path).get("requestBody"):
        out.add("413")
    if "{ref}" in path:
        out.add("404")
    return out


@pytest.mark.parametrize("method, path", sorted(documented()))
def test_documented_responses_include_the_errors_the_server_gives(method: str,
                                                                  path: str) -> None:
    responses = operation(method, path)["responses"]
    missing = errors_every_route_gives(method, path) - set(responses)
    assert missing == set(), f"{method} {path} does not document {sorted(missing)}"
    for code in errors_every_route_gives(method, path):
        schema = resolve(response_schema(method, path, int(code)))
        assert schema is resolve({"$ref": "#/components/schemas/Error"}), (method, path, code)


# A body each route takes, for the 404 of a ref that names nothing.
GOOD_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/networks/{ref}/connect"): {"sandbox": "s"},
    ("POST", "/v1/networks/{ref}/disconnect"): {"sandbox": "s"},
    ("POST", "/v1/networks/{ref}/endpoints"): {"name": "e"},
    ("POST", "/v1/endpoints/{ref}/join"): {"sandbox": "s"},
    ("POST", "/v1/sandboxes/{ref}/ports"): {"ports": ["8080:80"]},
    ("POST", "/v1/sandboxes/{ref}/trace"): {"destination": "10.0.0.1"},
}


@pytest.mark.parametrize("method, path", sorted(documented()))
def test_the_server_gives_each_route_its_400_and_404(api: Api, method: str,
                                                     path: str) -> None:
    """What the test above asks of the document is what the server answers (413 is the
    HTTP layer's: tests/unit/test_http_contract.py)."""
    api("POST", "/v1/sandboxes", {"name": "s", "network": "none"}, expect=201)
    concrete = path.replace("{proto}", "tcp").replace("{port}", "80")
    body = GOOD_BODIES.get((method, path))
    payload = api(method, concrete.replace("{ref}", "s") + "?nope=1", body, expect=400)
    assert payload["error"]["message"].startswith("unknown query parameter 'nope'")
    if "{ref}" in path:
        payload = api(method, concrete.replace("{ref}", "no-such-thing"), body, expect=404)
        assert payload["error"]["code"] == "not-found"
