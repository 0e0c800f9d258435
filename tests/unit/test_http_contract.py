"""The API's HTTP contract over a real socket (issue 14): 405 with Allow, HEAD, a Server
header naming cnm, unknown query parameters refused by name, a JSON body on every error;
and the answers of the real server validated against openapi.yaml."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cnm import __version__, limits
from cnm.api.server import ROUTES
from tests.unit.test_http_limits import Daemon, daemon  # noqa: F401 - the fixture
from tests.unit.test_openapi import _template, operation, response_schema, violations


def request(d: Daemon, method: str, path: str, body: Any = None,
            ) -> tuple[int, dict[str, Any], bytes]:
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
    if data:
        head += "Content-Type: application/json\r\n"
    return d.exchange(head.encode() + b"\r\n" + data)


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/v1/networks", "GET, HEAD, POST"),
    ("DELETE", "/v1/_ping", "GET, HEAD"),
    ("POST", "/v1/networks/web", "DELETE, GET, HEAD"),
    ("PATCH", "/v1/sandboxes", "GET, HEAD, POST"),  # a method http.server does not know
])
def test_a_method_the_path_lacks_is_405_with_allow(daemon: Daemon, method: str, path: str,  # noqa: F811
                                                   allow: str) -> None:
    status, headers, body = request(daemon, method, path)
    assert status == 405
    assert headers["allow"] == allow
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] in ("method-not-allowed", "invalid-argument")


def test_head_is_get_without_the_body(daemon: Daemon) -> None:  # noqa: F811
    request(daemon, "POST", "/v1/networks", {"name": "web"})
    for path in ("/v1/networks", "/v1/networks/web", "/v1/_ping", "/v1/openapi"):
        g_status, g_headers, g_body = request(daemon, "GET", path)
        with daemon.connect() as s:
            s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            s.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(65536)
                assert chunk
                head += chunk
        lines = head.partition(b"\r\n\r\n")[0].decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        assert int(lines[0].split()[1]) == g_status == 200
        assert headers["content-length"] == str(len(g_body))
        assert head.partition(b"\r\n\r\n")[2] == b""  # no body after the headers
    status, headers, _ = request(daemon, "GET", "/v1/networks/nope")
    assert status == 404


def test_head_of_a_path_without_get_is_405(daemon: Daemon) -> None:  # noqa: F811
    with daemon.connect() as s:
        s.sendall(b"HEAD /v1/firewall/reload HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        head = s.recv(65536)
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: POST\r\n" in head


def test_the_server_header_names_cnm(daemon: Daemon) -> None:  # noqa: F811
    for method, path in (("GET", "/v1/_ping"), ("GET", "/v1/nope"), ("PUT", "/v1/info")):
        _, headers, _ = request(daemon, method, path)
        assert headers["server"] == f"cnm/{__version__}"


@pytest.mark.parametrize("method, path, body, needle", [
    ("GET", "/v1/networks?colour=red", None, "unknown query parameter 'colour' on GET "
     "/v1/networks"),
    ("POST", "/v1/networks?dryrun=true", {"name": "x"}, "unknown query parameter 'dryrun'"),
    ("DELETE", "/v1/sandboxes/a?dry_run=true", None, "unknown query parameter 'dry_run'"),
    ("GET", "/v1/_ping?x", None, "unknown query parameter 'x'"),
])
def test_unknown_query_parameters_are_refused_by_name(
        daemon: Daemon, method: str, path: str, body: Any, needle: str) -> None:  # noqa: F811
    status, _, raw = request(daemon, method, path, body)
    err = json.loads(raw)["error"]
    assert status == 400 and needle in err["message"]
    # Nothing was done: no network "x".
    _, _, nets = request(daemon, "GET", "/v1/networks")
    assert "x" not in {n["name"] for n in json.loads(nets)}


def test_the_documented_query_parameters_are_taken(daemon: Daemon) -> None:  # noqa: F811
    status, _, raw = request(daemon, "POST", "/v1/networks?dry_run=true", {"name": "x"})
    assert status == 200 and json.loads(raw)["dry_run"] is True
    request(daemon, "POST", "/v1/sandboxes", {"name": "a", "network": "none"})
    status, _, _ = request(daemon, "DELETE", "/v1/sandboxes/a?force=true")
    assert status == 200


def test_the_real_servers_answers_match_the_document(daemon: Daemon) -> None:  # noqa: F811
    """A scripted session over the socket; every answer checked against its documented
    schema (status and body)."""
    script: list[tuple[str, str, Any]] = [
        ("GET", "/v1/_ping", None), ("GET", "/v1/info", None),
        ("POST", "/v1/networks", {"name": "web", "subnets": ["10.5.0.0/24"],
                                  "labels": {"a": "b"}}),
        ("POST", "/v1/networks", {"name": "web"}),               # 409
        ("POST", "/v1/networks", {"name": "bad name"}),          # 400
        ("POST", "/v1/sandboxes", {"name": "s", "network": "web", "ports": ["8080:80"]}),
        ("POST", "/v1/networks/web/endpoints", {"name": "spare"}),
        ("GET", "/v1/networks", None), ("GET", "/v1/networks/web", None),
        ("GET", "/v1/sandboxes", None), ("GET", "/v1/sandboxes/s", None),
        ("GET", "/v1/endpoints", None), ("GET", "/v1/endpoints/spare", None),
        ("GET", "/v1/sandboxes/s/ports", None),
        ("GET", "/v1/networks/nope", None),                      # 404
        ("DELETE", "/v1/networks/web", None),                    # 409: in use
        ("DELETE", "/v1/endpoints/spare", None),
        ("DELETE", "/v1/sandboxes/s", None), ("DELETE", "/v1/networks/web", None),
    ]
    seen = set()
    for method, path, body in script:
        status, headers, raw = request(daemon, method, path, body)
        assert headers["content-type"] == "application/json"
        template = _template(method, path)
        problems = violations(json.loads(raw), response_schema(method, template, status))
        assert problems == [], (method, path, status)
        seen.add(status)
    assert seen >= {200, 201, 400, 404, 409}


@pytest.mark.parametrize("method, path", [(m, p) for m, p, _ in ROUTES
                                          if "requestBody" in operation(m, p)])
def test_a_body_over_the_limit_is_the_documented_413(daemon: Daemon, method: str,  # noqa: F811
                                                     path: str) -> None:
    """Each route that reads a body documents the 413 it gets, answered before the body is
    read (none is sent here)."""
    target = path.replace("{ref}", "x")
    head = (f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {limits.MAX_BODY + 1}\r\n\r\n")
    status, _, raw = daemon.exchange(head.encode())
    assert status == 413
    payload = json.loads(raw)
    assert payload["error"]["code"] == "too-large"
    assert violations(payload, response_schema(method, path, status)) == []
