"""The CLI's argv fuzzed by hypothesis against a real API server (over the fake kernel):
every run ends with an exit code of the table (0-3, 130 never) and a message, never a
traceback or an "internal error". Counted: CNM_FUZZ_EXAMPLES (300 in CI)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnm import cli
from cnm.testing.fakestack import fake_stack, serving

EXAMPLES = int(os.environ.get("CNM_FUZZ_EXAMPLES", "300"))
COMMANDS = [["network", "create"], ["network", "ls"], ["network", "rm"],
            ["network", "inspect"], ["network", "connect"], ["network", "disconnect"],
            ["network", "prune"], ["sandbox", "create"], ["sandbox", "ls"], ["sandbox", "rm"],
            ["sandbox", "inspect"], ["endpoint", "create"], ["endpoint", "ls"],
            ["endpoint", "join"], ["endpoint", "leave"], ["endpoint", "rm"], ["port", "add"],
            ["port", "rm"], ["port", "ls"], ["info"], ["version"], ["firewall", "reload"]]
FLAGS = ["--subnet", "--gateway", "--ip-range", "--ip", "--ip6", "-p", "--publish",
         "--alias", "--label", "-o", "--opt", "--ifname", "--format", "--dry-run", "-f",
         "--force", "--network", "--driver", "-d", "--internal", "--ipv6", "--mac-address",
         "--hostname", "--netns", "--aux-address", "-q", "--filter", "--tlsverify"]
WORDS = st.one_of(
    st.sampled_from(FLAGS),
    st.sampled_from(["bridge", "none", "host", "web", "a", "10.9.0.0/24", "80", "-1:80",
                     "9" * 50, "../x", "a\nb", "", "x" * 300, "json", "{{.Name}}",
                     "{{.Nope}}", "fd00::/64", "8080:80/udp", "k=v", "=", "127.0.0.0/8"]),
    st.text(max_size=12))


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("clifuzz")
    with fake_stack(tmp) as (built, _), serving(built.controller, str(tmp / "api.sock")) as at:
        yield at


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from(COMMANDS), rest=st.lists(WORDS, max_size=6))
def test_any_argv_ends_with_a_message_not_a_traceback(host: str, command: list[str],
                                                      rest: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = sys.stdin
    sys.stdin = io.StringIO("")  # as CI runs: no input (prune's question gets EOF)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(["-H", host, *command, *rest])
        except SystemExit as e:  # --help and --version exit through argparse
            rc = int(e.code or 0)
        finally:
            sys.stdin = stdin
    text = err.getvalue()
    assert rc in (0, 1, 2, 3), (command, rest, rc, text)
    assert "internal error" not in text and "Traceback" not in text, (command, rest, text)
    if rc:
        assert text.strip(), (command, rest, "an error without a message")
