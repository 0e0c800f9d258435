"""A client of an etcd cluster (the v3 API on etcd's JSON gateway, over requests), bounded
in time and made of sockets from a namespace of our choosing.

(Not etcd3gw, though it speaks the same gateway: its calls have one fixed timeout and one
member, and its watch neither resumes nor reports deletes with their previous value; what
is left of it here would be a URL.)

cnmd manages a host namespace it does not run in (``--netns``): the cluster is reached over
that namespace's underlay, so every connection is made there (``socket_factory``, the same
trick as the DNS server's upstream sockets). Each member named in ``--cluster-store`` is
tried in turn until one answers or ``timeout`` has passed; then the call fails with
``StoreUnavailable``, never hangs. Keys and values are text (values JSON); etcd's int64
fields are strings on the gateway and ints here.

TLS is on when ``Tls`` names a CA or a client certificate (cnmd's ``--cluster-store-ca``,
``-cert``, ``-key``, Docker's ``kv.cacertfile``, ``kv.certfile``, ``kv.keyfile``): the URL
stays ``etcd://``. A handshake that fails is a mistake in the files, not an outage: once
every member has refused it the call fails at once, saying which member and what was wrong
with the certificates, instead of waiting out the timeout as for a member that is down.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from cnm.errors import Internal, InvalidArgument, StoreUnavailable

log = logging.getLogger("cnm.etcd")
SocketFactory = Callable[[int, int], socket.socket]


@dataclass(frozen=True)
class Tls:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def parse_endpoints(url: str) -> list[tuple[str, int]]:
    """``etcd://A:P[,B:P…]`` (``[v6]:P`` for IPv6) as (host, port) pairs."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "etcd" or not rest:
        raise InvalidArgument(f"--cluster-store {url!r}: expected etcd://ADDR:PORT[,ADDR:PORT…]")
    out = []
    for part in rest.split(","):
        host, colon, port = part.rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdecimal() or not 0 < int(port) < 65536:
            raise InvalidArgument(f"--cluster-store {url!r}: {part!r} is not ADDR:PORT")
        out.append((host, int(port)))
    return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    """The end of etcd's range of every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


@dataclass(frozen=True)
class KV:
    key: str
    value: str
    mod_revision: int
    create_revision: int
    lease: int = 0

    def doc(self) -> Any:
        return json.loads(self.value)


def _kv(raw: dict[str, Any]) -> KV:
    return KV(unb64(raw["key"]), unb64(raw.get("value", "")), int(raw.get("mod_revision", 0)),
              int(raw.get("create_revision", 0)), int(raw.get("lease", 0)))


def _session(factory: SocketFactory | None, tls: Tls | None) -> requests.Session:
    """A requests session whose connections are made by ``factory`` (in a namespace)."""

    def new_conn(conn: HTTPConnection) -> socket.socket:
        host, port = conn._dns_host, conn.port  # noqa: SLF001 (urllib3's own names)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = (factory or socket.socket)(family, socket.SOCK_STREAM)
        timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect((host, port))
        except TimeoutError as e:
            sock.close()
            raise ConnectTimeoutError(conn, f"connect to {host}:{port} timed out") from e
        except OSError as e:
            sock.close()
            raise NewConnectionError(conn, f"connect to {host}:{port}: {e}") from e
        return sock

    class Conn(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self)

    class TlsConn(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return new_conn(self)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = TlsConn

    session = requests.Session()
    session.trust_env = False  # never a proxy from the environment
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=16, max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TlsPool}
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if tls is not None:
        if tls.ca:
            session.verify = tls.ca
        if tls.cert:
            session.cert = (tls.cert, tls.key) if tls.key else tls.cert
    return session


class EtcdClient:
    """The members of one cluster, tried in turn within ``timeout`` seconds a call."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], *, timeout: float = 5.0,
                 tls: Tls | None = None, socket_factory: SocketFactory | None = None) -> None:
        if not endpoints:
            raise InvalidArgument("a cluster store needs at least one etcd member")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._tls = tls
        self._factory = socket_factory
        self._session = _session(socket_factory, tls)
        scheme = "https" if tls is not None and (tls.ca or tls.cert) else "http"
        self._bases = [f"{scheme}://[{h}]:{p}/v3" if ":" in h else f"{scheme}://{h}:{p}/v3"
                       for h, p in self.endpoints]
        self._good = 0  # the member that answered last
        self._lock = threading.Lock()
        # Per thread: the undo steps of the operation that saw the store fail run on its
        # thread; the lease's renewals or another request must not inherit that failure.
        self._local = threading.local()

    def describe(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.endpoints)

    def url(self, i: int, path: str) -> str:
        return self._bases[i] + path

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first member that answers in time."""
        now = time.monotonic()
        if now < getattr(self._local, "down_until", 0.0):
            # It failed a moment ago: the undo steps of the operation that saw it fail
            # must not each wait the whole timeout again.
            raise StoreUnavailable(
                f"the cluster store ({self.describe()}) is unreachable or has no quorum",
                hint="check the etcd members; cnmd catches up when they are back")
        deadline = now + self.timeout
        last: Exception | None = None
        refused: dict[int, requests.exceptions.SSLError] = {}  # member -> its TLS failure
        start = self._good
        n = len(self._bases)
        tries = 0
        # A member may take a request and never answer it: a follower that forwarded a
        # proposal to a leader which died holds it until etcd's own request timeout (the
        # lab's sandbox create failed so, 2 s after the leader was killed). So one try
        # waits a third of the time at most, and the next member (or this one, once the
        # cluster has elected another leader) gets the rest. The store's writes are
        # compare-and-swap transactions that are the same when replayed (every value a
        # record holds names its holder), so one that was applied after all is harmless.
        per_try = max(0.5, self.timeout / 3)
        while time.monotonic() < deadline:
            i = (start + tries) % n
            tries += 1
            left = max(0.05, deadline - time.monotonic())
            try:
                resp = self._session.post(self.url(i, path), json=body,
                                          timeout=(min(left, 1.0), min(left, per_try)))
            except requests.exceptions.SSLError as e:
                last = refused[i] = e
                if len(refused) == n:
                    self._local.down_until = time.monotonic() + 1.0
                    raise self._tls_failed(refused) from None
                continue
            except requests.exceptions.RequestException as e:
                last = e
                refused.pop(i, None)
                if tries % n == 0:
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            refused.pop(i, None)
            if resp.status_code == 200:
                self._good = i
                result: dict[str, Any] = resp.json()
                return result
            text = resp.text
            # No leader, no quorum, a timed-out proposal: another member may do better.
            if resp.status_code in (500, 503, 504) and _retryable(text):
                last = RuntimeError(text)
                if tries % n == 0:
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            raise Internal(f"cluster store refused {path}: {resp.status_code} {text[:200]}")
        self._local.down_until = time.monotonic() + 1.0
        log.warning("cluster store unavailable: %s", last)
        if refused:
            raise self._tls_failed(refused)
        hint = "check the etcd members; cnmd catches up when they are back"
        if not self.tls and isinstance(_cause(last), http.client.RemoteDisconnected
                                       | ConnectionResetError):
            hint += ("; a member that speaks TLS closes a plain connection without an answer: "
                     "then give --cluster-store-ca (and --cluster-store-cert/-key)")
        raise StoreUnavailable(
            f"the cluster store ({self.describe()}) did not answer within "
            f"{self.timeout:g} s: it is unreachable or has no quorum", hint=hint)

    @property
    def tls(self) -> bool:
        return self._tls is not None and bool(self._tls.ca or self._tls.cert)

    def _tls_failed(self, refused: dict[int, requests.exceptions.SSLError]) -> StoreUnavailable:
        """What the members' handshakes say is wrong with the TLS files, naming them."""
        i, e = min(refused.items())
        why, hint = _tls_reason(e, self._tls)
        h, p = self.endpoints[i]
        member = f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
        others = "" if len(refused) == 1 else f" (and {len(refused) - 1} more members)"
        return StoreUnavailable(
            f"the cluster store ({self.describe()}) refused TLS: {member}{others}: {why}",
            hint=hint)

    # ------------------------------------------------------------------ the KV API
    def range(self, key: str, end: str | None = None, *, revision: int | None = None,
              count_only: bool = False) -> tuple[int, list[KV], int]:
        """(revision, key-values, count) of ``key`` or of [key, end)."""
        body: dict[str, Any] = {"key": b64(key)}
        if end is not None:
            body["range_end"] = b64(end)
        if revision:
            body["revision"] = str(revision)
        if count_only:
            body["count_only"] = True
        out = self.call("/kv/range", body)
        kvs = [_kv(k) for k in out.get("kvs", [])]
        return int(out["header"]["revision"]), kvs, int(out.get("count", 0))

    def prefix(self, prefix: str, revision: int | None = None) -> tuple[int, list[KV]]:
        rev, kvs, _ = self.range(prefix, prefix_end(prefix), revision=revision)
        return rev, kvs

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> tuple[bool, int, list[Any]]:
        out = self.call("/kv/txn", {"compare": compare, "success": success,
                                    "failure": failure or []})
        return (bool(out.get("succeeded")), int(out["header"]["revision"]),
                out.get("responses", []))

    def put(self, key: str, value: str, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("/kv/put", body)["header"]["revision"])

    def delete(self, key: str, end: str | None = None) -> int:
        body = {"key": b64(key)}
        if end is not None:
            body["range_end"] = b64(end)
        return int(self.call("/kv/deleterange", body)["header"]["revision"])

    def grant(self, ttl: int) -> int:
        return int(self.call("/lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's TTL after renewing it; 0 when it expired."""
        out = self.call("/lease/keepalive", {"ID": str(lease)})
        return int(out.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self.call("/kv/lease/revoke", {"ID": str(lease)})

    # ------------------------------------------------------------------ watches
    def watch(self, prefix: str, start_revision: int, stop: threading.Event,
              holder: Stream) -> Iterator[tuple[int, list[tuple[str, KV]]]]:
        """(revision, [(PUT|DELETE, kv)…]) of every change under ``prefix`` from
        ``start_revision`` on, on one member's stream, until it breaks (the caller resumes
        from the last revision), ``stop`` is set or ``holder`` is aborted. A compacted start
        raises ``Compacted``."""
        body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix)),
                                   "start_revision": str(start_revision), "prev_kv": True,
                                   "progress_notify": True}}
        last: Exception | None = None
        for j in range(len(self._bases)):
            i = (self._good + j) % len(self._bases)
            try:
                # An idle stream ends every 5 s and is resumed from its revision: that
                # is what lets a stop (or a member gone silent) be noticed.
                resp = self._session.post(self.url(i, "/watch"), json=body, stream=True,
                                          timeout=(1.0, 5.0))
            except requests.exceptions.RequestException as e:
                last = e
                continue
            if resp.status_code != 200:
                last = RuntimeError(resp.text)
                resp.close()
                continue
            if not holder.attach(resp):
                resp.close()  # aborted while it connected
                return
            try:
                for line in resp.iter_lines(chunk_size=None):
                    if stop.is_set():
                        return
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    if int(result.get("compact_revision", 0) or 0) > 0:
                        raise Compacted(int(result["compact_revision"]))
                    rev = int(result.get("header", {}).get("revision", 0))
                    events = [(ev.get("type", "PUT"),
                               _kv(ev["kv"]) if ev.get("type", "PUT") == "PUT"
                               else _kv({**ev.get("prev_kv", {}), "key": ev["kv"]["key"],
                                         "mod_revision": ev["kv"].get("mod_revision", 0)}))
                              for ev in result.get("events", [])]
                    yield rev, events
            except (requests.exceptions.RequestException, AttributeError, ValueError) as e:
                last = e
            finally:
                holder.detach()
                resp.close()
            return
        raise StoreUnavailable(f"no etcd member of {self.describe()} takes a watch: {last}")

    def close(self) -> None:
        self._session.close()


