"""One check's probe, run inside the namespace it checks from (by `nsenter --net`); prints
one JSON line: {"ok": reached or answered, "got": what a person would read, "seen": the
source address the echo server reported, "addresses": a DNS answer}."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time


def ping_argv(addr: str, timeout: float, size: int | None = None) -> list[str]:
    """One echo, waiting up to TIMEOUT (whole seconds, at least 1) for the reply."""
    cmd = ["ping", *(["-6"] if ":" in addr else []), "-c", "1", "-i", "0.2",
           "-w", str(max(1, round(timeout))), "-q"]
    if size is not None:
        cmd += ["-M", "do", "-s", str(size)]
    return [*cmd, addr]


def ping(addr: str, timeout: float, size: int | None = None) -> bool:
    r = subprocess.run(ping_argv(addr, timeout, size), capture_output=True,
                       timeout=timeout + 10)
    return r.returncode == 0


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def stream(addr: str, port: int, timeout: float, http: bool) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last = "timeout"
    while time.monotonic() < deadline:
        s = socket.socket(_family(addr), socket.SOCK_STREAM)
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            s.connect((addr, port))
            if http:
                s.sendall(f"GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            text = data.decode(errors="replace")
            if http:
                status = text.split(" ", 2)[1] if text.startswith("HTTP/") else "?"
                text = text.partition("\r\n\r\n")[2]
                if status != "200":
                    return {"ok": False, "got": f"HTTP {status}"}
            return {"ok": True, "got": "reached", "seen": text.split(" ")[0].strip()}
        except ConnectionRefusedError:
            last = "refused"
            time.sleep(0.1)
        except OSError as e:
            last = "timeout" if isinstance(e, TimeoutError) else (e.strerror or str(e))
            time.sleep(0.1)
        finally:
            s.close()
    return {"ok": False, "got": last}


def datagram(addr: str, port: int, timeout: float) -> dict[str, object]:
    s = socket.socket(_family(addr), socket.SOCK_DGRAM)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                s.sendto(b"probe\n", (addr, port))
                s.settimeout(min(0.3, max(0.05, deadline - time.monotonic())))
                data, _ = s.recvfrom(2048)
                return {"ok": True, "got": "reached", "seen": data.decode().split(" ")[0]}
            except (TimeoutError, ConnectionRefusedError):
                continue
            except OSError as e:
                return {"ok": False, "got": e.strerror or str(e)}
        return {"ok": False, "got": "no answer"}
    finally:
        s.close()


def dns(name: str, record: str, resolv: str, timeout: float) -> dict[str, object]:
    from dnslib import QTYPE, RCODE, DNSRecord

    try:
        with open(resolv) as f:
            servers = [ln.split()[1] for ln in f if ln.startswith("nameserver ")]
    except OSError:
        servers = []
    if not servers:
        return {"ok": False, "got": "unresolved: no nameserver"}
    q = DNSRecord.question(name, record)
    try:
        answer = DNSRecord.parse(q.send(servers[0], 53, timeout=timeout))
    except (OSError, TimeoutError):
        return {"ok": False, "got": f"unresolved: no answer from {servers[0]}"}
    rcode = RCODE.get(answer.header.rcode)
    if rcode != "NOERROR":
        return {"ok": False, "got": str(rcode).lower()}
    addrs = sorted(str(rr.rdata) for rr in answer.rr if QTYPE.get(rr.rtype) == record)
    return {"ok": True, "got": " ".join(addrs) or "no address", "addresses": addrs}


def main(argv: list[str]) -> int:
    kind, target, timeout = argv[0], argv[1], float(argv[2])
    out: dict[str, object]
    if kind == "ping":
        ok = ping(target, timeout)
        out = {"ok": ok, "got": "reply" if ok else "no reply"}
    elif kind in ("tcp", "http"):
        out = stream(target, int(argv[3]), timeout, kind == "http")
    elif kind == "udp":
        out = datagram(target, int(argv[3]), timeout)
    elif kind == "dns":
        out = dns(target, argv[3], argv[4], timeout)
    elif kind == "mtu":
        mtu = int(argv[3])
        fits = ping(target, timeout, mtu - 28)
        over = ping(target, timeout, mtu - 27) if fits else False
        got = f"> {mtu}" if over else (str(mtu) if fits else f"< {mtu}")
        out = {"ok": fits and not over, "got": got}
    else:
        out = {"ok": False, "got": f"unknown probe {kind}"}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
