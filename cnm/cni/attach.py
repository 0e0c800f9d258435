"""The CNI commands over cnmd's API.

A container is one adopted sandbox (``sandbox create --netns``), named after its container
id (spec.sandbox_name) and labelled with it; an attachment (container id, ifname) is the
sandbox's endpoint on the configured network, joined with that interface name. Both are
cnmd's records, so DEL, CHECK and GC find them after any restart of the plugin's callers
or of cnmd; each step is one all-or-nothing call of the core.
"""

from __future__ import annotations

import os

from cnm.cni import spec
from cnm.cni.spec import CniError, Invocation, NetConf
from cnm.cni.wire import Api
from cnm.errors import AlreadyExists, CnmError, NotFound, Unavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def identity(path: str) -> str | None:
    """The namespace's "dev:inode", as cnmd records it for an adopted sandbox."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def _sandbox(api: Api, name: str) -> dict[str, Any] | None:
    try:
        sb: dict[str, Any] = api.call("GET", f"/v1/sandboxes/{name}")
    except NotFound:
        return None
    return sb


def _ours(sb: dict[str, Any], cid: str) -> bool:
    return bool(sb.get("labels", {}).get(spec.LABEL) == cid)


def _on(sb: dict[str, Any], network: str, ifname: str) -> dict[str, Any] | None:
    return next((e for e in sb.get("endpoints", ())
                 if e["network"] == network and e["ifname"] == ifname), None)


# ---------------------------------------------------------------------------- ADD
def add(api: Api, inv: Invocation, conf: NetConf) -> dict[str, Any]:
    if identity(inv.netns) is None:
        raise CniError(spec.BAD_ENVIRONMENT, f"CNI_NETNS={inv.netns}: no such namespace")
    name = spec.sandbox_name(inv.container_id)
    want = conf.want
    body: dict[str, Any] = {"ifname": inv.ifname}
    for key, value in (("ip", want.ip), ("ip6", want.ip6), ("mac_address", want.mac),
                       ("aliases", want.aliases), ("ports", want.ports)):
        if value:
            body[key] = value
    try:
        for _ in range(2):  # once more if the sandbox found was a gone one (freed by then)
            try:
                sb = api.call("POST", "/v1/sandboxes", {
                    "name": name, "netns": inv.netns, "network": conf.network,
                    "hostname": want.hostname or inv.container_id[:12],
                    "labels": {spec.LABEL: inv.container_id}, **body})
                ep = _on(sb, conf.network, inv.ifname)
                assert ep is not None, "cnmd answered a sandbox without its endpoint"
                return spec.add_result(conf, inv.netns, ep, sb["endpoints"])
            except AlreadyExists as e:
                if e.message != f'sandbox "{name}" already exists':
                    raise
            # The container is on another network already: one more endpoint.
            sb = _sandbox(api, name)
            if sb is None:
                continue
            _same_container(sb, inv)
            try:
                ep = api.call("POST", f"/v1/networks/{conf.network}/connect",
                              {"sandbox": name, **body})
            except NotFound as e:
                if "is gone" in e.message or f'sandbox "{name}" not found' in e.message:
                    continue
                raise
            return spec.add_result(conf, inv.netns, ep, [*sb["endpoints"], ep])
        raise CniError(spec.TRY_AGAIN, f"the sandbox {name} kept changing under this ADD")
    except NotFound:
        _network_exists(api, conf)
        raise


def _same_container(sb: dict[str, Any], inv: Invocation) -> None:
    if not _ours(sb, inv.container_id):
        raise CniError(spec.INTERNAL, f'a sandbox "{sb["name"]}" that cnm-cni did not make '
                       "already exists", "remove it (cnm sandbox rm) or rename it")
    if sb.get("netns_id") != identity(inv.netns):
        raise CniError(spec.INTERNAL, f"container {inv.container_id} is attached in "
                       f"another namespace ({sb.get('netns')}), not {inv.netns}",
                       "DEL its attachments first")


def _network_exists(api: Api, conf: NetConf) -> None:
    try:
        api.call("GET", f"/v1/networks/{conf.network}")
    except NotFound:
        raise CniError(spec.BAD_CONFIG, f'network "{conf.network}" does not exist in cnmd',
                       f"create it: cnm network create {conf.network}") from None


# ---------------------------------------------------------------------------- DEL
def delete(api: Api, inv: Invocation, conf: NetConf) -> None:
    """Idempotent: a sandbox, endpoint or namespace already gone is success."""
    name = spec.sandbox_name(inv.container_id)
    sb = _sandbox(api, name)
    if sb is None or not _ours(sb, inv.container_id):
        return
    ep = _on(sb, conf.network, inv.ifname)
    others = [e for e in sb["endpoints"] if e is not ep]
    try:
        if not others:
            api.call("DELETE", f"/v1/sandboxes/{name}?force=true")
        elif ep is not None:
            api.call("POST", f"/v1/networks/{conf.network}/disconnect", {"sandbox": name})
    except NotFound:
        pass  # gone meanwhile, or its namespace was (cnmd freed its endpoints)


# ---------------------------------------------------------------------------- CHECK
def check(api: Api, inv: Invocation, conf: NetConf) -> None:
    from cnm.cni import look

    if conf.prev_result is None:
        raise CniError(spec.BAD_CONFIG, "CHECK needs prevResult (the result of the ADD)")
    name = spec.sandbox_name(inv.container_id)
    sb = _sandbox(api, name)
    ident = identity(inv.netns)
    if sb is None or not _ours(sb, inv.container_id):
        raise CniError(spec.UNKNOWN_CONTAINER, f"container {inv.container_id} has no "
                       "attachment in cnm")
    ep = _on(sb, conf.network, inv.ifname)
    if ep is None:
        raise CniError(spec.UNKNOWN_CONTAINER, f"container {inv.container_id} has no "
                       f"{inv.ifname} on network {conf.network} in cnm")
    if ident is None:
        raise CniError(spec.UNKNOWN_CONTAINER, f"the namespace {inv.netns} of container "
                       f"{inv.container_id} does not exist")
    if ident != sb.get("netns_id"):
        _mismatch(f"{inv.netns} is not the namespace cnm attached ({sb.get('netns')})")
    recorded = [a for a in (ep.get("ipv4"), ep.get("ipv6")) if a]
    _check_prev(conf.prev_result, inv, ep, recorded)
    link = look.link(inv.netns, inv.ifname)
    if link is None:
        _mismatch(f"{inv.ifname} is missing from {inv.netns}")
    assert link is not None
    if link.mac.lower() != ep["mac"].lower():
        _mismatch(f"{inv.ifname} has MAC {link.mac}; cnm recorded {ep['mac']}")
    if not link.up:
        _mismatch(f"{inv.ifname} is down")
    for cidr in recorded:
        if cidr not in link.addresses:
            _mismatch(f"{inv.ifname} lacks its address {cidr}",
                      "has: " + (", ".join(link.addresses) or "none"))
    have = {(p["host_ip"], p["host_port"], p["container_port"], p["proto"])
            for p in ep.get("ports", ())}
    for m in conf.want.ports:
        key = _port_key(m)
        if not any(k[1:] == key[1:] and k[0] in ("", key[0]) for k in have):
            _mismatch(f"the port mapping {m} is not published")


def _check_prev(prev: dict[str, Any], inv: Invocation, ep: dict[str, Any],
                recorded: list[str]) -> None:
    ifaces = prev.get("interfaces") or []
    index = next((i for i, f in enumerate(ifaces) if isinstance(f, dict)
                  and f.get("name") == inv.ifname and f.get("sandbox") == inv.netns), None)
    if index is None:
        _mismatch(f"prevResult has no interface {inv.ifname} in {inv.netns}")
    assert index is not None
    mac = str(ifaces[index].get("mac", ""))
    if mac and mac.lower() != ep["mac"].lower():
        _mismatch(f"prevResult gives {inv.ifname} MAC {mac}; cnm recorded {ep['mac']}")
    listed = sorted(str(ip.get("address")) for ip in prev.get("ips") or []
                    if isinstance(ip, dict) and ip.get("interface") == index)
    if listed != sorted(recorded):
        _mismatch(f"prevResult gives {inv.ifname} {', '.join(listed) or 'no address'}; cnm "
                  f"recorded {', '.join(recorded) or 'none'}")


def _port_key(spec_text: str) -> tuple[str, int, int, str]:
    rest, _, proto = spec_text.rpartition("/")
    host, _, container = rest.rpartition(":")
    host_ip, _, host_port = host.rpartition(":")
    return host_ip.strip("[]"), int(host_port), int(container), proto


def _mismatch(msg: str, details: str = "") -> None:
    raise CniError(spec.CHECK_MISMATCH, f"CHECK: {msg}", details)


# ---------------------------------------------------------------------------- STATUS, GC
def status(api: Api, conf: NetConf) -> None:
    try:
        api.call("GET", "/v1/_ping")
        api.call("GET", f"/v1/networks/{conf.network}")
    except Unavailable as e:
        raise CniError(spec.NOT_AVAILABLE, f"cnmd is not ready: {e.message}",
                       e.hint or "") from None
    except NotFound:
        raise CniError(spec.NOT_AVAILABLE, f'network "{conf.network}" does not exist in '
                       "cnmd", f"create it: cnm network create {conf.network}") from None


def gc(api: Api, conf: NetConf) -> None:
    """Remove every cnm-cni attachment on the network that the runtime does not list, and
    cnm-cni sandboxes left with no endpoint; carry on past a failure, report them all."""
    errors: list[str] = []
    for sb in api.call("GET", "/v1/sandboxes"):
        cid = sb.get("labels", {}).get(spec.LABEL)
        if not cid:
            continue
        eps = sb.get("endpoints", [])
        stale = [e for e in eps if e["network"] == conf.network
                 and (cid, e["ifname"]) not in conf.valid]
        try:
            if not eps or (stale and len(stale) == len(eps)):
                api.call("DELETE", f"/v1/sandboxes/{sb['name']}?force=true")
            elif stale:
                api.call("POST", f"/v1/networks/{conf.network}/disconnect",
                         {"sandbox": sb["name"]})
        except NotFound:
            pass
        except CnmError as e:
            errors.append(f"{sb['name']}: {e.message}")
    if errors:
        raise CniError(spec.INTERNAL, f"GC: {len(errors)} attachment(s) not removed",
                       "; ".join(errors))
