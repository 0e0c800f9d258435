"""A minimal HTTP/1.1 client of cnmd's API for cnm-cni: one keep-alive connection on the
unix socket, JSON in and out, cnmd's errors back as the same CnmError.

Not cnm.client: that one is built on http.client, which imports the email package, and
socket, which imports enum and selectors; together ~6 ms of a process that lives for one
CNI call. _socket is the same socket object without the enum wrappers.
"""

from __future__ import annotations

import _socket

from cnm import jsonlite
from cnm.errors import CnmError, Internal, Unavailable, from_dict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Api:
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.path, self.timeout = path, timeout
        self._sock: _socket.socket | None = None
        self._buf = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> _socket.socket:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            raise Unavailable(f"cannot reach cnmd at {self.path}: is it running?",
                              hint="start cnmd, or name its socket in the configuration "
                                   '("socket": "unix://PATH") or in CNM_HOST') from None
        except PermissionError:
            s.close()
            raise Unavailable(f"permission denied on {self.path}",
                              hint="the runtime calls plugins as root; check the socket's "
                                   "owner and mode") from None
        except OSError as e:
            s.close()
            raise Unavailable(f"cannot reach cnmd at {self.path}: {e.strerror}") from None
        return s

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = jsonlite.dumps(body).encode() if body is not None else b""
        head = (f"{method} {path} HTTP/1.1\r\nHost: cnmd\r\n"
                f"Content-Length: {len(data)}\r\n")
        if data:
            head += "Content-Type: application/json\r\n"
        if self._sock is None:
            self._sock = self._connect()
        try:
            self._sock.sendall(head.encode() + b"\r\n" + data)
            status, raw = self._response()
        except OSError as e:  # a timeout too (TimeoutError is an OSError)
            self.close()
            raise Unavailable(f"lost the connection to cnmd at {self.path}: "
                              f"{e.strerror or type(e).__name__}",
                              hint="try again") from None
        try:
            payload = jsonlite.loads(raw) if raw else None
        except ValueError:
            raise Internal(f"cnmd answered {status} with a body that is not JSON") from None
        if status >= 400:
            err = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(err, dict):
                raise from_dict(err)
            raise CnmError(f"cnmd answered {status}")
        return payload

    def _response(self) -> tuple[int, bytes]:
        assert self._sock is not None
        while b"\r\n\r\n" not in self._buf:
            self._recv()
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdecimal():
            raise OSError(0, f"not an HTTP response: {lines[0][:80]!r}")
        length = 0
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-length":
                length = int(value.strip())
        while len(self._buf) < length:
            self._recv()
        body, self._buf = self._buf[:length], self._buf[length:]
        return int(parts[1]), body

    def _recv(self) -> None:
        assert self._sock is not None
        chunk = self._sock.recv(65536)
        if not chunk:
            raise OSError(0, "cnmd closed the connection")
        self._buf += chunk
