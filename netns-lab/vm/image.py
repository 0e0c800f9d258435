"""The two images the VM boots with, built once and cached.

- the initramfs (per kernel and module list): busybox-static, the kernel modules the tests
  need with their dependencies, and ``/init`` (init.sh);
- the Python disk (per interpreter and venv content): an ext4 image holding copies of the
  interpreter's standard library and the project's venv, which /init bind-mounts over the
  same paths of the host's root. Imports read over 9p are slow (pyroute2 takes ~11 s), from a
  virtio disk ~3 s. The project's own source stays on the live 9p share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from kernel import Kernel, VmError, run, tool

HERE = Path(__file__).resolve().parent
# Part of every cache key: a change to how images are built rebuilds them.
BUILDER = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]

# Loaded by /init in this order (after their dependencies). The first group mounts the
# disks; the rest is what the vm-marked tests need. CNM_VM_MODULES adds more.
BOOT_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "overlay",
                "9pnet_virtio", "9p"]
NET_MODULES = ["veth", "bridge", "br_netfilter", "macvlan", "ipvlan", "8021q", "dummy",
               "vxlan", "sch_netem", "nf_tables", "nf_conntrack", "nf_nat", "nft_ct", "nft_nat",
               "nft_masq", "nft_redir", "nft_chain_nat", "nft_fib_inet", "nft_reject_inet",
               # ESP between VTEPs (encrypted overlay): XFRM netlink, ESP, and the crypto
               # of rfc4106(gcm(aes)) (aes itself is built in; generic code: any CPU; drbg is
               # the stdrng seqiv asks for).
               "xfrm_user", "esp4", "esp6", "gcm", "ghash_generic", "ctr", "seqiv",
               "echainiv", "drbg"]
# Also in the initramfs, for the kernel to load on demand through /sbin/modprobe (nft
# expressions, conntrack helpers, ...): every module of these directories.
# Parameters for insmod (the kernel command line only reaches modules through modprobe).
# dummy would otherwise make a dummy0 in the VM's own namespace, which the host has not.
MODULE_PARAMS = {"dummy": "numdummies=0"}
AUTOLOAD_DIRS = ["kernel/net/netfilter", "kernel/net/ipv4/netfilter",
                 "kernel/net/ipv6/netfilter", "kernel/net/bridge/netfilter"]
AUTOLOAD_SKIP = ("xt_", "ipt_", "ip6t_", "ebt_", "arpt_", "ip_vs", "ip_set", "x_tables",
                 "ip_tables", "ip6_tables", "arp_tables", "ebtable", "iptable_", "ip6table_",
                 "arptable_")


def module_names() -> list[str]:
    extra = [m for m in os.environ.get("CNM_VM_MODULES", "").replace(",", " ").split() if m]
    return BOOT_MODULES + NET_MODULES + extra


# --- modules ---------------------------------------------------------------------------

class Modules:
    """The modules.dep / modules.alias / modules.softdep view of one kernel."""

    def __init__(self, kernel: Kernel) -> None:
        base = kernel.modules
        self.deps: dict[str, list[str]] = {}
        for line in (base / "modules.dep").read_text().splitlines():
            path, _, deps = line.partition(":")
            self.deps[path] = deps.split()
        self.by_name = {_name(p): p for p in self.deps}
        self.aliases: dict[str, list[str]] = {}
        for line in (base / "modules.alias").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias":
                self.aliases.setdefault(parts[1], []).append(parts[2])
        self.softdeps: dict[str, list[str]] = {}
        for line in (base / "modules.softdep").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[0] == "softdep":
                pre = parts[parts.index("pre:") + 1:] if "pre:" in parts else []
                pre = pre[:pre.index("post:")] if "post:" in pre else pre
                self.softdeps[_name(parts[1])] = pre

    def path(self, name: str) -> str | None:
        """modules.dep path of a module name or an exact alias; None if not a module."""
        name = _name(name)
        if name in self.by_name:
            return self.by_name[name]
        # An alias may name several modules (crc32c: crc32c_intel, crc32c_generic): prefer
        # the generic one, which loads on any CPU qemu emulates.
        targets = sorted(self.aliases.get(name, []), key=lambda t: not t.endswith("_generic"))
        for target in targets:
            if _name(target) in self.by_name:
                return self.by_name[_name(target)]
        return None

    def load_order(self, names: list[str], builtin: set[str]) -> list[str]:
        """Paths to insmod, dependencies (hard and soft ``pre:``) first, each once."""
        order: list[str] = []

        def visit(path: str) -> None:
            if path in order:
                return
            for soft in self.softdeps.get(_name(path), []):
                p = self.path(soft)
                if p is not None:
                    visit(p)
            # modules.dep lists the full closure, the deepest dependency last.
            for dep in reversed(self.deps[path]):
                visit(dep)
            order.append(path)

        for name in names:
            p = self.path(name)
            if p is None:
                if _name(name) in builtin:
                    continue
                raise VmError(f"kernel module {name!r} is neither a module nor built into "
                              "the VM's kernel")
            visit(p)
        return order


def _name(path: str) -> str:
    return Path(path).name.removesuffix(".ko").replace("-", "_")


def _builtin(kernel: Kernel) -> set[str]:
    text = (kernel.modules / "modules.builtin").read_text()
    return {_name(line) for line in text.split()}


# --- initramfs -------------------------------------------------------------------------

def initramfs(cache: Path, kernel: Kernel) -> Path:
    names = module_names()
    busybox = static_busybox()
    init = (HERE / "init.sh").read_bytes()
    key = _hash([BUILDER, kernel.release, names, MODULE_PARAMS, init.decode(),
                 _tree_stamp([Path(busybox)])])
    target = cache / "initramfs" / f"{kernel.release}-{key}.cpio"
    if target.exists():
        return target
    mods = Modules(kernel)
    eager = mods.load_order(names, _builtin(kernel))
    on_demand = [p for d in AUTOLOAD_DIRS if (kernel.modules / d).is_dir()
                 for p in sorted(str(x.relative_to(kernel.modules))
                                 for x in (kernel.modules / d).glob("*.ko"))
                 if not _name(p).startswith(AUTOLOAD_SKIP)]
    included = mods.load_order(eager + on_demand, set())
    kept = set(included)

    archive = Cpio()
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "etc", "tmp",
              "mnt/host", "mnt/py", "mnt/rw", "newroot", f"lib/modules/{kernel.release}"]:
        archive.mkdir(d)
    archive.file("init", init, 0o755)
    archive.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    for p in included:
        parent = str(Path(f"lib/modules/{kernel.release}/{p}").parent)
        archive.mkdir(parent)
        archive.file(f"lib/modules/{kernel.release}/{p}", (kernel.modules / p).read_bytes())
    dep = "".join(f"{p}: {' '.join(mods.deps[p])}\n" for p in included)
    alias = "".join(f"alias {a} {t}\n" for a, targets in mods.aliases.items()
                    for t in targets if mods.by_name.get(_name(t)) in kept)
    archive.file(f"lib/modules/{kernel.release}/modules.dep", dep.encode())
    archive.file(f"lib/modules/{kernel.release}/modules.alias", alias.encode())
    for name in ("modules.builtin", "modules.order"):
        archive.file(f"lib/modules/{kernel.release}/{name}",
                     (kernel.modules / name).read_bytes())
    archive.file("etc/cnm-vm-modules", "".join(
        f"{p} {MODULE_PARAMS.get(_name(p), '')}".strip() + "\n" for p in eager).encode())
    archive.file("etc/cnm-vm-release", f"{kernel.release}\n".encode())
    _write_atomic(target, archive.finish())
    for old in target.parent.glob("*.cpio"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


def static_busybox() -> str:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path) and _is_static(path):
            return path
    raise VmError("no statically linked busybox found",
                  "apt-get install busybox-static (scripts/packages.sh install vm does)")


def _is_static(path: str) -> bool:
    """An ELF64 executable without a PT_INTERP program header."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i:i + 4], "little") != 3
               for i in range(0, len(table), phentsize))


