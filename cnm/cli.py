"""cnm: the command line, a client of the cnmd API only.

Exit codes: 0 ok, 1 error, 2 invalid input, 3 daemon unreachable; ``sandbox exec``: the
command's own, or 125 (entering the sandbox failed), 126 (not executable), 127 (not
found), as docker's.
``main`` is the one place that turns errors into messages; a traceback shows only with
--debug.

A process per command: it imports only what a client needs (the client on ``_socket`` and
cnm.jsonlite, the errors), nothing of the daemon side; argv is read by cnm.argv from the
commands declared here, and argparse (with the re, enum and gettext it imports) builds
parsers only for --help, usage errors and the forms cnm.argv leaves to it; json, ``--format``
templates, filters and ``sandbox exec``'s namespace code are imported when a command uses
them.
"""

from __future__ import annotations

import os
import sys

from cnm import __version__, argv
from cnm.address import DEFAULT_HOST
from cnm.client import Client
from cnm.errors import CnmError, InvalidArgument, exit_code

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    from cnm.tls import TlsFiles

API_VERSION = "v1"


class UsageError(Exception):
    """argparse's errors, raised instead of exiting so main() reports them like the rest;
    ``prog`` is the command whose --help to suggest."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: {message}")
        self.prog = prog


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"invalid {flag} {v!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
             for r in [head, *rows]]
    return "\n".join(lines)


def _text(v: Any) -> str:
    """A value as text output shows it: Go's %v (true, <nil>, [a b], map[k:v])."""
    from cnm.gotemplate import gostr

    return gostr(v)


# docker's column titles of the fields a `table` template names.
HEADERS = {"id": "ID", "name": "NAME", "driver": "DRIVER", "scope": "SCOPE",
           "ipv6": "IPV6", "internal": "INTERNAL", "labels": "LABELS", "created": "CREATED",
           "network": "NETWORK", "sandbox": "SANDBOX", "ifname": "IFNAME", "mac": "MAC",
           "ipv4": "IPV4", "hostname": "HOSTNAME", "kind": "KIND", "netns": "NETNS"}


def _emit(data: Any, fmt: str, table: Callable[[Any], str],
          headers: dict[str, str] | None = None) -> None:
    """``--format``: json, table (the command's own layout) or a Go template, applied to
    each object (a list's items, or the one object)."""
    if fmt == "json":
        import json

        print(json.dumps(data, indent=2))
    elif fmt == "table" or not fmt:
        text = table(data)
        if text:
            print(text)
    else:
        from cnm.gotemplate import render_all

        items = data if isinstance(data, list) else [data]
        text = render_all(fmt, items, {**HEADERS, **(headers or {})})
        if text or items:
            print(text)