class Stream:
    """The watch's open stream, which another thread may abort at once (cnmd's stop).

    Closing a response another thread is reading blocks on the reader's buffer lock until
    that read returns, which is up to the stream's 5 s idle timeout: that was most of a
    clustered cnmd's stop. Shutting its socket down instead wakes the read at once (it
    sees the end of the stream), and the reader closes the response itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.aborted = False

    def attach(self, resp: requests.Response) -> bool:
        """Hold ``resp``'s socket; False when aborted already (then do not read)."""
        conn = getattr(resp.raw, "connection", None)  # urllib3 2: a streamed response's
        sock = getattr(conn, "sock", None)
        with self._lock:
            if self.aborted:
                return False
            self._sock = sock if isinstance(sock, socket.socket) else None
            return True

    def detach(self) -> None:
        with self._lock:
            self._sock = None

    def abort(self) -> None:
        """End the stream now and any later one; never blocks."""
        with self._lock:
            self.aborted = True
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Compacted(Exception):
    def __init__(self, revision: int) -> None:
        super().__init__(f"compacted at revision {revision}")
        self.revision = revision


def _cause(e: BaseException | None) -> BaseException | None:
    """The innermost error under requests' and urllib3's wrappers."""
    seen = 0
    while e is not None and seen < 8:
        seen += 1
        inner = getattr(e, "reason", None)  # urllib3's MaxRetryError, ProtocolError
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(e, "args", ()) if isinstance(a, BaseException)),
                         None)
        if inner is None:
            return e
        e = inner
    return e