class Cpio:
    """A newc cpio archive (what the kernel unpacks as initramfs), built in memory."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._dirs: set[str] = set()
        self._ino = 1

    def mkdir(self, path: str) -> None:
        parts = Path(path).parts
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755, b"")

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(path, stat.S_IFREG | mode, data)

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._parts += [header, encoded, _pad(len(header) + len(encoded)), data,
                        _pad(len(data))]

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return b"".join(self._parts)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


# --- the Python disk ---------------------------------------------------------------------

# Parts of the standard library no test imports; leaving them out keeps the image small.
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo",
               "ensurepip", "lib2to3"}


def python_disk(cache: Path, python: Path) -> Path:
    """An ext4 image with the stdlib and venv of ``python``, and a MOUNTS file saying where
    each tree goes (``NAME PATH`` lines, read by /init)."""
    info = _python_info(python)
    trees = {"stdlib": Path(info["stdlib"]), "venv": Path(info["prefix"])}
    if info["libpython"]:
        trees["libpython"] = Path(info["libpython"])
    if trees["venv"] == Path(info["base_prefix"]):
        raise VmError(f"{python} is not in a venv", "run scripts/install.sh to make .venv")
    owner = _hash([str(python)])
    key = _hash([BUILDER, info, _tree_stamp(list(trees.values()))])
    target = cache / "python" / f"py-{owner}-{key}.ext4"
    if target.exists():
        return target
    print(f"cnm-vm: building the Python disk for {info['prefix']} (once per venv change)",
          flush=True)
    mke2fs = tool("mke2fs", "e2fsprogs")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        stage = Path(tmp) / "root"
        stage.mkdir()
        for name, src in trees.items():
            if src.is_dir():
                shutil.copytree(src, stage / name, symlinks=True, ignore=_ignore(src))
                _compile(python, stage / name, src)
            else:
                shutil.copy2(src, stage / name)
        (stage / "MOUNTS").write_text("".join(f"{n} {p}\n" for n, p in trees.items()))
        size_mb = _du(stage) * 5 // 4 // 2**20 + 64
        image = Path(tmp) / "py.ext4"
        run(mke2fs, "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0", "-i", "4096",
            "-L", "cnm-py", "-d", str(stage), str(image), f"{size_mb}M",
            what="mke2fs for the Python disk")
        image.rename(target)
    for old in target.parent.glob(f"py-{owner}-*.ext4"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


def _python_info(python: Path) -> dict[str, str]:
    if not os.access(python, os.X_OK):
        raise VmError(f"no Python at {python}", "run scripts/install.sh to make .venv")
    code = ("import json, sys, sysconfig, os\n"
            "lib = ''\n"
            "if sysconfig.get_config_var('Py_ENABLE_SHARED'):\n"
            "    lib = os.path.join(sysconfig.get_config_var('LIBDIR'),\n"
            "                       sysconfig.get_config_var('INSTSONAME'))\n"
            "print(json.dumps({'version': sys.version, 'prefix': sys.prefix,\n"
            "    'base_prefix': sys.base_prefix, 'stdlib': sysconfig.get_paths()['stdlib'],\n"
            "    'libpython': lib if os.path.isfile(lib) else ''}))\n")
    info: dict[str, str] = json.loads(run(str(python), "-c", code, what=f"{python} -c"))
    return info


def _ignore(root: Path) -> Callable[[str, list[str]], set[str]]:
    """shutil.copytree's ignore: the unused parts of the stdlib, optimised byte code."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n.endswith((".opt-1.pyc", ".opt-2.pyc"))}
        if Path(directory) == root and root.name.startswith("python"):
            skip |= {n for n in names if n in STDLIB_SKIP or n.startswith("config-")}
        return skip
    return ignore


def _compile(python: Path, stage: Path, real: Path) -> None:
    """Byte-compile what has no .pyc yet, recording the real path (for tracebacks)."""
    subprocess.run([str(python), "-m", "compileall", "-q", "-j", "0", "-s", str(stage),
                    "-p", str(real), str(stage)], capture_output=True, timeout=600)


# --- helpers -------------------------------------------------------------------------------

def _tree_stamp(paths: list[Path]) -> str:
    """A digest of names, sizes and mtimes of what would be copied from ``paths`` (not
    contents: fast). Byte code is left out: the host rewrites it as it pleases."""
    h = hashlib.sha256()
    for top in paths:
        if top.is_file():
            st = top.stat()
            h.update(f"{top} {st.st_size} {st.st_mtime_ns}\n".encode())
            continue
        skip = _ignore(top)
        for directory, dirs, files in os.walk(top):
            dirs[:] = sorted(set(dirs) - skip(directory, dirs) - {"__pycache__"})
            for f in sorted(set(files) - skip(directory, files)):
                try:
                    st = os.lstat(os.path.join(directory, f))
                except FileNotFoundError:
                    continue
                h.update(f"{directory}/{f} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _du(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(directory, f)).st_blocks * 512
    return total


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.rename(target)
