"""What the benchmark scripts share: cleanup that always runs, commands, small statistics."""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip()[-800:]}")
    return r


def progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class Janitor:
    """Undo steps, last in first out, run once: at the end, on an error, on Ctrl-C or
    SIGTERM, and as a last resort at interpreter exit."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []
        atexit.register(self.clean)

    def push(self, what: str, fn: Callable[[], None]) -> None:
        self._steps.append((what, fn))

    def mark(self) -> int:
        return len(self._steps)

    def clean(self, mark: int = 0) -> None:
        """Run the steps pushed since ``mark`` (all of them by default)."""
        while len(self._steps) > mark:
            what, fn = self._steps.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - every step gets its turn
                print(f"cleanup: {what} failed: {e}", file=sys.stderr)


MANIFEST = Path(__file__).resolve().parent.parent / "scripts" / "packages.txt"


def missing_peers(*programs: str) -> list[str]:
    """What is missing of ``programs`` (names or paths, as scripts/packages.txt lists them),
    each with the Debian package that provides it."""
    package: dict[str, str] = {}
    for line in MANIFEST.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        for program in fields[2:]:
            package.setdefault(program, fields[1])
    gone = []
    for program in programs:
        path = program if program.startswith("/") else shutil.which(
            program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if path is None or not os.access(path, os.X_OK):
            gone.append(f"{program} (Debian package {package.get(program, '?')})")
    return gone


def need_peers(script: str, *programs: str) -> bool:
    """False, after saying what is missing and the command that installs it, when a peer
    of ``script`` is not installed."""
    gone = missing_peers(*programs)
    if gone:
        print(f"{script} needs {', '.join(gone)}: run `bash bench/install.sh`", file=sys.stderr)
    return not gone


def throwaway_daemon(janitor: Janitor, tag: str) -> Any:
    """A cnmd (not started) on a new throwaway host namespace ``cnmbench-TAG-*`` with lo up,
    its state, run dir and socket in a temp dir: the janitor stops it, unbinds its
    sandboxes' namespaces, deletes the host namespace and the temp dir."""
    import secrets
    import tempfile

    from cnm.testing.netns import Daemon, HostNs, unbind_all

    ns = f"cnmbench-{tag}-{secrets.token_hex(3)}"
    run("ip", "netns", "add", ns)
    janitor.push("delete the host namespace", lambda: run("ip", "netns", "del", ns, check=False))
    run("ip", "-n", ns, "link", "set", "lo", "up")
    root = Path(tempfile.mkdtemp(prefix=f"cnmbench-{tag}-"))
    janitor.push("remove the temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    d = Daemon(HostNs(ns, f"/run/netns/{ns}"), root / "state", root / "run",
               str(root / "cnm.sock"), root / "cnmd.log")

    def stop() -> None:
        d.stop()
        unbind_all(d.run_dir)

    janitor.push("stop cnmd", stop)
    return d
