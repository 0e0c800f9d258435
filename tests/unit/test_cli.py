"""The CLI as docker's users and scripts expect it, over a controller on the fake kernel
(every request through the real API dispatch): --format templates, --filter, -q,
--no-trunc, rm -f, prune's question, usage errors, help text, version and info output."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cnm import cli, wiring
from cnm.api.server import dispatch
from cnm.client import Client
from cnm.core import Config, Controller
from cnm.testing import FakeHostLinks, FakeKernel, FakeNft, FakeSandboxLinks
from tests.unit.test_openapi import CLI_RUN


@pytest.fixture
def core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Controller]:
    kernel = FakeKernel()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    config = Config(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                    host_netns=str(tmp_path / "host-netns"), resolv_conf=str(resolv))
    built = wiring.build(config, wiring.Adapters(FakeHostLinks(kernel),
                                                 FakeSandboxLinks(kernel), FakeNft()))
    controller = built.controller
    calls: list[tuple[str, str]] = []

    class Local(Client):
        def __init__(self, host: str = "", timeout: float = 0) -> None:
            pass

        def close(self) -> None:
            pass

        def call(self, method: str, path: str, body: Any = None) -> Any:
            from cnm.errors import from_dict

            calls.append((method, path))
            raw = json.dumps(body).encode() if body is not None else b""
            status, payload = dispatch(controller, method, path, raw)
            payload = json.loads(json.dumps(payload))
            if status >= 400:
                raise from_dict(payload["error"])
            return payload

    monkeypatch.setattr(cli, "Client", Local)
    controller.calls = calls  # type: ignore[attr-defined]
    try:
        yield controller
    finally:
        built.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str, rc: int = 0) -> str:
    got = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert got == rc, (argv, out, err)
    return out if rc == 0 else err


@pytest.fixture
def two(core: Controller, capsys: pytest.CaptureFixture[str]) -> Controller:
    run(capsys, "network", "create", "--subnet", "10.7.0.0/24", "--label", "team=a",
        "--label", "tier=web", "web")
    run(capsys, "network", "create", "--internal", "--label", "team=b", "db")
    run(capsys, "sandbox", "create", "--network", "web", "--label", "app=x", "a")
    return core


# --------------------------------------------------------------------------- --format
def test_ls_format_template_prints_one_line_an_object(
        two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "network", "ls", "--format", "{{.Name}}").split() == [
        "bridge", "db", "host", "none", "web"]
    ids = run(capsys, "network", "ls", "--format", "{{.ID}}").split()
    assert all(len(i) == 12 for i in ids)  # docker's ls shows short ids in templates
    full = run(capsys, "network", "ls", "--no-trunc", "--format", "{{.ID}}").split()
    assert [f[:12] for f in full] == ids and all(len(f) > 12 for f in full)
    out = run(capsys, "network", "ls", "--filter", "name=web", "--format",
              "{{.Name}} {{.Driver}} {{.Labels}} {{index .Labels \"team\"}} {{.Internal}}")
    assert out == "web bridge map[team:a tier:web] a false\n"


def test_ls_format_table_has_headers_and_aligned_columns(
        two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "network", "ls", "--filter", "type=custom", "--format",
              "table {{.ID}}\t{{.Name}}\t{{.Driver}}")
    head, *rows = out.splitlines()
    assert head == "NETWORK ID     NAME      DRIVER"
    assert [r[15:].split() for r in rows] == [["db", "bridge"], ["web", "bridge"]]


def test_inspect_f_is_format(two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "network", "inspect", "-f", "{{.Name}} {{.Internal}}", "web",
               "db") == "web false\ndb true\n"
    assert run(capsys, "network", "inspect", "-f",
               "{{range .Subnets}}{{.Subnet}} via {{.Gateway}}{{end}}", "web") == \
        "10.7.0.0/24 via 10.7.0.1\n"
    out = run(capsys, "sandbox", "inspect", "-f", "{{json .Labels}}", "a")
    assert json.loads(out) == {"app": "x"}
    out = run(capsys, "endpoint", "inspect", "--format", "{{.Network}} {{.Sandbox}}", "a")
    assert out == "web a\n"


def test_a_bad_template_is_invalid_input_naming_the_field(
        two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "network", "inspect", "-f", "{{.Nmae}}", "web", rc=2)
    assert "can't evaluate field Nmae" in err and "hint: fields here:" in err


def test_table_output_is_clean_text(two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "network", "inspect", "--format", "table", "db")
    assert "Internal: true" in out and "False" not in out and "True" not in out
    info = run(capsys, "info")
    assert "[" not in info and "'" not in info
    assert "drivers: bridge, host, ipvlan, macvlan, null, overlay" in info.splitlines()


# --------------------------------------------------------------------------- --filter
@pytest.mark.parametrize("filters, names", [
    (["driver=bridge"], ["bridge", "db", "web"]),
    (["driver=null"], ["none"]),
    (["name=we"], ["web"]),
    (["name=^d", "name=^h"], ["db", "host"]),  # one key's values: any may match
    (["label=team"], ["db", "web"]),
    (["label=team=a"], ["web"]),
    (["label=team", "label=tier=web"], ["web"]),  # every label filter must match
    (["type=builtin"], ["bridge", "host", "none"]),
    (["type=custom", "driver=bridge"], ["db", "web"]),
    (["scope=local"], ["bridge", "db", "host", "none", "web"]),
])
def test_network_filters_match_as_docker_does(
        two: Controller, capsys: pytest.CaptureFixture[str], filters: list[str],
        names: list[str]) -> None:
    argv = ["network", "ls", "--format", "{{.Name}}"]
    for f in filters:
        argv += ["--filter", f]
    assert run(capsys, *argv).split() == names


def test_id_filter_is_a_prefix_and_quiet_prints_ids(
        two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    web = two.network("web").id
    assert run(capsys, "network", "ls", "-q", "--filter", f"id={web[:5]}") == web[:12] + "\n"
    assert run(capsys, "network", "ls", "-q", "--no-trunc", "--filter", "name=^web$") == \
        web + "\n"


def test_sandbox_and_endpoint_filters(two: Controller,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "sandbox", "create", "--network", "db", "b")
    assert run(capsys, "sandbox", "ls", "--filter", "network=web", "--format",
               "{{.Name}}") == "a\n"
    assert run(capsys, "sandbox", "ls", "--filter", "label=app=x", "-q") == \
        two.sandbox("a").id[:12] + "\n"
    assert run(capsys, "endpoint", "ls", "--filter", "sandbox=b", "--format",
               "{{.Network}}") == "db\n"


@pytest.mark.parametrize("flt, needle", [
    ("colour=red", "invalid filter 'colour'"),
    ("driver", "bad format of filter 'driver'"),
    ("type=odd", "invalid filter 'type=odd'"),
])
def test_a_bad_filter_is_refused_by_name(two: Controller, capsys: pytest.CaptureFixture[str],
                                         flt: str, needle: str) -> None:
    err = run(capsys, "network", "ls", "--filter", flt, rc=2)
    assert needle in err


# --------------------------------------------------------------------------- rm -f, prune
def test_network_rm_f_disconnects_first(two: Controller,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "endpoint", "create", "web", "spare")
    err = run(capsys, "network", "rm", "web", rc=1)
    assert "web" in err and {n.name for n in two.list_networks()} >= {"web"}
    assert run(capsys, "network", "rm", "-f", "web") == "web\n"
    assert "web" not in {n.name for n in two.list_networks()}
    # The sandbox stays, off the network; a missing network is no error with -f.
    assert two.sandbox("a") and two.endpoints_of(sandbox=two.sandbox("a").id) == []
    assert run(capsys, "network", "rm", "-f", "web") == "web\n"


def test_rm_f_and_dry_run_do_not_combine(two: Controller,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "network", "rm", "-f", "--dry-run", "web", rc=2)
    assert "--dry-run and --force" in err


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_prune_asks_and_a_no_keeps_everything(
        two: Controller, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for answer in ("n\n", "\n", ""):
        _stdin(monkeypatch, answer)
        out = run(capsys, "network", "prune")
        assert out.startswith("WARNING! This will remove all custom networks")
        assert "db" in {n.name for n in two.list_networks()}
    assert ("POST", "/v1/networks/prune") not in two.calls  # type: ignore[attr-defined]
    _stdin(monkeypatch, "y\n")
    assert run(capsys, "network", "prune").split("[y/N] ")[1] == "db\n"
    assert "db" not in {n.name for n in two.list_networks()}


def test_prune_f_does_not_ask(two: Controller, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    _stdin(monkeypatch, "")
    assert run(capsys, "network", "prune", "-f") == "db\n"


def test_prune_filters(two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "network", "create", "--label", "team=b", "db2")
    assert run(capsys, "network", "prune", "-f", "--filter", "label=team=c") == ""
    assert run(capsys, "network", "prune", "-f", "--filter", "until=2000-01-01") == ""
    assert run(capsys, "network", "prune", "-f", "--filter", "label!=team=b") == ""
    # web has a sandbox: never pruned, whatever the filter says.
    assert run(capsys, "network", "prune", "-f", "--filter", "label=team",
               "--filter", "until=1h") == ""  # made seconds ago: not before 1h ago
    assert run(capsys, "network", "prune", "-f", "--filter", "label=team=b",
               "--filter", "until=2999-01-01T00:00:00Z").split() == ["db", "db2"]
    assert {n.name for n in two.list_networks()} == {"bridge", "host", "none", "web"}


def test_prune_refuses_a_bad_until_before_asking(
        two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "network", "prune", "--filter", "until=yesterday", rc=2)
    assert "invalid filter 'until=yesterday'" in err and "WARNING" not in err


# --------------------------------------------------------------------------- usage
def test_abbreviated_flags_are_refused_naming_the_command(
        core: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "network", "create", "--sub=10.9.0.0/24", "x", rc=2)
    assert err.splitlines() == [
        "error: cnm network create: unrecognized arguments: --sub=10.9.0.0/24",
        "hint: run 'cnm network create --help'"]
    err = run(capsys, "network", "create", "--int", "x", rc=2)
    assert "cnm network create: unrecognized arguments: --int" in err
    assert "x" not in {n.name for n in core.list_networks()}
    assert core.calls == []  # type: ignore[attr-defined]


def test_a_missing_argument_names_the_command_and_its_help(
        core: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "sandbox", "rm", rc=2)
    assert err.splitlines() == [
        "error: cnm sandbox rm: the following arguments are required: SANDBOX",
        "hint: run 'cnm sandbox rm --help'"]
    err = run(capsys, "endpoint", rc=2)
    assert "hint: run 'cnm endpoint --help'" in err


def _parsers() -> Iterator[argparse.ArgumentParser]:
    def walk(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                seen = set()
                for sub in a.choices.values():
                    if id(sub) not in seen:
                        seen.add(id(sub))
                        yield from walk(sub)
    yield from walk(cli.build_parser())


def test_every_flag_and_command_has_help_and_says_its_default() -> None:
    missing, no_default = [], []
    for p in _parsers():
        if p.prog == "cnm daemon":  # cnmd's own parser
            continue
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for c in a._choices_actions:
                    if not c.help:
                        missing.append(f"{p.prog} {c.dest}")
                continue
            if not a.help:
                missing.append(f"{p.prog} {'/'.join(a.option_strings) or a.dest}")
            elif (a.option_strings and a.default not in (None, False, [], argparse.SUPPRESS)
                  and "default" not in a.help):
                no_default.append(f"{p.prog} {a.option_strings[0]}")
    assert missing == []
    assert no_default == []


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["network", "create", "--help"])
    out = capsys.readouterr().out
    assert "bridge, macvlan or ipvlan (default: bridge)" in out
    assert "--subnet CIDR" in out


@pytest.mark.parametrize("argv", CLI_RUN, ids=lambda a: " ".join(a)[:60])
def test_the_partial_parser_parses_as_the_whole_one(argv: list[str]) -> None:
    """Only the named command's parser is built for a run: same answer as the whole."""
    whole = vars(cli.build_parser().parse_args(argv))
    part = vars(cli.build_parser(cli._command_of(argv)).parse_args(argv))
    assert part == whole


