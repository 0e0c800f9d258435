"""Run a pytest selection, or any command, inside a qemu VM with Debian's own kernel.

This machine's kernel lacks ipvlan, 802.1q, dummy, netem, ... (REFERENCE.md §1); Debian's
kernel has them as modules. The VM boots that kernel with software emulation and no network
device, sees the host's / read-only (9p) under a tmpfs overlay, runs the job as root and
reports its exit code. Nothing it does reaches the host.

usage: netns-lab/vm/run [--] PYTEST_ARGS...      pytest in the repo's top directory
       netns-lab/vm/run --cmd COMMAND [ARG...]   any command there (bash netns-lab/tour.sh)
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import image
import kernel
from kernel import VmError

TOP = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = "/var/cache/cnm-vm"
EXIT_TIMEOUT = 124
EXIT_ERROR = 125
# Per-test limit inside the VM (tests run 10-16x slower there than here); a --timeout
# given on the command line still wins.
PYTEST_TIMEOUT = 600


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    except VmError as e:
        print(f"cnm-vm: error: {e}", file=sys.stderr)
        if e.hint:
            print(f"cnm-vm: hint: {e.hint}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("cnm-vm: interrupted; the VM was stopped", file=sys.stderr)
        return 130


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.split("\n\n", 2)[2].strip() if __doc__ else "")
        print("\nEnvironment: CNM_VM_CACHE (default /var/cache/cnm-vm), CNM_VM_TIMEOUT "
              "(s, 1200),\nCNM_VM_MEMORY (MiB, 1024), CNM_VM_CPUS (2), CNM_VM_MODULES "
              "(extra modules),\nCNM_VM_KERNEL (package), CNM_VM_DEBUG=1 (keep the console "
              "log).")
        return 0
    if argv[:1] == ["--cmd"]:
        if len(argv) < 2:
            raise VmError("--cmd needs a command")
        command = argv[1:]
    else:
        args = argv[1:] if argv[:1] == ["--"] else argv
        command = [str(TOP / ".venv" / "bin" / "python"), "-m", "pytest",
                   "-p", "no:cacheprovider", "-o", f"timeout={PYTEST_TIMEOUT}", *args]
    if os.geteuid() != 0:
        raise VmError("the VM runner needs root (qemu reads the host's / for the guest)")
    qemu = kernel.tool("qemu-system-x86_64", "qemu-system-x86")
    cache = Path(os.environ.get("CNM_VM_CACHE") or DEFAULT_CACHE)
    cache.mkdir(parents=True, exist_ok=True)

    t0 = time.monotonic()
    with _locked(cache / ".lock"):
        k = kernel.ensure(cache)
        initrd = image.initramfs(cache, k)
        disk = image.python_disk(cache, TOP / ".venv" / "bin" / "python")
    prepared = time.monotonic() - t0

    runs = cache / "runs"
    runs.mkdir(exist_ok=True)
    nonce = os.urandom(8).hex()
    run_dir = runs / nonce
    run_dir.mkdir()
    debug = os.environ.get("CNM_VM_DEBUG") == "1"
    try:
        job = run_dir / "job.sh"
        job.write_text(_job_script(command))
        cmd = [qemu, "-accel", "tcg", "-cpu", "max",
               "-m", os.environ.get("CNM_VM_MEMORY", "1024"),
               "-smp", os.environ.get("CNM_VM_CPUS", str(min(2, os.cpu_count() or 1))),
               "-nodefaults", "-no-reboot", "-display", "none", "-nic", "none",
               "-kernel", str(k.vmlinux), "-initrd", str(initrd),
               "-append", _cmdline(job, nonce, debug),
               "-serial", f"file:{run_dir / 'console.log'}", "-serial", "stdio",
               "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,"
                          "readonly=on,multidevs=remap",
               "-drive", f"file={disk},format=raw,if=virtio,readonly=on"]
        print(f"cnm-vm: booting {k.package} {k.version} under qemu (tcg)"
              f"{f', images ready in {prepared:.1f} s' if prepared > 2 else ''}", flush=True)
        timeout = float(os.environ.get("CNM_VM_TIMEOUT", "1200"))
        # Nothing is printed after the job's own output: with pytest, its summary stays the
        # last line (CI reads it).
        return _boot(cmd, run_dir, nonce, timeout)
    finally:
        if debug:
            print(f"cnm-vm: kept {run_dir} (CNM_VM_DEBUG=1)", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def _job_script(command: list[str]) -> str:
    venv = TOP / ".venv"
    path = f"{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return (f"# written by netns-lab/vm/run; runs in the VM under bash\n"
            f"cd {shlex.quote(str(TOP))} || exit {EXIT_ERROR}\n"
            f"export PATH={shlex.quote(path)} HOME=/root LANG=C.UTF-8 "
            f"PYTHONDONTWRITEBYTECODE=1 CNM_VM=1\n"
            f"exec {shlex.join(command)}\n")


def _cmdline(job: Path, nonce: str, debug: bool) -> str:
    quiet = "loglevel=7" if debug else "quiet loglevel=3"
    return (f"console=ttyS0 {quiet} panic=-1 rdinit=/init mitigations=off "
            f"random.trust_cpu=on 8250.nr_uarts=2 cnm.job={job} cnm.nonce={nonce}")


def _boot(cmd: list[str], run_dir: Path, nonce: str, timeout: float) -> int:
    """Run qemu, pass the job's output through, return the job's exit code."""
    marker = f"CNM-VM-EXIT-{nonce}="
    deadline = time.monotonic() + timeout
    rc: int | None = None
    timed_out = False
    with open(run_dir / "qemu.err", "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, preexec_fn=_die_with_parent)
    assert proc.stdout is not None
    try:
        pending = ""
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], min(left, 5))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk.decode("utf-8", "replace").replace("\r", "")
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.startswith(marker):
                    rc = int(line[len(marker):].strip() or EXIT_ERROR)
                else:
                    sys.stdout.write(line + "\n")
            if pending and not (marker.startswith(pending) or pending.startswith(marker)):
                sys.stdout.write(pending)
                pending = ""
            sys.stdout.flush()
        if not timed_out:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)  # it powers off after the marker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    if timed_out:
        print(f"cnm-vm: the VM ran past CNM_VM_TIMEOUT={timeout:.0f} s; qemu killed",
              file=sys.stderr)
        _tail(run_dir / "console.log")
        print("cnm-vm: hint: CNM_VM_DEBUG=1 keeps the kernel's whole console log",
              file=sys.stderr)
        return EXIT_TIMEOUT
    if rc is None:
        print(f"cnm-vm: the VM stopped without reporting an exit code (qemu exit "
              f"{proc.returncode})", file=sys.stderr)
        _tail(run_dir / "qemu.err")
        _tail(run_dir / "console.log")
        print("cnm-vm: hint: CNM_VM_DEBUG=1 keeps the kernel's whole console log",
              file=sys.stderr)
        return EXIT_ERROR
    return rc


def _tail(path: Path, lines: int = 30) -> None:
    if path.exists() and path.stat().st_size:
        text = path.read_text(errors="replace").replace("\r", "").splitlines()[-lines:]
        print(f"cnm-vm: last lines of {path.name}:", file=sys.stderr)
        for line in text:
            print(f"  {line}", file=sys.stderr)


def _die_with_parent() -> None:
    """qemu gets SIGKILL if the runner dies, even by SIGKILL (prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    os.setpgrp()  # a ^C at the terminal reaches the runner, which stops qemu itself


class _locked:
    """An exclusive flock on the cache while images are fetched or built."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __enter__(self) -> None:
        self._f = open(self._path, "w")  # noqa: SIM115
        fcntl.flock(self._f, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        self._f.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
