"""The root tier: the real code against throwaway namespaces.

Every test gets its own "host" namespace (named cnmtest-*), its own state and run dirs, and
either an in-process controller (``stack``) or a real cnmd process (``daemon``): the
fixtures are cnm.testing.plugin's (loaded by tests/conftest.py). Teardown runs even when the
test fails. Nothing here touches the machine's own namespace.
"""

from __future__ import annotations

import os

import pytest

if os.geteuid() != 0:
    pytest.skip("the netns tier needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)",
                allow_module_level=True)