def _tls_reason(e: BaseException, tls: Tls | None) -> tuple[str, str]:
    """(what went wrong in a handshake, what to do about it)."""
    cause = _cause(e)
    ca_hint = ("--cluster-store-ca must be the CA that signed the etcd members' "
               "certificates, each for the address --cluster-store names it by")
    cert_hint = ("give --cluster-store-cert and --cluster-store-key: a client certificate "
                 "signed by the CA the members trust (their --trusted-ca-file)")
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (f"its certificate is not trusted: {cause.verify_message}", ca_hint)
    reason = str(getattr(cause, "reason", "") or "") if isinstance(cause, ssl.SSLError) else ""
    with_cert = tls is not None and bool(tls.cert)
    if isinstance(cause, ssl.SSLEOFError) or any(
            w in reason for w in ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA",
                                  "CERTIFICATE_UNKNOWN", "HANDSHAKE_FAILURE")):
        if with_cert:
            return ("it did not accept this host's client certificate "
                    f"({reason or 'it closed the handshake'})", cert_hint)
        return ("it requires a client certificate and none was given "
                f"({reason or 'it closed the handshake'})", cert_hint)
    if "WRONG_VERSION_NUMBER" in reason:
        return ("it does not speak TLS", "drop --cluster-store-ca/-cert/-key, or give the "
                "members --cert-file, --key-file and https URLs")
    return (str(reason or cause or e), ca_hint)


def _retryable(text: str) -> bool:
    return any(word in text for word in ("timed out", "no leader", "leader changed",
                                         "unavailable", "timeout", "not capable",
                                         "too many requests"))
