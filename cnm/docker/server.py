"""Docker's plugin protocol over a unix socket (``/run/docker/plugins/cnm.sock``): HTTP/1.1
POSTs named after the call, JSON in and out, answered with Docker's plugin content type."""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
from http.server import BaseHTTPRequestHandler
from typing import Any

from cnm.api.server import claim_socket
from cnm.docker.plugin import DockerPlugin
from cnm.docker.wire import CONTENT_TYPE

log = logging.getLogger("cnm.docker")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PluginServer

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        status: int
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            status, payload = 200, {"Err": f"{self.path}: the request body is not JSON"}
        else:
            status, payload = self.server.plugin.handle(self.path.lstrip("/"), body)
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

    def __init__(self, path: str, plugin: DockerPlugin) -> None:
        self.plugin = plugin
        super().__init__(path, _Handler)


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
