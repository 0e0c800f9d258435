"""A client of the cnmd API over its unix socket, or over TCP with mutual TLS. Errors come
back as the same CnmError."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import quote

from cnm import tls as tls_
from cnm.address import DEFAULT_HOST, parse_unix_address
from cnm.errors import CnmError, Internal, Unavailable, from_dict
from cnm.hostaddr import parse_address


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Client:
    """One keep-alive connection; not for use by several threads at once.

    ``tls`` (the CA, certificate and key files) is required for ``tcp://HOST:PORT``: the
    daemon's certificate must be signed by the CA and name HOST."""

    def __init__(self, host: str = DEFAULT_HOST, timeout: float = 60.0,
                 tls: tls_.TlsFiles | None = None) -> None:
        self._conn: http.client.HTTPConnection
        if tls is None or not host.startswith("tcp://"):
            self.path = parse_unix_address(host, Unavailable)
            self._conn = _UnixConnection(self.path, timeout)
            return
        addr = parse_address(host, Unavailable)
        self.path = str(addr)
        self._conn = http.client.HTTPSConnection(
            addr.host, addr.port, timeout=timeout, context=tls_.client_context(tls))

    def close(self) -> None:
        self._conn.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            self._conn.request(method, path, body=data, headers=headers)
            resp = self._conn.getresponse()
            raw = resp.read()
        except (FileNotFoundError, ConnectionRefusedError):
            self._conn.close()
            raise Unavailable(f"cannot reach cnmd at {self.path}: is it running?",
                              hint="start it with cnmd, or point -H / CNM_HOST at its socket"
                              ) from None
        except PermissionError:
            self._conn.close()
            raise Unavailable(f"permission denied on {self.path}",
                              hint="run as root or as a member of the socket's group") from None
        except (ssl.SSLError, ssl.CertificateError) as e:
            self._conn.close()
            raise Unavailable(f"TLS with cnmd at {self.path} failed: {tls_.explain(e)}",
                              hint="check --tlscacert, --tlscert and --tlskey (or "
                                   "CNM_CERT_PATH) and the host name in -H") from None
        except (OSError, http.client.HTTPException) as e:
            self._conn.close()
            raise Unavailable(f"lost the connection to cnmd at {self.path}: {e}") from None
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            raise Internal(f"cnmd answered {resp.status} with a body that is not JSON") from None
        if resp.status >= 400:
            err = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(err, dict):
                raise from_dict(err)
            raise CnmError(f"cnmd answered {resp.status}")
        return payload

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

    def reload_firewall(self) -> Any:
        return self.call("POST", "/v1/firewall/reload")


def _given(body: dict[str, Any]) -> dict[str, Any]:
    """The fields the caller gave: the document has no null values (a field not given is
    left out)."""
    return {k: v for k, v in body.items() if v is not None}


def _dry(dry_run: bool) -> str:
    return "?dry_run=true" if dry_run else ""
