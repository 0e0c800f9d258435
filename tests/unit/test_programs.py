"""The install steps name every program the tests call (tests/programs.py, scripts/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.programs import MANIFEST, Recorder, manifest_programs, programs_of

TOP = Path(__file__).resolve().parents[2]
PACKAGES = TOP / "scripts" / "packages.sh"


@pytest.mark.parametrize(("argv", "expected"), [
    (["ip", "-n", "x", "link"], ["ip"]),
    (["nsenter", "--net=/run/netns/a", "dig", "+short", "a"], ["nsenter", "dig"]),
    (["ip", "netns", "exec", "h", "python3", "-c", "pass"], ["ip", "python3"]),
    (["unshare", "-rn", "/usr/sbin/nft", "-c", "-f", "-"], ["unshare", "nft"]),
    (["prlimit", "--nofile=64:4096", "--", "nsenter", "--net=/x", "ping", "-c1", "a"],
     ["prlimit", "nsenter", "ping"]),
    (["taskset", "-c", "1", "nsenter", "--net=/x", "dnsperf"], ["taskset", "nsenter", "dnsperf"]),
    (["chrt", "-a", "-f", "-p", "50", "123"], ["chrt"]),
    (["chrt", "-f", "50", "dnsperf", "-s", "x"], ["chrt", "dnsperf"]),
    (["timeout", "-s", "KILL", "5", "dig", "a"], ["timeout", "dig"]),
    ([sys.executable, "-m", "cnm", "sandbox", "exec", "a", "--", "dig", "+short", "b"], ["dig"]),
    ([sys.executable, "-m", "cnm", "network", "ls"], []),
    # A file the test wrote itself is no package's program.
    ([sys.executable, "-m", "cnm", "sandbox", "exec", "a", "--", "/tmp/t/run.sh"], []),
])
def test_the_wrappers_are_looked_through(argv: list[str], expected: list[str]) -> None:
    assert programs_of(argv) == expected


def test_a_program_no_step_names_is_reported() -> None:
    rec = Recorder()
    rec.note(["nsenter", "--net=/x", "dig", "a"], shell=False)
    rec.note(["nsenter", "--net=/x", "warpdrive", "--engage"], shell=False)
    rec.note("sleep 1", shell=True)
    rec.note(["nsenter", "--net=/x", "no-such-command-here"], shell=False)  # on purpose
    assert list(rec.unlisted()) == ["warpdrive"]


def test_the_manifest_names_dig_in_the_test_step() -> None:
    # The regression that started this: dig was on the CI machine by hand only.
    assert manifest_programs()["dig"] == "bind9-dnsutils"
    steps = {line.split()[0] for line in MANIFEST.read_text().splitlines()
             if line.strip() and not line.startswith("#") and "bind9-dnsutils" in line}
    assert "test" in steps


def test_check_names_the_package_of_a_missing_program(tmp_path: Path) -> None:
    manifest = tmp_path / "packages.txt"
    manifest.write_text("# step package programs\n"
                        "cnm  coreutils       sleep\n"
                        "test cnm-warp-tools  cnm-no-such-program /no/such/path lib:libnope.so.9\n")
    r = subprocess.run(["bash", str(PACKAGES), "check", "cnm", "test"], capture_output=True,
                       text=True, env={"CNM_PACKAGES": str(manifest), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1
    missing = [line for line in r.stderr.splitlines() if line.startswith("missing:")]
    assert missing == [
        f"missing: {p} (Debian package cnm-warp-tools; bash scripts/test.sh installs it)"
        for p in ("cnm-no-such-program", "/no/such/path", "libnope.so.9")]
    ok = subprocess.run(["bash", str(PACKAGES), "check", "cnm"], capture_output=True, text=True,
                        env={"CNM_PACKAGES": str(manifest), "PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0, ok.stderr


def test_an_unknown_step_is_refused(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(PACKAGES), "install", "nope"], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert "unknown step: nope" in r.stderr


def test_the_user_install_gets_no_test_or_bench_peers() -> None:
    r = subprocess.run(["bash", str(PACKAGES), "list", "cnm"], capture_output=True, text=True,
                       check=True)
    user = set(r.stdout.split())
    assert {"iproute2", "nftables", "libnftables1"} <= user
    assert not user & {"docker.io", "qemu-system-x86", "bind9-dnsutils", "podman"}


def test_the_repositorys_own_scripts_need_no_package() -> None:
    rec = Recorder()
    rec.note([str(Path(__file__).resolve().parents[2] / "netns-lab" / "vm" / "probe")], False)
    rec.note(["/sbin/ldconfig", "-p"], shell=False)
    assert rec.unlisted() == {}
