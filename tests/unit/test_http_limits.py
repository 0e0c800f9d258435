"""The API's HTTP edge over a real socket: bodies over the limit refused before they are
read, malformed requests answered with a typed JSON error (never HTML, never silence, never
a traceback in the log), connections bounded and timed out."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnm import limits, wiring
from cnm.api import server as api_server
from cnm.core import Config
from cnm.testing import FakeHostLinks, FakeKernel, FakeNft, FakeSandboxLinks


class Daemon:
    def __init__(self, path: str, srv: Any) -> None:
        self.path, self.server = path, srv

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(20)  # a guard against a hang, not a speed check
        s.connect(self.path)
        return s

    def exchange(self, data: bytes) -> tuple[int, dict[str, Any], bytes]:
        """Send raw bytes, read one answer: (status, headers, body)."""
        with self.connect() as s:
            s.sendall(data)
            return read_answer(s)


def read_answer(s: socket.socket) -> tuple[int, dict[str, Any], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"the server closed without an answer (got {buf!r})"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk
        body += chunk
    return status, headers, body


@pytest.fixture
def daemon(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Daemon]:
    kernel = FakeKernel()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    config = Config(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                    host_netns=str(tmp_path / "host-netns"), resolv_conf=str(resolv))
    built = wiring.build(config, wiring.Adapters(FakeHostLinks(kernel),
                                                 FakeSandboxLinks(kernel), FakeNft()))
    path = str(tmp_path / "api.sock")
    srv = api_server.serve(built.controller, path)
    worker = threading.Thread(target=srv.serve_forever, daemon=True)
    worker.start()
    caplog.set_level(logging.DEBUG)
    try:
        yield Daemon(path, srv)
    finally:
        srv.shutdown()
        srv.server_close()
        built.close()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, f"tracebacks in the log: {[r.getMessage() for r in tracebacks]}"


def error_of(status: int, headers: dict[str, Any], body: bytes) -> tuple[int, str]:
    assert headers["content-type"] == "application/json", body
    return status, json.loads(body)["error"]["code"]


def post(path: str, body: bytes, length: str | None = None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n"
    head += f"Content-Length: {len(body) if length is None else length}\r\n"
    return (head + "\r\n").encode() + body


def test_a_body_over_the_limit_is_refused_before_it_is_read(daemon: Daemon) -> None:
    # Only the headers are sent: an answer proves the server did not wait for the body.
    status, headers, body = daemon.exchange(post("/v1/networks", b"",
                                                 str(limits.MAX_BODY + 1)))
    assert error_of(status, headers, body) == (413, "too-large")
    assert str(limits.MAX_BODY) in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", " ", "99999999999999999999"])
def test_a_content_length_that_is_not_a_number_of_bytes_is_a_400(daemon: Daemon,
                                                                 length: str) -> None:
    status, headers, body = daemon.exchange(post("/v1/networks", b"{}", length))
    assert error_of(status, headers, body)[0] in (400, 413)
    assert json.loads(body)["error"]["code"] in ("invalid-argument", "too-large")


def test_a_chunked_body_is_refused(daemon: Daemon) -> None:
    req = (b"POST /v1/networks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"2\r\n{}\r\n0\r\n\r\n")
    assert error_of(*daemon.exchange(req)) == (400, "invalid-argument")


def test_a_body_nested_100000_deep_is_a_400(daemon: Daemon) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    status, headers, body = daemon.exchange(post("/v1/networks", deep))
    assert error_of(status, headers, body) == (400, "invalid-argument")
    assert "deeper" in json.loads(body)["error"]["message"]


def test_a_100_mb_label_is_refused_by_size(daemon: Daemon) -> None:
    big = json.dumps({"name": "n", "labels": {"x": "y" * 100_000_000}}).encode()
    with daemon.connect() as s:
        s.sendall(post("/v1/networks", b"", str(len(big))))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(big[:1_000_000])  # the rest is never needed: the answer is there
        assert error_of(*read_answer(s)) == (413, "too-large")


@pytest.mark.parametrize("field,value,words", [
    ("labels", {f"k{i}": "v" for i in range(limits.LABELS.count + 1)}, "'labels'"),
    ("labels", {"k": "v" * (limits.LABELS.length + 1)}, "'labels'"),
    ("labels", {"k" * (limits.LABELS.key + 1): "v"}, "'labels'"),
    ("subnets", [f"10.{i // 256}.{i % 256}.0/24" for i in range(10_000)], "'subnets'"),
    ("options", {f"o{i}": "v" for i in range(limits.OPTIONS.count + 1)}, "'options'"),
])
def test_every_field_has_a_bound(daemon: Daemon, field: str, value: Any, words: str) -> None:
    raw = json.dumps({"name": "n", field: value}).encode()
    status, headers, body = daemon.exchange(post("/v1/networks", raw))
    assert error_of(status, headers, body) == (400, "invalid-argument")
    assert words in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("field,count", [("aliases", limits.ALIASES.count + 1),
                                         ("ports", limits.PORTS.count + 1)])
def test_aliases_and_ports_have_a_count_bound(daemon: Daemon, field: str, count: int) -> None:
    items = [f"a{i}" for i in range(count)] if field == "aliases" else \
        [str(1000 + i) for i in range(count)]
    raw = json.dumps({"sandbox": "s", field: items}).encode()
    status, headers, body = daemon.exchange(post("/v1/networks/bridge/connect", raw))
    assert error_of(status, headers, body) == (400, "invalid-argument")
    assert f"'{field}'" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("request_line,status", [
    (b"GET / HTTP/9.9", 400),
    (b"GET /v1/_ping HTTP/1.x", 400),
    (b"BREW /v1/_ping HTTP/1.1", 405),
    (b"PATCH /v1/networks HTTP/1.1", 405),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1", 414),
])
def test_malformed_requests_get_a_typed_json_error(daemon: Daemon, request_line: bytes,
                                                   status: int) -> None:
    got, headers, body = daemon.exchange(request_line + b"\r\nHost: x\r\n\r\n")
    assert got == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] in ("invalid-argument", "too-large")


def test_a_port_of_5000_digits_and_a_negative_port_are_400(daemon: Daemon) -> None:
    for spec in ("9" * 5000, "-1:80"):
        sb = json.dumps({"name": "s", "network": "none"}).encode()
        daemon.exchange(post("/v1/sandboxes", sb))
        raw = json.dumps({"sandbox": "s", "ports": [spec]}).encode()
        status, _, body = daemon.exchange(post("/v1/networks/bridge/connect", raw))
        assert status == 400, body


def test_a_client_that_leaves_mid_answer_leaves_no_traceback(daemon: Daemon) -> None:
    for _ in range(20):
        with daemon.connect() as s:
            s.sendall(b"GET /v1/openapi HTTP/1.1\r\nHost: x\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # the fixture checks the log for tracebacks; the daemon still answers:
    status, _, _ = daemon.exchange(b"GET /v1/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200


def test_past_the_connection_bound_the_next_is_answered_503(daemon: Daemon) -> None:
    daemon.server.max_connections = 5
    held = [daemon.connect() for _ in range(5)]
    try:
        for s in held:  # each is being served (counted) once it answered a request
            s.sendall(b"GET /v1/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(s)[0] == 200
        with daemon.connect() as extra:  # answered at once, before it sends anything
            assert error_of(*read_answer(extra)) == (503, "unavailable")
    finally:
        for s in held:
            s.close()


def test_an_idle_or_half_sent_connection_is_closed_and_others_are_served(
        daemon: Daemon) -> None:
    """A slowloris: 500 sockets, half of them idle, half with half a request; a new client
    is still served, and the server closes every one of them once they time out."""
    daemon.server.idle_timeout = 0.5
    loris = [daemon.connect() for _ in range(500)]
    try:
        for s in loris[::2]:
            s.sendall(b"POST /v1/networks HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
        status, _, _ = daemon.exchange(b"GET /v1/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
        for s in loris:
            s.settimeout(30)  # a guard: the server must close it long before
            while s.recv(4096):
                pass  # a 400 for the half-sent body, then the close
    finally:
        for s in loris:
            s.close()
