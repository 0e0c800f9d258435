"""The labs' echo server: each listener answers with the address and port it saw the client
come from ("ADDR PORT"), so a check can tell who sees which source address.

    python -m cnm.lab.echo tcp/80 udp/53 http/8080

Prints "ready" once every listener is bound."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def _peer(addr: tuple[str, int] | tuple[str, int, int, int]) -> bytes:
    host = addr[0].removeprefix("::ffff:")
    return f"{host} {addr[1]}\n".encode()


def _bind(kind: int, port: int) -> socket.socket:
    try:
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
    except OSError:  # no IPv6 in this namespace
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
    return s


def _tcp(s: socket.socket, http: bool) -> None:
    s.listen(64)
    while True:
        conn, addr = s.accept()
        with conn:
            conn.settimeout(2)
            body = _peer(addr)
            if http:
                try:
                    conn.recv(4096)
                except OSError:
                    continue
                body = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)
            with contextlib.suppress(OSError):
                conn.sendall(body)


def _udp(s: socket.socket) -> None:
    while True:
        _, addr = s.recvfrom(2048)
        s.sendto(_peer(addr), addr)


def main(argv: list[str]) -> int:
    threads = []
    for spec in argv:
        proto, _, port = spec.partition("/")
        if proto not in ("tcp", "udp", "http") or not port.isdigit():
            print(f"error: {spec!r} is not PROTO/PORT (tcp/80, udp/53, http/8080)",
                  file=sys.stderr)
            return 2
        if proto == "udp":
            s = _bind(socket.SOCK_DGRAM, int(port))
            threads.append(threading.Thread(target=_udp, args=(s,), daemon=True))
        else:
            s = _bind(socket.SOCK_STREAM, int(port))
            threads.append(threading.Thread(target=_tcp, args=(s, proto == "http"),
                                            daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
