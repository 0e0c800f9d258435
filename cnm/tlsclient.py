"""The client's side of tcp:// with mutual TLS: a TLS socket in the shape cnm.cni.wire's
HTTP client reads and writes, with TLS failures turned into words (cnm.tls.explain)."""

from __future__ import annotations

import socket
import ssl

from cnm.errors import Unavailable
from cnm.hostaddr import Address, parse_address
from cnm.tls import TlsFiles, client_context, explain

_HINT = ("check --tlscacert, --tlscert and --tlskey (or CNM_CERT_PATH) and the host name "
         "in -H")
_CLOSED = ("cnmd closed the connection during TLS (it does so when it refuses a client's "
           "certificate)")


class _TlsSocket:
    """sendall/recv/close/settimeout of an SSLSocket, TLS errors as OSError with words."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._s = sock
        self._answered = False

    def sendall(self, data: bytes) -> None:
        try:
            self._s.sendall(data)
        except ssl.SSLError as e:
            raise OSError(0, f"TLS: {explain(e)}") from None

    def recv(self, n: int) -> bytes:
        try:
            chunk = self._s.recv(n)
        except ssl.SSLError as e:
            raise OSError(0, f"TLS: {explain(e)}") from None
        if not chunk and not self._answered:
            raise OSError(0, _CLOSED)
        self._answered = True
        return chunk

    def settimeout(self, t: float | None) -> None:
        self._s.settimeout(t)

    def close(self) -> None:
        self._s.close()


class TlsDialer:
    def __init__(self, host: str, files: TlsFiles) -> None:
        self.address: Address = parse_address(host, Unavailable)
        self._ctx = client_context(files)

    def connect(self, timeout: float) -> _TlsSocket:
        a = self.address
        try:
            raw = socket.create_connection((a.host, a.port), timeout=timeout)
        except OSError as e:
            raise Unavailable(f"cannot reach cnmd at {a}: {e.strerror or e}") from None
        try:
            tls = self._ctx.wrap_socket(raw, server_hostname=a.host)
        except (ssl.SSLError, ssl.CertificateError) as e:
            raw.close()
            raise Unavailable(f"TLS with cnmd at {a} failed: {explain(e)}",
                              hint=_HINT) from None
        except OSError as e:
            raw.close()
            raise Unavailable(f"TLS with cnmd at {a} failed: {e.strerror or e}",
                              hint=_HINT) from None
        return _TlsSocket(tls)
