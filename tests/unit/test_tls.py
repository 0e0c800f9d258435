"""The API over TCP with mutual TLS, with certificates made here (trustme): the good pair
works; no client certificate, a client certificate from another CA, an expired one, and a
daemon certificate for another name are each refused, with a clear message on the side
that refuses (the client's error, or the daemon's log); TLS below 1.2 and a private key
readable by others are refused; tcp:// without --tlsverify is refused by cnm and cnmd."""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from cnm import cli, wiring
from cnm.api import listen
from cnm.api.server import serve_tls
from cnm.client import Client
from cnm.core import Config
from cnm.errors import InvalidArgument, Unavailable
from cnm.testing import FakeHostLinks, FakeKernel, FakeNft, FakeSandboxLinks
from cnm.tls import TlsFiles, client_context, server_context


def write(tmp: Path, name: str, ca: trustme.CA, leaf: trustme.LeafCert | None) -> TlsFiles:
    d = tmp / name
    d.mkdir()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    if leaf is not None:
        leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(d / "key.pem"))
        os.chmod(d / "key.pem", 0o600)
    return TlsFiles.from_dir(str(d))


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.ca, self.other = trustme.CA(), trustme.CA()
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        self.server = write(tmp, "server", self.ca, self.ca.issue_cert("127.0.0.1"))
        self.client = write(tmp, "client", self.ca, self.ca.issue_cert("client.cnm.test"))
        self.foreign = write(tmp, "foreign", self.ca, self.other.issue_cert("client.cnm.test"))
        self.expired = write(tmp, "expired", self.ca, self.ca.issue_cert(
            "client.cnm.test", not_before=past, not_after=past + datetime.timedelta(days=1)))
        self.wrong_name = write(tmp, "wrongname", self.ca, self.ca.issue_cert("other.test"))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def daemon(tmp_path: Path, pki: Pki) -> Iterator[str]:
    """The API on tcp://127.0.0.1:PORT (loopback only) over a fake kernel."""
    kernel = FakeKernel()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    config = Config(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                    host_netns=str(tmp_path / "host-netns"), resolv_conf=str(resolv))
    built = wiring.build(config, wiring.Adapters(FakeHostLinks(kernel),
                                                 FakeSandboxLinks(kernel), FakeNft()))
    srv = serve_tls(built.controller, "127.0.0.1", 0, server_context(pki.server))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        built.close()


def test_the_good_pair_works(daemon: str, pki: Pki) -> None:
    c = Client(daemon, timeout=20, tls=pki.client)
    try:
        assert c.call("GET", "/v1/_ping")["ok"] is True
        c.create_network(name="web", subnets=["10.5.0.0/24"])
        c.create_sandbox(name="a", network="web")
        assert [n["name"] for n in c.networks()] == ["bridge", "host", "none", "web"]
        c.remove_sandbox("a")
        c.remove_network("web")
    finally:
        c.close()


