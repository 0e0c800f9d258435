"""The REST API fuzzed by hypothesis, from its OpenAPI document and by hand-written
strategies: every answer is a typed error or a success, never a 5xx or a traceback; names
that try to escape are refused with the field named.

Counted: CNM_FUZZ_EXAMPLES (default 300 a test in CI; bench/README.md's RELIABILITY has
the count run once by hand).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnm.api.server import ROUTES, dispatch, openapi_document
from cnm.core import Controller
from cnm.errors import _BY_CODE
from cnm.testing.fakestack import fake_stack

EXAMPLES = int(os.environ.get("CNM_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
SCHEMAS = openapi_document()["components"]["schemas"]
BODIES = {("POST", "/v1/networks"): "NetworkCreate",
          ("POST", "/v1/networks/{ref}/connect"): "Connect",
          ("POST", "/v1/networks/{ref}/disconnect"): "Disconnect",
          ("POST", "/v1/networks/{ref}/endpoints"): "EndpointCreate",
          ("POST", "/v1/endpoints/{ref}/join"): "Join",
          ("POST", "/v1/sandboxes"): "SandboxCreate",
          ("POST", "/v1/sandboxes/{ref}/ports"): "Publish"}
COUNT = {"cases": 0}


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    with fake_stack(tmp_path_factory.mktemp("fuzz")) as (built, _):
        yield built.controller


# Values that try to escape into a path, a kernel name, a file or a log line.
NASTY = st.sampled_from([
    "../x", "../../etc/passwd", "/etc/passwd", "a/b", ".", "..", "x" * 16, "x" * 300,
    "a\x00b", "a\nb", "a\rb", "a b", "\udcff", "é", "eth0\n", "-x", "", "cnm0", "lo",
    "$(reboot)", "`id`", "a;b", "%2e%2e", "\t", "x" * 70_000,
])
TEXT = st.one_of(NASTY, st.text(max_size=40), st.text(alphabet="abc09-_.:/[]", max_size=20))
JSONV = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10)


def from_schema(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies close to the schema (each field of its type, with nasty values), with some
    fields of the wrong type and some unknown ones."""
    props = SCHEMAS[name]["properties"]
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field, prop in props.items():
        kind = prop.get("type") or SCHEMAS[prop["$ref"].rsplit("/", 1)[1]]["type"]
        typed: st.SearchStrategy[Any] = {
            "string": TEXT, "boolean": st.booleans(),
            "array": st.lists(TEXT, max_size=6),
            "object": st.dictionaries(TEXT, TEXT, max_size=6)}[kind]
        fields[field] = st.one_of(typed, typed, typed, JSONV)
    return st.fixed_dictionaries({}, optional=fields) | st.dictionaries(TEXT, JSONV,
                                                                        max_size=5)


def path_of(template: str, ref: str) -> str:
    from urllib.parse import quote

    return (template.replace("{ref}", quote(ref.encode("utf-8", "surrogatepass"), safe=""))
            .replace("{proto}", "tcp").replace("{port}", "80"))


def check(status: int, payload: Any, what: str) -> None:
    COUNT["cases"] += 1
    assert status < 500, (what, status, payload)
    if status >= 400:
        assert payload["error"]["code"] in _BY_CODE, (what, payload)
        assert payload["error"]["message"], (what, payload)


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


@pytest.mark.parametrize("route", sorted(BODIES), ids=lambda r: f"{r[0]} {r[1]}")
def test_bodies_from_the_document_get_no_5xx(ctl: Controller, route: tuple[str, str]) -> None:
    method, template = route

    @FUZZ
    @given(body=from_schema(BODIES[route]), ref=st.one_of(NASTY, st.just("bridge")),
           dry=st.booleans())
    def run(body: dict[str, Any], ref: str, dry: bool) -> None:
        path = path_of(template, ref) + ("?dry_run=true" if dry else "")
        status, payload = dispatch(ctl, method, path, json.dumps(body).encode())
        check(status, payload, f"{method} {path} {body!r:.200}")

    run()


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
       route=st.sampled_from([p for _, p, _ in ROUTES]), ref=TEXT,
       raw=st.one_of(st.binary(max_size=200), JSONV.map(lambda v: json.dumps(v).encode())),
       query=st.text(max_size=30))
def test_any_method_path_and_body_gets_no_5xx(ctl: Controller, method: str, route: str,
                                              ref: str, raw: bytes, query: str) -> None:
    path = path_of(route, ref) + ("?" + query if query else "")
    status, payload = dispatch(ctl, method, path, raw)
    check(status, payload, f"{method} {path} {raw!r:.200}")


FIELDS = [("POST", "/v1/networks", "name", {}), ("POST", "/v1/sandboxes", "name", {}),
          ("POST", "/v1/sandboxes", "hostname", {"name": "h"}),
          ("POST", "/v1/sandboxes", "ifname", {"name": "i"}),
          ("POST", "/v1/sandboxes", "aliases", {"name": "a", "network": "bridge"}),
          ("POST", "/v1/networks/bridge/endpoints", "name", {})]
ESCAPES = ["../x", "/etc/x", "a/b", "..", "x" * 16, "x" * 300, "a\x00b", "a\nb", "\udcff",
           "$(id)"]


# 16 bytes is too long only for an interface name (the other names take 64).
CASES = [(*f, v) for f in FIELDS for v in ESCAPES if v != "x" * 16 or f[2] == "ifname"]


@pytest.mark.parametrize("method,path,field,base,value", CASES,
                         ids=[f"{c[1]} {c[2]} {i}" for i, c in enumerate(CASES)])
def test_names_that_try_to_escape_are_refused_with_the_field_named(
        ctl: Controller, tmp_path: Path, method: str, path: str, field: str,
        base: dict[str, str], value: str) -> None:
    v: Any = [value] if field == "aliases" else value
    body = {"name": "x", **base, field: v}
    status, payload = dispatch(ctl, method, path, json.dumps(body).encode())
    COUNT["cases"] += 1
    assert status == 400, (body, payload)
    message = payload["error"]["message"]
    words = {"name": "name", "hostname": "hostname", "ifname": "interface name",
             "aliases": "alias"}[field]
    assert words in message or f"'{field}'" in message, message
    # Nothing of it reached the run dir (a file or a namespace named after it).
    run = Path(ctl.config.run_dir)
    assert not any(value in p.name for p in run.rglob("*") if value.strip("./")), value


def test_non_utf8_bodies_are_400(ctl: Controller) -> None:
    for raw in (b'{"name": "\xff\xfe"}', b"\xc3\x28", b'{"name": "a\x00"}'):
        status, payload = dispatch(ctl, "POST", "/v1/networks", raw)
        check(status, payload, repr(raw))
        assert status == 400, payload


def test_zz_report_the_count() -> None:
    print(f"\nAPI fuzz: {COUNT['cases']} cases, 0 answers 5xx")
    assert COUNT["cases"] > 0
