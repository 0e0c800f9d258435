"""cnm: the command line, a client of the cnmd API only.

Exit codes: 0 ok, 1 error, 2 invalid input, 3 daemon unreachable. ``main`` is the one place
that turns errors into messages; a traceback shows only with --debug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from cnm import __version__
from cnm.address import DEFAULT_HOST
from cnm.client import Client
from cnm.errors import CnmError, InvalidArgument, exit_code


class UsageError(Exception):
    """argparse's errors, raised instead of exiting so main() reports them like the rest."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}")


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


def _emit(data: Any, fmt: str, table: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2) if fmt == "json" else table(data))


# ------------------------------------------------------------------------------ networks
def _net_rows(nets: list[dict[str, Any]]) -> str:
    rows = [[n["id"][:12], n["name"], n["driver"], n["scope"],
             ",".join(s["subnet"] for s in n["subnets"])] for n in nets]
    return _table(rows, ["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNETS"])


def _net_detail(nets: list[dict[str, Any]]) -> str:
    out = []
    for n in nets:
        out.append(f"Name: {n['name']}\nID: {n['id']}\nDriver: {n['driver']}\n"
                   f"Internal: {n['internal']}\nIPv6: {n['ipv6']}")
        for s in n["subnets"]:
            out.append(f"Subnet: {s['subnet']} gateway {s['gateway']}"
                       + (f" range {s['ip_range']}" if s["ip_range"] else ""))
        for k, v in sorted(n["options"].items()):
            out.append(f"Option: {k}={v}")
        for e in n["endpoints"]:
            out.append(f"Endpoint: {e['sandbox']} {e['ifname']} {e['ipv4'] or ''} "
                       f"{e['ipv6'] or ''} {e['mac']}".rstrip())
    return "\n".join(out)


def network_create(c: Client, a: argparse.Namespace) -> int:
    net = c.create_network(
        name=a.name, driver=a.driver, subnets=a.subnet, gateways=a.gateway,
        ip_ranges=a.ip_range, aux_addresses=_pairs(a.aux_address, "--aux-address"),
        ipv6=a.ipv6, internal=a.internal, options=_pairs(a.opt, "-o"),
        labels=_pairs(a.label, "--label"),
    )
    print(net["id"])
    return 0


def _ls(a: argparse.Namespace, items: list[dict[str, Any]],
        rows: Callable[[list[dict[str, Any]]], str]) -> int:
    if a.quiet:
        print("\n".join(x["id"][:12] for x in items))
    else:
        _emit(items, a.format, rows)
    return 0


def network_ls(c: Client, a: argparse.Namespace) -> int:
    return _ls(a, c.networks(), _net_rows)


def network_inspect(c: Client, a: argparse.Namespace) -> int:
    return _inspect(a, c.network, _net_detail)


def network_rm(c: Client, a: argparse.Namespace) -> int:
    return _each(a.names, lambda n: c.remove_network(n)["name"])


def network_prune(c: Client, a: argparse.Namespace) -> int:
    for name in c.call("POST", "/v1/networks/prune", {})["removed"]:
        print(name)
    return 0


def network_connect(c: Client, a: argparse.Namespace) -> int:
    c.connect(a.network, a.sandbox, ip=a.ip, ip6=a.ip6, aliases=a.alias,
              mac_address=a.mac_address, ports=a.publish)
    return 0


def network_disconnect(c: Client, a: argparse.Namespace) -> int:
    c.disconnect(a.network, a.sandbox)
    return 0