@pytest.mark.parametrize("who,client_words,log_words", [
    ("none", "requires a client certificate|closed the connection during TLS",
     "sent no certificate"),
    ("foreign", "does not trust the CA|closed the connection during TLS",
     "unable to get local issuer certificate"),
    ("expired", "expired|closed the connection during TLS", "certificate has expired"),
])
def test_a_client_the_ca_did_not_sign_is_refused(
        daemon: str, pki: Pki, caplog: pytest.LogCaptureFixture, who: str,
        client_words: str, log_words: str) -> None:
    caplog.set_level(logging.WARNING, logger="cnm.api")
    if who == "none":
        ctx = ssl.create_default_context(cafile=pki.client.ca)  # no certificate of its own
        host, port = daemon[len("tcp://"):].split(":")
        with pytest.raises(ssl.SSLError) as e, \
                ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=20),
                                server_hostname=host) as s:
            s.sendall(b"GET /v1/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(100)
        from cnm.tls import explain
        assert re.search(client_words, explain(e.value))
    else:
        files = getattr(pki, who)
        c = Client(daemon, timeout=20, tls=files)
        with pytest.raises(Unavailable, match=client_words):
            c.call("GET", "/v1/_ping")
    # The daemon's thread logs its refusal as the client reads its error: wait for it (a
    # bound against a hang, not a speed check).
    deadline = time.monotonic() + 20
    refused: list[str] = []
    while not refused and time.monotonic() < deadline:
        refused = [r.getMessage() for r in caplog.records
                   if "refused a TLS client" in r.getMessage()]
        time.sleep(0.05)
    assert refused and log_words in refused[-1], refused


def test_a_daemon_certificate_for_another_name_is_refused(tmp_path: Path, pki: Pki,
                                                          daemon: str) -> None:
    # The daemon here presents a certificate for 127.0.0.1; dial it as "localhost".
    port = daemon.rsplit(":", 1)[1]
    c = Client(f"tcp://localhost:{port}", timeout=20, tls=pki.client)
    with pytest.raises(Unavailable, match="Hostname mismatch|doesn't match|not valid for"):
        c.call("GET", "/v1/_ping")


def test_a_daemon_certificate_from_another_ca_is_refused(pki: Pki, daemon: str,
                                                         tmp_path: Path) -> None:
    other = write(tmp_path, "other-ca", pki.other, pki.other.issue_cert("client.cnm.test"))
    c = Client(daemon, timeout=20, tls=other)
    with pytest.raises(Unavailable, match="self-signed certificate in certificate chain|"
                                          "unable to get local issuer certificate"):
        c.call("GET", "/v1/_ping")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TLS 1.1, on purpose
def test_tls_below_1_2_is_refused(daemon: str, pki: Pki) -> None:
    ctx = client_context(pki.client)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    host, port = daemon[len("tcp://"):].split(":")
    with pytest.raises(ssl.SSLError), \
            ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=20),
                            server_hostname=host):
        pass
    assert server_context(pki.server).minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context(pki.client).minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_readable_by_others_is_refused(pki: Pki, mode: int) -> None:
    os.chmod(pki.server.key, mode)
    with pytest.raises(InvalidArgument, match="readable by others") as e:
        server_context(pki.server)
    assert e.value.hint == f"chmod 600 {pki.server.key}"
    with pytest.raises(InvalidArgument, match="readable by others"):
        client_context(pki.server)


def test_cnmd_refuses_tcp_without_tlsverify(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(InvalidArgument, match="mutual TLS only") as e:
        listen.plan(["tcp://127.0.0.1:2375"], "unix:///x", tlsverify=False, tls=None,
                    group=None)
    assert e.value.hint and "--tlsverify" in e.value.hint
    with pytest.raises(InvalidArgument, match="needs --tlscacert"):
        listen.plan(["tcp://127.0.0.1:2375"], "unix:///x", tlsverify=True, tls=None,
                    group=None)
    with pytest.raises(InvalidArgument, match="no such group"):
        listen.plan([f"unix://{tmp_path}/s.sock"], "", tlsverify=False, tls=None,
                    group="no-such-group-cnm")
    both = listen.plan([f"unix://{tmp_path}/s.sock", "tcp://127.0.0.1:2376"], "",
                       tlsverify=True, tls=pki.server, group="root")
    assert [a.scheme for a in both.addresses] == ["unix", "tcp"] and both.gid == 0


def test_the_cli_refuses_tcp_without_tlsverify_and_reads_cnm_cert_path(
        daemon: str, pki: Pki, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNM_TLS_VERIFY", raising=False)
    assert cli.main(["-H", daemon, "network", "ls"]) == 2
    assert "needs --tlsverify" in capsys.readouterr().err
    monkeypatch.setenv("CNM_CERT_PATH", os.path.dirname(pki.client.ca))
    assert cli.main(["-H", daemon, "--tlsverify", "network", "create", "web"]) == 0
    monkeypatch.setenv("CNM_HOST", daemon)
    monkeypatch.setenv("CNM_TLS_VERIFY", "1")
    assert cli.main(["network", "ls"]) == 0
    assert "web" in capsys.readouterr().out
    assert cli.main(["--tlscert", pki.foreign.cert, "--tlskey", pki.foreign.key,
                     "network", "ls"]) == 3
    assert re.search("does not trust the CA|closed the connection during TLS",
                     capsys.readouterr().err)
