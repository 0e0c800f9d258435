"""cnm.argv reads argv as argparse does, or leaves it to argparse: never a different answer.

Every argv of the documented-contract run (CLI_RUN: every command and flag) is read by the
fast path, and gives argparse's answer; hypothesis then builds argv from the commands'
own flags, values that look like flags, ``=`` forms, ``--``, split positionals and stray
words, and wherever cnm.argv gives an answer, argparse gives the same one (and no error).
Counted: CNM_FUZZ_EXAMPLES (300 in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnm import argv, cli
from tests.unit.test_openapi import CLI_RUN

EXAMPLES = int(os.environ.get("CNM_FUZZ_EXAMPLES", "300"))


def _argparse(words: list[str]) -> dict[str, Any] | None:
    """argparse's answer for ``words``, or None for a usage error."""
    try:
        args, extra = cli.build_parser().parse_known_args(words)
    except (cli.UsageError, SystemExit):
        return None
    return None if extra else vars(args)


def _fast(words: list[str]) -> dict[str, Any] | None:
    got = argv.parse(cli.recorded(cli._command_of(words)), words)
    return None if got is None else vars(got)


@pytest.mark.parametrize("words", CLI_RUN, ids=lambda a: " ".join(a)[:60])
def test_every_documented_command_is_read_without_argparse_as_argparse_reads_it(
        words: list[str]) -> None:
    words = ["-H", "unix:///run/x.sock", *words]
    want = _argparse(words)
    got = _fast(words)
    if words[3:4] == ["exec"]:  # REMAINDER: argparse's alone
        assert got is None
        return
    assert want is not None
    assert got == want


def _commands() -> list[tuple[list[str], argv.Command]]:
    out = []
    root = cli.recorded()
    assert root.commands is not None
    for gname, g in root.commands.by_name.items():
        if g.commands is None:
            out.append(([gname], g))
            continue
        for cname, c in g.commands.by_name.items():
            out.append(([gname, cname], c))
    return out


COMMANDS = _commands()
VALUES = ["web", "10.9.0.0/24", "-x", "-1", "", "a=b", "=", "--", "-", "json", "a b",
          "-f", "--format", "x" * 3]


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    """Mostly well-formed argv (the command's flags with values, its positionals in a
    plausible count, at plausible places), with some noise mixed in."""
    path, cmd = draw(st.sampled_from(COMMANDS))
    value = st.one_of(st.sampled_from(["web", "10.9.0.0/24", "a=b", "json", "", "a b"]),
                      st.sampled_from(VALUES))
    noise = st.one_of(
        st.sampled_from(["--nope", "-h", "-Z", "--version", "--", "-"]),
        st.sampled_from(sorted(cmd.options) or ["-x"]).map(lambda f: f + "v"),
        st.text(alphabet="ab-=", max_size=4))
    options: list[list[str]] = []
    for flag in draw(st.lists(st.sampled_from(sorted(cmd.options) or ["--nope"]),
                              max_size=4)):
        arg = cmd.options.get(flag)
        if arg is None or arg.action == "store_true":
            options.append([flag] if draw(st.booleans()) else [flag + "=" + draw(value)])
        else:
            v = draw(st.sampled_from(list(arg.choices)) if arg.choices else value)
            options.append([f"{flag}={v}"] if draw(st.booleans()) else [flag, v])
    want = sum(1 for a in cmd.positionals if a.nargs is None) + \
        sum(1 for a in cmd.positionals if a.nargs == "+")
    positionals = draw(st.lists(st.sampled_from(["web", "a", "b", "bash", "x y"]),
                                min_size=max(0, want - 1), max_size=want + 2))
    cut = draw(st.integers(0, len(options)))
    split = draw(st.integers(0, len(positionals)))
    middle = [w for o in options[cut:cut + 1] for w in o] if draw(st.booleans()) else []
    words = [w for o in options[:cut] for w in o] + positionals[:split] + middle + \
        positionals[split:] + [w for o in options[cut + 1:] for w in o]
    if draw(st.integers(0, 4)) == 0:
        words.insert(draw(st.integers(0, len(words))), draw(noise))
    front = draw(st.lists(st.sampled_from([["-H", "unix:///x"], ["--tlsverify"], ["--debug"],
                                           ["--tlskey=k"], ["-H"]]), max_size=3))
    return [*(w for f in front for w in f), *path, *words]


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(words=argvs())
def test_the_fast_path_answers_as_argparse_or_not_at_all(words: list[str]) -> None:
    got = _fast(words)
    READ.append(got is not None)
    if got is None:
        return
    assert _argparse(words) == got, words


READ: list[bool] = []


def test_the_fuzz_reached_the_fast_path() -> None:
    """The generated argv are not all left to argparse (the comparison above compared
    something): at least one in twenty is read by cnm.argv (about one in seven is)."""
    assert READ and sum(READ) >= len(READ) / 20, (sum(READ), len(READ))


def test_a_value_of_two_dashes_goes_to_argparse() -> None:
    # argparse drops "--" from an option's values even as --filter=-- (found by the fuzz).
    words = ["network", "ls", "--filter=--"]
    assert _fast(words) is None
    assert cli._parse(words).filter == vars(cli.build_parser().parse_args(words))["filter"]


def test_positionals_split_by_a_flag_go_to_argparse() -> None:
    # argparse reads `rm a -f b` as names=[a] and refuses b: cnm.argv does not guess.
    words = ["network", "rm", "a", "--force", "b"]
    assert _fast(words) is None and _argparse(words) is None
    words = ["network", "connect", "net", "--ip", "10.0.0.5", "sb"]
    assert _fast(words) is None
    assert _argparse(words) is not None  # argparse's answer is the one given
    assert cli._parse(words).sandbox == "sb"


def test_the_fast_path_is_a_namespace_with_the_commands_defaults() -> None:
    got = argv.parse(cli.recorded(("network", "ls")), ["network", "list"])
    assert isinstance(got, SimpleNamespace)
    assert (got.group, got.cmd, got.prog, got.filter, got.quiet) == \
        ("network", "list", "cnm network ls", [], False)


def test_a_cli_run_imports_neither_argparse_nor_json_nor_re() -> None:
    """What the start-up figure of bench/run.py rests on (python -X importtime in the
    note): argv read and a request encoded without argparse, json or re."""
    code = ("import sys; from cnm import cli, jsonlite; "
            "cli._parse(['network', 'create', '--subnet', '10.9.0.0/24', 'n']); "
            "jsonlite.loads(jsonlite.dumps({'a': [1, 2.5, None, True, 'é']})); "
            "print(sorted(m for m in ('argparse', 'json', 're', 'enum') if m in sys.modules))")
    # -S -I: without the development venv's editable-install finder (it imports re);
    # the path is the repository's.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-S", "-I", "-c",
                          f"import sys; sys.path.insert(0, {root!r}); {code}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version_flag_says_what_argparse_says(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--version"])
    want = capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == want
