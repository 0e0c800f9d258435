"""JSON for processes that live one command (the CLI, cnm-cni), without ``import json``.

The json package imports re (and with it enum, functools and collections) for the pure
Python scanner and encoder it keeps as fallbacks: ~5 ms of a ~25 ms ``cnm network create``.
CPython's C accelerator ``_json`` (what json itself uses) needs none of it: ``loads`` and
``dumps`` here are its scanner and compact encoder, giving what ``json.loads`` and
``json.dumps(obj, separators=(",", ":"))`` give. Indented output, and an interpreter
without ``_json``, use the json package.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - every CPython has it
    _json = None  # type: ignore[assignment]

_WS = " \t\n\r"


class _Context:
    """What _json.make_scanner reads of a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, Any] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"),
                "-Infinity": float("-inf")}[name]


def _unsupported(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


if _json is not None:
    _scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # any such object


def loads(text: str | bytes) -> Any:
    """A JSON document, as json.loads reads it; ValueError when it is not one."""
    if _json is None:  # pragma: no cover
        import json

        return json.loads(text)
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"invalid JSON at character {e.value}") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value


def dumps(obj: Any) -> str:
    """Compact JSON of dicts, lists, strings, numbers, booleans and None (ASCII, as
    json.dumps gives by default)."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(obj, separators=(",", ":"))
    # A new encoder each time: its cycle markers would outlive an error half-way through.
    encode = _json.make_encoder({}, _unsupported, _json.encode_basestring_ascii, None,
                                ":", ",", False, False, True)
    return "".join(encode(obj, 0))
