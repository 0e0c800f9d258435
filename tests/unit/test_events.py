"""GET /v1/events over a real socket (the API server on the fake kernel): a consumer sees
every change of a scripted sequence, in order; a consumer that does not read loses its
stream and never stalls the daemon; since, until and filters."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

import pytest

from cnm.client import Client
from cnm.errors import CnmError
from tests.unit.test_http_limits import Daemon, daemon  # noqa: F401 - the fixture


def consume(path: str, query: str, out: list[dict[str, Any]],
            errors: list[Exception]) -> threading.Thread:
    def run() -> None:
        try:
            out.extend(Client(f"unix://{path}").stream("/v1/events" + query))
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


SCRIPT = [
    ("POST", "/v1/networks", {"name": "web", "subnets": ["10.8.0.0/24"]}),
    ("POST", "/v1/sandboxes", {"name": "a", "network": "web"}),
    ("POST", "/v1/sandboxes", {"name": "b", "network": "none"}),
    ("POST", "/v1/networks/web/endpoints", {"name": "spare"}),
    ("POST", "/v1/networks/none/disconnect", {"sandbox": "b"}),
    ("POST", "/v1/networks/web/connect", {"sandbox": "b"}),
    ("POST", "/v1/networks/web/connect?dry_run=true", {"sandbox": "a"}),  # no event
    ("POST", "/v1/sandboxes/a/ports", {"ports": ["8080:80"]}),
    ("DELETE", "/v1/sandboxes/a/ports/tcp/8080", None),
    ("POST", "/v1/networks/web/disconnect", {"sandbox": "b"}),
    ("POST", "/v1/endpoints/spare/join", {"sandbox": "b"}),
    ("POST", "/v1/endpoints/spare/leave", None),
    ("DELETE", "/v1/endpoints/spare", None),
    ("DELETE", "/v1/sandboxes/a", None),
    ("DELETE", "/v1/sandboxes/b", None),
    ("POST", "/v1/networks", {"name": "web"}),  # refused (it exists): no event
    ("DELETE", "/v1/networks/web", None),
    ("POST", "/v1/networks", {"name": "db"}),
    ("POST", "/v1/networks/prune", None),
]
EXPECTED = [
    ("network", "create", "web"), ("sandbox", "create", "a"), ("sandbox", "create", "b"),
    ("endpoint", "create", "spare"), ("endpoint", "disconnect", "b"),
    ("endpoint", "connect", "b"), ("port", "publish", "a"), ("port", "unpublish", "a"),
    ("endpoint", "disconnect", "b"), ("endpoint", "join", "spare"),
    ("endpoint", "leave", "spare"), ("endpoint", "remove", "spare"),
    ("sandbox", "remove", "a"), ("sandbox", "remove", "b"),
    ("network", "remove", "web"), ("network", "create", "db"), ("network", "remove", "db"),
]


def play(path: str) -> None:
    c = Client(f"unix://{path}")
    for method, target, body in SCRIPT:
        with contextlib.suppress(CnmError):  # the refused steps are part of the script
            c.call(method, target, body)
    c.close()


def test_a_consumer_sees_every_change_in_order(daemon: Daemon) -> None:  # noqa: F811
    seen: list[dict[str, Any]] = []
    errors: list[Exception] = []
    start = time.time()
    # Subscribed before the script runs or not: since= covers the gap, without a double.
    t = consume(daemon.path, f"?since={start}", seen, errors)
    play(daemon.path)
    end = time.time()
    # A second consumer, after the fact, from the kept events; until= ends both.
    later: list[dict[str, Any]] = []
    consume(daemon.path, f"?since={start}&until={end}", later, errors).join(20)
    assert [(e["type"], e["action"], e["name"]) for e in later] == EXPECTED
    daemon.server.controller.events.publish("network", "create", "x", "after", driver="x")
    t.join(0.1)
    assert t.is_alive()  # the live stream goes on until the client closes it
    assert not errors
    assert [(e["type"], e["action"], e["name"]) for e in seen][:len(EXPECTED)] == EXPECTED
    times = [e["time_nano"] for e in later]
    assert times == sorted(times)
    web = later[0]
    assert web["attributes"] == {"driver": "bridge"} and len(web["id"]) == 64
    assert later[5]["attributes"] == {"network": "web", "sandbox": "b"}
    assert later[6]["attributes"] == {"proto": "tcp", "host_port": 8080,
                                      "container_port": 80}


@pytest.mark.parametrize("query, expected", [
    ("&type=sandbox", [("sandbox", "create", "a"), ("sandbox", "create", "b"),
                       ("sandbox", "remove", "a"), ("sandbox", "remove", "b")]),
    ("&type=network&action=remove", [("network", "remove", "web"),
                                     ("network", "remove", "db")]),
    ("&name=spare&name=db", [e for e in EXPECTED if e[2] in ("spare", "db")]),
])
def test_filters(daemon: Daemon, query: str,  # noqa: F811
                 expected: list[tuple[str, str, str]]) -> None:
    start = time.time()
    play(daemon.path)
    got: list[dict[str, Any]] = []
    errors: list[Exception] = []
    consume(daemon.path, f"?since={start}&until={time.time()}{query}", got, errors).join(20)
    assert not errors
    assert [(e["type"], e["action"], e["name"]) for e in got] == expected


@pytest.mark.parametrize("query, needle", [
    ("?since=yesterday", "query parameter since='yesterday' is not a Unix time"),
    ("?colour=red", "unknown query parameter 'colour'"),
])
def test_bad_queries_are_refused_by_name(daemon: Daemon, query: str,  # noqa: F811
                                         needle: str) -> None:
    with pytest.raises(Exception) as e:
        list(Client(f"unix://{daemon.path}").stream("/v1/events" + query))
    assert needle in str(e.value)


def test_a_consumer_that_does_not_read_cannot_stall_the_daemon(daemon: Daemon) -> None:  # noqa: F811
    bus = daemon.server.controller.events
    bus._queue_size = 16  # a small queue: the point is reached quickly
    slow = socket.socket(socket.AF_UNIX)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(daemon.path)
    slow.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    fast: list[dict[str, Any]] = []
    errors: list[Exception] = []
    start = time.time()
    deadline = time.monotonic() + 10
    while len(bus._subs) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    t = consume(daemon.path, f"?since={start}&type=network", fast, errors)
    # Far more than the socket buffers and the queue hold: every call still completes.
    n = 0
    for i in range(20000):
        bus.publish("sandbox", "create", f"id{i}", "x" * 200)
    c = Client(f"unix://{daemon.path}")
    for i in range(30):
        c.call("POST", "/v1/networks", {"name": f"n{i}"})
        c.call("DELETE", f"/v1/networks/n{i}")
        n += 2
    c.close()
    # The slow consumer, reading at last, finds its stream cut with an error line.
    slow.settimeout(20)
    data = b""
    while True:
        try:
            chunk = slow.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    slow.close()
    lines = [json.loads(x) for x in data.partition(b"\r\n\r\n")[2].split(b"\n") if x.strip()]
    assert "error" in lines[-1] and "fell behind" in lines[-1]["error"]["message"]
    assert len(lines) < 20000
    # A consumer of networks only was offered only those (filters apply before its
    # queue): it kept up, and saw every one of them in order.
    deadline = time.monotonic() + 10
    while len(fast) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not errors
    assert [(e["action"], e["name"]) for e in fast] == [
        (action, f"n{i}") for i in range(30) for action in ("create", "remove")]
    assert t.is_alive()


def test_doctors_fixes_are_reconcile_events_on_the_stream(daemon: Daemon) -> None:  # noqa: F811
    c = Client(f"unix://{daemon.path}")
    c.call("POST", "/v1/networks", {"name": "web", "subnets": ["10.8.0.0/24"]})
    c.call("POST", "/v1/sandboxes", {"name": "a", "network": "web"})
    ctl = daemon.server.controller
    sb = ctl.sandbox("a")
    os.remove(os.path.join(ctl.files_dir(sb), "resolv.conf"))  # behind cnm's back
    seen: list[dict[str, Any]] = []
    errors: list[Exception] = []
    start = time.time()
    t = consume(daemon.path, f"?since={start}&type=reconcile", seen, errors)
    answer = c.call("POST", "/v1/doctor/fix")
    assert [d["kind"] for d in answer["found"]] == ["sandbox-file"] and answer["drift"] == []
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    c.close()
    assert not errors
    assert [(e["type"], e["action"], e["id"], e["name"], e["attributes"]) for e in seen] == [
        ("reconcile", "refresh", sb.id, "a", {"object": "sandbox", "reason": "sandbox-file"})]
    assert t.is_alive()
