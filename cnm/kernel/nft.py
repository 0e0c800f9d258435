"""nftables through libnftables, in-process (ctypes), in the managed host namespace.

libnftables talks netlink from the thread that calls it, so every call runs on the host
namespace's resident thread. One call is one transaction: all of it applies, or none.
An in-process call costs ~0.06 ms against ~2.6 ms for an `nft` subprocess.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from typing import Any

from cnm.errors import CnmError, KernelError, NotFound, PermissionDenied, Unsupported
from cnm.kernel.netns import NsThread

_lib: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise Unsupported("libnftables is not installed",
                              hint="apt-get install libnftables1") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
    return _lib


NFT_CTX_OUTPUT_HANDLE = 1 << 2
NFT_CTX_OUTPUT_JSON = 1 << 4


class _Ctx:
    """One libnftables context; lives and is used on one thread only."""

    def __init__(self, flags: int = 0) -> None:
        self.lib = _library()
        self.ctx = self.lib.nft_ctx_new(0)
        self.lib.nft_ctx_buffer_output(self.ctx)
        self.lib.nft_ctx_buffer_error(self.ctx)
        if flags:
            self.lib.nft_ctx_output_set_flags(self.ctx, flags)

    def close(self) -> None:
        self.lib.nft_ctx_free(self.ctx)

    def run(self, text: str) -> str:
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, text.encode())
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode()
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode()
        if rc != 0:
            raise _translate(err, text)
        return out


def _translate(err: str, text: str) -> CnmError:
    first = next((line for line in err.splitlines() if line.startswith("Error:")), err.strip())
    if "Operation not permitted" in err:
        return PermissionDenied(f"nftables: {first}", hint="cnm needs root (CAP_NET_ADMIN)")
    if "No such file or directory" in err:
        return NotFound(f"nftables: {first}")
    return KernelError(f"nftables refused the change: {first}")


class Nftables:
    """libnftables on the host namespace's thread."""

    def __init__(self, thread: NsThread) -> None:
        self._t = thread
        self._ctx: _Ctx | None = None
        self._json: _Ctx | None = None

    def run(self, text: str) -> str:
        """Apply ``text`` as one transaction."""
        if not text:
            return ""

        def call(_: object) -> str:
            if self._ctx is None:
                self._ctx = _Ctx()
            return self._ctx.run(text)

        return self._t.call(call)

    def list_json(self, what: str) -> list[dict[str, Any]]:
        """``list WHAT`` as nft's JSON objects (with handles); [] when it does not exist."""

        def call(_: object) -> str:
            if self._json is None:
                self._json = _Ctx(NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE)
            return self._json.run(f"list {what}")

        try:
            out = self._t.call(call)
        except NotFound:
            return []
        items: list[dict[str, Any]] = json.loads(out).get("nftables", []) if out else []
        return items

    def sysctl(self, key: str, value: str) -> None:
        """Set a sysctl of the host namespace, ``key`` as a path under /proc/sys
        ("net/ipv4/ip_forward"), so interface names with dots stay whole. It runs on the
        host thread, whose /proc/sys/net is that namespace's."""
        path = "/proc/sys/" + key

        def call(_: object) -> None:
            try:
                with open(path) as f:
                    if f.read().strip() == value:
                        return
                with open(path, "w") as f:
                    f.write(value)
            except FileNotFoundError:
                raise NotFound(f"sysctl {key} does not exist") from None
            except OSError as e:
                raise KernelError(f"sysctl {key}={value}: {e.strerror}") from None

        self._t.call(call)


def run_here(text: str) -> str:
    """One transaction in the calling thread's namespace, with a context of its own (a
    context's netlink socket stays in the namespace it was made in). ~0.05 ms."""
    ctx = _Ctx()
    try:
        return ctx.run(text)
    finally:
        ctx.close()
