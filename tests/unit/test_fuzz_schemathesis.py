"""The REST API fuzzed by schemathesis from openapi.yaml, over the real HTTP server on a unix
socket (the fake kernel under it): every operation's requests, valid (positive) and broken
(negative: wrong types, unknown query parameters, values out of bounds), each answer checked
by schemathesis (not_a_server_error, status_code_conformance, content_type_conformance,
response_schema_conformance) and here (an error's code is one of the typed ones; no
traceback in the log).

Counted: a third of CNM_FUZZ_EXAMPLES cases an operation (CI's 300: 100 for each of the 28
operations, ~1,900 cases once hypothesis drops the duplicates, ~35 s); bench/README.md's
RELIABILITY has the count run once by hand.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from cnm.api.server import openapi_document
from cnm.core import Controller
from cnm.errors import _BY_CODE, CnmError
from cnm.model import EndpointSpec, NetworkSpec, SandboxSpec
from cnm.testing.fakestack import fake_stack, serving

EXAMPLES = max(1, int(os.environ.get("CNM_FUZZ_EXAMPLES", "300")) // 3)
SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = sorted((op.ok().method.upper(), op.ok().path) for op in SCHEMA.get_all_operations())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
BASE = "http://cnmd"
COUNT = {"cases": 0}
# Refs that name something (kept alive by `seeded`), besides schemathesis's own strings.
REFS = ["web", "s", "spare", "bridge", "none", "host"]


class _UnixConnection(HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("cnmd", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class _UnixPool(HTTPConnectionPool):
    def __init__(self, path: str) -> None:
        super().__init__("cnmd", maxsize=1)
        self.unix_path = path

    def _new_conn(self) -> HTTPConnection:
        return _UnixConnection(self.unix_path, timeout=20)  # a guard against a hang


class UnixAdapter(HTTPAdapter):
    """requests over cnmd's unix socket: every http://cnmd/... goes to ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.pool = _UnixPool(path)

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None,
                                        cert: Any = None) -> HTTPConnectionPool:
        return self.pool

    def close(self) -> None:
        self.pool.close()
        super().close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Controller, requests.Session]]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    path = str(tmp / "api.sock")
    with fake_stack(tmp) as (built, _), serving(built.controller, path):
        session = requests.Session()
        session.mount(BASE, UnixAdapter(path))
        yield built.controller, session
        session.close()


def seeded(c: Controller) -> None:
    """A network, a sandbox on it publishing a port, a reserved endpoint: made again when a
    case removed them, so a case's {ref} can name something."""
    def have(fn: Any, ref: str) -> bool:
        try:
            fn(ref)
            return True
        except CnmError:
            return False

    if not have(c.network, "web"):
        c.create_network(NetworkSpec(name="web", subnets=("10.77.0.0/24",)))
    if not have(c.sandbox, "s"):
        c.create_sandbox(SandboxSpec(name="s", network="web", ports=("8080:80",)))
    if not have(c.endpoint, "spare"):
        c.create_endpoint(EndpointSpec(network="web", name="spare"))


def bounded(case: Any) -> None:
    """GET /v1/events streams until its `until`: one is set (0, the past) unless the case
    sent one that is not a number (a 400 to check)."""
    query = dict(case.query or {})
    until = query.get("until")
    try:
        float(until)
        number = True
    except (TypeError, ValueError):
        number = until is None or isinstance(until, list)
    if number:
        query["until"] = 0
    case.query = query


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_schemathesis_finds_no_5xx_and_no_answer_off_the_document(
        served: tuple[Controller, requests.Session], method: str, path: str) -> None:
    controller, session = served
    op = SCHEMA[path][method]
    cases = st.one_of(op.as_strategy(generation_mode=GenerationMode.POSITIVE),
                      op.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases, ref=st.one_of(st.none(), st.sampled_from(REFS)))
    def run(case: Any, ref: str | None) -> None:
        seeded(controller)
        if ref is not None and "{ref}" in path:
            case.path_parameters = {**(case.path_parameters or {}), "ref": ref}
        if path == "/v1/events":
            bounded(case)
        response = case.call_and_validate(base_url=BASE, session=session, checks=CHECKS,
                                          timeout=20)
        COUNT["cases"] += 1
        if response.status_code >= 400:
            error = json.loads(response.content)["error"]
            assert error["code"] in _BY_CODE and error["message"], (case, error)

    run()


def test_zz_report_the_count() -> None:
    print(f"\nschemathesis: {COUNT['cases']} cases, 0 answers 5xx or off the document")
    assert COUNT["cases"] > 0
