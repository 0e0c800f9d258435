"""Docker's plugin protocol over a unix socket (``/run/docker/plugins/cnm.sock``): HTTP/1.1
POSTs named after the call, JSON in and out, answered with Docker's plugin content type."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import socketserver
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from cnm import limits
from cnm.api.server import claim_socket, quiet_handle_error
from cnm.docker.plugin import DockerPlugin
from cnm.docker.wire import CONTENT_TYPE

log = logging.getLogger("cnm.docker")
_LENGTH = re.compile(r"[0-9]{1,12}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PluginServer
    idle_timeout = 30.0

    def setup(self) -> None:
        super().setup()
        # A client that stalls (half a request, a body shorter than it said) is dropped
        # after this long, not served by a thread for ever.
        self.connection.settimeout(self.idle_timeout)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError) as e:
            # A client that went away or stalled is no fault of ours.
            log.debug("connection closed: %s", e)
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's refusals (a malformed request line or header) as Docker's JSON
        error, not its HTML page."""
        key = "Error" if str(getattr(self, "path", "")).startswith("/IpamDriver.") else "Err"
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may be gone already
            self._answer(code, {key: message or HTTPStatus(code).phrase})

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        # An IPAM driver's error is Docker's "Error", a network driver's "Err".
        key = "Error" if self.path.startswith("/IpamDriver.") else "Err"
        given = (self.headers.get("Content-Length") or "0").strip()
        if not _LENGTH.fullmatch(given) or int(given) > limits.MAX_BODY:
            # Refused before anything is read: a length that is no number of bytes, or
            # over the bound, would raise or wait for bytes that never come.
            self.close_connection = True
            self._answer(400, {key: f"{self.path}: Content-Length {given!r} is not a number "
                                    f"of bytes up to {limits.MAX_BODY}"})
            return
        length = int(given)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        status: int
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            status, payload = 200, {key: f"{self.path}: the request body is not JSON"}
        else:
            status, payload = self.server.plugin.handle(self.path.lstrip("/"), body)
        self._answer(status, payload)

    def _answer(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        data = json.dumps({"Err": f"{self.command} {self.path}: plugin calls are POSTs"})
        self.send_response(404)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.command, self.path)

    def address_string(self) -> str:
        return "docker"


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = socket.SOMAXCONN
    logger_name = "cnm.docker"

    def __init__(self, path: str, plugin: DockerPlugin) -> None:
        self.plugin = plugin
        super().__init__(path, _Handler)

    handle_error = quiet_handle_error


def serve(plugin: DockerPlugin, path: str) -> PluginServer:
    """Bind the plugin socket (its directory made if missing; a stale socket replaced, a
    live one refused). Mode 0660: dockerd runs as root."""
    claim_socket(path)
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    old = os.umask(0o117)
    try:
        return PluginServer(path, plugin)
    finally:
        os.umask(old)
