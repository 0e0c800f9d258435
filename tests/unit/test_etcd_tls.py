"""The cluster store's client over TLS, against a TLS server on loopback that stands in for
an etcd member (it requires a client certificate, as etcd --client-cert-auth, and answers
one lease grant): the right files work; a refused handshake fails at once, naming the
member and what was wrong, after one connection (not retried until the timeout as a member
that is down); a plain client facing it is told TLS may be why. Certificates: trustme."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnm.errors import StoreUnavailable
from cnm.store.etcdclient import EtcdClient, Tls
from cnm.testing.pki import Pki


class Member:
    """A TLS listener on 127.0.0.1 answering every request with a lease grant."""

    def __init__(self, pki: Pki, tmp: Path) -> None:
        files = pki.issue("member", "127.0.0.1")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(files.cert, files.key)
        self.ctx.load_verify_locations(cafile=pki.ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tls.recv(4096)
                body = json.dumps({"header": {"revision": "1"}, "ID": "7", "TTL": "5"})
                tls.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                            f"{body}".encode())
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def member(pki: Pki, tmp_path: Path) -> Iterator[Member]:
    m = Member(pki, tmp_path)
    yield m
    m.close()


def grant(member: Member, tls: Tls | None, timeout: float = 30) -> int:
    c = EtcdClient([("127.0.0.1", member.port)], timeout=timeout, tls=tls)
    try:
        return c.grant(5)
    finally:
        c.close()


def test_the_right_files_work(member: Member, pki: Pki) -> None:
    mine = pki.issue("cnmd", "cnmd.cnm.test")
    assert grant(member, Tls(mine.ca, mine.cert, mine.key)) == 7


@pytest.mark.parametrize(("case", "says", "hint"), [
    ("no client certificate", "it requires a client certificate and none was given",
     "--cluster-store-cert"),
    ("another CA", "its certificate is not trusted", "--cluster-store-ca must be the CA"),
    ("a client certificate of another CA", "it did not accept this host's client certificate",
     "--cluster-store-cert"),
])
def test_a_refused_handshake_fails_at_once_saying_why(member: Member, pki: Pki,
                                                      tmp_path: Path, case: str, says: str,
                                                      hint: str) -> None:
    mine = pki.issue("cnmd", "cnmd.cnm.test")
    other = Pki(tmp_path / "other").issue("cnmd", "cnmd.cnm.test")
    tls = {"no client certificate": Tls(mine.ca),
           "another CA": Tls(other.ca, mine.cert, mine.key),
           "a client certificate of another CA": Tls(mine.ca, other.cert, other.key)}[case]
    with pytest.raises(StoreUnavailable) as e:
        grant(member, tls)
    assert e.value.message.startswith(
        f"the cluster store (127.0.0.1:{member.port}) refused TLS: 127.0.0.1:{member.port}: "
        f"{says}"), e.value.message
    assert e.value.hint is not None and hint in e.value.hint
    # One connection, not a retry loop until the 30 s timeout.
    assert member.connections == 1


def test_a_plain_client_is_told_tls_may_be_why(member: Member) -> None:
    with pytest.raises(StoreUnavailable) as e:
        grant(member, None, timeout=0.5)
    assert "did not answer within 0.5 s" in e.value.message
    assert e.value.hint is not None and "speaks TLS" in e.value.hint
