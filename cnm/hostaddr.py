"""The addresses cnmd listens on and cnm dials: ``unix://PATH`` and ``tcp://HOST:PORT``
(mutual TLS only, cnm.tls)."""

from __future__ import annotations

from dataclasses import dataclass

from cnm.address import _SCHEME
from cnm.errors import CnmError, InvalidArgument


@dataclass(frozen=True)
class Address:
    """``unix`` with a ``path``, or ``tcp`` with a ``host`` and a ``port``."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(text: str, error: type[CnmError] = InvalidArgument) -> Address:
    """``unix://PATH`` or ``tcp://HOST:PORT`` (an IPv6 host in brackets)."""
    if text.startswith("tcp://"):
        rest = text[len("tcp://"):].rstrip("/")
        if rest.startswith("["):
            host, _, port = rest[1:].partition("]:")
        else:
            host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or len(port) > 5:
            raise error(f"unsupported address {text!r}: expected tcp://HOST:PORT")
        return Address("tcp", host=host, port=int(port))
    if text.startswith(_SCHEME) and text[len(_SCHEME):]:
        return Address("unix", path=text[len(_SCHEME):])
    raise error(f"unsupported address {text!r}: expected unix://PATH or tcp://HOST:PORT")
