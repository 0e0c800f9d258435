"""Hooks for every tier.

Tests marked ``vm`` need kernel features this machine may lack (ipvlan, 802.1q, dummy; see
netns-lab/vm/probe). On a kernel that has them they run here; on one that lacks them they
are skipped here and scripts/test.sh runs them in the VM tier (``netns-lab/vm/run -m vm
tests``). Inside the VM they are never skipped: a VM kernel without the features must fail
them, not pass quietly.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

import pytest

# Every program a test runs is installed by an install step (tests.programs); the
# throwaway-namespace fixtures (host_ns, stack, daemon) are cnm.testing.plugin.
pytest_plugins = ["tests.programs", "cnm.testing.plugin"]

PROBE = Path(__file__).resolve().parent.parent / "netns-lab" / "vm" / "probe"
VM_REASON = "runs in the VM tier (netns-lab/vm/run)"


@cache
def kernel_has_vm_features() -> bool:
    r = subprocess.run([str(PROBE)], capture_output=True, text=True, timeout=30)
    return r.returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    vm_items = [item for item in items if item.get_closest_marker("vm") is not None]
    if not vm_items or os.environ.get("CNM_VM") == "1" or kernel_has_vm_features():
        return
    skip = pytest.mark.skip(reason=VM_REASON)
    for item in vm_items:
        item.add_marker(skip)
