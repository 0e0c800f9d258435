"""cnmd's listeners: every ``-H`` (unix sockets and TCP with mutual TLS), checked before
reconcile (a mistake stops the start before anything changes) and served after it."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from cnm.api.server import _Server, claim_socket, serve, serve_tls
from cnm.core import Controller
from cnm.errors import InvalidArgument
from cnm.hostaddr import Address, parse_address
from cnm.tls import TlsFiles, server_context

log = logging.getLogger("cnmd")


@dataclass
class Listeners:
    addresses: list[Address]
    context: ssl.SSLContext | None = None
    gid: int | None = None
    servers: list[_Server] = field(default_factory=list)

    def start(self, controller: Controller) -> None:
        for a in self.addresses:
            if a.scheme == "unix":
                server = serve(controller, a.path)
                if self.gid is not None:
                    os.chown(a.path, -1, self.gid)
            else:
                assert self.context is not None
                server = serve_tls(controller, a.host, a.port, self.context)
            self.servers.append(server)
            threading.Thread(target=server.serve_forever, name=f"cnm-api {a}",
                             daemon=True).start()

    def close(self) -> None:
        for server, a in zip(self.servers, self.addresses, strict=False):
            server.shutdown()
            server.server_close()
            if a.scheme == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(a.path)

    def __str__(self) -> str:
        return ", ".join(map(str, self.addresses))


def plan(hosts: Sequence[str], default: str, *, tlsverify: bool, tls: TlsFiles | None,
         group: str | None) -> Listeners:
    """Every listener checked, nothing bound: a tcp:// address needs --tlsverify and the
    three files (Docker's plain 2375 is the mistake this refuses), each file readable and
    the key private; a unix socket is free (claim_socket) and --group exists."""
    addresses = [parse_address(h) for h in (hosts or [default])]
    if len(set(addresses)) != len(addresses):
        raise InvalidArgument("-H: an address is given twice")
    context = None
    if any(a.scheme == "tcp" for a in addresses):
        tcp = next(h for h in hosts if h.startswith("tcp://"))
        if not tlsverify:
            raise InvalidArgument(
                f"unsupported address {tcp!r} without --tlsverify: cnmd serves TCP with "
                "mutual TLS only",
                hint="add --tlsverify --tlscacert CA --tlscert CERT --tlskey KEY; an API "
                     "on TCP without client certificates gives root to anyone who reaches it")
        if tls is None:
            raise InvalidArgument(f"-H {tcp}: --tlsverify needs --tlscacert, --tlscert and "
                                  "--tlskey")
        context = server_context(tls)
    elif tlsverify:
        raise InvalidArgument("--tlsverify is for a tcp:// listener; no -H names one")
    gid = None
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidArgument(f"--group {group}: no such group") from None
    for a in addresses:
        if a.scheme == "unix":
            claim_socket(a.path)
    return Listeners(addresses, context, gid)
