"""The REST/JSON API under /v1/, served over a unix socket.

One route table; request bodies are checked against field tables read from the OpenAPI
document (openapi.yaml), which a unit test keeps equal to the routes and the responses.
Errors leave here in one shape, ``{"error": {"code", "message", "hint"?}}``, with the HTTP
status from cnm.errors.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import re
import socket
import socketserver
import ssl
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from cnm import __version__, limits
from cnm.api import views
from cnm.core import Controller
from cnm.errors import (
    CnmError,
    Internal,
    InvalidArgument,
    MethodNotAllowed,
    NotFound,
    TooLarge,
    Unavailable,
    from_errno,
    http_status,
)
from cnm.model import ConnectSpec, EndpointSpec, NetworkSpec, SandboxSpec
from cnm.portspec import PortMapping

log = logging.getLogger("cnm.api")

@functools.cache
def _document() -> Any:
    """openapi.yaml parsed once (read-only: the field tables below are built from it at
    import, and parsing it for each cost cnmd 0.6 s of start-up, 17 s in the VM tier)."""
    import yaml

    with open(os.path.join(os.path.dirname(__file__), "openapi.yaml")) as f:
        return yaml.safe_load(f)


def openapi_document() -> Any:
    """The API's OpenAPI document (a copy: callers may change it)."""
    return copy.deepcopy(_document())


def _fields(schema: str) -> dict[str, tuple[str, bool]]:
    """A request body's field table (name -> (type, required)), read from its schema in
    openapi.yaml: the document is the one place the API's fields are listed."""
    schemas = _document()["components"]["schemas"]
    body = schemas[schema]
    out = {}
    for name, prop in body["properties"].items():
        if "$ref" in prop:
            prop = schemas[prop["$ref"].rsplit("/", 1)[1]]
        out[name] = (prop["type"], name in body.get("required", ()))
    return out


# Field tables: name -> (type, required). Types: "string", "boolean", "array", "object".
NETWORK_CREATE = _fields("NetworkCreate")
CONNECT = _fields("Connect")
DISCONNECT = _fields("Disconnect")
ENDPOINT_CREATE = _fields("EndpointCreate")
JOIN = _fields("Join")
PUBLISH = _fields("Publish")
SANDBOX_CREATE = _fields("SandboxCreate")
TRACE = _fields("TraceRequest")

_PY: dict[str, type[Any]] = {"string": str, "boolean": bool, "array": list, "object": dict}