def test_version(core: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    from cnm import __version__

    out = run(capsys, "version")
    assert out.splitlines()[:3] == ["Client:", f" Version:      {__version__}",
                                    " API version:  v1"]
    assert "Server:" in out
    assert run(capsys, "version", "-f", "{{.Client.Version}} {{.Server.APIVersion}}") == \
        f"{__version__} v1\n"
    data = json.loads(run(capsys, "version", "--format", "json"))
    assert data["server"]["version"] == __version__


def test_version_without_a_daemon_shows_the_client_and_exits_3(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = cli.main(["-H", f"unix://{tmp_path}/none.sock", "version"])
    out, err = capsys.readouterr()
    assert rc == 3 and out.startswith("Client:") and "Server:" not in out
    assert err.startswith("error: cannot reach cnmd")


def test_sandbox_exec_keeps_cnm_codes_until_the_sandbox_is_found(
        core: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    err = run(capsys, "sandbox", "exec", "nope", "--", "true", rc=1)
    assert err.startswith("error: ") and "nope" in err


def test_network_inspect_shows_links_and_docker_containers_map(
        two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    from cnm import names

    run(capsys, "endpoint", "create", "web", "spare")  # reserved: in neither map nor link
    [web] = json.loads(run(capsys, "network", "inspect", "web"))
    a = two.sandbox("a")
    [ep] = two.endpoints_of(sandbox=a.id)
    assert web["link"] == names.bridge_name(web["id"]) and web["dns"] is True
    assert web["containers"] == {a.id: {
        "name": "a", "endpoint_id": ep.id, "mac_address": ep.mac, "ipv4_address": ep.ipv4,
        "ipv6_address": None, "host_link": names.veth_name(ep.id)}}
    assert {e["name"]: e["host_link"] for e in web["endpoints"]} == {
        "a": names.veth_name(ep.id), "spare": None}
    # A docker script's template over the map.
    assert run(capsys, "network", "inspect", "-f",
               "{{range $id, $c := .Containers}}{{$c.Name}} {{$c.IPv4Address}} "
               "{{$c.MacAddress}}{{end}}", "web") == f"a {ep.ipv4} {ep.mac}\n"
    # README's examples.
    assert run(capsys, "network", "inspect", "-f",
               "{{range $id, $c := .Containers}}{{$c.Name}} {{$c.IPv4Address}} {{$c.HostLink}}"
               "{{println}}{{end}}", "web") == f"a {ep.ipv4} {names.veth_name(ep.id)}\n\n"
    assert run(capsys, "network", "inspect", "-f", "{{.Link}}", "web") == \
        names.bridge_name(web["id"]) + "\n"
    [none] = json.loads(run(capsys, "network", "inspect", "none"))
    assert none["link"] is None and none["dns"] is False
    [sb] = json.loads(run(capsys, "sandbox", "inspect", "a"))
    assert sb["endpoints"][0]["host_link"] == names.veth_name(ep.id)


def test_the_cli_imports_only_what_a_client_needs() -> None:
    """A process per command: start-up is its budget (bench/run.py, network create vs
    podman). Parsing `network create` and building its request pulls in nothing of the
    daemon side, no http.client (email), urllib.parse (ipaddress), typing or dataclasses;
    the template engine and filters only when a command uses them."""
    import os
    import subprocess
    import sys

    import cnm

    # -S: without site (an editable install's finder imports urllib.parse, pathlib, ...),
    # so what is loaded is what the CLI itself imports.
    code = ("import sys; import cnm.cli as c; c._parse(['network', 'create', '--subnet', "
            "'10.0.0.0/24', 'x']); print(' '.join(sorted(sys.modules)))")
    top = os.path.dirname(os.path.dirname(cnm.__file__))
    mods = set(subprocess.run([sys.executable, "-S", "-c", code], capture_output=True,
                              text=True, check=True, env={**os.environ, "PYTHONPATH": top},
                              cwd=top).stdout.split())
    assert "cnm.cli" in mods
    for heavy in ("pyroute2", "cnm.core", "cnm.kernel", "cnm.api", "cnm.model", "cnm.store",
                  "sqlite3", "http.client", "email", "urllib.parse", "ipaddress", "typing",
                  "dataclasses", "socket", "subprocess", "shutil", "cnm.gotemplate", "cnm.filters"):
        assert heavy not in mods, heavy


@pytest.mark.parametrize("text", ["web", "a b/c", "ü%?#&", "x.y-z_~", ""])
def test_the_clients_quote_is_urllibs(text: str) -> None:
    from urllib.parse import quote as urllib_quote

    from cnm.client import quote

    assert quote(text) == urllib_quote(text, safe="")


def _complete(script: str, words: list[str]) -> list[str]:
    """What bash completes for ``words`` (the last one being typed) with ``script``."""
    import shlex
    import subprocess

    line = " ".join(words)
    code = (f"source /dev/stdin <<'CNM_EOF'\n{script}\nCNM_EOF\n"
            f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); "
            f"COMP_CWORD={len(words) - 1}; COMP_LINE={shlex.quote(line)}; "
            f"COMP_POINT={len(line)}; "
            f"_shtab_cnm cnm {shlex.quote(words[-1])} {shlex.quote(words[-2])}; "
            'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


def test_bash_completion_completes_commands_and_flags(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert _complete(script, ["cnm", "network", "c"]) == ["connect", "create"]
    assert _complete(script, ["cnm", "sa"]) == ["sandbox"]
    assert "--subnet" in _complete(script, ["cnm", "network", "create", "--s"])


def test_zsh_completion_is_generated(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#compdef cnm") and "network:'Manage networks.'" in script


def test_man_pages_are_generated_from_the_parsers(tmp_path: Path) -> None:
    """scripts/manpages.sh: cnm.1 and cnmd.8 name every command and flag, and render."""
    import os
    import subprocess
    import sys

    from cnm.daemon import parser as cnmd_parser

    top = Path(__file__).resolve().parents[2]
    subprocess.run(["bash", str(top / "scripts" / "manpages.sh"), str(tmp_path)], check=True,
                   capture_output=True, env={**os.environ, "PYTHON": sys.executable})
    page = (tmp_path / "cnm.1").read_text()
    for p in _parsers():
        if p.prog == "cnm daemon":
            continue
        if p.prog != "cnm":
            assert f"'{p.prog}'" in page, p.prog
        for a in p._actions:
            for flag in a.option_strings:
                if flag.startswith("--"):
                    assert flag.replace("-", "\\-") in page, (p.prog, flag)
    daemon_page = (tmp_path / "cnmd.8").read_text()
    for a in cnmd_parser()._actions:
        if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction):
            for flag in a.option_strings:
                assert flag.replace("-", "\\-") in daemon_page, flag
    for name in ("cnm.1", "cnmd.8"):
        shown = subprocess.run(["nroff", "-man", str(tmp_path / name)], capture_output=True,
                               text=True, check=True)
        assert shown.stderr == "" and "NAME" in shown.stdout.replace("\b", "").replace(
            "NNAAMMEE", "NAME")


def test_install_puts_man_pages_and_completion_where_man_and_shells_look(
        tmp_path: Path) -> None:
    """scripts/install-docs.sh (what scripts/install.sh runs), staged under --root."""
    import os
    import subprocess
    import sys

    top = Path(__file__).resolve().parents[2]
    subprocess.run(["bash", str(top / "scripts" / "install-docs.sh"), "--root", str(tmp_path)],
                   check=True, capture_output=True, env={**os.environ, "PYTHON": sys.executable})
    share = tmp_path / "usr" / "local" / "share"
    assert "network create" in (share / "man" / "man1" / "cnm.1").read_text()
    assert "\\-\\-state\\-dir" in (share / "man" / "man8" / "cnmd.8").read_text()
    shown = subprocess.run(["man", "-l", "-P", "cat", str(share / "man" / "man1" / "cnm.1")],
                           capture_output=True, text=True, check=True, env={
                               **os.environ, "MANWIDTH": "80"})
    assert "cnm network create" in shown.stdout.replace("\b", "")
    script = (share / "bash-completion" / "completions" / "cnm").read_text()
    assert _complete(script, ["cnm", "network", "c"]) == ["connect", "create"]
    assert (share / "zsh" / "site-functions" / "_cnm").read_text().startswith("#compdef cnm")
    for f in (share / "man" / "man1" / "cnm.1", share / "bash-completion" / "completions" / "cnm"):
        assert f.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- doctor
def test_doctor_says_each_drift_and_exits_1_until_it_is_fixed(
        two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    sb = two.sandbox("a")
    os.remove(os.path.join(two.files_dir(sb), "hosts"))
    out = capsys.readouterr().out if cli.main(["doctor"]) == 1 else "exit 0"
    assert out.splitlines() == [
        f"drift: sandbox-file: sandbox a ({sb.id[:12]})",
        f"  wrong: {two.files_dir(sb)}/hosts is missing",
        "  means: processes in the sandbox resolve names or their own addresses wrongly",
        "  fix:   write the sandbox's files again"]
    assert run(capsys, "doctor", "--fix", "-f", "{{.Kind}} {{.Object.Name}} {{.Fixed}}", rc=0
               ) == "sandbox-file a true\n"
    assert run(capsys, "doctor") == "no drift: the kernel matches the store\n"
    os.remove(os.path.join(two.files_dir(sb), "hosts"))
    out = run(capsys, "doctor", "--fix")
    assert out.splitlines()[0] == f"fixed: sandbox-file: sandbox a ({sb.id[:12]})"
    assert out.splitlines()[-1] == "no drift: the kernel matches the store"


def test_doctor_refuses_a_bad_template_changing_nothing(
        two: Controller, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    os.remove(os.path.join(two.files_dir(two.sandbox("a")), "hosts"))
    err = run(capsys, "doctor", "--format", "{{.Nope", rc=2)
    assert "template" in err
    assert [d.kind for d in two.doctor()] == ["sandbox-file"]  # a plain doctor fixes nothing
