"""A CNI runtime's side of cnm-cni, for the tests: the binary called exactly as runtimes
call it (a new process, the CNI_* environment, the configuration on stdin, the answer on
stdout), and container namespaces made as runtimes make them.

Everything runs in throwaway namespaces the test made; nothing touches the machine's own.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnm.testing.netns import in_ns, run

PLUGIN = str(Path(sys.executable).with_name("cnm-cni"))


@dataclass
class Answer:
    rc: int
    out: Any  # the JSON on stdout (None when there was none)
    stdout: str
    stderr: str

    @property
    def code(self) -> int | None:
        return self.out.get("code") if isinstance(self.out, dict) and self.rc else None


@dataclass
class Runtime:
    """Calls cnm-cni for one network configuration, as a runtime would."""

    socket: str  # unix://PATH of the cnmd under test
    network: str
    version: str = "1.1.0"
    extra: dict[str, Any] = field(default_factory=dict)

    def conf(self, **more: Any) -> dict[str, Any]:
        return {"cniVersion": self.version, "name": self.network, "type": "cnm",
                "network": self.network, "socket": self.socket, **self.extra, **more}

    def call(self, command: str, conf: dict[str, Any] | None = None, *,
             cid: str | None = None, netns: str | None = None, ifname: str | None = "eth0",
             args: str | None = None, env: dict[str, str] | None = None,
             stdin: bytes | None = None, stdin_fd: int | None = None) -> Answer:
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
             "CNI_PATH": "/usr/lib/cni"}
        for key, value in (("CNI_CONTAINERID", cid), ("CNI_NETNS", netns),
                           ("CNI_IFNAME", ifname),
                           ("CNI_ARGS", args)):
            if value is not None:
                e[key] = value
        e.update(env or {})
        data = stdin if stdin is not None else json.dumps(
            conf if conf is not None else self.conf()).encode()
        r = subprocess.run([PLUGIN], input=None if stdin_fd is not None else data, stdin=stdin_fd,
                           capture_output=True, env=e, timeout=60)
        text = r.stdout.decode()
        try:
            out = json.loads(text) if text.strip() else None
        except ValueError:
            out = None
        return Answer(r.returncode, out, text, r.stderr.decode())

    def add(self, cid: str, netns: str, ifname: str = "eth0", **kw: Any) -> Answer:
        return self.call("ADD", cid=cid, netns=netns, ifname=ifname, **kw)

    def delete(self, cid: str, netns: str | None, ifname: str = "eth0", **kw: Any) -> Answer:
        return self.call("DEL", cid=cid, netns=netns, ifname=ifname, **kw)


def ok(a: Answer) -> Any:
    assert a.rc == 0, f"rc {a.rc}: {a.stdout} {a.stderr}"
    assert "Traceback" not in a.stderr
    return a.out


def failed(a: Answer, code: int) -> dict[str, Any]:
    """The error answer, checked: exit 1, the spec's shape, the code, no traceback."""
    assert a.rc == 1, f"expected an error, got rc {a.rc}: {a.stdout}"
    assert isinstance(a.out, dict), a.stdout
    assert set(a.out) <= {"cniVersion", "code", "msg", "details"}, a.out
    assert a.out["code"] == code, a.out
    assert a.out["msg"] and isinstance(a.out["cniVersion"], str)
    assert "Traceback" not in a.stderr + a.stdout
    return dict(a.out)


class Containers:
    """Container namespaces (ip netns add, lo up, as runtimes do); all deleted at exit."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new(self) -> str:
        name = f"cnmtest-ctr-{secrets.token_hex(3)}"
        self.names.append(name)
        run("ip", "netns", "add", name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return f"/run/netns/{name}"

    def remove(self, path: str) -> None:
        name = os.path.basename(path)
        run("ip", "netns", "del", name, check=False)
        if name in self.names:
            self.names.remove(name)

    def close(self) -> None:
        for name in list(self.names):
            run("ip", "netns", "del", name, check=False)
        self.names.clear()


@contextmanager
def containers() -> Iterator[Containers]:
    c = Containers()
    try:
        yield c
    finally:
        c.close()


def resolve_and_ping(netns: str, result: dict[str, Any], name: str,
                     tmp: Path) -> subprocess.CompletedProcess[str]:
    """Ping ``name`` from ``netns`` through the resolv.conf a runtime writes from the ADD
    result's dns (bind-mounted over /etc/resolv.conf in a mount namespace of its own)."""
    dns = result.get("dns") or {}
    conf = tmp / f"resolv-{secrets.token_hex(3)}.conf"
    conf.write_text("".join(f"nameserver {s}\n" for s in dns.get("nameservers", []))
                    + ("options " + " ".join(dns["options"]) + "\n"
                       if dns.get("options") else ""))
    return run("unshare", "-m", "--propagation=private", "sh", "-c",
               f"mount --bind {conf} /etc/resolv.conf && "
               f"nsenter --net={netns} ping -c 1 -W 2 {name}", check=False, timeout=30)


def address_of(result: dict[str, Any], family: int = 4) -> str:
    for ip in result["ips"]:
        if (":" in ip["address"]) == (family == 6):
            return str(ip["address"].split("/")[0])
    raise AssertionError(f"no IPv{family} address in {result}")


__all__ = ["Answer", "Containers", "Runtime", "address_of", "containers", "failed", "in_ns",
           "ok", "resolve_and_ping"]
