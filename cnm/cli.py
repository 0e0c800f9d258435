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
from cnm.tls import TlsFiles


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
    if a.dry_run:
        for name in a.names:
            _plan(c.remove_network(name, dry_run=True))
        return 0
    return _each(a.names, lambda n: c.remove_network(n)["name"])


def network_prune(c: Client, a: argparse.Namespace) -> int:
    for name in c.call("POST", "/v1/networks/prune")["removed"]:
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
def _ep_rows(eps: list[dict[str, Any]]) -> str:
    rows = [[e["id"][:12], e["name"], e["network"], e["sandbox"] or "(reserved)",
             e["ifname"], ",".join(a for a in (e["ipv4"], e["ipv6"]) if a)] for e in eps]
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
    return _ls(a, c.endpoints(), _ep_rows)


def endpoint_inspect(c: Client, a: argparse.Namespace) -> int:
    return _inspect(a, c.endpoint, _ep_detail)


def endpoint_rm(c: Client, a: argparse.Namespace) -> int:
    return _each(a.names, lambda n: c.delete_endpoint(n)["name"])


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
                          mac_address=a.mac_address, labels=_pairs(a.label, "--label"),
                          netns=a.netns, ifname=a.ifname)
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
                   help="daemon address, unix://PATH or tcp://HOST:PORT with --tlsverify "
                        "(env CNM_HOST)")
    p.add_argument("--tlsverify", action="store_true",
                   default=bool(os.environ.get("CNM_TLS_VERIFY")),
                   help="talk mutual TLS to a daemon whose certificate the CA signed for "
                        "HOST (env CNM_TLS_VERIFY)")
    for flag, name in (("--tlscacert", "ca.pem"), ("--tlscert", "cert.pem"),
                       ("--tlskey", "key.pem")):
        p.add_argument(flag, metavar="FILE",
                       help=f"default: $CNM_CERT_PATH/{name} (CNM_CERT_PATH: ~/.cnm)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"cnm {__version__}")
    groups = p.add_subparsers(dest="group", metavar="COMMAND", parser_class=_Parser)
    groups.required = True

    def fmt(sp: argparse.ArgumentParser, default: str) -> None:
        sp.add_argument("--format", choices=("json", "table"), default=default)

    def dry(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--dry-run", action="store_true",
                        help="print the plan (links, addresses, routes, firewall elements, "
                             "DNS names) and change nothing")

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
    dry(sp)
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
    dry(sp)
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
    sp.add_argument("--ifname", help="interface name in the sandbox (default eth0, eth1, ...)")
    dry(sp)
    sp.add_argument("network")
    sp.add_argument("sandbox")
    sp.set_defaults(fn=network_connect)
    sp = net.add_parser("disconnect", help="disconnect a sandbox from a network")
    dry(sp)
    sp.add_argument("network")
    sp.add_argument("sandbox")
    sp.set_defaults(fn=network_disconnect)

    epx = groups.add_parser("endpoint", help="manage endpoints").add_subparsers(
        dest="cmd", metavar="COMMAND", parser_class=_Parser)
    epx.required = True
    sp = epx.add_parser("create", help="reserve an endpoint on a network (joined later)")
    sp.add_argument("--ip")
    sp.add_argument("--ip6")
    sp.add_argument("--mac-address")
    sp.add_argument("--alias", action="append", default=[])
    sp.add_argument("-p", "--publish", action="append", default=[], metavar="SPEC")
    sp.add_argument("network")
    sp.add_argument("name")
    sp.set_defaults(fn=endpoint_create)
    sp = epx.add_parser("join", help="join an endpoint to a sandbox")
    dry(sp)
    sp.add_argument("--ifname", help="interface name in the sandbox (default eth0, eth1, ...)")
    sp.add_argument("endpoint")
    sp.add_argument("sandbox")
    sp.set_defaults(fn=endpoint_join)
    sp = epx.add_parser("leave", help="take an endpoint out of its sandbox (it stays reserved)")
    dry(sp)
    sp.add_argument("endpoint")
    sp.set_defaults(fn=endpoint_leave)
    sp = epx.add_parser("ls", aliases=["list"], help="list endpoints")
    sp.add_argument("-q", "--quiet", action="store_true")
    fmt(sp, "table")
    sp.set_defaults(fn=endpoint_ls)
    sp = epx.add_parser("inspect", help="show endpoints in detail")
    sp.add_argument("names", nargs="+", metavar="ENDPOINT")
    fmt(sp, "json")
    sp.set_defaults(fn=endpoint_inspect)
    sp = epx.add_parser("rm", aliases=["remove"], help="delete endpoints that are not joined")
    sp.add_argument("names", nargs="+", metavar="ENDPOINT")
    sp.set_defaults(fn=endpoint_rm)

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
    sp.add_argument("--netns", metavar="PATH",
                    help="adopt this network namespace (a container's: /proc/PID/ns/net or a "
                         "bind mount) instead of making one; cnm never deletes it")
    sp.add_argument("--ifname", help="interface name in the sandbox (default eth0)")
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
    base = TlsFiles.from_dir(os.environ.get("CNM_CERT_PATH")
                             or os.path.expanduser("~/.cnm"))
    return TlsFiles(args.tlscacert or base.ca, args.tlscert or base.cert,
                    args.tlskey or base.key)


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
        files = tls_files(args)
        client = Client(args.host) if files is None else Client(args.host, tls=files)
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
