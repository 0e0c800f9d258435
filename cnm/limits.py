"""How big a request may be: the body, and the length and count of every field.

One table, enforced twice: by the core on every ``*Spec`` before it takes its lock (so no
surface, API, CLI or plugin, can make the core do work that grows with the input while
others wait), and by the API before it reads a body. openapi.yaml states the same numbers
(maxLength, maxItems, maxProperties); a unit test keeps it equal to this table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from cnm.errors import InvalidArgument

# A request body, in bytes; a larger one is refused (413) before it is read.
MAX_BODY = 1 << 20
# How deep a body's JSON may nest: every documented body is an object of strings, lists of
# strings and maps of strings, two levels; a little room for a clear "unknown field" error.
MAX_DEPTH = 8


@dataclass(frozen=True)
class Bound:
    """The limits of one field: a string's length, a list's or map's count, and the
    length of each item, key and value."""

    length: int = 256      # a string, or each item of a list
    count: int = 0         # a list's items or a map's entries (0: not a collection)
    key: int = 256         # each key of a map


# Names have their own rule (cnm.names: 64 characters) and error; this only keeps a huge
# one from reaching it, or an error message.
NAME = Bound(length=128)
ADDRESS = Bound(length=64)
PATH = Bound(length=4096)
SUBNETS = Bound(length=64, count=16)   # also gateways and ip ranges
AUX = Bound(length=64, count=256, key=64)
LABELS = Bound(length=4096, count=64, key=256)
OPTIONS = Bound(length=1024, count=64, key=256)
ALIASES = Bound(length=253, count=64)
PORTS = Bound(length=128, count=256)

# field name -> its bound, for every *Spec field and every request body field.
FIELDS: dict[str, Bound] = {
    "name": NAME, "driver": NAME, "network": NAME, "sandbox": NAME, "hostname": ALIASES,
    "ifname": NAME, "ip": ADDRESS, "ip6": ADDRESS, "mac": ADDRESS, "mac_address": ADDRESS,
    "netns": PATH, "subnets": SUBNETS, "gateways": SUBNETS, "ip_ranges": SUBNETS,
    "aux_addresses": AUX, "labels": LABELS, "options": OPTIONS, "aliases": ALIASES,
    "ports": PORTS, "destination": ADDRESS,
}


def check_field(what: str, name: str, value: Any) -> None:
    """Refuse a value over its field's bound, naming the field and the limit."""
    bound = FIELDS.get(name)
    if bound is None or value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if len(value) > bound.length:
            raise InvalidArgument(f"{what}: field {name!r} is {len(value)} characters long; "
                                  f"at most {bound.length} are accepted")
        return
    if isinstance(value, Mapping | Sequence):
        if len(value) > bound.count:
            raise InvalidArgument(f"{what}: field {name!r} has {len(value)} entries; at most "
                                  f"{bound.count} are accepted")
        items = value.items() if isinstance(value, Mapping) else ((None, v) for v in value)
        for key, item in items:
            if isinstance(key, str) and len(key) > bound.key:
                raise InvalidArgument(f"{what}: a key of field {name!r} is {len(key)} "
                                      f"characters long; at most {bound.key} are accepted")
            if isinstance(item, str) and len(item) > bound.length:
                raise InvalidArgument(f"{what}: an entry of field {name!r} is {len(item)} "
                                      f"characters long; at most {bound.length} are accepted")


def check_spec(what: str, spec: Any) -> None:
    """Every field of a ``*Spec`` dataclass within its bound (before the core's lock)."""
    for f in fields(spec):
        check_field(what, f.name, getattr(spec, f.name))


def check_body(what: str, body: Mapping[str, Any]) -> None:
    """Every field of a request body within its bound."""
    for name, value in body.items():
        check_field(what, name, value)