# ------------------------------------------------------------------------------ sandboxes
def _sb_rows(sbs: list[dict[str, Any]]) -> str:
    rows = [[s["id"][:12], s["name"],
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
                          mac_address=a.mac_address, labels=_pairs(a.label, "--label"))
    print(sb["id"])
    return 0


def sandbox_ls(c: Client, a: argparse.Namespace) -> int:
    return _ls(a, c.sandboxes(), _sb_rows)


def sandbox_inspect(c: Client, a: argparse.Namespace) -> int:
    return _inspect(a, c.sandbox, _sb_detail)


def sandbox_rm(c: Client, a: argparse.Namespace) -> int:
    return _each(a.names, lambda n: c.remove_sandbox(n, force=a.force)["name"])


def sandbox_exec(c: Client, a: argparse.Namespace) -> int:
    from cnm.kernel.nsexec import exec_in

    argv = list(a.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise InvalidArgument("no command given", hint="cnm sandbox exec NAME -- CMD [ARG...]")
    sb = c.sandbox(a.name)
    c.close()
    files = {"/etc/hosts": sb["hosts_path"], "/etc/resolv.conf": sb["resolv_conf_path"]}
    hostname = sb["hostname"] if sb["kind"] == "netns" else None
    exec_in(sb["netns"], files, hostname, argv)


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
    print(f"rebuilt: {done['networks']} networks, {done['ports']} published ports")
    return 0


def info(c: Client, a: argparse.Namespace) -> int:
    data = c.call("GET", "/v1/info")
    _emit(data, a.format, lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()))
    return 0


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
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cnm", description="Container networks, endpoints and sandboxes.")
    p.add_argument("-H", "--host", default=os.environ.get("CNM_HOST", DEFAULT_HOST),
                   help="daemon socket, unix://PATH (env CNM_HOST)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"cnm {__version__}")
    groups = p.add_subparsers(dest="group", metavar="COMMAND", parser_class=_Parser)
    groups.required = True

    def fmt(sp: argparse.ArgumentParser, default: str) -> None:
        sp.add_argument("--format", choices=("json", "table"), default=default)

    net = groups.add_parser("network", help="manage networks").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=_Parser)
    net.required = True
    sp = net.add_parser("create", help="create a network")
    sp.add_argument("-d", "--driver", default="bridge")
    sp.add_argument("--subnet", action="append", default=[])
    sp.add_argument("--gateway", action="append", default=[])
    sp.add_argument("--ip-range", action="append", default=[])
    sp.add_argument("--aux-address", action="append", default=[], metavar="NAME=IP")
    sp.add_argument("--ipv6", action="store_true")
    sp.add_argument("--internal", action="store_true")
    sp.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("name")
    sp.set_defaults(fn=network_create)
    for name, fn, aliases in (("ls", network_ls, ["list"]),):
        sp = net.add_parser(name, aliases=aliases, help="list networks")
        sp.add_argument("-q", "--quiet", action="store_true")
        fmt(sp, "table")
        sp.set_defaults(fn=fn)
    sp = net.add_parser("inspect", help="show networks in detail")
    sp.add_argument("names", nargs="+", metavar="NETWORK")
    fmt(sp, "json")
    sp.set_defaults(fn=network_inspect)
    sp = net.add_parser("rm", aliases=["remove"], help="remove networks")
    sp.add_argument("names", nargs="+", metavar="NETWORK")
    sp.set_defaults(fn=network_rm)
    sp = net.add_parser("prune", help="remove every unused user-defined network")
    sp.add_argument("-f", "--force", action="store_true", help="accepted for docker parity")
    sp.set_defaults(fn=network_prune)
    sp = net.add_parser("connect", help="connect a sandbox to a network")
    sp.add_argument("--ip")
    sp.add_argument("--ip6")
    sp.add_argument("--alias", action="append", default=[])
    sp.add_argument("--mac-address")
    sp.add_argument("-p", "--publish", action="append", default=[], metavar="SPEC")
    sp.add_argument("network")
    sp.add_argument("sandbox")
    sp.set_defaults(fn=network_connect)
    sp = net.add_parser("disconnect", help="disconnect a sandbox from a network")
    sp.add_argument("network")
    sp.add_argument("sandbox")
    sp.set_defaults(fn=network_disconnect)

    sbx = groups.add_parser("sandbox", help="manage sandboxes").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sbx.required = True
    sp = sbx.add_parser("create", help="create a sandbox (a network namespace)")
    sp.add_argument("--network", default="bridge", help="NET, none or host (default bridge)")
    sp.add_argument("--ip")
    sp.add_argument("--ip6")
    sp.add_argument("--alias", action="append", default=[])
    sp.add_argument("-p", "--publish", action="append", default=[], metavar="SPEC")
    sp.add_argument("--hostname")
    sp.add_argument("--mac-address")
    sp.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("name")
    sp.set_defaults(fn=sandbox_create)
    sp = sbx.add_parser("ls", aliases=["list"], help="list sandboxes")
    sp.add_argument("-q", "--quiet", action="store_true")
    fmt(sp, "table")
    sp.set_defaults(fn=sandbox_ls)
    sp = sbx.add_parser("inspect", help="show sandboxes in detail")
    sp.add_argument("names", nargs="+", metavar="SANDBOX")
    fmt(sp, "json")
    sp.set_defaults(fn=sandbox_inspect)
    sp = sbx.add_parser("rm", aliases=["remove"], help="remove sandboxes")
    sp.add_argument("-f", "--force", action="store_true",
                    help="forget the sandbox even if a kernel step fails")
    sp.add_argument("names", nargs="+", metavar="SANDBOX")
    sp.set_defaults(fn=sandbox_rm)
    sp = sbx.add_parser("exec", help="run a command inside a sandbox")
    sp.add_argument("name")
    sp.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    sp.set_defaults(fn=sandbox_exec)

    prt = groups.add_parser("port", help="published ports of a sandbox").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=_Parser)
    prt.required = True
    sp = prt.add_parser("ls", aliases=["list"], help="list a sandbox's published ports")
    sp.add_argument("sandbox")
    fmt(sp, "table")
    sp.set_defaults(fn=port_ls)
    sp = prt.add_parser("add", help="publish ports of a running sandbox")
    sp.add_argument("--network", help="the network to publish on (default: its first bridge)")
    sp.add_argument("sandbox")
    sp.add_argument("specs", nargs="+", metavar="SPEC",
                    help="[HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTO]")
    sp.set_defaults(fn=port_add)
    sp = prt.add_parser("rm", aliases=["remove"], help="withdraw published host ports")
    sp.add_argument("sandbox")
    sp.add_argument("ports", nargs="+", metavar="HOST_PORT[/PROTO]")
    sp.set_defaults(fn=port_rm)

    fw = groups.add_parser("firewall", help="cnm's nftables table").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=_Parser)
    fw.required = True
    sp = fw.add_parser("reload", help="rebuild the table from the store (after a flush)")
    sp.set_defaults(fn=firewall_reload)

    sp = groups.add_parser("info", help="show daemon information")
    fmt(sp, "table")
    sp.set_defaults(fn=info)
    groups.add_parser("daemon", help="run the daemon (same as cnmd)", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        if "daemon" in args_list:
            i = args_list.index("daemon")
            if all(a.startswith("-") for a in args_list[:i]):
                from cnm.daemon import run

                return run(args_list[i + 1:])
        args = build_parser().parse_args(args_list)
        client = Client(args.host)
        try:
            rc: int = args.fn(client, args)
            return rc
        finally:
            client.close()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CnmError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - the one place a bug becomes a message
        if debug:
            traceback.print_exc()
        print(f"error: internal error: {e} (run with --debug for details)", file=sys.stderr)
        return 1
