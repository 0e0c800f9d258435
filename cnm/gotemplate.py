"""Go text/template, the subset that docker's and podman's ``--format`` scripts use.

Written once here for every ``ls``/``inspect``/``info``/``version`` of the CLI. The data is
the API's JSON (dicts, lists, strings, numbers, booleans, null). What it understands:

- text, and actions ``{{ pipeline }}``; ``{{-`` and ``-}}`` trim the spaces beside them;
  ``{{/* comments */}}``
- ``.`` (the current value), ``$`` (the top value), ``$name`` (a variable of ``range``),
  field paths ``.Name``, ``.IPAM.Config``, ``$v.Name``, ``(index .Subnets 0).Subnet``. A
  field matches a key exactly, or else ignoring case and underscores (``.ID`` is ``id``,
  ``.HostPort`` is ``host_port``): the JSON's keys are snake_case, docker's Go fields are
  CamelCase, and a script written for docker names the same field both ways. A field no
  object has is an error naming it (Go's answer for a struct); a key missing from a map
  (``.Labels.nope``) prints ``<no value>`` as Go does.
- pipelines with ``|`` (the value goes last: ``{{.Name | upper}}``); parentheses;
  literals: "strings" (Go escapes), `raw strings`, integers, true, false, nil
- ``{{if P}} … {{else if P}} … {{else}} … {{end}}``, ``{{with P}} … {{else}} … {{end}}``,
  ``{{range P}} … {{else}} … {{end}}`` and ``{{range $i, $v := P}}`` (a map ranges over its
  keys in sorted order, as in Go)
- functions: ``json``, ``index``, ``join``, ``printf`` (verbs ``%v %s %d %q %t %x %f %%``
  with flags and width), ``print``, ``println``, ``len``, ``upper``, ``lower``, ``title``,
  ``split``, ``truncate``, ``pad``, ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``, ``not``,
  ``and``, ``or``
- ``table`` as the first word (docker's): a header row from the fields' names, then one row
  per object, columns split at ``\\t`` and aligned as docker's tabwriter does (minimum width
  10, padding 3).

Values print as Go's ``%v`` does: ``true``, ``<nil>``, ``[a b]``, ``map[k:v]``. Every error is
a ``TemplateError`` (an InvalidArgument: exit 2) that names what is wrong.
"""

from __future__ import annotations

import json

from cnm.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class TemplateError(InvalidArgument):
    pass


NO_VALUE = "<no value>"


class Record(dict):  # type: ignore[type-arg]
    """An API object: its keys are fields, and a field it lacks is an error (a Go struct).
    Any other dict is a map (labels, options), where a missing key prints ``<no value>``."""


FREE_MAPS = frozenset({"labels", "options", "aux_addresses"})


def records(value: Any, free: frozenset[str] = FREE_MAPS) -> Any:
    """``value`` with its objects as Records, except the free-form maps named ``free``."""
    if isinstance(value, list):
        return [records(x, free) for x in value]
    if isinstance(value, dict):
        return Record({k: v if k in free and isinstance(v, dict) else records(v, free)
                       for k, v in value.items()})
    return value


class _Missing:
    """A key absent from a map: prints as ``<no value>``; false in ``if``."""

    def __repr__(self) -> str:
        return NO_VALUE


MISSING = _Missing()


