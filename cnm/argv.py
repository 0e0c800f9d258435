"""The CLI's argv read without argparse, for the forms scripts use; argparse for the rest.

``import argparse`` pulls in re, enum, functools, collections and gettext: ~5 ms of a CLI
process that lives ~25 ms (and json pulls in re too: see cnm.jsonlite). So cnm.cli declares
its commands once, through the ArgumentParser calls it always made, and they are recorded
here by stand-ins (``Command``) instead of building argparse's parsers. ``parse`` then reads
argv from the record when every word is one of the plain forms:

    --flag VALUE   --flag=VALUE   -f VALUE   --switch   -s   POSITIONAL...

with the positionals in one run (before, between or after the flags as long as they are not
split). Anything else (``--``, ``-fVALUE``, a value that looks like a flag, an unknown flag,
a wrong count, ``-h``) answers None, and cnm.cli parses the same argv with argparse, whose
answer or error is the one given. A unit test holds the two to the same answer on every argv
it generates (tests/unit/test_argv.py).
"""

from __future__ import annotations

from types import SimpleNamespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

REMAINDER = "..."  # argparse.REMAINDER


class Arg:
    __slots__ = ("action", "choices", "default", "dest", "flags", "nargs")

    def __init__(self, flags: Sequence[str], kw: dict[str, Any]) -> None:
        self.flags = tuple(flags)
        self.action = kw.get("action", "store")
        self.nargs = kw.get("nargs")
        self.choices = kw.get("choices")
        if self.action not in ("store", "store_true", "append", "version"):
            raise ValueError(f"argv: action {self.action!r} is not supported")
        if flags[0].startswith("-"):
            longs = [f for f in flags if f.startswith("--")]
            dest = (longs[0] if longs else flags[0]).lstrip("-").replace("-", "_")
            default = False if self.action == "store_true" else None
        else:
            dest, default = flags[0], None
        self.dest: str = kw.get("dest", dest)
        self.default: Any = kw.get("default", default)


class Command:
    """Records what cnm.cli declares of one command, with ArgumentParser's calls."""

    def __init__(self, prog: str = "", **_: Any) -> None:
        self.prog = prog
        self.options: dict[str, Arg] = {}
        self.positionals: list[Arg] = []
        self.defaults: dict[str, Any] = {}
        self.commands: Commands | None = None

    def add_argument(self, *flags: str, **kw: Any) -> None:
        arg = Arg(flags, kw)
        if flags[0].startswith("-"):
            for f in flags:
                self.options[f] = arg
        else:
            self.positionals.append(arg)

    def add_subparsers(self, dest: str, **_: Any) -> Commands:
        self.commands = Commands(self, dest)
        return self.commands

    def set_defaults(self, **kw: Any) -> None:
        self.defaults.update(kw)


class Commands:
    """Records the sub-commands of a command (ArgumentParser.add_subparsers)."""

    def __init__(self, parent: Command, dest: str) -> None:
        self.parent, self.dest = parent, dest
        self.required = False
        self.by_name: dict[str, Command] = {}

    def add_parser(self, name: str, aliases: Sequence[str] = (), **_: Any) -> Command:
        cmd = Command(f"{self.parent.prog} {name}")
        for n in (name, *aliases):
            self.by_name[n] = cmd
        return cmd


def _options(cmd: Command, words: Sequence[str], i: int, ns: dict[str, Any],
             stop_at_word: bool) -> tuple[int, list[str]] | None:
    """Read ``cmd``'s flags from words[i:]; with ``stop_at_word``, stop at the first
    positional (a sub-command's name). Returns (where it stopped, the positionals)."""
    positionals: list[str] = []
    run_ended = False
    while i < len(words):
        w = words[i]
        if w.startswith("-") and w != "-":
            name, eq, value = w.partition("=") if w.startswith("--") else (w, "", "")
            arg = cmd.options.get(name)
            if arg is None or arg.action == "version":
                return None
            if arg.action == "store_true":
                if eq:
                    return None
                ns[arg.dest] = True
                i += 1
            else:
                if value == "--":  # argparse drops a "--" even from --flag=--
                    return None
                if not eq:
                    if i + 1 >= len(words) or words[i + 1].startswith("-"):
                        return None
                    value = words[i + 1]
                    i += 1
                i += 1
                if arg.choices is not None and value not in arg.choices:
                    return None
                if arg.action == "append":
                    ns[arg.dest] = [*ns[arg.dest], value]
                else:
                    ns[arg.dest] = value
            if positionals:
                run_ended = True
        else:
            if stop_at_word:
                return i, positionals
            if run_ended:
                return None  # positionals split by a flag: argparse's rules are subtle there
            positionals.append(w)
            i += 1
    return i, positionals


def _assign(cmd: Command, words: list[str], ns: dict[str, Any]) -> bool:
    """The positionals of a run to ``cmd``'s positional arguments, as argparse would."""
    args = cmd.positionals
    if any(a.nargs not in (None, "+") for a in args) or \
            any(a.nargs == "+" for a in args[:-1]):
        return False
    fixed = sum(1 for a in args if a.nargs is None)
    many = bool(args) and args[-1].nargs == "+"
    if len(words) < fixed + many or (not many and len(words) != fixed):
        return False
    for k, a in enumerate(args):
        value: Any = words[k:] if a.nargs == "+" else words[k]
        if a.choices is not None and any(v not in a.choices for v in
                                         (value if a.nargs == "+" else [value])):
            return False
        ns[a.dest] = value
    return True


def parse(root: Command, words: Sequence[str]) -> SimpleNamespace | None:
    """argv read from the record, or None when argparse must read it."""
    words = list(words)
    if "-h" in words or "--help" in words or "--" in words:
        return None
    ns: dict[str, Any] = {}
    cmd, i = root, 0
    while True:
        # As argparse: each (sub)parser's defaults, then its set_defaults; a sub-command's
        # values override its parent's (prog ends up the innermost one's).
        for a in {id(a): a for a in [*cmd.options.values(), *cmd.positionals]}.values():
            if a.action != "version":
                ns[a.dest] = list(a.default) if isinstance(a.default, list) else a.default
        ns.update(cmd.defaults)
        if cmd.commands is not None:
            read = _options(cmd, words, i, ns, stop_at_word=True)
            if read is None or read[0] >= len(words):
                return None
            i = read[0]
            sub = cmd.commands.by_name.get(words[i])
            if sub is None:
                return None
            ns[cmd.commands.dest] = words[i]
            cmd, i = sub, i + 1
            continue
        read = _options(cmd, words, i, ns, stop_at_word=False)
        if read is None or not _assign(cmd, read[1], ns):
            return None
        return SimpleNamespace(**ns)
