"""CLI: argv of `cnm port ...`, `cnm firewall reload` and -p into the requests it sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cnm import cli
from cnm.client import Client
from cnm.errors import Conflict

WEB_8080 = {"network": "bridge", "proto": "tcp", "host_ip": "", "host_port": 8080,
            "host_port_end": 8080, "container_port": 80, "container_port_end": 80}
DUAL_RANGE = {"network": "dual", "proto": "udp", "host_ip": "::1", "host_port": 9000,
              "host_port_end": 9002, "container_port": 9000, "container_port_end": 9002}


class FakeClient(Client):
    """Records (method, path, body) and answers from ``replies`` (or raises ``error``)."""

    requests: list[tuple[str, str, Any]] = []
    hosts: list[str] = []
    replies: dict[tuple[str, str], Any] = {}
    error: Exception | None = None

    def __init__(self, host: str, timeout: float = 60.0) -> None:
        self.hosts.append(host)

    def close(self) -> None:
        pass

    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.requests.append((method, path, body))
        if self.error is not None:
            raise self.error
        return self.replies.get((method, path))


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    monkeypatch.setattr(FakeClient, "requests", [])
    monkeypatch.setattr(FakeClient, "hosts", [])
    monkeypatch.setattr(FakeClient, "replies", {})
    monkeypatch.setattr(FakeClient, "error", None)
    monkeypatch.setattr(cli, "Client", FakeClient)
    monkeypatch.delenv("CNM_HOST", raising=False)
    return FakeClient


def test_port_add(client: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    client.replies[("POST", "/v1/sandboxes/web/ports")] = [WEB_8080, DUAL_RANGE]
    assert cli.main(["port", "add", "web", "8080:80", "[::1]:9000-9002:9000-9002/udp"]) == 0
    assert client.requests == [("POST", "/v1/sandboxes/web/ports",
                                {"ports": ["8080:80", "[::1]:9000-9002:9000-9002/udp"]})]
    assert client.hosts == ["unix:///run/cnm/cnm.sock"]
    assert capsys.readouterr().out == ("80/tcp -> 0.0.0.0:8080, [::]:8080  (bridge)\n"
                                       "9000-9002/udp -> [::1]:9000-9002  (dual)\n")


def test_port_add_on_a_network(client: type[FakeClient]) -> None:
    client.replies[("POST", "/v1/sandboxes/my%20sb/ports")] = []
    assert cli.main(["-H", "unix:///tmp/x.sock", "port", "add", "--network", "dual", "my sb",
                     "80"]) == 0
    assert client.requests == [("POST", "/v1/sandboxes/my%20sb/ports",
                                {"ports": ["80"], "network": "dual"})]
    assert client.hosts == ["unix:///tmp/x.sock"]


def test_port_add_needs_a_spec(client: type[FakeClient],
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["port", "add", "web"]) == 2
    assert client.requests == []
    assert "the following arguments are required: SPEC" in capsys.readouterr().err


def test_port_add_conflict_is_reported(client: type[FakeClient],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    client.error = Conflict('host port 8080/tcp is already published by sandbox "db"')
    assert cli.main(["port", "add", "web", "8080:80"]) == 1
    assert capsys.readouterr().err == (
        'error: host port 8080/tcp is already published by sandbox "db"\n')


def test_port_rm(client: type[FakeClient]) -> None:
    assert cli.main(["port", "rm", "web", "8080", "8080/udp", "53/sctp"]) == 0
    assert client.requests == [
        ("DELETE", "/v1/sandboxes/web/ports/tcp/8080", None),
        ("DELETE", "/v1/sandboxes/web/ports/udp/8080", None),
        ("DELETE", "/v1/sandboxes/web/ports/sctp/53", None),
    ]


def test_port_remove_alias(client: type[FakeClient]) -> None:
    assert cli.main(["port", "remove", "web", "8080/udp"]) == 0
    assert client.requests == [("DELETE", "/v1/sandboxes/web/ports/udp/8080", None)]


@pytest.mark.parametrize("bad", ["x", "/udp", "80-90", "-1", "8080:80"])
def test_port_rm_bad_port_is_invalid_input(client: type[FakeClient],
                                           capsys: pytest.CaptureFixture[str],
                                           bad: str) -> None:
    assert cli.main(["port", "rm", "web", "--", bad]) == 2
    assert client.requests == []
    err = capsys.readouterr().err
    assert err == f"error: invalid port {bad!r}: expected HOST_PORT[/tcp|udp|sctp]\n"


def test_port_rm_stops_at_the_first_bad_port(client: type[FakeClient]) -> None:
    assert cli.main(["port", "rm", "web", "8080", "x", "9090"]) == 2
    assert client.requests == [("DELETE", "/v1/sandboxes/web/ports/tcp/8080", None)]


def test_port_ls(client: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    client.replies[("GET", "/v1/sandboxes/web/ports")] = [WEB_8080, DUAL_RANGE]
    assert cli.main(["port", "ls", "web"]) == 0
    assert client.requests == [("GET", "/v1/sandboxes/web/ports", None)]
    assert capsys.readouterr().out == ("80/tcp -> 0.0.0.0:8080, [::]:8080  (bridge)\n"
                                       "9000-9002/udp -> [::1]:9000-9002  (dual)\n")
    assert cli.main(["port", "list", "web", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [WEB_8080, DUAL_RANGE]


def test_firewall_reload(client: type[FakeClient], capsys: pytest.CaptureFixture[str]) -> None:
    client.replies[("POST", "/v1/firewall/reload")] = {"networks": 3, "ports": 5, "guards": 4}
    assert cli.main(["firewall", "reload"]) == 0
    # The reload takes no body (the document declares none).
    assert client.requests == [("POST", "/v1/firewall/reload", None)]
    assert capsys.readouterr().out == "rebuilt: 3 networks, 5 published ports, 4 guarded ports\n"


def test_firewall_needs_a_command(client: type[FakeClient]) -> None:
    assert cli.main(["firewall"]) == 2
    assert client.requests == []


def test_publish_flags_of_sandbox_create_and_connect(client: type[FakeClient]) -> None:
    client.replies[("POST", "/v1/sandboxes")] = {"id": "abc"}
    assert cli.main(["sandbox", "create", "-p", "8080:80", "--publish", "53/udp", "web"]) == 0
    method, path, body = client.requests[-1]
    assert (method, path, body["ports"]) == ("POST", "/v1/sandboxes", ["8080:80", "53/udp"])
    assert cli.main(["network", "connect", "-p", "[::1]:8443:443", "dual", "web"]) == 0
    method, path, body = client.requests[-1]
    assert (method, path) == ("POST", "/v1/networks/dual/connect")
    assert (body["sandbox"], body["ports"]) == ("web", ["[::1]:8443:443"])
