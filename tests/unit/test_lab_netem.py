"""Impairments of a lab: the netem arguments tc gets for each model.Impairment."""

from __future__ import annotations

import pytest

from cnm.lab import netem
from cnm.lab.model import Impairment


@pytest.mark.parametrize(("imp", "args"), [
    (Impairment(delay_ms=40, jitter_ms=5, loss_pct=2.5, rate="10mbit"),
     ["delay", "40ms", "5ms", "loss", "2.5%", "rate", "10mbit"]),
    (Impairment(loss_pct=100), ["loss", "100%"]),
    (Impairment(delay_ms=1500), ["delay", "1500ms"]),
    (Impairment(delay_ms=0.2), ["delay", "0.2ms"]),
    (Impairment(rate="512kbit"), ["rate", "512kbit"]),
])
def test_tc_arguments(imp: Impairment, args: list[str]) -> None:
    assert netem.tc_args(imp) == args
