"""Every program the tests call is installed by the repository's own install step.

A program that is on this machine because someone installed it by hand keeps the tests green
here and fails them on a fresh machine (that happened: ``dig``). This plugin records the
program of every subprocess a test starts, looking through the wrappers that run another
program (``nsenter``, ``ip netns exec``, ``unshare``, ``cnm sandbox exec``, ...), and fails
the session when one of them is named by no line of scripts/packages.txt.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

TOP = Path(__file__).resolve().parent.parent
TMP = Path(tempfile.gettempdir())
MANIFEST = TOP / "scripts" / "packages.txt"

# Programs of Debian's Essential packages (coreutils, bash, dash, tar, dpkg, apt, grep, ...),
# present on every Debian machine.
ESSENTIAL = frozenset({
    "sh", "bash", "dash", "true", "false", "sleep", "cat", "echo", "env", "kill", "ls",
    "mkdir", "rm", "cp", "mv", "ln", "stat", "test", "timeout", "tar", "gzip", "grep", "sed",
    "awk", "find", "xargs", "dpkg", "dpkg-deb", "dpkg-query", "apt-get", "apt-cache",
    "hostname", "readlink", "realpath", "id", "uname", "head", "tail", "tee", "touch",
    "chmod", "chown", "sort", "uniq", "wc", "cut", "tr", "date", "getent", "ldconfig",
})


# Names tests run because no machine has them (to see "command not found" handled).
ABSENT_ON_PURPOSE = frozenset({"no-such-command-here"})


def manifest_programs(path: Path = MANIFEST) -> dict[str, str]:
    """program (a name, or the basename of a path) -> the package that provides it."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        for program in fields[2:]:
            if not program.startswith("lib:"):
                found.setdefault(os.path.basename(program), fields[1])
    return found


def _skip_options(argv: Sequence[str], with_value: frozenset[str] = frozenset()) -> int:
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] == "--":
            return i + 1
        i += 2 if argv[i] in with_value else 1
    return i


def programs_of(argv: Sequence[str]) -> list[str]:
    """The programs one argv runs: its own, and what the wrappers in it run in turn."""
    if not argv:
        return []
    name = os.path.basename(argv[0])
    rest = list(argv[1:])
    found = [name]
    inner: list[str] = []
    if argv[0] == sys.executable or name in ("cnm", "cnmd", "pytest") or (
            Path(argv[0]).parent == Path(sys.executable).parent) or (
            Path(argv[0]).is_absolute() and (Path(argv[0]).is_relative_to(TOP) or
                                             Path(argv[0]).is_relative_to(TMP))):
        # The venv's own programs and interpreter, the repository's scripts, and files a
        # test wrote itself under the temp dir.
        found = []
        if "exec" in rest and "--" in rest[rest.index("exec"):]:
            inner = rest[rest.index("--", rest.index("exec")) + 1:]
    elif name in ("nsenter", "unshare", "prlimit", "setsid"):
        inner = rest[_skip_options(rest, frozenset({"-t", "--target"})):]
    elif name == "ip" and rest[:2] == ["netns", "exec"]:
        inner = rest[3:]
    elif name in ("taskset", "chrt"):  # [OPTIONS] MASK|PRIORITY PROGRAM..., or -p for a pid
        i = _skip_options(rest)
        inner = [] if "-p" in rest[:i] else rest[i + 1:]
    elif name == "timeout":
        inner = rest[_skip_options(rest, frozenset({"-s", "-k"})) + 1:]
    elif name == "env":
        i = _skip_options(rest)
        while i < len(rest) and "=" in rest[i]:
            i += 1
        inner = rest[i:]
    return found + programs_of(inner)


class Recorder:
    """Wraps subprocess.Popen for the session and keeps what it was asked to run."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}  # program -> one command line that ran it
        self._original = subprocess.Popen.__init__

    def install(self) -> None:
        recorder, original = self, self._original

        def init(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
            recorder.note(args, bool(kw.get("shell")))
            original(popen, args, *rest, **kw)

        subprocess.Popen.__init__ = init  # type: ignore[method-assign]

    def uninstall(self) -> None:
        subprocess.Popen.__init__ = self._original  # type: ignore[method-assign]

    def note(self, args: Any, shell: bool) -> None:
        if isinstance(args, (str, bytes, os.PathLike)):
            text = os.fsdecode(args)
            argv = shlex.split(text)[:1] if shell else [text]
        else:
            argv = [os.fsdecode(a) for a in args]
        for program in programs_of(argv):
            self.seen.setdefault(program, " ".join(argv)[:160])

    def unlisted(self) -> dict[str, str]:
        known = manifest_programs()
        return {p: cmd for p, cmd in sorted(self.seen.items())
                if p not in known and p not in ESSENTIAL and p not in ABSENT_ON_PURPOSE}


_recorder = Recorder()


def pytest_configure(config: pytest.Config) -> None:
    _recorder.install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _recorder.uninstall()
    unlisted = _recorder.unlisted()
    if not unlisted:
        return
    lines = [f"  {p}  (ran: {cmd})" for p, cmd in unlisted.items()]
    sys.stderr.write(
        "\nThe tests ran programs that no line of scripts/packages.txt names, so a fresh "
        "machine would not have them:\n" + "\n".join(lines) +
        "\nAdd each one, with its Debian package, to the step that needs it.\n")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
