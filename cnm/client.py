"""A client of the cnmd API over its unix socket (or tcp:// with mutual TLS, through
cnm.tlsclient). Errors come back as the same CnmError.

Built on cnm-cni's minimal HTTP/1.1 client (``cnm.cni.wire``, over ``_socket``), not on
http.client: the CLI is a process per command, and http.client (with the email package it
imports) was ~16 ms of its start-up, a third of a ``cnm network create``.
"""

from __future__ import annotations

import _socket

from cnm import jsonlite
from cnm.address import DEFAULT_HOST, parse_unix_address
from cnm.cni.wire import Api
from cnm.errors import Unavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, NoReturn

    from cnm.tls import TlsFiles


class Client(Api):
    """One keep-alive connection; not for use by several threads at once.

    ``tls`` (the CA, certificate and key files) is required for ``tcp://HOST:PORT``: the
    daemon's certificate must be signed by the CA and name HOST (cnm.tlsclient)."""

    def __init__(self, host: str = DEFAULT_HOST, timeout: float = 60.0,
                 tls: TlsFiles | None = None) -> None:
        self._tls = None
        if tls is not None and host.startswith("tcp://"):
            from cnm.tlsclient import TlsDialer  # ssl only for TLS: not in every start-up

            self._tls = TlsDialer(host, tls)
            super().__init__(str(self._tls.address), timeout)
            return
        super().__init__(parse_unix_address(host, Unavailable), timeout)

    def _connect(self) -> _socket.socket:
        if self._tls is not None:
            return self._tls.connect(self.timeout)  # type: ignore[return-value]
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            raise Unavailable(f"cannot reach cnmd at {self.path}: is it running?",
                              hint="start it with cnmd, or point -H / CNM_HOST at its socket"
                              ) from None
        except PermissionError:
            s.close()
            raise Unavailable(f"permission denied on {self.path}",
                              hint="run as root or as a member of the socket's group") from None
        except OSError as e:
            s.close()
            raise Unavailable(f"cannot reach cnmd at {self.path}: {e.strerror}") from None
        return s

    # Convenience wrappers used by the CLI, tests and benchmarks.
    def networks(self) -> Any:
        return self.call("GET", "/v1/networks")

    def network(self, ref: str) -> Any:
        return self.call("GET", f"/v1/networks/{quote(ref, safe='')}")

    # dry_run=True: the answer is the plan ({"dry_run": true, "plan": [...]}), nothing done.
    def create_network(self, dry_run: bool = False, **body: Any) -> Any:
        return self.call("POST", "/v1/networks" + _dry(dry_run), _given(body))

    def remove_network(self, ref: str, dry_run: bool = False) -> Any:
        return self.call("DELETE", f"/v1/networks/{quote(ref, safe='')}{_dry(dry_run)}")

    def connect(self, network: str, sandbox: str, dry_run: bool = False, **body: Any) -> Any:
        return self.call("POST", f"/v1/networks/{quote(network, safe='')}/connect"
                         f"{_dry(dry_run)}", {"sandbox": sandbox, **_given(body)})

    def disconnect(self, network: str, sandbox: str, dry_run: bool = False) -> Any:
        return self.call("POST", f"/v1/networks/{quote(network, safe='')}/disconnect"
                         f"{_dry(dry_run)}", {"sandbox": sandbox})

    def endpoints(self) -> Any:
        return self.call("GET", "/v1/endpoints")

    def endpoint(self, ref: str) -> Any:
        return self.call("GET", f"/v1/endpoints/{quote(ref, safe='')}")

    def create_endpoint(self, network: str, **body: Any) -> Any:
        return self.call("POST", f"/v1/networks/{quote(network, safe='')}/endpoints",
                         _given(body))

    def join(self, endpoint: str, sandbox: str, ifname: str | None = None,
             dry_run: bool = False) -> Any:
        body = {"sandbox": sandbox, **({"ifname": ifname} if ifname else {})}
        return self.call("POST", f"/v1/endpoints/{quote(endpoint, safe='')}/join"
                         f"{_dry(dry_run)}", body)

    def leave(self, endpoint: str, dry_run: bool = False) -> Any:
        return self.call("POST", f"/v1/endpoints/{quote(endpoint, safe='')}/leave"
                         f"{_dry(dry_run)}")

    def delete_endpoint(self, ref: str) -> Any:
        return self.call("DELETE", f"/v1/endpoints/{quote(ref, safe='')}")

    def sandboxes(self) -> Any:
        return self.call("GET", "/v1/sandboxes")

    def sandbox(self, ref: str) -> Any:
        return self.call("GET", f"/v1/sandboxes/{quote(ref, safe='')}")

    def create_sandbox(self, **body: Any) -> Any:
        return self.call("POST", "/v1/sandboxes", _given(body))

    def remove_sandbox(self, ref: str, force: bool = False) -> Any:
        q = "?force=true" if force else ""
        return self.call("DELETE", f"/v1/sandboxes/{quote(ref, safe='')}{q}")

    def ports(self, sandbox: str) -> Any:
        return self.call("GET", f"/v1/sandboxes/{quote(sandbox, safe='')}/ports")

    def publish(self, sandbox: str, ports: list[str], network: str | None = None) -> Any:
        body: dict[str, Any] = {"ports": ports}
        if network:
            body["network"] = network
        return self.call("POST", f"/v1/sandboxes/{quote(sandbox, safe='')}/ports", body)

    def unpublish(self, sandbox: str, port: int, proto: str = "tcp") -> Any:
        return self.call("DELETE", f"/v1/sandboxes/{quote(sandbox, safe='')}/ports/"
                                   f"{quote(proto, safe='')}/{port}")

    def stream(self, path: str) -> Iterator[Any]:
        """GET a stream of JSON lines (the event stream) on a connection of its own; blank
        lines (keep-alives) are skipped, an error line or answer raises its CnmError."""
        import contextlib

        s = self._connect()
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: cnmd\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += _recv(s, self.path)
            head, _, buf = buf.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            if status >= 400:
                while True:
                    try:
                        buf += _recv(s, self.path)
                    except Unavailable:
                        break
                    with contextlib.suppress(ValueError):
                        jsonlite.loads(buf)
                        break
                _raise(jsonlite.loads(buf).get("error", {}), status)
            while True:
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    if line.strip():
                        item = jsonlite.loads(line)
                        if "error" in item:
                            _raise(item["error"], status)
                        yield item
                try:
                    buf += _recv(s, self.path)
                except Unavailable:
                    return  # the stream ended (until, or cnmd stopped)
        finally:
            s.close()

    def trace(self, sandbox: str, destination: str) -> Any:
        return self.call("POST", f"/v1/sandboxes/{quote(sandbox, safe='')}/trace",
                         {"destination": destination})

    def reload_firewall(self) -> Any:
        return self.call("POST", "/v1/firewall/reload")

    def doctor(self, fix: bool = False) -> Any:
        return self.call("POST", "/v1/doctor/fix") if fix else self.call("GET", "/v1/doctor")


def _recv(s: _socket.socket, path: str) -> bytes:
    chunk = s.recv(65536)
    if not chunk:
        raise Unavailable(f"cnmd at {path} closed the connection")
    return chunk


def _raise(err: dict[str, Any], status: int) -> NoReturn:
    from cnm.errors import CnmError, from_dict

    if isinstance(err, dict) and err:
        raise from_dict(err)
    raise CnmError(f"cnmd answered {status}")


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str, safe: str = "") -> str:
    """``text`` as one path segment: every byte but the unreserved ones %-encoded (what
    urllib.parse.quote(text, safe="") gives; that module and ipaddress, which it imports,
    were ~3 ms of the CLI's start-up)."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode())


def _given(body: dict[str, Any]) -> dict[str, Any]:
    """The fields the caller gave: the document has no null values (a field not given is
    left out)."""
    return {k: v for k, v in body.items() if v is not None}


def _dry(dry_run: bool) -> str:
    return "?dry_run=true" if dry_run else ""
