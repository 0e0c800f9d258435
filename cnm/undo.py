"""Undo steps for all-or-nothing operations (pushed on an ExitStack)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cnm.undo")


def quietly(fn: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """An undo step: run it, log (never raise) its failure, so every undo gets its turn and
    none masks the error that started the unwinding."""

    def run() -> None:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - an undo must not mask the original error
            log.error("undo %s failed: %s", getattr(fn, "__name__", fn), e)

    return run
