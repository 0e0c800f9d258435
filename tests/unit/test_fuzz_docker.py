"""cnm's Docker plugin fuzzed by hypothesis: the JSON bodies of every endpoint
(Plugin.Activate, NetworkDriver.*, IpamDriver.*), shaped from the captures of a real dockerd
in tests/fixtures (after the capture's session made its networks and endpoints, so the ids
name something) with one part wild, and any JSON; through the real handler
(DockerPlugin.handle) and through its HTTP server on a unix socket (raw bodies and
Content-Length headers too). Every answer is JSON with Err (Error for IPAM) set or a
success, never a 500, an internal error or a traceback. Counted: CNM_FUZZ_EXAMPLES (300 in
CI, each test)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnm.core import Controller
from cnm.docker import wire
from cnm.docker.plugin import DockerPlugin
from cnm.docker.server import serve
from tests.unit.test_docker_plugin import TRACE, Replay, plugin_ctl  # noqa: F401 - fixture
from tests.unit.test_http_limits import read_answer

EXAMPLES = int(os.environ.get("CNM_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
COUNT = {"calls": 0, "errors": 0}
CAPTURE = [e for e in json.loads(TRACE.read_text()) if "path" in e]
UPTO = next(i for i, e in enumerate(json.loads(TRACE.read_text()))
            if e.get("mark", "").startswith("connectivity"))


@pytest.fixture
def replayed(plugin_ctl: Controller) -> tuple[DockerPlugin, Replay]:  # noqa: F811
    """A plugin after the capture's session up to its connectivity checks: networks,
    endpoints, joined sandboxes and published ports exist."""
    plugin = DockerPlugin(plugin_ctl)
    replay = Replay(plugin)
    replay.run(json.loads(TRACE.read_text())[:UPTO])
    return plugin, replay


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


NASTY = st.sampled_from(["../x", "/etc/passwd", "a/b", ".", "..", "x" * 300, "a\nb", "",
                         "$(reboot)", "10.300.0.0/24", "::/0", "0.0.0.0/0", "-1", "a" * 64,
                         "cnm-local/10.0.0.0/8", "x" * 5000, "01:00:5e:00:00:01"])
TEXT = st.one_of(NASTY, st.text(max_size=20), st.text(alphabet="0123456789abcdef./:-",
                                                      max_size=20))
JSONV = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)


def captured(replay: Replay) -> dict[str, list[Any]]:
    """The capture's bodies by method, with cnm's answers where the stub's were."""
    out: dict[str, list[Any]] = {m: [] for m in replay.plugin.calls}
    for e in CAPTURE:
        out.setdefault(e["path"].lstrip("/"), []).append(replay.swap(e["body"]))
    out["NetworkDriver.DiscoverNew"].append({"DiscoveryType": 1, "DiscoveryData": {}})
    return out


def mutated(body: Any) -> st.SearchStrategy[Any]:
    """The body, or it with one part wild: a value replaced (at the top or one level
    down), a field dropped, a field added."""
    if not isinstance(body, dict) or not body:
        return st.one_of(st.just(body), st.dictionaries(TEXT, JSONV, max_size=3))
    keys = sorted(body)

    def replace(key: str, value: Any) -> dict[str, Any]:
        return {**body, key: value}

    def deeper(key: str, sub: str, value: Any) -> dict[str, Any]:
        inner = body[key] if isinstance(body[key], dict) else {}
        return {**body, key: {**inner, sub: value}}

    subkeys = st.one_of(TEXT, st.sampled_from(sorted({k for v in body.values()
                                                       if isinstance(v, dict) for k in v}
                                                      or {"x"})))
    return st.one_of(
        st.just(body),
        st.builds(replace, st.sampled_from(keys), JSONV),
        st.builds(deeper, st.sampled_from(keys), subkeys, JSONV),
        st.sampled_from(keys).map(lambda k: {x: v for x, v in body.items() if x != k}),
        st.builds(replace, TEXT, JSONV),
    )


def bodies(replay: Replay) -> st.SearchStrategy[tuple[str, Any]]:
    shapes = captured(replay)

    def of(method: str) -> st.SearchStrategy[tuple[str, Any]]:
        seen = shapes.get(method) or [{}]
        body = st.sampled_from(seen).flatmap(mutated) if seen else st.just({})
        return st.tuples(st.just(method), st.one_of(body, body, body, JSONV))

    return st.sampled_from(sorted(replay.plugin.calls)).flatmap(of)


