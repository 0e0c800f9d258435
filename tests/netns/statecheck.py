"""Snapshots of everything cnm may change, to prove that a refused or failed request changed
nothing: the host namespace's links and addresses, the anti-spoofing port guards, the
controller's tables, the store (read through a fresh connection) and the files and mounts
under the run dir."""

from __future__ import annotations

import json
import os
from typing import Any

from cnm.store.sqlite import SqliteStore
from cnm.testing.netns import Stack, in_ns


def host_links(stack: Stack) -> list[dict[str, Any]]:
    """The stable identity of every link in the host namespace (no counters or states)."""
    stack.host.reap()  # retired links are on their way out; make that happen now
    out = json.loads(in_ns(stack.host_ns.path, "ip", "-j", "-d", "addr", "show").stdout)
    return sorted(
        ({"name": x["ifname"], "kind": x.get("linkinfo", {}).get("info_kind"),
          "alias": x.get("ifalias"), "master": x.get("master"), "mtu": x.get("mtu"),
          "mac": x.get("address"),
          "addrs": sorted(f"{a['local']}/{a['prefixlen']}" for a in x.get("addr_info", [])
                          if a.get("scope") == "global")}
         for x in out),
        key=lambda d: d["name"],
    )


def guards(host_netns: str) -> dict[str, list[str]]:
    """The elements of cnm's bridge table (the anti-spoofing port guards), by set; {} when
    the table does not exist."""
    r = in_ns(host_netns, "nft", "-j", "list", "table", "bridge", "cnm", check=False)
    if r.returncode != 0:
        return {}
    return {i["set"]["name"]: sorted(json.dumps(e, sort_keys=True)
                                     for e in i["set"].get("elem", []))
            for i in json.loads(r.stdout)["nftables"] if "set" in i}


def stored(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """The store's records, read through a connection of its own."""
    store = SqliteStore(stack.config.state_dir)
    try:
        state = store.load()
    finally:
        store.close()
    return {
        "networks": sorted((n.to_dict() for n in state.networks), key=lambda d: d["id"]),
        "sandboxes": sorted((s.to_dict() for s in state.sandboxes), key=lambda d: d["id"]),
        "endpoints": sorted((e.to_dict() for e in state.endpoints), key=lambda d: d["id"]),
    }


def run_dir(stack: Stack) -> dict[str, str]:
    """relative path -> contents (or "nsfs" for a bound namespace) under the run dir."""
    root = stack.config.run_dir
    out: dict[str, str] = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            if os.path.isdir(path):
                out[rel + "/"] = ""
            elif os.path.ismount(path):
                out[rel] = "nsfs"
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read().decode(errors="replace")
    return out


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f if line.split()[4].startswith(path + "/"))


def snapshot(stack: Stack) -> dict[str, Any]:
    c = stack.controller
    return {
        "host_links": host_links(stack),
        "guards": guards(stack.host_ns.path),
        "networks": [n.to_dict() for n in c.list_networks()],
        "sandboxes": [s.to_dict() for s in c.list_sandboxes()],
        "endpoints": [e.to_dict() for e in c.endpoints_of()],
        "store": stored(stack),
        "run_dir": run_dir(stack),
        "mounts": mounts_under(stack.config.run_dir),
    }
