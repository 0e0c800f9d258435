"""Debian's own kernel for the VM: fetched with apt-get download, unpacked, cached by version.

The cache holds one directory per kernel package and version (``kernel/NAME_VERSION``) with
the unpacked package (its modules, depmod run over them) and the uncompressed ``vmlinux``,
which boots faster under qemu than the compressed bzImage. A directory is complete when its
``.ready`` file exists; it is built in a temp directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

META_PACKAGE = "linux-image-amd64"


class VmError(Exception):
    """A failure the runner reports as one line (and a hint), without a traceback."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Kernel:
    package: str      # linux-image-6.1.0-56-amd64
    version: str      # 6.1.192-2
    release: str      # 6.1.0-56-amd64 (uname -r, the modules directory)
    root: Path        # the unpacked package

    @property
    def vmlinux(self) -> Path:
        return self.root / "vmlinux"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def tool(name: str, package: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise VmError(f"{name} not found", f"apt-get install {package} (bash scripts/packages.sh "
                      "install vm installs it)")
    return path


def run(*cmd: str, what: str, hint: str = "", cwd: Path | None = None,
        timeout: float = 600) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise VmError(f"{what}: timed out after {timeout:.0f} s", hint) from e
    if r.returncode != 0:
        detail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-3:]
        raise VmError(f"{what}: {' / '.join(detail) or f'exit {r.returncode}'}", hint)
    return r.stdout


APT_LISTS = Path("/var/lib/apt/lists")


def candidate(cache: Path) -> tuple[str, str] | None:
    """The kernel package apt would install now and its version, from apt's local lists.

    ``CNM_VM_KERNEL`` names the package instead of what linux-image-amd64 depends on.
    None when apt knows no candidate (no lists yet, or not Debian). The answer is kept in
    the cache until apt's lists change (asking apt-cache takes over a second).
    """
    if shutil.which("apt-cache") is None:
        return None
    memo = cache / "kernel" / ".candidate"
    asked = [os.environ.get("CNM_VM_KERNEL", ""),
             APT_LISTS.stat().st_mtime_ns if APT_LISTS.exists() else 0]
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(memo.read_text())
        if saved["asked"] == asked:
            return saved["package"], saved["version"]
    found = _ask_apt()
    if found is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"asked": asked, "package": found[0],
                                    "version": found[1]}))
    return found


def _ask_apt() -> tuple[str, str] | None:
    package = os.environ.get("CNM_VM_KERNEL", "")
    if not package:
        r = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True,
                           text=True)
        m = re.search(r"Depends: (linux-image-\S+)", r.stdout)
        if m is None:
            return None
        package = m.group(1)
    r = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    m = re.search(r"Candidate: (\S+)", r.stdout)
    if m is None or m.group(1) == "(none)":
        return None
    return package, m.group(1)


def cached(cache: Path) -> list[Kernel]:
    """Complete kernels in the cache, newest first."""
    found = []
    for ready in (cache / "kernel").glob("*/.ready"):
        package, _, version = ready.parent.name.partition("_")
        found.append(Kernel(package, version, ready.read_text().strip(), ready.parent))
    return sorted(found, key=lambda k: k.root.stat().st_mtime, reverse=True)


def ensure(cache: Path) -> Kernel:
    """The kernel to boot: apt's candidate, fetched into the cache unless it is there.

    Offline, or when apt cannot fetch it, the newest kernel already in the cache is used.
    """
    want = candidate(cache)
    have = cached(cache)
    if want is not None:
        for k in have:
            if (k.package, k.version) == want:
                return k
        try:
            return fetch(cache, *want)
        except VmError as e:
            if not have:
                raise
            print(f"cnm-vm: warning: {e}; booting the cached {have[0].package} "
                  f"{have[0].version}", file=sys.stderr)
            return have[0]
    if have:
        return have[0]
    wanted = os.environ.get("CNM_VM_KERNEL") or META_PACKAGE
    raise VmError(f"apt has no candidate for {wanted} and no kernel is cached in {cache}",
                  "run apt-get update, or set CNM_VM_KERNEL to a linux-image-*-amd64 package")


def fetch(cache: Path, package: str, version: str) -> Kernel:
    target = cache / "kernel" / f"{package}_{version}"
    print(f"cnm-vm: fetching {package} {version} into {target.parent} (once)", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tool("dpkg-deb", "dpkg")
    depmod = tool("depmod", "kmod")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        run("apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
            f"{package}={version}", cwd=work, what=f"apt-get download {package}={version}",
            hint="run apt-get update (the package may have left the mirror)")
        deb = next(work.glob("*.deb"))
        root = work / "root"
        run("dpkg-deb", "-x", str(deb), str(root), what=f"dpkg-deb -x {deb.name}")
        deb.unlink()
        releases = [p.name for p in (root / "lib" / "modules").iterdir()]
        if len(releases) != 1:
            raise VmError(f"{package}: expected one modules directory, found {releases}")
        release = releases[0]
        run(depmod, "-b", str(root), release, what=f"depmod for {release}")
        vmlinuz = root / "boot" / f"vmlinuz-{release}"
        (root / "vmlinux").write_bytes(decompress_vmlinuz(vmlinuz.read_bytes()))
        (root / ".ready").write_text(release + "\n")
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)
    for k in cached(cache):
        if k.root != target:
            shutil.rmtree(k.root, ignore_errors=True)
    return Kernel(package, version, release, target)


# Compressed payloads a bzImage may carry, as extract-vmlinux looks for them. Each
# decompressor stops at the end of its stream and ignores what follows.
_MAGIC: list[tuple[bytes, Callable[[bytes], bytes]]] = [
    (b"\xfd7zXZ\x00", lambda data: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data)),
    (b"\x1f\x8b\x08", lambda data: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)),
    (b"\x5d\x00\x00", lambda data: lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data)),
]


def decompress_vmlinuz(image: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage (the logic of the kernel's scripts/extract-vmlinux)."""
    for magic, unpack in _MAGIC:
        start = image.find(magic)
        while start != -1:
            try:
                out = unpack(image[start:])
            except (lzma.LZMAError, zlib.error, EOFError):
                out = b""
            if out.startswith(b"\x7fELF"):
                return out
            start = image.find(magic, start + 1)
    raise VmError("no ELF vmlinux found inside the kernel image (xz, gzip and lzma tried)")
