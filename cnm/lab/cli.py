"""`cnm lab …`: labs from YAML files (netns-lab/labs/FORMAT.md). Not a client of one
cnmd's API: it makes the namespaces and starts a cnmd per host itself.

Exit codes: 0 ok (check/run: every check passed), 1 a check failed or an error, 2 a bad
lab file or argument, 130 interrupted."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _say(text: str) -> None:
    print(text, flush=True)


def _load(path: str):  # type: ignore[no-untyped-def]
    from cnm.lab import schema

    return schema.load(path)


def cmd_up(a: argparse.Namespace) -> int:
    from cnm.lab import runner

    runner.up(_load(a.file), _say)
    return 0


def cmd_down(a: argparse.Namespace) -> int:
    from cnm.lab import runner

    lab = _load(a.file)
    t0 = time.monotonic()
    found = runner.down(lab.name, lab)
    _say(f"lab {lab.name}: " + (f"down in {time.monotonic() - t0:.2f} s" if found
                                 else "was not up"))
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from cnm.lab import checks

    results = checks.run(_load(a.file))
    print(checks.table(results))
    return 0 if all(r.passed for r in results) else 1


def cmd_run(a: argparse.Namespace) -> int:
    from cnm.lab import checks, runner

    lab = _load(a.file)  # a malformed file is refused here, before a VM boots
    if a.vm:
        from cnm.lab import vm

        return vm.run("run", a.file)
    runner.up(lab, _say)
    try:
        results = checks.run(lab)
        print(checks.table(results), flush=True)
    finally:
        t0 = time.monotonic()
        runner.down(lab.name, lab)
        _say(f"lab {lab.name}: down in {time.monotonic() - t0:.2f} s")
    return 0 if all(r.passed for r in results) else 1


def cmd_ls(a: argparse.Namespace) -> int:
    from cnm.lab import runner

    states = runner.labs_up()
    print(f"{'NAME':<20}  {'STATE':<8}  FILE")
    for s in states:
        print(f"{s.name:<20}  {'up' if s.up else 'partial':<8}  {s.file}")
    return 0


def cmd_graph(a: argparse.Namespace) -> int:
    from cnm.lab import graph

    lab = _load(a.file)
    if a.output in (None, "-"):
        sys.stdout.write(graph.dot(lab))
    else:
        graph.render(lab, a.output)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnm lab", description="network labs from YAML files "
                                "(netns-lab/labs/); up, check, down and run need root")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, fn, text in (("up", cmd_up, "bring a lab up (Ctrl-C tears down what it made)"),
                           ("check", cmd_check, "run a lab's checks: a table, exit 0 if all "
                                                "pass"),
                           ("down", cmd_down, "remove everything of a lab (idempotent)"),
                           ("run", cmd_run, "up, check, down (down even on failure)")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("file", metavar="FILE", help="the lab's YAML file")
        if name == "run":
            sp.add_argument("--vm", action="store_true",
                            help="run it in the qemu VM of netns-lab/vm/run (Debian's "
                                 "kernel: ipvlan, 802.1q, netem)")
        sp.set_defaults(fn=fn)
    sp = sub.add_parser("ls", help="the labs that are up")
    sp.set_defaults(fn=cmd_ls)
    sp = sub.add_parser("graph", help="draw a lab (graphviz): -o lab.svg|png|dot, or DOT "
                                      "on stdout")
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("-o", "--output", metavar="FILE", help="lab.svg, lab.png or lab.dot")
    sp.set_defaults(fn=cmd_graph)
    return p


def main(argv: Sequence[str]) -> int:
    """``cnm lab ARGS``; called from ``cnm.cli.main``, which turns a CnmError into its message
    and exit code (the one place that does, as for every other command)."""
    argv = [x for x in argv if x != "--debug"]  # cnm.cli.main has read it
    try:
        a = parser().parse_args(argv)
        rc: int = a.fn(a)
        return rc
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