def check_body(body: Any, fields: dict[str, tuple[str, bool]], what: str) -> dict[str, Any]:
    """Refuse unknown fields, missing required ones and wrong types, naming the field."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"{what}: the request body must be a JSON object")
    for key in body:
        if key not in fields:
            raise InvalidArgument(f"{what}: unknown field {key!r}",
                                  hint="fields: " + ", ".join(fields))
    for key, (kind, required) in fields.items():
        if key not in body or body[key] is None:
            if required:
                raise InvalidArgument(f"{what}: field {key!r} is required")
            continue
        value = body[key]
        if not isinstance(value, _PY[kind]) or (kind != "boolean" and isinstance(value, bool)):
            raise InvalidArgument(f"{what}: field {key!r} must be a {kind}")
        if kind == "array" and not all(isinstance(v, str) for v in value):
            raise InvalidArgument(f"{what}: field {key!r} must be an array of strings")
        if kind == "object" and not all(isinstance(v, str) for v in value.values()):
            raise InvalidArgument(f"{what}: field {key!r} must map strings to strings")
    limits.check_body(what, body)
    return body


@dataclass(frozen=True)
class Request:
    params: dict[str, str]
    query: dict[str, list[str]]
    body: Any


Response = tuple[int, Any]
T = TypeVar("T")
Handler = Callable[[Controller, Request], Response]


def _flag(r: Request, name: str) -> bool:
    return r.query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")


def _or_plan(c: Controller, r: Request, op: Callable[[], T],
             done: Callable[[T], Response]) -> Response:
    """Do ``op``; with ?dry_run=true, answer the plan of it instead, with nothing changed."""
    if _flag(r, "dry_run"):
        _, plan = c.dry_run(op)
        return 200, {"dry_run": True, "plan": plan.to_list()}
    return done(op())


def _ping(c: Controller, r: Request) -> Response:
    return 200, {"ok": True, "version": __version__}


def _info(c: Controller, r: Request) -> Response:
    return 200, {"version": __version__, **c.info()}


def _list_networks(c: Controller, r: Request) -> Response:
    return 200, [views.network(c, n) for n in c.list_networks()]


def _create_network(c: Controller, r: Request) -> Response:
    b = check_body(r.body, NETWORK_CREATE, "network create")
    spec = NetworkSpec(
        name=b["name"], driver=b.get("driver") or "bridge",
        subnets=tuple(b.get("subnets") or ()), gateways=tuple(b.get("gateways") or ()),
        ip_ranges=tuple(b.get("ip_ranges") or ()),
        aux_addresses=dict(b.get("aux_addresses") or {}), ipv6=bool(b.get("ipv6")),
        internal=bool(b.get("internal")), options=dict(b.get("options") or {}),
        labels=dict(b.get("labels") or {}),
    )
    return _or_plan(c, r, lambda: c.create_network(spec),
                    lambda net: (201, views.network(c, net)))


def _get_network(c: Controller, r: Request) -> Response:
    return 200, views.network(c, c.network(r.params["ref"]))


def _remove_network(c: Controller, r: Request) -> Response:
    return _or_plan(c, r, lambda: c.remove_network(r.params["ref"]),
                    lambda net: (200, {"id": net.id, "name": net.name}))


def _prune_networks(c: Controller, r: Request) -> Response:
    return 200, {"removed": c.prune_networks()}


def _connect(c: Controller, r: Request) -> Response:
    b = check_body(r.body, CONNECT, "connect")
    spec = ConnectSpec(
        network=r.params["ref"], sandbox=b["sandbox"], ip=b.get("ip"), ip6=b.get("ip6"),
        aliases=tuple(b.get("aliases") or ()), mac=b.get("mac_address"),
        ports=tuple(b.get("ports") or ()), ifname=b.get("ifname") or "",
    )
    return _or_plan(c, r, lambda: c.connect(spec), lambda ep: (201, views.endpoint(c, ep)))


def _disconnect(c: Controller, r: Request) -> Response:
    b = check_body(r.body, DISCONNECT, "disconnect")
    return _or_plan(c, r, lambda: c.disconnect(r.params["ref"], b["sandbox"]),
                    lambda ep: (200, {"id": ep.id}))


def _create_endpoint(c: Controller, r: Request) -> Response:
    b = check_body(r.body, ENDPOINT_CREATE, "endpoint create")
    ep = c.create_endpoint(EndpointSpec(
        network=r.params["ref"], name=b["name"], ip=b.get("ip"), ip6=b.get("ip6"),
        aliases=tuple(b.get("aliases") or ()), mac=b.get("mac_address"),
        ports=tuple(b.get("ports") or ()),
    ))
    return 201, views.endpoint(c, ep)


def _list_endpoints(c: Controller, r: Request) -> Response:
    return 200, [views.endpoint(c, e) for e in c.list_endpoints()]


def _get_endpoint(c: Controller, r: Request) -> Response:
    return 200, views.endpoint(c, c.endpoint(r.params["ref"]))


def _join(c: Controller, r: Request) -> Response:
    b = check_body(r.body, JOIN, "join")
    return _or_plan(c, r, lambda: c.join(r.params["ref"], b["sandbox"], b.get("ifname") or ""),
                    lambda ep: (200, views.endpoint(c, ep)))


def _leave(c: Controller, r: Request) -> Response:
    check_body(r.body, {}, "leave")
    return _or_plan(c, r, lambda: c.leave(r.params["ref"]),
                    lambda ep: (200, views.endpoint(c, ep)))


def _delete_endpoint(c: Controller, r: Request) -> Response:
    ep = c.delete_endpoint(r.params["ref"])
    return 200, {"id": ep.id, "name": ep.name}


def _list_sandboxes(c: Controller, r: Request) -> Response:
    return 200, [views.sandbox(c, s) for s in c.list_sandboxes()]


def _create_sandbox(c: Controller, r: Request) -> Response:
    b = check_body(r.body, SANDBOX_CREATE, "sandbox create")
    sb = c.create_sandbox(SandboxSpec(
        name=b["name"], network=b.get("network") or "bridge", ip=b.get("ip"),
        ip6=b.get("ip6"), aliases=tuple(b.get("aliases") or ()),
        ports=tuple(b.get("ports") or ()), hostname=b.get("hostname"),
        mac=b.get("mac_address"), labels=dict(b.get("labels") or {}),
        netns=b.get("netns"), ifname=b.get("ifname") or "",
    ))
    return 201, views.sandbox(c, sb)


def _get_sandbox(c: Controller, r: Request) -> Response:
    return 200, views.sandbox(c, c.sandbox(r.params["ref"]))


def _remove_sandbox(c: Controller, r: Request) -> Response:
    force = _flag(r, "force")
    sb = c.remove_sandbox(r.params["ref"], force=force)
    return 200, {"id": sb.id, "name": sb.name}


def _mapping(network: str, m: PortMapping) -> dict[str, object]:
    return {"network": network, **m.to_dict()}


def _list_ports(c: Controller, r: Request) -> Response:
    return 200, [_mapping(n, m) for n, m in c.ports(r.params["ref"])]


def _publish(c: Controller, r: Request) -> Response:
    b = check_body(r.body, PUBLISH, "publish")
    if not b.get("ports"):
        raise InvalidArgument("publish: field 'ports' must name at least one port")
    network = c.publishing_network(r.params["ref"], b.get("network"))
    added = c.publish(r.params["ref"], b["ports"], b.get("network"))
    return 201, [_mapping(network, m) for m in added]


def _unpublish(c: Controller, r: Request) -> Response:
    port = r.params["port"]
    if not port.isdecimal() or not 1 <= int(port) <= 65535:
        raise InvalidArgument(f"invalid port {port!r}: expected 1-65535")
    gone = c.unpublish(r.params["ref"], int(port), r.params["proto"])
    return 200, [m.to_dict() for m in gone]


def _trace(c: Controller, r: Request) -> Response:
    from cnm import trace

    b = check_body(r.body, TRACE, "trace")
    return 200, trace.result(c.trace(r.params["ref"], b["destination"]))


def _reload_firewall(c: Controller, r: Request) -> Response:
    return 200, c.reload_firewall()


def _doctor(c: Controller, r: Request) -> Response:
    return 200, {"drift": [d.to_dict() for d in c.doctor()]}


def _doctor_fix(c: Controller, r: Request) -> Response:
    found, left, errors = c.doctor_fix()
    return 200, {"found": [d.to_dict() for d in found], "drift": [d.to_dict() for d in left],
                 "errors": [{"code": e.code, "message": e.message,
                             **({"hint": e.hint} if e.hint else {})} for e in errors]}


class EventStream:
    """The answer of GET /v1/events: the handler writes its events a line each."""

    def __init__(self, events: Any) -> None:
        self.events = events


def _number(r: Request, name: str) -> float | None:
    values = r.query.get(name)
    if not values:
        return None
    try:
        return float(values[-1])
    except ValueError:
        raise InvalidArgument(f"query parameter {name}={values[-1]!r} is not a Unix time",
                              hint="seconds since 1970, e.g. 1764680000 or 1764680000.5"
                              ) from None


def _events(c: Controller, r: Request) -> Response:
    since, until = _number(r, "since"), _number(r, "until")
    filters = {k: v for k, v in r.query.items() if k in ("type", "action", "name", "id")}
    return 200, EventStream(c.events.stream(since, until, filters))


def _openapi(c: Controller, r: Request) -> Response:
    return 200, _document()


ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/v1/_ping", _ping),
    ("GET", "/v1/info", _info),
    ("GET", "/v1/openapi", _openapi),
    ("GET", "/v1/networks", _list_networks),
    ("POST", "/v1/networks", _create_network),
    ("POST", "/v1/networks/prune", _prune_networks),
    ("GET", "/v1/networks/{ref}", _get_network),
    ("DELETE", "/v1/networks/{ref}", _remove_network),
    ("POST", "/v1/networks/{ref}/connect", _connect),
    ("POST", "/v1/networks/{ref}/disconnect", _disconnect),
    ("POST", "/v1/networks/{ref}/endpoints", _create_endpoint),
    ("GET", "/v1/endpoints", _list_endpoints),
    ("GET", "/v1/endpoints/{ref}", _get_endpoint),
    ("DELETE", "/v1/endpoints/{ref}", _delete_endpoint),
    ("POST", "/v1/endpoints/{ref}/join", _join),
    ("POST", "/v1/endpoints/{ref}/leave", _leave),
    ("GET", "/v1/sandboxes", _list_sandboxes),
    ("POST", "/v1/sandboxes", _create_sandbox),
    ("GET", "/v1/sandboxes/{ref}", _get_sandbox),
    ("DELETE", "/v1/sandboxes/{ref}", _remove_sandbox),
    ("GET", "/v1/sandboxes/{ref}/ports", _list_ports),
    ("POST", "/v1/sandboxes/{ref}/ports", _publish),
    ("DELETE", "/v1/sandboxes/{ref}/ports/{proto}/{port}", _unpublish),
    ("POST", "/v1/sandboxes/{ref}/trace", _trace),
    ("POST", "/v1/firewall/reload", _reload_firewall),
    ("GET", "/v1/doctor", _doctor),
    ("POST", "/v1/doctor/fix", _doctor_fix),
    ("GET", "/v1/events", _events),
]

_COMPILED = [
    (method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"), path, fn)
    for method, path, fn in ROUTES
]


def route(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    fn, params, _ = _match(method, path)
    return fn, params


# ------------------------------------------------------------------ the HTTP contract
# (issue 14) A method a path does not have is 405 with Allow; HEAD is GET without the
# body; a query parameter the document does not list for the route is refused by name; the
# Server header names cnm and its version.
def _match(method: str, path: str) -> tuple[Handler, dict[str, str], str]:
    """The handler, path parameters and route template of a request."""
    for m, rx, template, fn in _COMPILED:
        match = rx.match(path)
        if match and m == method:
            return fn, {k: unquote(v) for k, v in match.groupdict().items()}, template
    allow = allowed(path)
    if allow:
        raise MethodNotAllowed(f"method {method} is not allowed on {path}",
                               hint="allowed: " + ", ".join(allow))
    raise NotFound(f"no such API path: {method} {path}")


def allowed(path: str) -> list[str]:
    """The methods ``path`` answers (HEAD wherever GET is); none for an unknown path."""
    methods = {m for m, rx, _, _ in _COMPILED if rx.match(path)}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _query_parameters() -> dict[tuple[str, str], tuple[str, ...]]:
    """(method, template) -> the query parameters the document lists for it."""
    doc = _document()
    shared = doc["components"]["parameters"]
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            params = [shared[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                      for p in item.get("parameters", []) + op.get("parameters", [])]
            out[(method.upper(), path)] = tuple(p["name"] for p in params
                                                if p["in"] == "query")
    return out


QUERY = _query_parameters()


def check_query(method: str, template: str, query: dict[str, list[str]]) -> None:
    known = QUERY.get((method, template), ())
    for name in query:
        if name not in known:
            raise InvalidArgument(
                f"unknown query parameter {name!r} on {method} {template}",
                hint=("parameters: " + ", ".join(known)) if known else "it takes none")


def _depth(raw: bytes) -> int:
    """How deep a JSON text nests, counted without parsing it (brackets outside strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def _json(raw: bytes) -> Any:
    if _depth(raw) > limits.MAX_DEPTH:
        raise InvalidArgument(f"the request body nests deeper than {limits.MAX_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidArgument("the request body is not valid JSON") from None


def dispatch(c: Controller, method: str, target: str, raw: bytes) -> Response:
    """Route one request and turn every outcome into (status, JSON payload)."""
    try:
        parts = urlsplit(target)
        fn, params, template = _match(method, parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        check_query(method, template, query)
        body: Any = None
        if raw:
            body = _json(raw)
        elif method == "POST":
            body = {}
        return fn(c, Request(params, query, body))
    except CnmError as e:
        return http_status(e), {"error": e.to_dict()}
    except OSError as e:  # the system's limits (files, memory), not a bug of ours
        err = from_errno(e.errno or 0, f"{method} {urlsplit(target).path}")
        log.error("%s", err.message)
        return http_status(err), {"error": err.to_dict()}
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into a 500
        log.exception("internal error on %s %s", method, target)
        return 500, {"error": Internal(f"internal error: {e}").to_dict()}


_LENGTH_RE = re.compile(r"[0-9]{1,12}")
# What http.server's own refusals (send_error) become: a typed 4xx in the one error shape.
_REFUSALS = {
    HTTPStatus.NOT_IMPLEMENTED: HTTPStatus.METHOD_NOT_ALLOWED,     # an unknown method
    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: HTTPStatus.BAD_REQUEST,  # HTTP/2 and later
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # A connection may sit idle (or send half a request) this long between two reads,
        # then it is closed: no client holds a thread for ever.
        self.connection.settimeout(self.server.idle_timeout)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, ssl.SSLError) as e:
            # A client that went away, stalled or spoke no TLS is no fault of ours.
            log.debug("connection closed: %s", e)
            self.close_connection = True

    def _body(self) -> bytes:
        """The request body, refused before it is read when its length is not a plain
        number of bytes or over cnm.limits.MAX_BODY."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise InvalidArgument("chunked request bodies are not accepted",
                                  hint="send the body with a Content-Length")
        given = self.headers.get_all("Content-Length") or []
        if not given:
            return b""
        if len(set(given)) != 1 or not _LENGTH_RE.fullmatch(given[0].strip()):
            raise InvalidArgument(f"Content-Length {', '.join(given)!r} is not a number of "
                                  "bytes")
        length = int(given[0])
        if length > limits.MAX_BODY:
            raise TooLarge(f"the request body is {length} bytes; at most {limits.MAX_BODY} "
                           "are accepted")
        raw = self.rfile.read(length) if length else b""
        if len(raw) != length:
            raise InvalidArgument(f"the request body ended after {len(raw)} of {length} bytes")
        return raw

    def _serve(self) -> None:
        try:
            raw = self._body()
        except CnmError as e:
            self.close_connection = True  # the rest of what it sent is not a request
            self._reply(http_status(e), {"error": e.to_dict()})
            return
        started = time.monotonic()
        status, payload = dispatch(self.server.controller, self.command, self.path, raw)
        if self.command not in ("GET", "HEAD"):
            self._log_change(status, payload, time.monotonic() - started)
        if isinstance(payload, EventStream):
            self._stream(payload)
            return
        self._reply(status, payload)

    def _stream(self, stream: EventStream) -> None:
        """Events a line each, flushed as they come, until the stream ends or the client
        goes (seen at the next write; the stream writes a newline every second it has
        nothing, for that)."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for event in stream.events:
                self.wfile.write(b"\n" if event is None else json.dumps(event).encode() + b"\n")
                self.wfile.flush()
        except OSError:  # the client went away
            pass
        finally:
            stream.events.close()

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        if self.request_version == "HTTP/0.9":  # never spoken here: answer with headers
            self.request_version = "HTTP/1.0"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            allow = allowed(urlsplit(getattr(self, "path", "") or "").path)
            if allow:
                self.send_header("Allow", ", ".join(allow))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

    def _log_change(self, status: int, payload: Any, took: float) -> None:
        """One INFO line per call that changes something: who, what, result, duration."""
        who = "unknown"
        with contextlib.suppress(OSError, AttributeError):
            pid, uid, gid = struct.unpack(
                "3i", self.connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            who = f"uid={uid} pid={pid}"
        error = payload.get("error") if isinstance(payload, dict) else None
        result = f"{status} {error['code']}" if isinstance(error, dict) else str(status)
        log.info("%s %s %s -> %s in %.1f ms", who, self.command, self.path, result,
                 took * 1000, extra={"fields": {
                     "who": who, "method": self.command, "path": self.path,
                     "status": status, "ms": round(took * 1000, 2)}})

    def do_HEAD(self) -> None:
        """GET's status and headers (its Content-Length too), without the body."""
        path = urlsplit(self.path).path
        if "GET" not in allowed(path):
            self._serve()  # 404 or 405 with Allow, in headers only
            return
        status, payload = dispatch(self.server.controller, "GET", self.path, b"")
        self._reply(status, payload)

    def version_string(self) -> str:
        return f"cnm/{__version__}"

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's refusals (a malformed request line, headers too long, an unknown
        method) in the API's error shape instead of its HTML page."""
        status = _REFUSALS.get(HTTPStatus(code), HTTPStatus(code))
        err: CnmError = (TooLarge if status in (HTTPStatus.REQUEST_URI_TOO_LONG,
                                               HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                         else InvalidArgument)(message or status.phrase)
        self.close_connection = True
        self._reply(status, {"error": err.to_dict()})

    do_GET = do_POST = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # Called before the request line is parsed too (a refusal): no command yet.
        log.debug("%s %s: %s", getattr(self, "command", None), getattr(self, "path", None),
                  format % args)

    def address_string(self) -> str:
        return "unix" if isinstance(self.client_address, str | bytes) else \
            str(self.client_address[0])


def quiet_handle_error(server: socketserver.BaseServer, request: Any,
                       client_address: Any) -> None:
    """A socketserver's ``handle_error`` for cnm's servers: a client's socket error is not a
    bug (logged at debug), anything else is logged with its traceback, under the logger of
    the server's own module."""
    err = sys.exc_info()[1]
    logger = logging.getLogger(getattr(server, "logger_name", "cnm.api"))
    if isinstance(err, OSError):
        logger.debug("connection error: %s", err)
    else:
        logger.exception("error serving a connection")


class _Limits:
    """Bounded connections for a threading server: at most ``max_connections`` at once
    (each holds a thread), the next answered 503 and closed; each times out when idle."""

    max_connections = 1024
    idle_timeout = 30.0

    def _init_limits(self) -> None:
        self._active = 0
        self._count = threading.Lock()

    @property
    def active(self) -> int:
        return self._active

    def _take(self) -> bool:
        with self._count:
            if self._active >= self.max_connections:
                return False
            self._active += 1
            return True

    def _give(self) -> None:
        with self._count:
            self._active -= 1

    def _refuse(self, request: socket.socket) -> None:
        err = Unavailable(f"cnmd serves at most {self.max_connections} connections at once",
                          hint="try again; close idle connections")
        data = json.dumps({"error": err.to_dict()}).encode()
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        request.setblocking(False)  # the accept loop never waits on a client
        with contextlib.suppress(OSError):
            request.send(head + data)
        with contextlib.suppress(OSError):
            request.close()
        log.warning("refused a connection: %d are open", self._active)


class _Server(_Limits, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = False
    # socketserver's default backlog of 5 makes a burst of clients fail with EAGAIN.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, path: str, controller: Controller) -> None:
        self.controller = controller
        self._init_limits()
        super().__init__(path, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take():
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._give()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._give()

    handle_error = quiet_handle_error


class _TlsServer(_Server):
    """The API over TCP, mutual TLS only. The handshake runs on the connection's own
    thread (bounded like any connection, under the idle timeout), never in the accept
    loop; a client the CA did not sign is refused there and the reason logged."""

    address_family = socket.AF_INET
    allow_reuse_address = True

    def __init__(self, host: str, port: int, controller: Controller,
                 context: ssl.SSLContext) -> None:
        self.context = context
        self.controller = controller
        self._init_limits()
        if ":" in host:
            self.address_family = socket.AF_INET6
        socketserver.TCPServer.__init__(self, (host, port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.idle_timeout)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, ssl.CertificateError, OSError) as e:
            log.warning("refused a TLS client %s: %s", client_address[0], _why(e))
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


def _why(err: BaseException) -> str:
    from cnm.tls import explain

    if isinstance(err, ssl.SSLError | ssl.CertificateError):
        return explain(err)
    return str(err)


def serve_tls(controller: Controller, host: str, port: int,
              context: ssl.SSLContext) -> _Server:
    """Bind the API on tcp://HOST:PORT, serving only clients with a certificate signed by
    ``context``'s CA (cnm.tls.server_context)."""
    try:
        return _TlsServer(host, port, controller, context)
    except OSError as e:
        raise from_errno(e.errno or 0, f"listen on tcp://{host}:{port}") from None


def claim_socket(path: str) -> None:
    """Refuse ``path`` if a daemon listens there; remove a stale socket file left there."""
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise InvalidArgument(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise InvalidArgument(f"another daemon is already listening on {path}")
        finally:
            probe.close()


def serve(controller: Controller, path: str) -> _Server:
    """Bind the API socket (mode 0660). A stale socket file is replaced; a live one is not."""
    claim_socket(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    old = os.umask(0o117)
    try:
        server = _Server(path, controller)
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    return server
