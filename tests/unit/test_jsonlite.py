"""cnm.jsonlite gives what json gives: the same values read, the same documents refused,
and text json reads back to the same value (hypothesis: CNM_FUZZ_EXAMPLES, 300 in CI)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnm import jsonlite

EXAMPLES = int(os.environ.get("CNM_FUZZ_EXAMPLES", "300"))
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(value=VALUES)
def test_dumps_is_read_back_by_json_as_the_same_value(value: Any) -> None:
    text = jsonlite.dumps(value)
    assert json.loads(text) == value
    assert text == json.dumps(value, separators=(",", ":"))
    assert jsonlite.loads(text) == value
    assert jsonlite.loads(f" \n{json.dumps(value, indent=2)}\t") == value


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(text=st.text(alphabet='{}[]",:0123456789.eE-+ tfnrueals\\u', max_size=12))
def test_any_text_is_read_or_refused_as_json_reads_or_refuses_it(text: str) -> None:
    try:
        want: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            jsonlite.loads(text)
        return
    assert jsonlite.loads(text) == want


def test_bytes_and_errors() -> None:
    assert jsonlite.loads(b'{"a": "\\u00e9"}') == {"a": "é"}
    for bad in ("", "  ", "{", '{"a": 1} x', "[1,]", b"\xff"):
        with pytest.raises(ValueError):
            jsonlite.loads(bad)
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsonlite.dumps({"a": {1}})
    assert jsonlite.dumps({"a": [1]}) == '{"a":[1]}'  # a failed call leaves no marker
