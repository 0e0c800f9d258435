"""A DNS client, a fake upstream server and a packet flooder, run by the netns tests inside
a namespace (``nsenter --net=PATH python dnsagent.py ...``). dnslib does the wire format.

  ask SERVER             one query per stdin line, one JSON line back on stdout:
                         ``{"name": N, "type": T, "tcp": bool, "edns": SIZE|null,
                         "timeout": S, "port": P}``
  serve SPEC LOG         a fake upstream: SPEC is JSON ``{address: {prefix: mode}}``, where
                         the prefix "*" is the default and a mode is ``answer IP``,
                         ``nxdomain``, ``servfail``, ``refused`` or ``silent``. Every query
                         received is appended to LOG as a JSON line. UDP and TCP.
  flood SERVER COUNT SEED NAME IP
                         COUNT malformed packets (UDP), checking every so often that NAME
                         still answers IP; a JSON report on stdout.
  tcpgarbage SERVER NAME IP
                         a few broken TCP connections, then a good TCP query.

Nothing here picks an address: every address comes from the test, inside its namespaces.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import socket
import struct
import sys
import threading
import time
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord


# --------------------------------------------------------------------------- client
def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def exchange(server: str, port: int, wire: bytes, tcp: bool, timeout: float) -> bytes:
    """Send one query and return the reply with the same ID (others are ignored)."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    deadline = time.monotonic() + timeout
    if tcp:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((server, port))
            s.sendall(struct.pack("!H", len(wire)) + wire)
            (n,) = struct.unpack("!H", _recv_exact(s, 2))
            return _recv_exact(s, n)
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.sendto(wire, (server, port))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            s.settimeout(left)
            data = s.recv(65535)
            if data[:2] == wire[:2]:
                return data


def ask(server: str, req: dict[str, Any]) -> dict[str, Any]:
    q = DNSRecord.question(req["name"], req.get("type", "A"))
    q.header.id = secrets.randbelow(65536)
    if req.get("edns"):
        q.add_ar(EDNS0(udp_len=req["edns"]))
    start = time.monotonic()
    try:
        data = exchange(server, req.get("port", 53), q.pack(), bool(req.get("tcp")),
                        req.get("timeout", 3.0))
    except (TimeoutError, OSError) as e:
        return {"error": type(e).__name__, "elapsed": time.monotonic() - start}
    elapsed = time.monotonic() - start
    r = DNSRecord.parse(data)
    return {
        "elapsed": elapsed,
        "size": len(data),
        "rcode": RCODE.get(r.header.rcode),
        "tc": bool(r.header.tc),
        "aa": bool(r.header.aa),
        "ra": bool(r.header.ra),
        "question": [str(x.qname) for x in r.questions],
        "answers": [[str(rr.rname), QTYPE.get(rr.rtype), str(rr.rdata)] for rr in r.rr],
        "opt": [rr.rclass for rr in r.ar if rr.rtype == QTYPE.OPT],
    }


def main_ask(server: str) -> None:
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(ask(server, json.loads(line))), flush=True)


