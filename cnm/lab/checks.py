"""Run a lab's checks (in parallel, each a probe in the namespace it checks from) and
render the table: check, expected, got, PASS/FAIL."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cnm.errors import CnmError
from cnm.lab import model as m
from cnm.lab import peers, probe, state


@dataclass(frozen=True)
class Result:
    check: m.Check
    expected: str
    got: str
    passed: bool


class World:
    """What the lab looks like once up: each sandbox's namespace and addresses (read from
    its host's cnmd), each network's gateway."""

    def __init__(self, lab: m.Lab) -> None:
        self.lab = lab
        self.netns: dict[str, str] = {}
        self.addrs: dict[tuple[str, str], dict[int, str]] = {}  # (sandbox, net) -> fam->ip
        self.resolv: dict[str, str] = {}
        self.gateways: dict[str, dict[int, str]] = {}
        for h in lab.hosts:
            if not h.cnmd:
                continue
            c = state.client(lab.name, h.name)
            try:
                for sb in lab.sandboxes:
                    if sb.host != h.name:
                        continue
                    if sb.docker:
                        self._container(sb)
                        continue
                    info = c.sandbox(sb.name)
                    self.netns[sb.name] = str(info["netns"])
                    self.resolv[sb.name] = str(info["resolv_conf_path"])
                    for ep in info["endpoints"]:
                        fams = {}
                        for fam, key in ((4, "ipv4"), (6, "ipv6")):
                            if ep.get(key):
                                fams[fam] = str(ep[key]).split("/")[0]
                        self.addrs[(sb.name, ep["network"])] = fams
                for net in lab.networks:
                    if net.hosts[0] == h.name:
                        info = c.network(net.name)
                        for sub in info.get("subnets", []):
                            if sub.get("gateway"):
                                fam = ipaddress.ip_address(sub["gateway"]).version
                                self.gateways.setdefault(net.name, {})[fam] = sub["gateway"]
            finally:
                c.close()

    def _container(self, sb: m.Sandbox) -> None:
        """A Docker container, as `docker inspect` sees it: its namespace is its first
        process's, its resolv.conf Docker's (nameserver 127.0.0.11: Docker's DNS)."""
        info = peers.container(self.lab.name, sb)
        self.netns[sb.name] = f"/proc/{info['State']['Pid']}/ns/net"
        self.resolv[sb.name] = str(info["ResolvConfPath"])
        for net, ep in info["NetworkSettings"]["Networks"].items():
            fams = {}
            for fam, key in ((4, "IPAddress"), (6, "GlobalIPv6Address")):
                if ep.get(key):
                    fams[fam] = str(ep[key])
            self.addrs[(sb.name, net)] = fams

    def where(self, node: str) -> str:
        """The namespace a check from ``node`` runs in."""
        if node in self.netns:
            return self.netns[node]
        return state.netns_path(self.lab.name, node)

    def resolve(self, ref: str, source: str, family: int) -> str:
        try:
            ipaddress.ip_address(ref)
            return ref
        except ValueError:
            pass
        name, _, sub = ref.partition("@")
        if name == "gateway":
            return self._pick(self.gateways.get(sub, {}), family, ref)
        if any(s.name == name for s in self.lab.sandboxes):
            sb = self.lab.sandbox(name)
            nets = [a.network for a in sb.attachments]
            if nets[0] == "host":
                return self.resolve(sb.host, source, family)
            if not sub:
                mine = ({a.network for a in self.lab.sandbox(source).attachments}
                        if any(s.name == source for s in self.lab.sandboxes) else set())
                sub = next((n for n in nets if n in mine), nets[0])
            return self._pick(self.addrs.get((name, sub), {}), family, ref)
        for lk in self.lab.links:
            for e in lk.ends:
                if e.node == name and (not sub or e.ifname == sub):
                    for a in e.addresses:
                        ip = a.split("/")[0]
                        if ipaddress.ip_address(ip).version == family:
                            return ip
        raise CnmError(f"{ref} has no IPv{family} address")

    @staticmethod
    def _pick(fams: dict[int, str], family: int, ref: str) -> str:
        if family not in fams:
            raise CnmError(f"{ref} has no IPv{family} address")
        return fams[family]


def _ping(world: World, c: m.Check) -> dict[str, Any]:
    # ping itself in the namespace, without the Python probe around it: a lab of all-pairs
    # pings (N*(N-1) checks) would otherwise start as many interpreters (bench/lab.py).
    argv = probe.ping_argv(world.resolve(c.target, c.source, c.family), c.timeout)
    r = subprocess.run(["nsenter", f"--net={world.where(c.source)}", *argv],
                       capture_output=True, text=True, timeout=c.timeout + 20)
    if r.returncode not in (0, 1):  # 1: no reply; anything else: ping could not run
        return {"ok": False, "got": f"probe failed: {r.stderr.strip()[-200:]}"}
    return {"ok": r.returncode == 0, "got": "reply" if r.returncode == 0 else "no reply"}


def _probe(world: World, c: m.Check) -> dict[str, Any]:
    if c.kind == "ping":
        return _ping(world, c)
    if c.kind == "dns":
        args = [c.target, str(c.timeout), c.record, world.resolv[c.source]]
    else:
        target = world.resolve(c.target, c.source, c.family)
        args = [target, str(c.timeout)]
        if c.port is not None:
            args.append(str(c.port))
        if c.mtu is not None:
            args.append(str(c.mtu))
    cmd = ["nsenter", f"--net={world.where(c.source)}", sys.executable, "-m",
           "cnm.lab.probe", c.kind, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=c.timeout * 3 + 20)
    if r.returncode != 0 or not r.stdout.strip():
        return {"ok": False, "got": f"probe failed: {r.stderr.strip()[-200:]}"}
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def expected_text(world: World | None, c: m.Check) -> str:
    if c.kind == "dns":
        if c.expect != "addresses":
            return c.expect
        return " ".join(sorted(_maybe(world, a, c) for a in c.expect_addresses))
    if c.kind == "mtu":
        return c.expect
    if c.seen_as:
        return f"reach, seen as {_maybe(world, c.seen_as, c)}"
    return c.expect


def _maybe(world: World | None, ref: str, c: m.Check) -> str:
    if world is None:
        return ref
    try:
        return world.resolve(ref, c.source, 6 if c.record == "AAAA" else c.family)
    except CnmError:
        return ref


def judge(world: World, c: m.Check) -> Result:
    expected = expected_text(world, c)
    try:
        p = _probe(world, c)
    except (CnmError, subprocess.TimeoutExpired, KeyError) as e:
        return Result(c, expected, f"error: {e}", False)
    got = str(p.get("got", ""))
    if c.kind == "dns":
        if c.expect == "nxdomain":
            ok = got == "nxdomain"
        elif c.expect == "unresolved":
            ok = not p.get("ok")
        else:
            ok = bool(p.get("ok")) and " ".join(p.get("addresses", [])) == expected
    elif c.kind == "mtu":
        ok = bool(p.get("ok"))
    elif c.expect == "blocked":
        ok = not p.get("ok")
        got = "blocked" if ok else f"reached ({got})" if got != "reply" else "reached"
    else:
        ok = bool(p.get("ok"))
        if ok and c.seen_as:
            seen = str(p.get("seen", ""))
            ok = seen == _maybe(world, c.seen_as, c)
            got = f"reach, seen as {seen}"
        elif ok:
            got = "reach"
    return Result(c, expected, got, ok)


def run(lab: m.Lab, workers: int = 8) -> list[Result]:
    state.need_root("check")
    if state.State.read(lab.name) is None:
        raise CnmError(f"lab {lab.name} is not up", hint=f"cnm lab up {lab.path}")
    world = World(lab)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: judge(world, c), lab.checks))


def table(results: list[Result]) -> str:
    rows = [("CHECK", "EXPECTED", "GOT", "RESULT")]
    rows += [(r.check.label, r.expected, r.got, "PASS" if r.passed else "FAIL")
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
             + "  " + row[3] for row in rows]
    passed = sum(r.passed for r in results)
    lines.append(f"{passed}/{len(results)} checks passed")
    return "\n".join(lines)
