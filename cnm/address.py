"""The address of cnmd's API on its unix socket, ``unix://PATH`` (light: the CNI plugin
imports it; ``tcp://`` addresses are cnm.hostaddr's)."""

from __future__ import annotations

from cnm.errors import CnmError, InvalidArgument

DEFAULT_HOST = "unix:///run/cnm/cnm.sock"
_SCHEME = "unix://"


def parse_unix_address(text: str, error: type[CnmError] = InvalidArgument) -> str:
    """The socket path of ``unix://PATH``; anything else raises ``error`` (the client
    reports Unavailable, as for any daemon it cannot reach)."""
    path = text[len(_SCHEME):] if text.startswith(_SCHEME) else ""
    if not path:
        raise error(f"unsupported address {text!r}: expected unix://PATH",
                    hint="cnm and cnmd talk over a unix socket, or over tcp://HOST:PORT "
                         "with --tlsverify and certificates")
    return path
