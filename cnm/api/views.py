"""The API's JSON for networks, sandboxes and endpoints: records, plus what the core knows
of their relations (read under the core's lock, so a view is one consistent picture)."""

from __future__ import annotations

import os
from typing import Any

from cnm.core import Controller
from cnm.model import Endpoint, Network, Sandbox


def network(c: Controller, net: Network) -> dict[str, Any]:
    with c.lock:
        out = net.to_dict()
        out["dns"] = c.has_dns(net)
        out["link"] = c.link_of(net)
        eps = c.endpoints_of(network=net.id)
        out["endpoints"] = [
            {"id": e.id, "name": e.name,
             "sandbox": c.sandboxes[e.sandbox_id].name if e.sandbox_id else None,
             "sandbox_id": e.sandbox_id, "ifname": e.ifname, "mac": e.mac,
             "ipv4": e.ipv4, "ipv6": e.ipv6, "host_link": c.host_link_of(e)}
            for e in eps
        ]
        # docker's Containers: the joined endpoints by sandbox id, in its field names
        # (a template's {{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}} works).
        out["containers"] = {
            e.sandbox_id: {"name": c.sandboxes[e.sandbox_id].name, "endpoint_id": e.id,
                           "mac_address": e.mac, "ipv4_address": e.ipv4,
                           "ipv6_address": e.ipv6, "host_link": c.host_link_of(e)}
            for e in eps if e.sandbox_id
        }
        # A global network's joined endpoints on the other hosts of the cluster.
        out["endpoints"] += [
            {"id": p.endpoint_id, "name": p.name or p.sandbox_name, "sandbox": p.sandbox_name,
             "sandbox_id": p.sandbox_id, "ifname": "", "mac": p.mac, "ipv4": p.ipv4,
             "ipv6": p.ipv6, "host_link": None, "host": p.host}
            for p in sorted(c.state.peers.get(net.id, {}).values(), key=lambda p: p.name)
        ]
        return out


def sandbox(c: Controller, sb: Sandbox) -> dict[str, Any]:
    with c.lock:
        out = sb.to_dict()
        d = c.files_dir(sb)
        out["netns"] = c.netns_path(sb)
        out["hosts_path"] = os.path.join(d, "hosts")
        out["resolv_conf_path"] = os.path.join(d, "resolv.conf")
        out["endpoints"] = [endpoint(c, e) for e in c.endpoints_of(sandbox=sb.id)]
        return out


def endpoint(c: Controller, ep: Endpoint) -> dict[str, Any]:
    with c.lock:
        out = ep.to_dict()
        net = c.networks[ep.network_id]
        out["network"] = net.name
        out["dns"] = c.has_dns(net)
        out["sandbox"] = c.sandboxes[ep.sandbox_id].name if ep.sandbox_id else None
        out["host_link"] = c.host_link_of(ep)
        return out