# --------------------------------------------------------------------------- fake upstream
class Fake:
    def __init__(self, spec: dict[str, dict[str, str]], log_path: str) -> None:
        self.spec = spec
        self.log = open(log_path, "a")  # noqa: SIM115 - open for the process's life
        self.lock = threading.Lock()

    def reply(self, address: str, data: bytes, proto: str) -> bytes | None:
        try:
            q = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - a fake server ignores what it cannot read
            return None
        name = str(q.q.qname).rstrip(".").lower()
        with self.lock:
            self.log.write(json.dumps({"server": address, "name": name, "proto": proto,
                                       "type": QTYPE.get(q.q.qtype)}) + "\n")
            self.log.flush()
        modes = self.spec[address]
        mode = next((m for p, m in modes.items() if p != "*" and name.startswith(p)),
                    modes["*"])
        r = q.reply()
        r.header.ra = 1
        word, _, arg = mode.partition(" ")
        if word == "silent":
            return None
        if word == "answer":
            if q.q.qtype == QTYPE.A:
                r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(arg), ttl=30))
        else:
            r.header.rcode = {"nxdomain": RCODE.NXDOMAIN, "servfail": RCODE.SERVFAIL,
                              "refused": RCODE.REFUSED}[word]
        return r.pack()

    def udp(self, address: str, s: socket.socket) -> None:
        while True:
            data, client = s.recvfrom(65535)
            out = self.reply(address, data, "udp")
            if out is not None:
                s.sendto(out, client)

    def tcp(self, address: str, s: socket.socket) -> None:
        while True:
            conn, _ = s.accept()
            threading.Thread(target=self.tcp_conn, args=(address, conn), daemon=True).start()

    def tcp_conn(self, address: str, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    (n,) = struct.unpack("!H", _recv_exact(conn, 2))
                    out = self.reply(address, _recv_exact(conn, n), "tcp")
                    if out is None:
                        time.sleep(30)  # silent: hold the connection open
                        return
                    conn.sendall(struct.pack("!H", len(out)) + out)
            except (ConnectionError, OSError):
                return


def main_serve(spec_json: str, log_path: str) -> None:
    spec = json.loads(spec_json)
    fake = Fake(spec, log_path)
    for address in spec:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        u = socket.socket(family, socket.SOCK_DGRAM)
        u.bind((address, 53))
        t = socket.socket(family, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((address, 53))
        t.listen(64)
        threading.Thread(target=fake.udp, args=(address, u), daemon=True).start()
        threading.Thread(target=fake.tcp, args=(address, t), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


# --------------------------------------------------------------------------- flood
def _name(labels: list[bytes]) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0"


def _header(qid: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
            ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def compression_cycle() -> bytes:
    """Two backward pointers that send a name decoder round in circles: the first question
    is an ordinary long name whose last label hides the cycle, the second points into it.
    (Pointers of 0xC2 0x80/0x81 are valid UTF-8, so they may sit inside a label.)"""
    b = bytearray(_header(0x1234, qd=2))
    while len(b) < 588:
        b += bytes([63]) + b"a" * 63
    b += bytes([50]) + b"b" * 50  # up to offset 639
    content = bytearray(b"c" * 70)  # offsets 640..709

    def put(off: int, data: bytes) -> None:
        content[off - 640:off - 640 + len(data)] = data

    put(640, bytes([63]))
    put(641, bytes([58]))
    put(700, b"\xc2\x80")  # -> 640
    put(704, b"\xc2\x81")  # -> 641
    b += bytes([70]) + content + b"\0" + b"\0\1\0\1"
    b += b"\xc2\x81" + b"\0\1\0\1"
    return bytes(b)


def garbage(rng: random.Random, valid: list[bytes]) -> tuple[str, bytes]:
    """One malformed or unexpected packet, and its kind."""
    kind = rng.choice(["random", "random", "truncated", "bitflip", "bitflip", "labels",
                       "pointer", "counts", "response", "opcode", "edns", "big"])
    qid = rng.randrange(65536)
    if kind == "random":
        return kind, rng.randbytes(rng.randrange(0, 700))
    if kind == "big":
        return kind, rng.randbytes(rng.randrange(700, 9000))
    base = rng.choice(valid)
    if kind == "truncated":
        return kind, base[:rng.randrange(len(base))]
    if kind == "bitflip":
        b = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return kind, bytes(b)
    if kind == "labels":
        # Far past 255 octets and 127 labels, sometimes without the final zero.
        n = rng.choice([128, 200, 1000, 3000])
        name = _name([bytes([rng.choice(b"abcxyz019-")]) * rng.randint(1, 3)
                      for _ in range(n)])
        tail = b"\0\1\0\1" if rng.random() < 0.8 else b""
        return kind, _header(qid) + (name if tail else name[:-1]) + tail
    if kind == "pointer":
        loops = [
            _header(qid) + b"\xc0\x0c\0\1\0\1",  # points at itself
            _header(qid) + b"\x01a\xc0\x0c\0\1\0\1",  # label, then back to its start
            _header(qid) + b"\xc0\x40\0\1\0\1",  # forward, past the end
            _header(qid) + b"\xc0\x02\0\1\0\1",  # into the header
            compression_cycle(),
        ]
        return kind, rng.choice(loops)
    if kind == "counts":
        qd, an, ns, ar = (rng.choice([0, 1, 2, 255, 65535]) for _ in range(4))
        return kind, _header(qid, qd=qd, an=an, ns=ns, ar=ar) + base[12:]
    if kind == "response":
        b = bytearray(base)
        b[2] |= 0x80  # QR: a response, which a server must never answer
        return kind, bytes(b)
    if kind == "opcode":
        b = bytearray(base)
        b[2] = (b[2] & 0x87) | (rng.choice([1, 2, 3, 4, 5, 6, 15]) << 3)
        return kind, bytes(b)
    # edns: OPT records with absurd sizes, option lengths and duplicates.
    opt = b"\0" + struct.pack("!HHIH", 41, rng.choice([0, 1, 511, 65535]), 0,
                              rng.choice([0, 4, 60000]))
    opt += rng.randbytes(rng.randrange(0, 8))
    b = bytearray(base[:10]) + struct.pack("!H", rng.choice([1, 2, 3]))
    return kind, bytes(b) + base[12:] + opt * rng.randint(1, 3)


def main_flood(server: str, count: int, seed: int, name: str, ip: str) -> None:
    rng = random.Random(seed)
    valid = []
    for qn in (name, f"{name}.example", "x" * 63 + ".test", "4.3.2.1.in-addr.arpa"):
        for t in ("A", "AAAA", "PTR", "MX", "ANY"):
            q = DNSRecord.question(qn, t)
            valid.append(q.pack())
            q.add_ar(EDNS0(udp_len=4096))
            valid.append(q.pack())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((server, 53))
    s.setblocking(False)
    # Responses go from a socket of their own: any reply to one is counted.
    resp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resp.connect((server, 53))
    resp.setblocking(False)
    kinds: dict[str, int] = {}
    bad_sync = 0
    replies = 0
    drops_before = _udp_rcvbuf_errors()
    start = time.monotonic()
    sent = 0
    while sent < count:
        for _ in range(min(50, count - sent)):
            kind, pkt = garbage(rng, valid)
            kinds[kind] = kinds.get(kind, 0) + 1
            # A send that fails (a full buffer) is still counted as tried.
            with contextlib.suppress(OSError):
                (resp if kind == "response" else s).send(pkt)
            sent += 1
        # A sync point: the listener has read everything before a good query it answers.
        r = _sync(s, name, ip)
        replies += r[1]
        bad_sync += 0 if r[0] else 1
    response_replies = 0
    while True:
        try:
            resp.recv(65535)
            response_replies += 1
        except BlockingIOError:
            break
    print(json.dumps({
        "sent": sent, "kinds": kinds, "bad_sync": bad_sync, "other_replies": replies,
        "replies_to_responses": response_replies, "seconds": time.monotonic() - start,
        "rcvbuf_errors": _udp_rcvbuf_errors() - drops_before,
    }), flush=True)


def _sync(s: socket.socket, name: str, ip: str) -> tuple[bool, int]:
    """Ask ``name``; True when the answer is ``ip``. Also counts other replies drained."""
    q = DNSRecord.question(name, "A")
    q.header.id = secrets.randbelow(65536)
    wire = q.pack()
    drained = 0
    for _attempt in range(3):
        s.send(wire)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                data = s.recv(65535)
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            if data[:2] == wire[:2] and len(data) > 12 and data[2] & 0x80:
                try:
                    r = DNSRecord.parse(data)
                except Exception:  # noqa: BLE001 - a garbled reply is a failed sync
                    return False, drained
                if str(r.q.qname).rstrip(".") == name:
                    return [str(rr.rdata) for rr in r.rr] == [ip], drained
            drained += 1
    return False, drained


def _udp_rcvbuf_errors() -> int:
    """Datagrams this namespace dropped for a full receive buffer (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["RcvbufErrors"])


def main_tcpgarbage(server: str, name: str, ip: str) -> None:
    results = []

    def conn(payload: bytes, close_write: bool = True) -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
            c.settimeout(8)
            c.connect((server, 53))
            if payload:
                c.sendall(payload)
            if close_write:
                c.shutdown(socket.SHUT_WR)
            got = b""
            try:
                while chunk := c.recv(65535):
                    got += chunk
            except TimeoutError:
                return "timeout"
            except OSError as e:
                return type(e).__name__
            # Each framed reply's rcode, then how it ended.
            out = []
            while len(got) >= 14:
                (n,) = struct.unpack("!H", got[:2])
                out.append(RCODE.get(got[5] & 0x0F) if n >= 12 else "short")
                got = got[2 + n:]
            return " ".join([*out, "closed" if not got else "trailing bytes"])

    rng = random.Random(7)
    q = DNSRecord.question(name, "A").pack()
    cases = {
        "nothing": b"",
        "random": rng.randbytes(3000),
        "short length": b"\x00",
        "zero length": b"\x00\x00",
        "huge length, few bytes": b"\xff\xff" + rng.randbytes(100),
        "length then garbage": struct.pack("!H", 40) + rng.randbytes(40),
        "compression cycle": struct.pack("!H", len(compression_cycle())) + compression_cycle(),
        "response": struct.pack("!H", len(q)) + q[:2] + bytes([q[2] | 0x80]) + q[3:],
        "good then garbage": struct.pack("!H", len(q)) + q + b"\xff\xff\x00",
    }
    for label, payload in cases.items():
        results.append([label, conn(payload)])
    # A connection left open with half a message must not stop the others.
    idle = socket.create_connection((server, 53), timeout=5)
    idle.sendall(b"\x00\x30\x12\x34")
    good = ask(server, {"name": name, "type": "A", "tcp": True})
    idle.close()
    print(json.dumps({"cases": results, "good": good, "want": ip}), flush=True)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "ask":
        main_ask(args[0])
    elif cmd == "serve":
        main_serve(args[0], args[1])
    elif cmd == "flood":
        main_flood(args[0], int(args[1]), int(args[2]), args[3], args[4])
    elif cmd == "tcpgarbage":
        main_tcpgarbage(args[0], args[1], args[2])
    else:
        sys.exit(f"unknown command {cmd}")