def check(method: str, body: Any, status: int, answer: Any) -> None:
    COUNT["calls"] += 1
    what = (method, json.dumps(body)[:300], answer)
    assert status == 200, what
    assert isinstance(answer, dict), what
    key = "Error" if method.startswith("IpamDriver.") else "Err"
    other = "Err" if key == "Error" else "Error"
    assert other not in answer, what  # each driver answers in its own field
    if key in answer:
        COUNT["errors"] += 1
        assert isinstance(answer[key], str) and answer[key], what
        assert "internal error" not in answer[key], what
        return
    if method == "IpamDriver.RequestPool":
        assert {"PoolID", "Pool"} <= set(answer), what
    elif method == "IpamDriver.RequestAddress":
        assert "/" in answer["Address"], what
    elif method == "NetworkDriver.Join":
        assert answer["InterfaceName"]["SrcName"], what


def test_any_body_to_any_call_is_an_answer_with_err_or_a_success(
        replayed: tuple[DockerPlugin, Replay]) -> None:
    plugin, replay = replayed

    @FUZZ
    @given(call=bodies(replay))
    def run(call: tuple[str, Any]) -> None:
        method, body = call
        status, answer = plugin.handle(method, body)
        check(method, body, status, json.loads(json.dumps(answer)))

    run()


@pytest.fixture
def socket_path(replayed: tuple[DockerPlugin, Replay], tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "plugins" / "cnm.sock")
    server = serve(replayed[0], path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()


def post(path: str, method: str, raw: bytes, length: str | None) -> tuple[int, Any]:
    head = f"POST /{method} HTTP/1.1\r\nHost: docker\r\nContent-Type: {wire.CONTENT_TYPE}\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)  # a guard against a hang, not a speed check
        s.connect(path)
        s.sendall(head.encode() + b"\r\n" + raw)
        status, headers, body = read_answer(s)
    assert headers["content-type"] == wire.CONTENT_TYPE
    # An answer to what followed a body sent without a length may be read with it.
    return status, json.loads(body[:int(headers["content-length"])])


def test_any_bytes_to_the_socket_are_an_answer_with_err_or_a_success(
        replayed: tuple[DockerPlugin, Replay], socket_path: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, replay = replayed
    raws = st.one_of(bodies(replay).map(lambda c: (c[0], json.dumps(c[1]).encode())),
                     st.tuples(st.sampled_from(sorted(replay.plugin.calls)),
                               st.binary(max_size=200)))

    @FUZZ
    @given(call=raws, length=st.one_of(st.none(), st.just("exact"), st.just("exact"),
                                       st.sampled_from(["abc", "-1", "", "1e3", "99999999999",
                                                        "0x10", "0"])))
    def run(call: tuple[str, bytes], length: str | None) -> None:
        method, raw = call
        exact = str(len(raw)) if length == "exact" else length
        if exact is not None and exact != str(len(raw)):
            raw = b""  # a wrong length with nothing after it: the answer must not wait
        status, answer = post(socket_path, method, raw, exact)
        COUNT["calls"] += 1
        if exact is None:  # no length: the body is none, what follows is not read as it
            check(method, None, status, answer)
            return
        honest = exact in ("", str(len(raw)))
        if honest and (not raw.strip() or _is_json(raw)):
            check(method, json.loads(raw) if raw.strip() else None, status, answer)
            return
        assert status == (200 if honest else 400), (method, raw, exact, status, answer)
        key = "Error" if method.startswith("IpamDriver.") else "Err"
        assert set(answer) == {key} and answer[key], (method, raw, exact, answer)
        assert "internal error" not in answer[key], (method, raw, exact, answer)

    run()
    # http.server prints what escapes a handler on stderr, not in the log.
    assert "Traceback" not in capsys.readouterr().err


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
        return True
    except ValueError:
        return False


def test_zz_report_the_count() -> None:
    print(f"\nDocker plugin fuzz: {COUNT['calls']} calls, {COUNT['errors']} answered with "
          "Err/Error, 0 internal errors or tracebacks")
    assert COUNT["calls"] > 0
