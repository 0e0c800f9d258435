"""Ids and every kernel-visible name, in one place.

Kernel names are derived from record ids (deterministic, at most 15 bytes), so teardown and
reconcile recompute them from the record instead of storing them.
"""

from __future__ import annotations

import re
import secrets

IFNAMSIZ = 15
PREFIX = "cnm"
# ifalias of every link cnm creates: "cnm:<kind>:<id>", so reconcile can tell its own links.
ALIAS_PREFIX = "cnm:"

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_IFNAME_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")


def new_id() -> str:
    """A 64-hex id, like Docker's."""
    return secrets.token_hex(32)


def short(ident: str) -> str:
    return ident[:12]


def valid_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name))


_DNS_RE = re.compile(r"[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?"
                     r"(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?)*")


def valid_dns_name(name: str) -> bool:
    """A name the embedded DNS can answer (labels of up to 63, 253 in all)."""
    return len(name) <= 253 and bool(_DNS_RE.fullmatch(name))


def valid_ifname(name: str) -> bool:
    return bool(_IFNAME_RE.fullmatch(name)) and name not in (".", "..")


def bridge_name(network_id: str) -> str:
    return f"{PREFIX}b{network_id[:11]}"


def veth_name(endpoint_id: str) -> str:
    """Host-side end of an endpoint's veth pair."""
    return f"{PREFIX}v{endpoint_id[:11]}"


def retired_name(endpoint_id: str) -> str:
    """Sandbox-side end of a retired veth, renamed so its ethN name is free at once."""
    return f"{PREFIX}r{endpoint_id[:11]}"


def handover_name(endpoint_id: str) -> str:
    """Sandbox-side end of a link handed over in the host namespace (Docker's SrcName),
    unique there until the runtime moves it into its sandbox."""
    return f"{PREFIX}c{endpoint_id[:11]}"


def dummy_name(network_id: str) -> str:
    """The dummy parent of a macvlan/ipvlan network given no parent link."""
    return f"{PREFIX}p{network_id[:11]}"


def shim_name(network_id: str) -> str:
    """The host's own macvlan/ipvlan link on a network's parent (``-o host_shim=true``)."""
    return f"{PREFIX}h{network_id[:11]}"


# Link group of retired links (the u32 "cnm"): deleted together in one batched request.
GRAVEYARD_GROUP = 0x636E6D


def sandbox_ifname(index: int) -> str:
    return f"eth{index}"


def alias(kind: str, ident: str) -> str:
    return f"{ALIAS_PREFIX}{kind}:{ident}"


def parse_alias(value: str | None) -> tuple[str, str] | None:
    """(kind, id) of a cnm-owned link's ifalias, or None for a link cnm does not own."""
    if not value or not value.startswith(ALIAS_PREFIX):
        return None
    parts = value.split(":", 2)
    if len(parts) != 3:
        return None
    return parts[1], parts[2]


def random_mac() -> str:
    """A locally administered unicast MAC (02:xx:...)."""
    tail = secrets.token_bytes(5)
    return "02:" + ":".join(f"{b:02x}" for b in tail)


_MAC_RE = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")


def valid_unicast_mac(mac: str) -> bool:
    if not _MAC_RE.fullmatch(mac):
        return False
    first = int(mac[:2], 16)
    return not first & 1 and mac != "00:00:00:00:00:00"