def _short(x: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    """``x`` with its id cut to 12 characters, as ls shows it, unless --no-trunc."""
    return x if a.no_trunc else {**x, "id": x["id"][:12]}


def _filtered(a: argparse.Namespace, items: list[dict[str, Any]],
              kind: str) -> list[dict[str, Any]]:
    if not a.filter:
        return items
    from cnm import filters

    return filters.select(items, filters.parse(a.filter, kind))


# ------------------------------------------------------------------------------ networks
def _net_rows(nets: list[dict[str, Any]], full: bool = False) -> str:
    rows = [[n["id"] if full else n["id"][:12], n["name"], n["driver"], n["scope"],
             ",".join(s["subnet"] for s in n["subnets"])] for n in nets]
    return _table(rows, ["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNETS"])


def _net_detail(nets: list[dict[str, Any]]) -> str:
    out = []
    for n in nets:
        out.append(f"Name: {n['name']}\nID: {n['id']}\nDriver: {n['driver']}\n"
                   f"Internal: {_text(n['internal'])}\nIPv6: {_text(n['ipv6'])}\n"
                   f"DNS: {_text(n.get('dns', False))}")
        if n.get("link"):
            out.append(f"Link: {n['link']}")
        for s in n["subnets"]:
            out.append(f"Subnet: {s['subnet']} gateway {s['gateway'] or '-'}"
                       + (f" range {s['ip_range']}" if s["ip_range"] else ""))
        for k, v in sorted(n["options"].items()):
            out.append(f"Option: {k}={v}")
        for k, v in sorted(n["labels"].items()):
            out.append(f"Label: {k}={v}")
        for e in n["endpoints"]:
            veth = f" (host side {e['host_link']})" if e.get("host_link") else ""
            out.append(f"Endpoint: {e['sandbox'] or '(reserved)'} {e['ifname']} "
                       f"{e['ipv4'] or ''} {e['ipv6'] or ''} {e['mac']}".rstrip() + veth)
    return "\n".join(out)


def _plan(answer: dict[str, Any]) -> int:
    """Print a dry run's plan: one step a line, its kind first."""
    for step in answer["plan"]:
        print(f"{step['kind']:<9} {step['step']}")
    return 0


def network_create(c: Client, a: argparse.Namespace) -> int:
    net = c.create_network(
        name=a.name, driver=a.driver, subnets=a.subnet, gateways=a.gateway,
        ip_ranges=a.ip_range, aux_addresses=_pairs(a.aux_address, "--aux-address"),
        ipv6=a.ipv6, internal=a.internal, options=_pairs(a.opt, "-o"),
        labels=_pairs(a.label, "--label"), dry_run=a.dry_run,
    )
    if a.dry_run:
        return _plan(net)
    print(net["id"])
    return 0


def _ls(a: argparse.Namespace, items: list[dict[str, Any]], kind: str,
        rows: Callable[[list[dict[str, Any]], bool], str],
        headers: dict[str, str] | None = None) -> int:
    items = _filtered(a, items, kind)
    if a.quiet:
        for x in items:
            print(x["id"] if a.no_trunc else x["id"][:12])
    elif a.format in ("json", "table"):
        _emit(items, a.format, lambda xs: rows(xs, a.no_trunc))
    else:
        _emit([_short(x, a) for x in items], a.format, lambda xs: rows(xs, True), headers)
    return 0


def network_ls(c: Client, a: argparse.Namespace) -> int:
    return _ls(a, c.networks(), "network", _net_rows, {"id": "NETWORK ID"})


def network_inspect(c: Client, a: argparse.Namespace) -> int:
    return _inspect(a, c.network, _net_detail)


def _force_remove(c: Client, name: str) -> str:
    """``network rm -f``: disconnect every sandbox, delete the endpoints left reserved,
    then remove; a network that does not exist is no error (docker's -f)."""
    from cnm.errors import NotFound

    try:
        net = c.network(name)
    except NotFound:
        return name
    for e in net["endpoints"]:
        if e["sandbox_id"]:
            c.disconnect(net["id"], e["sandbox_id"])
    for e in c.network(net["id"])["endpoints"]:
        c.delete_endpoint(e["id"])
    return str(c.remove_network(net["id"])["name"])


def network_rm(c: Client, a: argparse.Namespace) -> int:
    if a.dry_run:
        if a.force:
            raise InvalidArgument("network rm: --dry-run and --force cannot be combined")
        for name in a.names:
            _plan(c.remove_network(name, dry_run=True))
        return 0
    if a.force:
        return _each(a.names, lambda n: _force_remove(c, n))
    return _each(a.names, lambda n: c.remove_network(n)["name"])


PRUNE_WARNING = ("WARNING! This will remove all custom networks not used by at least one "
                 "endpoint.\nAre you sure you want to continue? [y/N] ")


def _confirm(question: str) -> bool:
    sys.stdout.write(question)
    sys.stdout.flush()
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        sys.stdout.write("\n")
    return answer.strip().lower() in ("y", "yes")


def network_prune(c: Client, a: argparse.Namespace) -> int:
    if a.filter:
        from cnm import filters

        wanted = filters.parse(a.filter, "prune")
    if not a.force and not _confirm(PRUNE_WARNING):
        return 0
    if not a.filter:
        removed = c.call("POST", "/v1/networks/prune")["removed"]
    else:
        # The daemon's prune takes no filters: remove the unused custom networks that
        # match, one by one (one that gained an endpoint meanwhile is refused, and kept).
        unused = [n for n in c.networks() if n["name"] not in filters.BUILTIN_NETWORKS
                  and not n["endpoints"]]
        removed = []
        for n in filters.select(unused, wanted):
            try:
                removed.append(c.remove_network(n["id"])["name"])
            except CnmError as e:
                print(f"error: {e.message}", file=sys.stderr)
    for name in removed:
        print(name)
    return 0


def network_connect(c: Client, a: argparse.Namespace) -> int:
    done = c.connect(a.network, a.sandbox, ip=a.ip, ip6=a.ip6, aliases=a.alias,
                     mac_address=a.mac_address, ports=a.publish, ifname=a.ifname,
                     dry_run=a.dry_run)
    return _plan(done) if a.dry_run else 0


def network_disconnect(c: Client, a: argparse.Namespace) -> int:
    done = c.disconnect(a.network, a.sandbox, dry_run=a.dry_run)
    return _plan(done) if a.dry_run else 0


# ------------------------------------------------------------------------------ endpoints
def _ep_rows(eps: list[dict[str, Any]], full: bool = False) -> str:
    rows = [[e["id"] if full else e["id"][:12], e["name"], e["network"],
             e["sandbox"] or "(reserved)", e["ifname"],
             ",".join(a for a in (e["ipv4"], e["ipv6"]) if a)] for e in eps]
    return _table(rows, ["ENDPOINT ID", "NAME", "NETWORK", "SANDBOX", "IFNAME", "ADDRESSES"])


def _ep_detail(eps: list[dict[str, Any]]) -> str:
    out = []
    for e in eps:
        out.append(f"Name: {e['name']}\nID: {e['id']}\nNetwork: {e['network']}\n"
                   f"Sandbox: {e['sandbox'] or '(reserved, not joined)'}\n"
                   f"Interface: {e['ifname']}\nMAC: {e['mac']}")
        for a in (e["ipv4"], e["ipv6"]):
            if a:
                out.append(f"Address: {a}")
        for m in e["ports"]:
            out.append(f"Port: {_port_line({**m, 'network': e['network']})}")
    return "\n".join(out)


def endpoint_create(c: Client, a: argparse.Namespace) -> int:
    ep = c.create_endpoint(a.network, name=a.name, ip=a.ip, ip6=a.ip6, aliases=a.alias,
                           mac_address=a.mac_address, ports=a.publish)
    print(ep["id"])
    return 0


def endpoint_join(c: Client, a: argparse.Namespace) -> int:
    done = c.join(a.endpoint, a.sandbox, a.ifname, dry_run=a.dry_run)
    return _plan(done) if a.dry_run else 0


def endpoint_leave(c: Client, a: argparse.Namespace) -> int:
    done = c.leave(a.endpoint, dry_run=a.dry_run)
    return _plan(done) if a.dry_run else 0


def endpoint_ls(c: Client, a: argparse.Namespace) -> int:
    return _ls(a, c.endpoints(), "endpoint", _ep_rows, {"id": "ENDPOINT ID"})


def endpoint_inspect(c: Client, a: argparse.Namespace) -> int:
    return _inspect(a, c.endpoint, _ep_detail)


def endpoint_rm(c: Client, a: argparse.Namespace) -> int:
    return _each(a.names, lambda n: c.delete_endpoint(n)["name"])


# ------------------------------------------------------------------------------ sandboxes
def _sb_rows(sbs: list[dict[str, Any]], full: bool = False) -> str:
    rows = [[s["id"] if full else s["id"][:12], s["name"],
             ",".join(e["network"] for e in s["endpoints"]),
             ",".join(a for e in s["endpoints"] for a in (e["ipv4"], e["ipv6"]) if a)]
            for s in sbs]
    return _table(rows, ["SANDBOX ID", "NAME", "NETWORKS", "ADDRESSES"])


def _sb_detail(sbs: list[dict[str, Any]]) -> str:
    out = []
    for s in sbs:
        out.append(f"Name: {s['name']}\nID: {s['id']}\nHostname: {s['hostname']}\n"
                   f"Namespace: {s['netns']}")
        for e in s["endpoints"]:
            out.append(f"Endpoint: {e['network']} {e['ifname']} {e['ipv4'] or ''} "
                       f"{e['ipv6'] or ''} {e['mac']}".rstrip())
    return "\n".join(out)


def sandbox_create(c: Client, a: argparse.Namespace) -> int:
    sb = c.create_sandbox(name=a.name, network=a.network, ip=a.ip, ip6=a.ip6,
                          aliases=a.alias, ports=a.publish, hostname=a.hostname,
                          mac_address=a.mac_address, labels=_pairs(a.label, "--label"),
                          netns=a.netns, ifname=a.ifname)
    print(sb["id"])
    return 0


def sandbox_ls(c: Client, a: argparse.Namespace) -> int:
    return _ls(a, c.sandboxes(), "sandbox", _sb_rows, {"id": "SANDBOX ID"})


def sandbox_inspect(c: Client, a: argparse.Namespace) -> int:
    return _inspect(a, c.sandbox, _sb_detail)


def sandbox_rm(c: Client, a: argparse.Namespace) -> int:
    return _each(a.names, lambda n: c.remove_sandbox(n, force=a.force)["name"])


# docker's exit statuses when the command itself never ran.
EXEC_FAILED, EXEC_CANNOT_INVOKE, EXEC_NOT_FOUND = 125, 126, 127


def sandbox_exec(c: Client, a: argparse.Namespace) -> int:
    """Become the command inside the sandbox. Before the sandbox is found, cnm's own exit
    codes (1 no such sandbox, 2 invalid input, 3 daemon unreachable); after, docker's: 125
    when entering the sandbox fails, 126 when the command cannot be run, 127 when it is not
    found."""
    argv = list(a.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise InvalidArgument("no command given", hint="cnm sandbox exec NAME -- CMD [ARG...]")
    sb = c.sandbox(a.name)
    c.close()
    files = {"/etc/hosts": sb["hosts_path"], "/etc/resolv.conf": sb["resolv_conf_path"]}
    hostname = sb["hostname"] if sb["kind"] == "netns" else None
    try:
        from cnm.kernel.nsexec import CommandFailed, exec_in

        exec_in(sb["netns"], files, hostname, argv)
    except CommandFailed as e:
        print(f"error: {e.message}", file=sys.stderr)
        return EXEC_NOT_FOUND if e.not_found else EXEC_CANNOT_INVOKE
    except (CnmError, OSError) as e:
        msg = e.message if isinstance(e, CnmError) else f"{e.strerror}: {e.filename}"
        print(f"error: cannot enter sandbox {a.name}: {msg}", file=sys.stderr)
        return EXEC_FAILED


def _port_line(m: dict[str, Any]) -> str:
    def span(lo: int, hi: int) -> str:
        return f"{lo}-{hi}" if hi != lo else f"{lo}"

    hosts = [m["host_ip"]] if m["host_ip"] else ["0.0.0.0", "::"]
    port = span(m["host_port"], m["host_port_end"])
    where = ", ".join(f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts)
    return (f"{span(m['container_port'], m['container_port_end'])}/{m['proto']} -> "
            f"{where}  ({m['network']})")


def port_ls(c: Client, a: argparse.Namespace) -> int:
    _emit(c.ports(a.sandbox), a.format, lambda ms: "\n".join(_port_line(m) for m in ms))
    return 0


def port_add(c: Client, a: argparse.Namespace) -> int:
    for m in c.publish(a.sandbox, a.specs, a.network):
        print(_port_line(m))
    return 0


def port_rm(c: Client, a: argparse.Namespace) -> int:
    for spec in a.ports:
        port, slash, proto = spec.partition("/")
        if not port.isdecimal() or (slash and not proto):
            raise InvalidArgument(f"invalid port {spec!r}: expected HOST_PORT[/tcp|udp|sctp]")
        c.unpublish(a.sandbox, int(port), proto.lower() or "tcp")
    return 0


def firewall_reload(c: Client, a: argparse.Namespace) -> int:
    done = c.reload_firewall()
    print(f"rebuilt: {done['networks']} networks, {done['ports']} published ports, "
          f"{done['guards']} guarded ports")
    return 0


def trace(c: Client, a: argparse.Namespace) -> int:
    """One probe's path; exit 0 only if it was delivered."""
    done = c.trace(a.sandbox, a.destination)
    if a.format == "json":
        import json

        print(json.dumps(done, indent=2))
    else:
        from cnm.trace import render_text

        print(render_text(done), end="")
    return 0 if done["verdict"] == "delivered" else 1


def _drift_text(d: dict[str, Any], head: str = "drift") -> str:
    o = d["object"]
    ident = f" ({o['id'][:12]})" if o["id"] != o["name"] else ""
    return (f"{head}: {d['kind']}: {o['type']} {o['name']}{ident}\n"
            f"  wrong: {d['wrong']}\n  means: {d['means']}\n  fix:   {d['fix']}")


def doctor(c: Client, a: argparse.Namespace) -> int:
    """Compare the store with the kernel; exit 1 while drift remains."""
    import json

    answer = c.doctor(a.fix)
    left = answer["drift"]
    if a.format == "json":
        print(json.dumps(answer, indent=2))
    elif a.format == "table":
        if a.fix:
            still = {json.dumps(d, sort_keys=True) for d in left}
            for d in answer["found"]:
                if json.dumps(d, sort_keys=True) not in still:
                    print(_drift_text(d, "fixed"))
            for e in answer["errors"]:
                print(f"error: {e['message']}", file=sys.stderr)
        for d in left:
            print(_drift_text(d))
        if not left:
            print("no drift: the kernel matches the store")
    else:
        items = left
        if a.fix:
            still = {json.dumps(d, sort_keys=True) for d in left}
            items = [{**d, "fixed": json.dumps(d, sort_keys=True) not in still}
                     for d in answer["found"]]
        _emit(items, a.format, lambda xs: "")
    return 1 if left else 0


def _lines(d: dict[str, Any]) -> str:
    """``key: value`` lines; a list is its items joined with ", "."""
    return "\n".join(f"{k}: {', '.join(map(_text, v)) if isinstance(v, list) else _text(v)}"
                     for k, v in d.items())


def info(c: Client, a: argparse.Namespace) -> int:
    _emit(c.call("GET", "/v1/info"), a.format, _lines)
    return 0


def version(c: Client, a: argparse.Namespace) -> int:
    """Client and server versions; the client's even when cnmd is unreachable (exit 3)."""
    import platform

    data: dict[str, Any] = {
        "client": {"version": __version__, "api_version": API_VERSION,
                   "python": platform.python_version()},
        "server": None,
    }
    failed: CnmError | None = None
    try:
        ping = c.call("GET", "/v1/_ping")
        data["server"] = {"version": ping["version"], "api_version": API_VERSION}
    except CnmError as e:
        failed = e
    _emit(data, a.format, _version_text)
    if failed is not None:
        raise failed
    return 0


EVENT_KEYS = ("type", "action", "name", "id")


def _event_line(e: dict[str, Any]) -> str:
    """docker's: time, type, action, id, then (attributes, name)."""
    import datetime

    stamp = datetime.datetime.fromtimestamp(e["time_nano"] // 10**9, datetime.UTC)
    attrs = ", ".join(f"{k}={v}" for k, v in sorted({**e["attributes"],
                                                      "name": e["name"]}.items()))
    return (f"{stamp.strftime('%Y-%m-%dT%H:%M:%S')}.{e['time_nano'] % 10**9:09d}Z "
            f"{e['type']} {e['action']} {e['id']} ({attrs})")


def events(c: Client, a: argparse.Namespace) -> int:
    """Follow the changes (GET /v1/events) until --until, or Ctrl-C."""
    from cnm import filters

    query: list[tuple[str, str]] = []
    for flag, value in (("since", a.since), ("until", a.until)):
        if value is not None:
            query.append((flag, repr(filters.until(value))))
    for f in a.filter:
        key, sep, value = f.partition("=")
        if not sep or key not in EVENT_KEYS:
            raise InvalidArgument(f"invalid filter {f!r}",
                                  hint="filters: " + ", ".join(f"{k}=VALUE" for k in EVENT_KEYS))
        query.append((key, value))
    from cnm.client import quote

    path = "/v1/events" + ("?" + "&".join(f"{k}={quote(v)}" for k, v in query) if query
                           else "")
    import json

    template = None
    if a.format not in ("json", "table"):
        from cnm.gotemplate import Template, records

        template = Template(a.format)
    for e in c.stream(path):
        if a.format == "json":
            print(json.dumps(e), flush=True)
        elif template is not None:
            print(template.render(records(e)), flush=True)
        else:
            print(_event_line(e), flush=True)
    return 0


def completion(c: Client, a: argparse.Namespace) -> int:
    """A bash or zsh completion script, generated from this parser (shtab)."""
    import shtab

    print(shtab.complete(build_parser(), a.shell))
    return 0


def _version_text(d: dict[str, Any]) -> str:
    out = ["Client:", f" Version:      {d['client']['version']}",
           f" API version:  {d['client']['api_version']}",
           f" Python:       {d['client']['python']}"]
    if d["server"]:
        out += ["", "Server:", f" Version:      {d['server']['version']}",
                f" API version:  {d['server']['api_version']}"]
    return "\n".join(out)


def _inspect(a: argparse.Namespace, get: Callable[[str], Any],
             detail: Callable[[list[dict[str, Any]]], str]) -> int:
    found, rc = [], 0
    for name in a.names:
        try:
            found.append(get(name))
        except CnmError as e:
            print(f"error: {e.message}", file=sys.stderr)
            rc = exit_code(e)
    if found:
        _emit(found, a.format, detail)
    return rc


def _each(names: Sequence[str], fn: Callable[[str], str]) -> int:
    """Apply to every name; report each failure and carry on (like docker rm)."""
    rc = 0
    for name in names:
        try:
            print(fn(name))
        except CnmError as e:
            print(f"error: {e.message}", file=sys.stderr)
            rc = exit_code(e)
    return rc


# ------------------------------------------------------------------------------ argv
_PARSER: Any = None


def _parser_class() -> Any:
    """argparse's parser, with cnm's rules (built on first use: argparse costs ~5 ms)."""
    global _PARSER
    if _PARSER is not None:
        return _PARSER
    import argparse

    class _Formatter(argparse.HelpFormatter):
        """argparse's, told the terminal's width: left to find it, it imports shutil (and bz2,
        lzma, fnmatch with it) at every add_argument, ~2 ms of every command."""

        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: int | None = None) -> None:
            if width is None:
                try:
                    width = int(os.environ.get("COLUMNS", "")) - 2
                except ValueError:
                    try:
                        width = os.get_terminal_size(sys.stdout.fileno()).columns - 2
                    except (OSError, ValueError):
                        width = 78
            super().__init__(prog, indent_increment, max_help_position, max(width, 20))

    class _Parser(argparse.ArgumentParser):
        """No abbreviated flags (``--sub`` is not ``--subnet``: scripts break when a flag is
        added), and errors that name the command."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("allow_abbrev", False)
            kwargs.setdefault("formatter_class", _Formatter)
            super().__init__(*args, **kwargs)

        def error(self, message: str) -> Any:
            raise UsageError(self.prog, message)

    _PARSER = _Parser
    return _Parser


class _Skipped:
    """Stands in for the parser of a command this run does not parse."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


def build_parser(only: tuple[str, str] | None = None) -> argparse.ArgumentParser:
    """Every command and flag, each with its help and default; with ``only`` (group,
    command), that command alone (building all ~30 parsers was ~4 ms of a command;
    ``_parse`` falls back to the whole parser)."""
    parser: argparse.ArgumentParser = _declare(_parser_class(), only)
    return parser


def recorded(only: tuple[str, str] | None = None) -> argv.Command:
    """The same declarations, recorded for cnm.argv (no argparse)."""
    cmd: argv.Command = _declare(argv.Command, only)
    return cmd


def _declare(parser_class: Any, only: tuple[str, str] | None) -> Any:
    """Every command and flag, declared with ArgumentParser's calls on ``parser_class``:
    argparse's (build_parser) or cnm.argv's recorder (recorded)."""
    _Parser = parser_class
    p = _Parser(prog="cnm", description="Container networks, endpoints and sandboxes: a "
                "client of cnmd.", epilog="Run 'cnm COMMAND --help' for a command's flags.")
    p.add_argument("-H", "--host", default=os.environ.get("CNM_HOST", DEFAULT_HOST),
                   help="daemon address, unix://PATH or tcp://HOST:PORT with --tlsverify "
                        "(default: $CNM_HOST, else %(default)s)")
    p.add_argument("--tlsverify", action="store_true",
                   default=bool(os.environ.get("CNM_TLS_VERIFY")),
                   help="talk mutual TLS to a daemon whose certificate the CA signed for "
                        "HOST (env CNM_TLS_VERIFY)")
    for flag, name in (("--tlscacert", "ca.pem"), ("--tlscert", "cert.pem"),
                       ("--tlskey", "key.pem")):
        p.add_argument(flag, metavar="FILE",
                       help=f"default: $CNM_CERT_PATH/{name} (CNM_CERT_PATH: ~/.cnm)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--version", action="version", version=f"cnm {__version__}",
                   help="print the client's version and exit")
    groups = p.add_subparsers(dest="group", metavar="COMMAND", parser_class=_Parser)
    groups.required = True

    def leaf(sub: Any, name: str, fn: Callable[[Client, argparse.Namespace], int],
             help: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        if only is not None:
            wanted = only[1] if sub is not groups else only[0]
            if sub is None or wanted not in (name, *aliases):
                return _Skipped()  # type: ignore[return-value]
        sp: argparse.ArgumentParser = sub.add_parser(name, aliases=list(aliases), help=help,
                                                     description=help[:1].upper() + help[1:]
                                                     + ".")
        sp.set_defaults(fn=fn, prog=sp.prog)
        return sp

    def group(name: str, help: str) -> Any:
        if only is not None and only[0] != name:
            return None
        gp = groups.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".")
        gp.set_defaults(prog=gp.prog)
        sub = gp.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
        sub.required = True
        return sub

    def fmt(sp: argparse.ArgumentParser, default: str, short: bool = False) -> None:
        flags = ("-f", "--format") if short else ("--format",)
        sp.add_argument(*flags, default=default, metavar="FORMAT",
                        help="json, table, or a Go template ('{{.Name}}', '{{json .}}', "
                             "'table {{.ID}}\\t{{.Name}}'; see docs/cli.md) "
                             "(default: %(default)s)")

    def listing(sp: argparse.ArgumentParser, keys: str) -> None:
        sp.add_argument("-q", "--quiet", action="store_true", help="print only the ids")
        sp.add_argument("--no-trunc", action="store_true",
                        help="print whole ids (default: the first 12 characters)")
        sp.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help=f"only those matching (repeatable; keys: {keys})")
        fmt(sp, "table")

    def dry(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dry-run", action="store_true",
                        help="print the plan (links, addresses, routes, firewall elements, "
                             "DNS names) and change nothing")

    def addresses(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--ip", help="IPv4 address (default: the next free one)")
        sp.add_argument("--ip6", help="IPv6 address (default: the next free one)")
        sp.add_argument("--mac-address", metavar="MAC",
                        help="MAC address (default: one derived from the IPv4 address)")

    def alias(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--alias", action="append", default=[],
                        help="another DNS name on the network (repeatable)")

    def publish(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-p", "--publish", action="append", default=[], metavar="SPEC",
                        help="publish a port: [HOST_IP:][HOST_PORT[-END]:]PORT[-END]"
                             "[/tcp|udp|sctp] (repeatable)")

    def ifname(sp: argparse.ArgumentParser, default: str = "eth0, eth1, ...") -> None:
        sp.add_argument("--ifname", help=f"interface name in the sandbox (default: {default})")

    def label(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label (repeatable)")

    net = group("network", "manage networks")
    sp = leaf(net, "create", network_create, "create a network")
    sp.add_argument("-d", "--driver", default="bridge",
                    help="bridge, macvlan or ipvlan (default: %(default)s)")
    sp.add_argument("--subnet", action="append", default=[], metavar="CIDR",
                    help="subnet, one per family (repeatable; default: one from the pools)")
    sp.add_argument("--gateway", action="append", default=[], metavar="IP",
                    help="gateway of a subnet (repeatable; default: its first address)")
    sp.add_argument("--ip-range", action="append", default=[], metavar="CIDR",
                    help="allocate sandbox addresses from this part of a subnet only")
    sp.add_argument("--aux-address", action="append", default=[], metavar="NAME=IP",
                    help="an address no sandbox gets (repeatable)")
    sp.add_argument("--ipv6", action="store_true",
                    help="an IPv6 subnet too (default: from fd63:6e6d::/48)")
    sp.add_argument("--internal", action="store_true",
                    help="no traffic in or out of the network, no gateway")
    sp.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="a driver option, e.g. mtu=1400, parent=eth1 (repeatable)")
    label(sp)
    dry(sp)
    sp.add_argument("name", help="the network's name")
    sp = leaf(net, "ls", network_ls, "list networks", aliases=["list"])
    listing(sp, "name, id, driver, label, scope, type")
    sp = leaf(net, "inspect", network_inspect, "show networks in detail")
    sp.add_argument("names", nargs="+", metavar="NETWORK", help="name, id or id prefix")
    fmt(sp, "json", short=True)
    sp = leaf(net, "rm", network_rm, "remove networks", aliases=["remove"])
    sp.add_argument("-f", "--force", action="store_true",
                    help="disconnect every sandbox and delete reserved endpoints first; "
                         "a missing network is no error")
    dry(sp)
    sp.add_argument("names", nargs="+", metavar="NETWORK", help="name, id or id prefix")
    sp = leaf(net, "prune", network_prune, "remove every unused user-defined network")
    sp.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    sp.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="only those matching: until=TIME|DURATION, label=K[=V], "
                         "label!=K[=V] (repeatable)")
    sp = leaf(net, "connect", network_connect, "connect a sandbox to a network")
    addresses(sp)
    alias(sp)
    publish(sp)
    ifname(sp)
    dry(sp)
    sp.add_argument("network", help="the network")
    sp.add_argument("sandbox", help="the sandbox")
    sp = leaf(net, "disconnect", network_disconnect, "disconnect a sandbox from a network")
    dry(sp)
    sp.add_argument("network", help="the network")
    sp.add_argument("sandbox", help="the sandbox")

    epx = group("endpoint", "manage endpoints")
    sp = leaf(epx, "create", endpoint_create,
              "reserve an endpoint on a network (joined later)")
    addresses(sp)
    alias(sp)
    publish(sp)
    sp.add_argument("network", help="the network")
    sp.add_argument("name", help="the endpoint's name, unique in the network")
    sp = leaf(epx, "join", endpoint_join, "join an endpoint to a sandbox")
    dry(sp)
    ifname(sp)
    sp.add_argument("endpoint", help="name, id or id prefix")
    sp.add_argument("sandbox", help="the sandbox")
    sp = leaf(epx, "leave", endpoint_leave,
              "take an endpoint out of its sandbox (it stays reserved)")
    dry(sp)
    sp.add_argument("endpoint", help="name, id or id prefix")
    sp = leaf(epx, "ls", endpoint_ls, "list endpoints", aliases=["list"])
    listing(sp, "name, id, network, sandbox")
    sp = leaf(epx, "inspect", endpoint_inspect, "show endpoints in detail")
    sp.add_argument("names", nargs="+", metavar="ENDPOINT", help="name, id or id prefix")
    fmt(sp, "json", short=True)
    sp = leaf(epx, "rm", endpoint_rm, "delete endpoints that are not joined",
              aliases=["remove"])
    sp.add_argument("names", nargs="+", metavar="ENDPOINT", help="name, id or id prefix")

    sbx = group("sandbox", "manage sandboxes")
    sp = leaf(sbx, "create", sandbox_create, "create a sandbox (a network namespace)")
    sp.add_argument("--network", default="bridge",
                    help="NET, none or host (default: %(default)s)")
    addresses(sp)
    alias(sp)
    publish(sp)
    sp.add_argument("--hostname", help="its hostname (default: its name)")
    label(sp)
    sp.add_argument("--netns", metavar="PATH",
                    help="adopt this network namespace (a container's: /proc/PID/ns/net or a "
                         "bind mount) instead of making one; cnm never deletes it")
    ifname(sp, "eth0")
    sp.add_argument("name", help="the sandbox's name")
    sp = leaf(sbx, "ls", sandbox_ls, "list sandboxes", aliases=["list"])
    listing(sp, "name, id, label, network")
    sp = leaf(sbx, "inspect", sandbox_inspect, "show sandboxes in detail")
    sp.add_argument("names", nargs="+", metavar="SANDBOX", help="name, id or id prefix")
    fmt(sp, "json", short=True)
    sp = leaf(sbx, "rm", sandbox_rm, "remove sandboxes", aliases=["remove"])
    sp.add_argument("-f", "--force", action="store_true",
                    help="forget the sandbox even if a kernel step fails")
    sp.add_argument("names", nargs="+", metavar="SANDBOX", help="name, id or id prefix")
    sp = leaf(sbx, "exec", sandbox_exec, "run a command inside a sandbox (exit status: the "
              "command's; 125 entering the sandbox failed, 126 cannot run, 127 not found)")
    sp.add_argument("name", help="the sandbox")
    sp.add_argument("command", nargs=argv.REMAINDER, metavar="-- CMD [ARG...]",
                    help="the command and its arguments")

    prt = group("port", "published ports of a sandbox")
    sp = leaf(prt, "ls", port_ls, "list a sandbox's published ports", aliases=["list"])
    sp.add_argument("sandbox", help="the sandbox")
    fmt(sp, "table")
    sp = leaf(prt, "add", port_add, "publish ports of a running sandbox")
    sp.add_argument("--network", help="the network to publish on (default: its first bridge)")
    sp.add_argument("sandbox", help="the sandbox")
    sp.add_argument("specs", nargs="+", metavar="SPEC",
                    help="[HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTO]")
    sp = leaf(prt, "rm", port_rm, "withdraw published host ports", aliases=["remove"])
    sp.add_argument("sandbox", help="the sandbox")
    sp.add_argument("ports", nargs="+", metavar="HOST_PORT[/PROTO]",
                    help="a host port, tcp unless /udp or /sctp")

    fw = group("firewall", "cnm's nftables table")
    leaf(fw, "reload", firewall_reload, "rebuild the table from the store (after a flush)")

    sp = leaf(groups, "trace", trace, "send one probe from a sandbox and show its path: "
              "route, neighbour, bridge, each nftables rule that saw it, NAT, verdict (exit "
              "0 delivered, 1 dropped or unreachable)")
    sp.add_argument("--format", choices=("text", "json"), default="text",
                    help="text (hop by hop) or json (default: %(default)s)")
    sp.add_argument("sandbox", help="the sandbox to send from")
    sp.add_argument("destination", metavar="DEST[:PORT[/PROTO]]",
                    help="an IP address ([IPv6]:PORT with a port); a port is tcp unless "
                         "/udp; no port: icmp (ping)")
    sp = leaf(groups, "doctor", doctor,
              "compare the store with the kernel and say each difference (exit 1 if any)")
    sp.add_argument("--fix", action="store_true",
                    help="repair each difference (what reconcile at start does), then "
                         "compare again")
    fmt(sp, "table", short=True)
    sp = leaf(groups, "info", info, "show daemon information")
    fmt(sp, "table", short=True)
    sp = leaf(groups, "version", version, "show the client's and the daemon's versions")
    fmt(sp, "table", short=True)
    sp = leaf(groups, "events", events, "follow the changes as they happen (one line each)")
    sp.add_argument("--since", metavar="TIME",
                    help="first the kept events (the last 1,024) from TIME: RFC 3339, Unix "
                         "seconds, or a duration before now (10m) (default: only new ones)")
    sp.add_argument("--until", metavar="TIME",
                    help="stop at TIME (same forms) (default: follow until Ctrl-C)")
    sp.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="only these: type=network|endpoint|sandbox|port, action=…, name=…, "
                         "id=… (repeatable)")
    fmt(sp, "table", short=True)
    sp = leaf(groups, "completion", completion,
              "print a shell completion script: source <(cnm completion bash)")
    sp.add_argument("shell", choices=("bash", "zsh"), help="bash or zsh")
    groups.add_parser("daemon", help="run the daemon (same as cnmd)", add_help=False)
    groups.add_parser("lab", help="network labs from YAML files (cnm lab --help)",
                      add_help=False)
    return p


