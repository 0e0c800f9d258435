"""cnmd as a service (cnm/service.py): the configuration file (keys named as the flags,
flags win, unknown keys and wrong kinds refused by name), JSON logs, sd_notify."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from cnm import service
from cnm.daemon import parser, run
from cnm.errors import InvalidArgument


def load(tmp_path: Path, data: Any, *argv: str) -> Any:
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps(data))
    return service.load_config(parser(), ["--config-file", str(cfg), *argv])


def test_keys_are_the_flags_and_flags_win(tmp_path: Path) -> None:
    args = load(tmp_path, {"state-dir": "/srv/cnm", "run-dir": "/run/x", "debug": True,
                           "dns": ["192.0.2.1", "192.0.2.2"], "cluster-ttl": 30,
                           "default-address-pool": ["base=10.200.0.0/16,size=24"],
                           "log-format": "json"},
                "--run-dir", "/run/y", "--dns", "192.0.2.9")
    assert args.state_dir == "/srv/cnm" and args.debug is True and args.cluster_ttl == 30
    assert args.run_dir == "/run/y"  # the flag wins
    assert args.dns == ["192.0.2.9"]  # a repeatable flag replaces the file's list
    assert args.default_address_pool == ["base=10.200.0.0/16,size=24"]
    assert args.log_format == "json"
    plain = service.load_config(parser(), ["--config-file", str(tmp_path / "daemon.json")])
    assert plain.dns == ["192.0.2.1", "192.0.2.2"] and plain.run_dir == "/run/x"


@pytest.mark.parametrize("data, needle", [
    ({"state_dir": "/x"}, "unknown key 'state_dir'"),
    ({"nope": 1}, "unknown key 'nope'"),
    ({"config-file": "/x"}, "unknown key 'config-file'"),
    ({"debug": "yes"}, "'debug' must be true or false"),
    ({"dns": "192.0.2.1"}, "'dns' must be a list of strings"),
    ({"cluster-ttl": "30"}, "'cluster-ttl' must be a number"),
    ({"state-dir": 5}, "'state-dir' must be a string"),
    ({"log-level": "loud"}, "'log-level' must be one of debug, info, warning, error"),
    ([], "expected a JSON object of flags"),
])
def test_bad_files_are_refused_by_what_is_wrong(tmp_path: Path, data: Any,
                                                needle: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        load(tmp_path, data)
    assert needle in e.value.message


def test_a_missing_file_is_an_error_only_when_asked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgument, match="no such file"):
        service.load_config(parser(), ["--config-file", str(tmp_path / "none.json")])
    monkeypatch.setattr(service, "DEFAULT_CONFIG", str(tmp_path / "none.json"))
    assert service.load_config(parser(), []).state_dir == "/var/lib/cnm"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        service.load_config(parser(), ["--config-file", str(tmp_path / "bad.json")])


def test_cnmd_refuses_a_bad_file_before_doing_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"sate-dir": "/x"}')
    assert run(["--config-file", str(cfg), "--state-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'sate-dir'" in err and "state-dir" in err
    assert not (tmp_path / "s").exists()


def test_json_logs_are_one_object_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    old = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        service.setup_logging("info", "json")
        logging.getLogger("cnm.api").info("POST %s -> %d", "/v1/networks", 201,
                                          extra={"fields": {"status": 201}})
        logging.getLogger("cnm.api").debug("not at info")
    finally:
        logging.getLogger().handlers[:], _ = old[0], logging.getLogger().setLevel(old[1])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["level"] == "info" and rec["logger"] == "cnm.api" and rec["status"] == 201
    assert rec["message"] == "POST /v1/networks -> 201" and rec["time"].endswith("Z")


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_the_state_to_notify_socket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    name = f"cnm-test-notify-{id(tmp_path)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        if abstract:
            s.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            s.bind(str(tmp_path / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        s.settimeout(5)
        assert service.notify("READY=1")
        assert s.recv(100) == b"READY=1"


def test_notify_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert service.notify("READY=1") is False


def test_the_unit_installs_with_this_cnmd_and_its_flags_parse(tmp_path: Path) -> None:
    import configparser
    import shlex
    import subprocess
    import sys

    top = Path(__file__).resolve().parents[2]
    cnmd = Path(sys.executable).with_name("cnmd")
    r = subprocess.run(["bash", str(top / "scripts" / "install-service.sh"), "--root",
                        str(tmp_path), "--cnmd", str(cnmd)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((tmp_path / "etc/systemd/system/cnmd.service").read_text())
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["Restart"] == "on-failure"
    assert svc["StateDirectory"] == "cnm" and svc["RuntimeDirectory"] == "cnm"
    assert svc["RuntimeDirectoryPreserve"] == "yes"  # sandboxes' namespaces survive
    argv = shlex.split(svc["ExecStart"])
    assert argv[0] == str(cnmd)
    # The flags it starts cnmd with parse, and the default daemon.json it wrote loads.
    args = service.load_config(parser(), [a.replace("/etc/cnm", str(tmp_path / "etc/cnm"))
                                          for a in argv[1:]])
    assert args.state_dir == "/var/lib/cnm" and args.run_dir == "/run/cnm"
    # Run again, it keeps a daemon.json that is there.
    (tmp_path / "etc/cnm/daemon.json").write_text('{"log-format": "json"}')
    subprocess.run(["bash", str(top / "scripts" / "install-service.sh"), "--root",
                    str(tmp_path), "--cnmd", str(cnmd)], check=True, capture_output=True)
    assert json.loads((tmp_path / "etc/cnm/daemon.json").read_text()) == {
        "log-format": "json"}


def test_install_service_refuses_a_cnmd_that_is_not_there(tmp_path: Path) -> None:
    import subprocess

    top = Path(__file__).resolve().parents[2]
    r = subprocess.run(["bash", str(top / "scripts" / "install-service.sh"), "--root",
                        str(tmp_path), "--cnmd", str(tmp_path / "nope")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "is not an executable cnmd" in r.stderr
    assert not (tmp_path / "etc").exists()