# --------------------------------------------------------------------------- printing
def gostr(v: Any) -> str:
    """Go's %v of a JSON value."""
    if v is MISSING:
        return NO_VALUE
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, list):
        return "[" + " ".join(gostr(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{gostr(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def _truth(v: Any) -> bool:
    if v is MISSING or v is None:
        return False
    if isinstance(v, (list, dict, str)):
        return len(v) > 0
    return bool(v)


# --------------------------------------------------------------------------- lexing
def _split(src: str) -> list[tuple[str, str, int]]:
    """The template as ("text", s, pos) and ("action", inside, pos), trims applied."""
    out: list[tuple[str, str, int]] = []
    i = 0
    while True:
        j = src.find("{{", i)
        if j < 0:
            out.append(("text", src[i:], i))
            return out
        text = src[i:j]
        k = j + 2
        if src.startswith("- ", k) or src.startswith("-\t", k) or src.startswith("-\n", k):
            text = text.rstrip(" \t\r\n")
            k += 1
        end = _action_end(src, k, j)
        inner = src[k:end]
        after = end + 2
        if inner.endswith((" -", "\t-", "\n-")):
            inner = inner[:-1]
            while after < len(src) and src[after] in " \t\r\n":
                after += 1
        out.append(("text", text, i))
        out.append(("action", inner.strip(), j))
        i = after


def _action_end(src: str, k: int, start: int) -> int:
    """Where the ``}}`` closing the action opened at ``start`` is (quotes respected)."""
    i, quote = k, ""
    while i < len(src):
        ch = src[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"`'":
            quote = ch
        elif src.startswith("}}", i):
            return i
        i += 1
    raise TemplateError(f"template: unclosed action at offset {start}: {src[start:start + 20]!r}")


def _tokens(s: str, where: int) -> list[str]:
    """Split an action into tokens: strings, ( ) |, :=, words (fields, numbers, names)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch in " \t\r\n":
            i += 1
        elif ch in "()|,":
            out.append(ch)
            i += 1
        elif s.startswith(":=", i) or s.startswith("=", i):
            n = 2 if s[i] == ":" else 1
            out.append(s[i:i + n])
            i += n
        elif ch in "\"`'":
            j = i + 1
            while j < len(s) and s[j] != ch:
                j += 2 if s[j] == "\\" and ch != "`" else 1
            if j >= len(s):
                raise TemplateError(f"template: unterminated string at offset {where}")
            out.append(s[i:j + 1])
            i = j + 1
        else:
            j = i
            while j < len(s) and s[j] not in " \t\r\n()|,\"`'" and not s.startswith(":=", j):
                j += 1
            out.append(s[i:j])
            i = j
    return out


# --------------------------------------------------------------------------- parsing
# Nodes are tuples: ("text", s) ("action", pipe) ("if", [(pipe, body)...], else_body)
# ("with", pipe, body, else) ("range", vars, pipe, body, else). A pipe is a list of
# commands; a command a list of operands; an operand ("field", base, [names]),
# ("lit", value), ("fn", name), ("sub", pipe, [names]).
if TYPE_CHECKING:
    Node = tuple[Any, ...]


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.items = _split(src)
        self.i = 0

    def parse(self) -> list[Node]:
        body, stop = self.block()
        if stop is not None:
            raise TemplateError(f"template: unexpected {{{{{stop[0]}}}}} at offset {stop[1]}")
        return body

    def block(self) -> tuple[list[Node], tuple[str, int] | None]:
        """Nodes up to an {{end}} or {{else…}}, which is returned (None at the end)."""
        out: list[Node] = []
        while self.i < len(self.items):
            kind, s, pos = self.items[self.i]
            self.i += 1
            if kind == "text":
                if s:
                    out.append(("text", s))
                continue
            if s.startswith("/*"):
                if not s.endswith("*/"):
                    raise TemplateError(f"template: unclosed comment at offset {pos}")
                continue
            if not s:
                raise TemplateError(f"template: empty action at offset {pos}")
            word, _, rest = s.partition(" ")
            if word in ("end", "else"):
                return out, (s, pos)
            if word == "if":
                out.append(self.if_(rest, pos))
            elif word == "with":
                pipe = self.pipe(rest, pos)
                body, else_ = self.closed(pos, "with")
                out.append(("with", pipe, body, else_))
            elif word == "range":
                names, pipe = self.range_head(rest, pos)
                body, else_ = self.closed(pos, "range")
                out.append(("range", names, pipe, body, else_))
            elif word in ("define", "template", "block", "break", "continue"):
                raise TemplateError(f"template: {{{{{word}}}}} is not supported by cnm")
            else:
                out.append(("action", self.pipe(s, pos)))
        return out, None

    def if_(self, rest: str, pos: int) -> Node:
        branches: list[tuple[list[list[Node]], list[Node]]] = [(self.pipe(rest, pos), [])]
        while True:
            body, stop = self.block()
            branches[-1] = (branches[-1][0], body)
            if stop is None:
                raise TemplateError(f"template: {{{{if}}}} at offset {pos} has no {{{{end}}}}")
            s, at = stop
            if s == "end":
                return ("if", branches, [])
            if s.startswith("else if "):
                branches.append((self.pipe(s[len("else if "):], at), []))
                continue
            if s == "else":
                else_, stop2 = self.block()
                if stop2 is None or stop2[0] != "end":
                    raise TemplateError(f"template: {{{{else}}}} at offset {at} has no "
                                        "{{end}}")
                return ("if", branches, else_)
            raise TemplateError(f"template: unexpected {{{{{s}}}}} at offset {at}")

    def closed(self, pos: int, what: str) -> tuple[list[Node], list[Node]]:
        body, stop = self.block()
        if stop is None:
            raise TemplateError(f"template: {{{{{what}}}}} at offset {pos} has no {{{{end}}}}")
        if stop[0] == "end":
            return body, []
        if stop[0] != "else":
            raise TemplateError(f"template: unexpected {{{{{stop[0]}}}}} at offset {stop[1]}")
        else_, stop2 = self.block()
        if stop2 is None or stop2[0] != "end":
            raise TemplateError(f"template: {{{{else}}}} at offset {stop[1]} has no {{{{end}}}}")
        return body, else_

    def range_head(self, rest: str, pos: int) -> tuple[list[str], list[list[Node]]]:
        toks = _tokens(rest, pos)
        if ":=" in toks:
            at = toks.index(":=")
            names = [t for t in toks[:at] if t != ","]
            if not 1 <= len(names) <= 2 or not all(n.startswith("$") and len(n) > 1
                                                   for n in names):
                raise TemplateError(f"template: bad range variables at offset {pos}: {rest!r}")
            return names, self.pipe_tokens(toks[at + 1:], pos)
        return [], self.pipe_tokens(toks, pos)

    def pipe(self, s: str, pos: int) -> list[list[Node]]:
        return self.pipe_tokens(_tokens(s, pos), pos)

    def pipe_tokens(self, toks: list[str], pos: int) -> list[list[Node]]:
        pipe, i = self.commands(toks, 0, pos)
        if i != len(toks):
            raise TemplateError(f"template: unexpected {toks[i]!r} at offset {pos}")
        return pipe

    def commands(self, toks: list[str], i: int, pos: int) -> tuple[list[list[Node]], int]:
        pipe: list[list[Node]] = [[]]
        while i < len(toks) and toks[i] != ")":
            t = toks[i]
            if t == "|":
                if not pipe[-1]:
                    raise TemplateError(f"template: missing command before '|' at offset "
                                        f"{pos}")
                pipe.append([])
                i += 1
                continue
            if t == "(":
                sub, i = self.commands(toks, i + 1, pos)
                if i >= len(toks):
                    raise TemplateError(f"template: unclosed '(' at offset {pos}")
                i += 1
                names: list[str] = []
                if i < len(toks) and toks[i].startswith(".") and toks[i] != ".":
                    names = toks[i][1:].split(".")
                    i += 1
                pipe[-1].append(("sub", sub, names))
                continue
            pipe[-1].append(self.operand(t, pos))
            i += 1
        if not pipe[-1]:
            raise TemplateError(f"template: missing value at offset {pos}")
        return pipe, i

    def operand(self, t: str, pos: int) -> Node:
        if t[0] == '"':
            try:
                return ("lit", json.loads(t))
            except ValueError:
                raise TemplateError(f"template: bad string {t} at offset {pos}") from None
        if t[0] == "`":
            return ("lit", t[1:-1])
        if t[0] == "'":
            raise TemplateError(f"template: character constants are not supported: {t}")
        if t == ".":
            return ("field", ".", [])
        if t[0] == ".":
            return ("field", ".", t[1:].split("."))
        if t[0] == "$":
            base, _, path = t.partition(".")
            return ("field", base, path.split(".") if path else [])
        if t in ("true", "false"):
            return ("lit", t == "true")
        if t == "nil":
            return ("lit", None)
        if t.lstrip("-").isdigit():
            return ("lit", int(t))
        try:
            return ("lit", float(t))
        except ValueError:
            pass
        if t not in FUNCS:
            raise TemplateError(f'template: function "{t}" not defined',
                                hint="functions: " + ", ".join(sorted(FUNCS)))
        return ("fn", t)


# --------------------------------------------------------------------------- evaluation
def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        if name in value:
            return value[name]
        want = _norm(name)
        for k in value:
            if _norm(k) == want:
                return value[k]
        if isinstance(value, Record):
            raise TemplateError(f"template: can't evaluate field {name}: no such field",
                                hint="fields here: " + ", ".join(sorted(value)))
        return MISSING
    if value is MISSING or value is None:
        return MISSING
    raise TemplateError(f"template: can't evaluate field {name} in a {_kind(value)}")


def _kind(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list",
            dict: "map"}.get(type(v), type(v).__name__)


class _Scope:
    def __init__(self, top: Any) -> None:
        self.vars: dict[str, Any] = {"$": top}


def _eval_operand(op: Node, dot: Any, scope: _Scope) -> Any:
    kind = op[0]
    if kind == "lit":
        return op[1]
    if kind == "field":
        base, names = op[1], op[2]
        if base == ".":
            v = dot
        elif base in scope.vars:
            v = scope.vars[base]
        else:
            raise TemplateError(f"template: undefined variable {base}")
        for n in names:
            v = field(v, n)
        return v
    if kind == "sub":
        v = _eval_pipe(op[1], dot, scope)
        for n in op[2]:
            v = field(v, n)
        return v
    raise TemplateError(f"template: {op[1]} is a function: call it first in a command")


def _eval_pipe(pipe: list[list[Node]], dot: Any, scope: _Scope) -> Any:
    value: Any = MISSING
    for n, cmd in enumerate(pipe):
        head = cmd[0]
        piped = [value] if n > 0 else []
        if head[0] == "fn":
            args = [_eval_operand(a, dot, scope) for a in cmd[1:]] + piped
            value = FUNCS[head[1]](*args) if _arity_ok(head[1], len(args)) else None
        else:
            if len(cmd) > 1 or piped:
                raise TemplateError("template: can't give arguments to a value: "
                                    "only functions take arguments")
            value = _eval_operand(head, dot, scope)
    return value


def _arity_ok(name: str, n: int) -> bool:
    lo, hi = ARITY.get(name, (0, 99))
    if not lo <= n <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi < 99 else f"at least {lo}"
        raise TemplateError(f"template: wrong number of arguments for {name}: "
                            f"want {want}, got {n}")
    return True


def _run(nodes: list[Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "action":
            out.append(gostr(_eval_pipe(node[1], dot, scope)))
        elif kind == "if":
            for pipe, body in node[1]:
                if _truth(_eval_pipe(pipe, dot, scope)):
                    _run(body, dot, scope, out)
                    break
            else:
                _run(node[2], dot, scope, out)
        elif kind == "with":
            v = _eval_pipe(node[1], dot, scope)
            _run(node[2] if _truth(v) else node[3], v if _truth(v) else dot, scope, out)
        elif kind == "range":
            names, v = node[1], _eval_pipe(node[2], dot, scope)
            if isinstance(v, dict):
                pairs = [(k, v[k]) for k in sorted(v)]
            elif isinstance(v, list):
                pairs = list(enumerate(v))
            elif v is MISSING or v is None:
                pairs = []
            elif isinstance(v, int) and not isinstance(v, bool):
                pairs = [(i, i) for i in range(v)]
            else:
                raise TemplateError(f"template: range can't iterate over {gostr(v)}")
            if not pairs:
                _run(node[4], dot, scope, out)
            for key, item in pairs:
                if len(names) == 1:
                    scope.vars[names[0]] = item
                elif len(names) == 2:
                    scope.vars[names[0]], scope.vars[names[1]] = key, item
                _run(node[3], item, scope, out)


# --------------------------------------------------------------------------- functions
def _json(v: Any) -> str:
    return json.dumps(None if v is MISSING else v, separators=(",", ":"))


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, MISSING) if isinstance(k, str) else MISSING
        elif isinstance(v, (list, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise TemplateError(f"template: index of a list must be an integer, "
                                    f"not {gostr(k)}")
            if not 0 <= k < len(v):
                raise TemplateError(f"template: index out of range: {k}")
            v = v[k]
        else:
            raise TemplateError(f"template: can't index item of type {_kind(v)}")
    return v


def _join(v: Any, sep: str) -> str:
    if not isinstance(v, list):
        raise TemplateError(f"template: join wants a list, not {_kind(v)}")
    return sep.join(gostr(x) for x in v)


def printf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the common verbs."""
    out, i, n = [], 0, 0
    while i < len(fmt):
        ch = fmt[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        j = i + 1
        while j < len(fmt) and fmt[j] in "-+# 0":
            j += 1
        while j < len(fmt) and (fmt[j].isdigit() or fmt[j] == "."):
            j += 1
        if j >= len(fmt):
            out.append("%!(NOVERB)")
            break
        flags, verb = fmt[i + 1:j], fmt[j]
        i = j + 1
        if verb == "%":
            out.append("%")
            continue
        if n >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[n]
        n += 1
        out.append(_verb(flags, verb, arg))
    if n < len(args):
        out.append("%!(EXTRA " + ", ".join(gostr(a) for a in args[n:]) + ")")
    return "".join(out)


def _verb(flags: str, verb: str, arg: Any) -> str:
    pyflags = flags.replace("#", "")
    try:
        if verb in "vs":
            return f"%{pyflags}s" % gostr(arg)
        if verb == "q":
            return f"%{pyflags}s" % json.dumps(gostr(arg))
        if verb == "t":
            return f"%{pyflags}s" % gostr(bool(arg) if isinstance(arg, bool) else arg)
        if verb in "dxXob" and isinstance(arg, int) and not isinstance(arg, bool):
            if verb == "b":
                return format(arg, pyflags + "b")
            return f"%{flags}{verb}" % arg
        if verb in "feg" and isinstance(arg, (int, float)) and not isinstance(arg, bool):
            return f"%{flags}{verb}" % arg
    except (TypeError, ValueError):
        pass
    return f"%!{verb}({_kind(arg)}={gostr(arg)})"


def _len(v: Any) -> int:
    if isinstance(v, (list, dict, str)):
        return len(v)
    raise TemplateError(f"template: len of {_kind(v)}")


def _cmp(op: str) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        if op == "eq":
            return any(a == b for b in bs)
        b = bs[0]
        if op == "ne":
            return bool(a != b)
        try:
            if op == "lt":
                return bool(a < b)
            if op == "le":
                return bool(a <= b)
            if op == "gt":
                return bool(a > b)
            return bool(a >= b)
        except TypeError:
            raise TemplateError(f"template: incompatible types for comparison: "
                                f"{_kind(a)} and {_kind(b)}") from None
    return f


def _and(*vs: Any) -> Any:
    for v in vs:
        if not _truth(v):
            return v
    return vs[-1]


def _or(*vs: Any) -> Any:
    for v in vs:
        if _truth(v):
            return v
    return vs[-1]


def _truncate(v: Any, n: int) -> str:
    return gostr(v)[:n]


def _pad(v: Any, left: int, right: int) -> str:
    return " " * left + gostr(v) + " " * right


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json, "index": _index, "join": _join, "printf": printf,
    "print": lambda *a: "".join(gostr(x) for x in a),
    "println": lambda *a: " ".join(gostr(x) for x in a) + "\n",
    "len": _len, "upper": lambda s: gostr(s).upper(), "lower": lambda s: gostr(s).lower(),
    "title": lambda s: gostr(s).title(), "split": lambda s, sep: gostr(s).split(sep),
    "truncate": _truncate, "pad": _pad,
    "eq": _cmp("eq"), "ne": _cmp("ne"), "lt": _cmp("lt"), "le": _cmp("le"),
    "gt": _cmp("gt"), "ge": _cmp("ge"), "not": lambda v: not _truth(v), "and": _and,
    "or": _or,
}
ARITY: dict[str, tuple[int, int]] = {
    "json": (1, 1), "index": (1, 99), "join": (2, 2), "printf": (1, 99), "len": (1, 1),
    "upper": (1, 1), "lower": (1, 1), "title": (1, 1), "split": (2, 2), "truncate": (2, 2),
    "pad": (3, 3), "eq": (2, 99), "ne": (2, 2), "lt": (2, 2), "le": (2, 2), "gt": (2, 2),
    "ge": (2, 2), "not": (1, 1), "and": (1, 99), "or": (1, 99),
}


# --------------------------------------------------------------------------- the API
class Template:
    """A parsed template; ``render(value)`` applies it to one object."""

    def __init__(self, src: str) -> None:
        self.table = src.startswith("table ") or src == "table"
        self.src = src[len("table"):].lstrip(" ") if self.table else src
        self.src = self.src.replace("\\t", "\t").replace("\\n", "\n")
        self.nodes = _Parser(self.src).parse()

    def render(self, value: Any) -> str:
        out: list[str] = []
        _run(self.nodes, value, _Scope(value), out)
        return "".join(out)

    def header(self, names: dict[str, str]) -> str:
        """The header row of a ``table`` template: each action that is a field path shows
        ``names[field]`` (docker's column title) or the field's name in capitals."""
        out: list[str] = []
        for node in self.nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "action":
                out.append(_title(node[1], names))
        return "".join(out)


def _title(pipe: list[list[Node]], names: dict[str, str]) -> str:
    for op in pipe[0]:
        if op[0] == "field" and op[2]:
            last = op[2][-1]
            return names.get(_norm(last), _snake_upper(last))
        if op[0] == "sub" and op[2]:
            return names.get(_norm(op[2][-1]), _snake_upper(op[2][-1]))
    for op in pipe[0]:
        if op[0] == "lit" and isinstance(op[1], str):
            return op[1].upper()
    return ""


def _snake_upper(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and name[i - 1].islower():
            out.append(" ")
        out.append(ch)
    return "".join(out).replace("_", " ").upper()


def tabwrite(lines: list[str], minwidth: int = 10, padding: int = 3) -> str:
    """Align ``\\t``-separated cells as Go's text/tabwriter does for docker (cells padded
    to the column's widest plus ``padding``, at least ``minwidth``; the last cell of a line
    is not padded). Columns are aligned across the consecutive lines that have them."""
    rows = [line.split("\t") for line in lines]
    widths: dict[int, int] = {}
    for r in rows:
        for c, cell in enumerate(r[:-1]):
            widths[c] = max(widths.get(c, 0), len(cell))
    out = []
    for r in rows:
        cells = [cell.ljust(max(minwidth, widths[c] + padding)) for c, cell in
                 enumerate(r[:-1])]
        out.append("".join(cells) + r[-1])
    return "\n".join(out)


def render_all(src: str, items: list[Any], names: dict[str, str] | None = None) -> str:
    """The text a ``--format src`` prints for ``items``: one rendering a line, with a
    header first for ``table``."""
    t = Template(src)
    lines = [t.render(records(x)) for x in items]
    if t.table:
        return tabwrite([t.header(names or {}), *lines])
    return "\n".join(lines)
