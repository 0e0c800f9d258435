"""The real cnmd with -H given twice (its unix socket and tcp://127.0.0.1 with mutual TLS):
the real `cnm` CLI drives it over TLS with CNM_HOST, CNM_TLS_VERIFY and CNM_CERT_PATH;
without --tlsverify cnmd refuses to start on TCP and says why; the unix socket is 0660 in
the group --group names. Loopback only."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from cnm.testing.netns import Daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def certs(tmp: Path) -> tuple[Path, Path]:
    ca = trustme.CA()
    out = []
    for name, identity in (("server", "127.0.0.1"), ("client", "client.cnm.test")):
        d = tmp / name
        d.mkdir()
        leaf = ca.issue_cert(identity)
        ca.cert_pem.write_to_path(str(d / "ca.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(d / "key.pem"))
        os.chmod(d / "key.pem", 0o600)
        out.append(d)
    return out[0], out[1]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnm", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)


def test_cnmd_serves_unix_and_tcp_with_mutual_tls(daemon: Daemon, tmp_path: Path) -> None:
    server, client = certs(tmp_path)
    port = free_port()
    daemon.stop()
    daemon.start("-H", f"tcp://127.0.0.1:{port}", "--tlsverify",
                 "--tlscacert", str(server / "ca.pem"), "--tlscert", str(server / "cert.pem"),
                 "--tlskey", str(server / "key.pem"), "--group", "root")
    mode = os.stat(daemon.socket)
    assert stat.S_IMODE(mode.st_mode) == 0o660 and mode.st_gid == 0
    env = {"CNM_HOST": f"tcp://127.0.0.1:{port}", "CNM_TLS_VERIFY": "1",
           "CNM_CERT_PATH": str(client)}
    for args in (["network", "create", "--subnet", "10.61.0.0/24", "web"],
                 ["sandbox", "create", "--network", "web", "a"],
                 ["network", "connect", "bridge", "a"],
                 ["network", "disconnect", "bridge", "a"],
                 ["sandbox", "ls"], ["network", "ls"], ["endpoint", "ls"],
                 ["sandbox", "rm", "a"], ["network", "rm", "web"]):
        r = cli(env, *args)
        assert r.returncode == 0, (args, r.stderr)
    # The same daemon on its unix socket at once.
    assert "bridge" in daemon.cli("network", "ls").stdout
    # A client without a certificate of the CA gets nowhere, and is told so.
    r = cli({**env, "CNM_CERT_PATH": str(server)}, "--tlscert", str(client / "cert.pem"),
            "--tlskey", str(server / "key.pem"), "network", "ls")
    assert r.returncode != 0 and "TLS" in r.stderr
    r = cli({"CNM_HOST": f"tcp://127.0.0.1:{port}", "CNM_TLS_VERIFY": ""}, "network", "ls")
    assert r.returncode == 2 and "needs --tlsverify" in r.stderr
    r = cli(env, "network", "ls", "--format", "json")
    assert [n["name"] for n in json.loads(r.stdout)] == ["bridge", "host", "none"]


@pytest.mark.parametrize("extra,words", [
    ((), "mutual TLS only"),
    (("--tlsverify",), "needs --tlscacert"),
])
def test_cnmd_refuses_tcp_without_mutual_tls_at_start(daemon: Daemon, extra: tuple[str, ...],
                                                      words: str) -> None:
    daemon.stop()
    with pytest.raises(RuntimeError, match=words):
        daemon.start("-H", f"tcp://127.0.0.1:{free_port()}", *extra)
