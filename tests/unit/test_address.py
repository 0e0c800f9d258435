"""The one parser of daemon addresses, as cnmd (InvalidArgument) and the client (Unavailable)
use it."""

from __future__ import annotations

import re

import pytest

from cnm.address import DEFAULT_HOST, parse_unix_address
from cnm.client import Client
from cnm.errors import InvalidArgument, Unavailable


def test_a_unix_address_gives_its_socket_path() -> None:
    assert parse_unix_address("unix:///tmp/x.sock") == "/tmp/x.sock"
    assert parse_unix_address(DEFAULT_HOST) == "/run/cnm/cnm.sock"
    assert Client().path == "/run/cnm/cnm.sock"


@pytest.mark.parametrize("text", ["tcp://127.0.0.1:2375", "/run/cnm/cnm.sock", "unix://", ""])
def test_anything_else_is_refused_with_the_callers_error(text: str) -> None:
    message = f"^unsupported address {re.escape(repr(text))}: expected unix://PATH$"
    with pytest.raises(InvalidArgument, match=message) as e:
        parse_unix_address(text)
    assert e.value.hint and "unix socket" in e.value.hint
    with pytest.raises(Unavailable, match=message):
        Client(text)


@pytest.mark.parametrize("text,want", [
    ("tcp://127.0.0.1:2376", ("tcp", "", "127.0.0.1", 2376)),
    ("tcp://[::1]:2376", ("tcp", "", "::1", 2376)),
    ("tcp://cnm.example:1/", ("tcp", "", "cnm.example", 1)),
    ("unix:///run/x.sock", ("unix", "/run/x.sock", "", 0)),
])
def test_listen_addresses(text: str, want: tuple[str, str, str, int]) -> None:
    from cnm.hostaddr import parse_address

    a = parse_address(text)
    assert (a.scheme, a.path, a.host, a.port) == want
    assert parse_address(str(a)) == a


@pytest.mark.parametrize("text", ["tcp://127.0.0.1", "tcp://:2376", "tcp://h:0",
                                  "tcp://h:65536", "tcp://h:x", "http://h:1", "unix://", ""])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    from cnm.hostaddr import parse_address

    with pytest.raises(InvalidArgument, match="unsupported address"):
        parse_address(text)
