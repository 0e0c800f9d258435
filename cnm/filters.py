"""``--filter KEY=VALUE`` of the CLI's ls and prune, as docker matches them.

Applied by the client to the API's JSON. Values of one key are alternatives (any may
match); different keys must all match; every ``label`` filter must match. Matching per key:

- ``name``: the value equals the name or, as a regular expression, is found in it (docker's
  ``Match``: ``name=web`` matches ``web`` and ``webapp``)
- ``id``: a prefix of the id
- ``driver``, ``scope``, ``network``, ``sandbox``: equal
- ``type``: ``builtin`` (bridge, host, none) or ``custom``
- ``label``: ``KEY`` (present) or ``KEY=VALUE``; ``label!`` the reverse (prune)
- ``until`` (prune): created before a time: RFC 3339 (``2026-12-02T10:00:00Z``, or a
  date), Unix seconds, or a duration before now (``10m``, ``24h``, ``1h30m``)
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from cnm.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

BUILTIN_NETWORKS = frozenset({"bridge", "host", "none"})
KEYS = {
    "network": ("name", "id", "driver", "label", "scope", "type"),
    "endpoint": ("name", "id", "network", "sandbox"),
    "sandbox": ("name", "id", "label", "network"),
    "prune": ("until", "label", "label!"),
}


def parse(values: Sequence[str], kind: str) -> dict[str, list[str]]:
    """``KEY=VALUE`` strings into {key: [values]}; an unknown key is refused by name."""
    allowed = KEYS[kind]
    out: dict[str, list[str]] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"bad format of filter {v!r}: expected KEY=VALUE",
                                  hint="filters: " + ", ".join(allowed))
        if key not in allowed:
            raise InvalidArgument(f"invalid filter {key!r}",
                                  hint="filters: " + ", ".join(allowed))
        if key == "until":
            until(value)  # refused now, not after listing
        out.setdefault(key, []).append(value)
    return out


def _labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for w in wanted:
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def _name_match(name: str, value: str) -> bool:
    if value == name:
        return True
    try:
        return re.search(value, name) is not None
    except re.error:
        return False


def _endpoint_of(obj: dict[str, Any], key: str) -> list[str]:
    """The networks (of a sandbox) or sandboxes (of an endpoint) an object is on."""
    if key == "network" and "endpoints" in obj:
        return [e["network"] for e in obj["endpoints"]]
    v = obj.get(key)
    return [v] if isinstance(v, str) else []


def matches(obj: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "label":
            if not _labels_match(obj.get("labels") or {}, values):
                return False
        elif key == "label!":
            if any(_labels_match(obj.get("labels") or {}, [v]) for v in values):
                return False
        elif key == "until":
            stamp = _created(obj)
            if not all(stamp < until(v) for v in values):
                return False
        elif key == "name":
            if not any(_name_match(obj["name"], v) for v in values):
                return False
        elif key == "id":
            if not any(obj["id"].startswith(v) for v in values):
                return False
        elif key == "type":
            kind = "builtin" if obj["name"] in BUILTIN_NETWORKS else "custom"
            for v in values:
                if v not in ("builtin", "custom"):
                    raise InvalidArgument(f"invalid filter 'type={v}': "
                                          "expected builtin or custom")
            if kind not in values:
                return False
        elif key in ("network", "sandbox"):
            if not set(values) & set(_endpoint_of(obj, key)):
                return False
        elif obj.get(key) not in values:
            return False
    return True


def select(items: list[dict[str, Any]], filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    return [x for x in items if matches(x, filters)]


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|ns))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def until(value: str) -> float:
    """The Unix time an ``until`` value names."""
    v = value.strip()
    if _DURATION.match(v):
        return time.time() - sum(float(n) * _UNIT[u] for n, u in _PART.findall(v))
    if re.fullmatch(r"\d+(\.\d+)?", v):
        return float(v)
    try:
        stamp = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"invalid filter 'until={value}': expected a time (2026-12-02T10:00:00Z, Unix "
            "seconds) or a duration before now (10m, 24h)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _created(obj: dict[str, Any]) -> float:
    return datetime.fromisoformat(obj["created"].replace("Z", "+00:00")).timestamp()
