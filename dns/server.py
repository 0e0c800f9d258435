"""The embedded DNS server: one thread, one selector, a listener per sandbox.

Each listener's sockets were opened inside its sandbox's namespace (the kernel adapter
does that and redirects 127.0.0.11:53 to them), so this thread never changes namespace.
The hot path answers a repeated query from a per-listener cache of wire replies keyed by
the query bytes after its ID: a dict lookup and a sendto. Names not ours go to at most
three upstream resolvers from sockets in the host namespace, one attempt each with a
timeout, and SERVFAIL when all fail: a client never waits past ~3.6 s.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import queue
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cnm.dns import resolver
from cnm.dns.records import Records

log = logging.getLogger("cnm.dns")

ATTEMPT_TIMEOUT = 1.2  # per upstream; three of them stay well inside a client's 5 s
MAX_UPSTREAMS = 3
CACHE_MAX = 8192  # answers kept per listener before the cache starts over
TCP_IDLE = 5.0
TCP_MAX = 64  # TCP connections served at once, all sandboxes together
SYNC_TIMEOUT = 2.0  # the longest a caller waits for the DNS thread (it never blocks)

SocketFactory = Callable[[int, int], socket.socket]


@dataclass
class Listener:
    sandbox_id: str
    udp: socket.socket
    tcp: socket.socket
    view: tuple[str, ...]
    cache: dict[bytes, bytes] = field(default_factory=dict)
    generation: int = -1


@dataclass
class _Pending:
    listener: Listener
    client: Any
    client_id: bytes
    query: bytes
    upstream: int
    deadline: float


class Upstreams:
    """The resolvers to forward to: given ones, or the host resolv.conf's (re-read when it
    changes). Loopback ones are fine: the forwarding sockets live in the host namespace."""

    def __init__(self, servers: Sequence[str] = (), resolv_conf: str = "/etc/resolv.conf"):
        self._fixed = [s for s in servers][:MAX_UPSTREAMS]
        self._path = resolv_conf
        self._mtime = -1.0
        self._read: list[str] = []

    def get(self) -> list[str]:
        if self._fixed:
            return self._fixed
        try:
            mtime = os.stat(self._path).st_mtime
        except OSError:
            return []
        if mtime != self._mtime:
            self._mtime = mtime
            servers = []
            with contextlib.suppress(OSError), open(self._path) as f:
                for line in f:
                    words = line.split()
                    if len(words) >= 2 and words[0] == "nameserver":
                        server = words[1].split("%")[0]
                        if is_address(server):
                            servers.append(server)
            self._read = servers[:MAX_UPSTREAMS]
        return self._read


class DnsServer:
    def __init__(self, records: Records, upstreams: Upstreams,
                 host_socket: SocketFactory) -> None:
        self.records = records
        self.upstreams = upstreams
        self._host_socket = host_socket
        self._sel = selectors.DefaultSelector()
        self._listeners: dict[str, Listener] = {}  # the DNS thread's
        # The callers' view, right when add() and remove() return (the thread may not
        # have run their commands yet): what serves() answers.
        self._served: set[str] = set()
        self._ports: dict[str, int] = {}  # sandbox id -> its listener's port (cnm doctor)
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._fwd: dict[int, socket.socket] = {}  # address family -> forwarding socket
        self._pending: dict[bytes, _Pending] = {}
        self._stop = False
        self._tcp_slots = threading.BoundedSemaphore(TCP_MAX)
        self._thread = threading.Thread(target=self._loop, name="cnm-dns", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ control (any thread)
    def _do(self, fn: Callable[[], None]) -> None:
        self._commands.put(fn)
        self._wake_w.send(b"x")

    def add(self, sandbox_id: str, udp: socket.socket, tcp: socket.socket,
            view: Sequence[str]) -> None:
        """Serve a sandbox. Its sockets are bound already: queries queue until served."""
        udp.setblocking(False)
        tcp.setblocking(False)
        listener = Listener(sandbox_id, udp, tcp, tuple(view))
        self._served.add(sandbox_id)
        self._ports[sandbox_id] = udp.getsockname()[1]

        def run() -> None:
            self._listeners[sandbox_id] = listener
            self._sel.register(udp, selectors.EVENT_READ, ("udp", listener))
            self._sel.register(tcp, selectors.EVENT_READ, ("tcp", listener))

        self._do(run)

    def set_view(self, sandbox_id: str, view: Sequence[str]) -> None:
        """Change the networks a sandbox sees, in effect when this returns: the DNS thread
        may be reading the sandbox's next query already, and that one must not be
        answered (or cached) with the old view."""
        done = threading.Event()

        def run() -> None:
            try:
                listener = self._listeners.get(sandbox_id)
                if listener is not None:
                    listener.view = tuple(view)
                    listener.cache.clear()
            finally:
                done.set()

        self._do(run)
        if threading.current_thread() is not self._thread:
            done.wait(SYNC_TIMEOUT)

    def remove(self, sandbox_id: str) -> None:
        self._served.discard(sandbox_id)
        self._ports.pop(sandbox_id, None)

        def run() -> None:
            listener = self._listeners.pop(sandbox_id, None)
            if listener is None:
                return
            for s in (listener.udp, listener.tcp):
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(s)
                s.close()

        self._do(run)

    def serves(self, sandbox_id: str) -> bool:
        return sandbox_id in self._served

    def port(self, sandbox_id: str) -> int | None:
        """The port the sandbox's listener is bound to (its redirect must lead there)."""
        return self._ports.get(sandbox_id)

    def close(self) -> None:
        if self._stop:
            return
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for listener in list(self._listeners.values()):
            listener.udp.close()
            listener.tcp.close()
        for s in self._fwd.values():
            s.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while not self._stop:
            timeout = 0.5
            if self._pending:
                timeout = max(0.0, min(p.deadline for p in self._pending.values())
                              - time.monotonic())
            for key, _ in self._sel.select(min(timeout, 0.5)):
                try:
                    self._event(key.data, key.fileobj)
                except Exception as e:  # noqa: BLE001 - one bad packet must not stop DNS
                    log.debug("dns: dropped an event: %s", e)
            if self._pending:
                try:
                    self._expire()
                except Exception as e:  # noqa: BLE001 - nor may one expired query
                    log.debug("dns: dropped an expiry: %s", e)

    def _event(self, data: Any, sock: Any) -> None:
        if data == "wake":
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
            while True:
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    break
                cmd()
            return
        if data == "fwd":
            self._upstream_reply(sock)
            return
        kind, listener = data
        if kind == "udp":
            self._udp(listener)
        else:
            conn, _ = listener.tcp.accept()
            # TCP is the rare fallback after a truncated answer: a bounded number of
            # connections at a time, so no sandbox can exhaust the daemon's threads.
            if not self._tcp_slots.acquire(blocking=False):
                conn.close()
                return
            threading.Thread(target=self._tcp_slot, args=(listener, conn), daemon=True,
                             name="cnm-dns-tcp").start()

    def _udp(self, listener: Listener) -> None:
        # Drain what is queued: one wake-up serves a burst.
        for _ in range(64):
            try:
                data, client = listener.udp.recvfrom(4096)
            except BlockingIOError:
                return
            if len(data) < 12:
                continue
            if listener.generation != self.records.generation:
                listener.cache.clear()
                listener.generation = self.records.generation
            hit = listener.cache.get(data[2:])
            if hit is not None:
                listener.udp.sendto(data[:2] + hit, client)
                continue
            result = resolver.answer(data, listener.view, self.records, udp=True)
            if result.wire is not None:
                if result.cacheable:
                    if len(listener.cache) >= CACHE_MAX:
                        listener.cache.clear()
                    listener.cache[data[2:]] = result.wire[2:]
                listener.udp.sendto(result.wire, client)
            elif result.forward:
                self._forward(listener, client, data, 0)

    # ------------------------------------------------------------------ forwarding (UDP)
    def _fwd_socket(self, family: int) -> socket.socket:
        s = self._fwd.get(family)
        if s is None:
            s = self._host_socket(family, socket.SOCK_DGRAM)
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ, "fwd")
            self._fwd[family] = s
        return s

    def _forward(self, listener: Listener, client: Any, query: bytes, start: int) -> None:
        servers = self.upstreams.get()
        for i in range(start, len(servers)):
            server = servers[i]
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            qid = secrets.token_bytes(2)
            while qid in self._pending:
                qid = secrets.token_bytes(2)
            try:
                self._fwd_socket(family).sendto(qid + query[2:], (server, 53))
            except OSError as e:
                log.debug("dns: upstream %s: %s", server, e)
                continue
            self._pending[qid] = _Pending(listener, client, query[:2], query, i,
                                          time.monotonic() + ATTEMPT_TIMEOUT)
            return
        self._fail(listener, client, query)

    def _upstream_reply(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                return
            p = self._pending.get(data[:2]) if len(data) >= 12 else None
            if p is None:
                continue
            servers = self.upstreams.get()
            expected = servers[p.upstream] if p.upstream < len(servers) else ""
            # Only the upstream we asked may answer, and only with our question.
            if not _same_address(source, expected) or _question(data) != _question(p.query):
                continue
            del self._pending[data[:2]]
            rcode = data[3] & 0x0F
            if rcode in (2, 5):  # SERVFAIL, REFUSED: the next upstream may do better
                self._forward(p.listener, p.client, p.query, p.upstream + 1)
                continue
            p.listener.udp.sendto(p.client_id + data[2:], p.client)

    def _expire(self) -> None:
        now = time.monotonic()
        for qid, p in list(self._pending.items()):
            if p.deadline <= now:
                del self._pending[qid]
                self._forward(p.listener, p.client, p.query, p.upstream + 1)

    def _fail(self, listener: Listener, client: Any, query: bytes) -> None:
        wire = resolver.servfail(query)
        if wire is not None:
            # The listener may be gone (its sandbox removed while the query waited).
            with contextlib.suppress(OSError):
                listener.udp.sendto(wire, client)

    # ------------------------------------------------------------------ TCP (own thread)
    def _tcp_slot(self, listener: Listener, conn: socket.socket) -> None:
        try:
            self._tcp(listener, conn)
        finally:
            self._tcp_slots.release()

    def _tcp(self, listener: Listener, conn: socket.socket) -> None:
        conn.setblocking(True)
        conn.settimeout(TCP_IDLE)
        with conn:
            while True:
                try:
                    head = _recv_exact(conn, 2)
                    if head is None:
                        return
                    query = _recv_exact(conn, struct.unpack("!H", head)[0])
                    if query is None:
                        return
                except OSError:
                    return
                result = resolver.answer(query, listener.view, self.records, udp=False)
                wire = result.wire
                if wire is None and result.forward:
                    wire = self._forward_tcp(query)
                if wire is None:
                    return
                try:
                    conn.sendall(struct.pack("!H", len(wire)) + wire)
                except OSError:
                    return

    def _forward_tcp(self, query: bytes) -> bytes | None:
        for server in self.upstreams.get():
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            try:
                s = self._host_socket(family, socket.SOCK_STREAM)
            except OSError:
                continue
            with s:
                s.settimeout(ATTEMPT_TIMEOUT)
                try:
                    s.connect((server, 53))
                    s.sendall(struct.pack("!H", len(query)) + query)
                    head = _recv_exact(s, 2)
                    reply = _recv_exact(s, struct.unpack("!H", head)[0]) if head else None
                except OSError:
                    continue
            if reply and reply[:2] == query[:2] and (reply[3] & 0x0F) not in (2, 5):
                return reply
        return resolver.servfail(query)


def is_address(text: str) -> bool:
    """An IP address. Anything else would be resolved by the host (the DNS thread blocked
    on it) and never match the source of a reply: every forward would time out."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _same_address(source: Any, expected: str) -> bool:
    try:
        got = ipaddress.ip_address(str(source[0]).removeprefix("::ffff:"))
        return bool(got == ipaddress.ip_address(expected) and source[1] == 53)
    except ValueError:
        return False


def _question(wire: bytes) -> bytes:
    """The question section's bytes (lower-cased), to match a reply to its query."""
    end = 12
    while end < len(wire) and wire[end] != 0:
        end += wire[end] + 1
    return wire[12:end + 5].lower()
