"""Does the kernel match the store? Everything a daemon left in the host namespace and its
sandboxes, compared with what its store explains: the check run after every restart of the
kill -9 campaign (and usable after any crash).

``drift`` reads the store file and the kernel with `ip` itself, apart from cnm's code, so it
stays a second opinion; ``doctor`` asks the daemon's own check (GET /v1/doctor,
cnm/core/doctor.py), which reads far more (routes, files, DNS listeners, nft elements). The
campaign wants both empty after every restart: reconcile left nothing, and doctor does not
see drift where there is none."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnm import names
from cnm.client import Client
from cnm.store.sqlite import SqliteStore
from cnm.testing.netns import in_ns
from tests.netns.statecheck import guards, mounts_under


def _links(netns: str) -> list[dict[str, Any]]:
    return list(json.loads(in_ns(netns, "ip", "-j", "-d", "addr", "show").stdout))


def drift(host_ns: str, state_dir: Path, run_dir: Path) -> list[str]:
    """Every disagreement between the kernel and the store, in words (empty: they agree).

    - no cnm link (ifalias cnm:KIND:ID) in the host namespace that no stored network or
      joined endpoint explains, and every joined bridge endpoint's veth there, on its bridge;
    - no namespace mounted under the run dir that no stored sandbox explains, and every
      stored cnm sandbox's namespace mounted;
    - in each sandbox, every joined endpoint's interface with exactly its stored addresses;
    - exactly the veths of joined bridge endpoints guarded (anti-spoofing), but on
      networks with anti_spoofing=false;
    - no address held twice in a network.
    """
    store = SqliteStore(str(state_dir))
    try:
        state = store.load()
    finally:
        store.close()
    out: list[str] = []
    nets = {n.id: n for n in state.networks}
    joined = {e.id: e for e in state.endpoints if e.sandbox_id}
    links = {x["ifname"]: x for x in _links(host_ns)}
    for name, x in links.items():
        owned = names.parse_alias(x.get("ifalias"))
        if owned is None:
            continue
        kind, ident = owned
        if kind == "network" and ident not in nets:
            out.append(f"host link {name} belongs to no stored network ({ident[:12]})")
        if kind == "endpoint" and ident not in joined:
            out.append(f"host link {name} belongs to no joined endpoint ({ident[:12]})")
    for e in joined.values():
        net = nets[e.network_id]
        if net.driver == "bridge":
            veth = links.get(names.veth_name(e.id))
            if veth is None:
                out.append(f"endpoint {e.name} of {net.name}: its veth is missing")
            elif veth.get("master") is None:
                out.append(f"endpoint {e.name} of {net.name}: its veth is on no bridge")
    guarded = {json.loads(p) for p in guards(host_ns).get("ports", [])}
    want = {names.veth_name(e.id) for e in joined.values()
            if nets[e.network_id].driver == "bridge"
            and nets[e.network_id].options.get("anti_spoofing", "true") == "true"}
    out += [f"port {p} of a joined endpoint is not guarded" for p in sorted(want - guarded)]
    out += [f"port {p} is guarded but no joined endpoint has it"
            for p in sorted(guarded - want)]
    sandboxes = {s.id: s for s in state.sandboxes}
    mounted = {os.path.basename(m) for m in mounts_under(str(run_dir / "netns"))}
    for ident in mounted - set(sandboxes):
        out.append(f"namespace {ident[:12]} is mounted but no sandbox is stored")
    for s in sandboxes.values():
        if s.kind == "netns" and s.id not in mounted:
            out.append(f"sandbox {s.name}: its namespace is not mounted")
    for s in sandboxes.values():
        if s.kind != "netns" or s.id not in mounted:
            continue
        inside = {x["ifname"]: x for x in _links(str(run_dir / "netns" / s.id))}
        for e in (e for e in joined.values() if e.sandbox_id == s.id and e.ifname):
            x = inside.get(e.ifname)
            if x is None:
                out.append(f"sandbox {s.name}: interface {e.ifname} is missing")
                continue
            have = sorted(f"{a['local']}/{a['prefixlen']}" for a in x.get("addr_info", [])
                          if a.get("scope") == "global")
            if have != sorted(e.cidrs):
                out.append(f"sandbox {s.name}: {e.ifname} has {have}, the store {e.cidrs}")
    held: dict[tuple[str, str], str] = {}
    for e in state.endpoints:
        for a in e.cidrs:
            key = (e.network_id, a)
            if key in held:
                out.append(f"address {a} is held twice ({held[key]}, {e.name})")
            held[key] = e.name
    return out


def doctor(address: str) -> list[str]:
    """The drift the daemon at ``address`` finds itself, a line each."""
    c = Client(address, timeout=30)
    try:
        found = c.call("GET", "/v1/doctor")["drift"]
    finally:
        c.close()
    return [f"doctor: {d['kind']}: {d['object']['type']} {d['object']['name']}: {d['wrong']}"
            for d in found]


def duplicates(state_dir: Path) -> int:
    store = SqliteStore(str(state_dir))
    try:
        eps = store.load().endpoints
    finally:
        store.close()
    seen = [(e.network_id, a) for e in eps for a in e.cidrs]
    return len(seen) - len(set(seen))
