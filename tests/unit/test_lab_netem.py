"""Impairment specs of a lab: parsed once, bad ones refused naming the key, tc's arguments."""

from __future__ import annotations

import pytest

from cnm.errors import InvalidArgument
from cnm.lab import netem


def test_full_spec_renders_tc_arguments() -> None:
    imp = netem.parse("links[0].impair", {"delay_ms": 40, "jitter_ms": 5, "loss_pct": 2.5,
                                          "rate": "10mbit"})
    assert imp == netem.Impairment(40.0, 5.0, 2.5, "10mbit")
    assert imp.tc_args() == ["delay", "40ms", "5ms", "loss", "2.5%", "rate", "10mbit"]


def test_loss_alone_has_no_delay() -> None:
    assert netem.parse("x", {"loss_pct": 100}).tc_args() == ["loss", "100%"]


@pytest.mark.parametrize(("data", "words"), [
    ({"delay": 10}, ["unknown key 'delay'"]),
    ({}, ["at least one of"]),
    ({"delay_ms": "10ms"}, ["delay_ms must be a number", "'10ms'"]),
    ({"delay_ms": True}, ["delay_ms must be a number"]),
    ({"loss_pct": 101}, ["loss_pct must be between 0 and 100"]),
    ({"delay_ms": -1}, ["delay_ms must be between 0 and 60000"]),
    ({"jitter_ms": 3}, ["jitter_ms needs a delay_ms"]),
    ({"rate": "fast"}, ["rate must be a tc rate", "'fast'"]),
    ({"rate": 10}, ["rate must be a tc rate"]),
])
def test_bad_spec_is_refused_naming_what_is_wrong(data: dict[str, object],
                                                  words: list[str]) -> None:
    with pytest.raises(InvalidArgument) as e:
        netem.parse("links[0].impair", data)
    assert str(e.value).startswith("links[0].impair: ")
    for w in words:
        assert w in str(e.value)


def test_unknown_key_hint_lists_the_allowed_keys() -> None:
    with pytest.raises(InvalidArgument) as e:
        netem.parse("x", {"lossy": 1})
    assert e.value.hint == "the keys allowed are delay_ms, jitter_ms, loss_pct, rate"