def _command_of(argv: Sequence[str]) -> tuple[str, str]:
    """The (group, command) argv names, read as argparse will: the first two words that
    are not global flags or their values ("" for a command like info)."""
    words: list[str] = []
    i = 0
    while i < len(argv) and len(words) < 2:
        a = argv[i]
        if a in ("-H", "--host", "--tlscacert", "--tlscert", "--tlskey"):
            i += 1
        elif a.startswith("-"):
            if words:
                break
        else:
            words.append(a)
        i += 1
    return (words + ["", ""])[0], (words + ["", ""])[1]


def _parse(args_list: list[str]) -> argparse.Namespace:
    """Parse, with an unrecognized argument reported by the command it was given to. Only
    the named command's flags are built; anything unexpected is parsed again by the whole
    parser, whose answer (or error) is the one given."""
    # Help lists the commands: the whole parser. A partial parser that parses argv parses
    # it as the whole one would (same flags, same commands on the path argv takes).
    whole = "-h" in args_list or "--help" in args_list
    try:
        if whole:
            raise UsageError("", "")
        fast = argv.parse(recorded(_command_of(args_list)), args_list)
        if fast is not None:
            return fast  # type: ignore[return-value]
        args, extra = build_parser(_command_of(args_list)).parse_known_args(args_list)
    except UsageError:
        args, extra = build_parser().parse_known_args(args_list)
    if extra:
        raise UsageError(getattr(args, "prog", "cnm"),
                         f"unrecognized arguments: {' '.join(extra)}")
    return args


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """The client's TLS files (Docker's rules): with --tlsverify, each flag or else its file
    in CNM_CERT_PATH (~/.cnm). A tcp:// host without --tlsverify is refused: the daemon
    serves TCP with mutual TLS only."""
    if not args.tlsverify:
        if args.host.startswith("tcp://"):
            raise InvalidArgument(f"{args.host} needs --tlsverify: cnmd serves TCP with "
                                  "mutual TLS only",
                                  hint="add --tlsverify (or CNM_TLS_VERIFY=1) and the "
                                       "certificates (--tlscacert/--tlscert/--tlskey or "
                                       "CNM_CERT_PATH)")
        return None
    from cnm.tls import TlsFiles  # ssl is for TLS only: not in every command's start-up

    base = TlsFiles.from_dir(os.environ.get("CNM_CERT_PATH")
                             or os.path.expanduser("~/.cnm"))
    return TlsFiles(args.tlscacert or base.ca, args.tlscert or base.cert,
                    args.tlskey or base.key)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        if args_list == ["--version"]:  # argparse's answer, without building argparse
            print(f"cnm {__version__}")
            return 0
        if args_list[:1] == ["lab"]:  # not an API client: its own command table
            from cnm.lab.cli import main as lab_main

            return lab_main(args_list[1:])
        if "daemon" in args_list:
            i = args_list.index("daemon")
            if all(a.startswith("-") for a in args_list[:i]):
                from cnm.daemon import run

                return run(args_list[i + 1:])
        args = _parse(args_list)
        files = tls_files(args)
        client = Client(args.host) if files is None else Client(args.host, tls=files)
        try:
            rc: int = args.fn(client, args)
            return rc
        finally:
            client.close()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"hint: run '{e.prog} --help'", file=sys.stderr)
        return 2
    except CnmError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `cnm network ls | head -1`
        return 0
    except Exception as e:  # noqa: BLE001 - the one place a bug becomes a message
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: internal error: {e} (run with --debug for details)", file=sys.stderr)
        return 1
