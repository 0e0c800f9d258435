"""Network namespaces, and the threads that do netlink work inside them.

pyroute2 0.9 opens its netlink socket lazily, on the thread that first uses a handle, in that
thread's namespace. So every netlink call runs on a dedicated thread that has entered the
target namespace and checked it is there; no shared thread (request handlers, DNS) ever
calls setns. Two kinds of thread:

* ``NsThread``: lives in one namespace for its whole life and keeps one handle open (the
  managed host namespace).
* ``Visitor``: enters a sandbox namespace for one job, opens a handle there, closes it and
  returns to the process's namespace, verified before the next job.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cnm.errors import CnmError, Internal, KernelError, NotFound, from_errno
from cnm.kernel.rtnl import Rtnl

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        code = ctypes.get_errno()
        raise from_errno(code, what)


def setns(fd: int, what: str, nstype: int = CLONE_NEWNET) -> None:
    _check(_libc.setns(fd, nstype), f"setns {what}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(src: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(
        _libc.mount(src.encode() if src else None, target.encode(),
                    fstype.encode() if fstype else None, flags, None),
        f"mount {target}",
    )


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def thread_ns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def identity(path: str) -> str | None:
    """The identity of the network namespace at ``path`` ("dev:inode", the same through
    every path to it), or None when ``path`` is no network namespace."""
    if not is_netns(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def is_netns(path: str) -> bool:
    """True when ``path`` is a live bound network namespace (not a plain leftover file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        # NS_GET_NSTYPE
        import fcntl

        return fcntl.ioctl(fd, 0xB703) == CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


def run_in(path: str, fn: Callable[[], T], name: str = "cnm-netns-once") -> T:
    """``fn()`` on a thread of its own that entered the namespace at ``path`` and then ends
    (never a shared thread, so nothing else runs there after): for a socket that must be
    made inside a namespace once (a probe, a monitor)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                setns(fd, path)
            finally:
                os.close(fd)
            box["ok"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["err"] = e

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    result: T = box["ok"]
    return result


def netlink_call(fn: Callable[[], T], what: str) -> T:
    """Run a netlink request; translate its errno once, here."""
    try:
        return fn()
    except NetlinkError as e:
        raise from_errno(e.code, what) from None
    except OSError as e:
        raise from_errno(e.errno or 0, what) from None


class _Job:
    __slots__ = ("fn", "future", "path")

    def __init__(self, path: str | None, fn: Callable[..., Any]) -> None:
        self.path = path
        self.fn = fn
        self.future: Future[Any] = Future()


_STOP = object()


class _Worker(threading.Thread):
    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready: Future[None] = Future()

    def submit(self, path: str | None, fn: Callable[..., T]) -> T:
        if not self.is_alive():
            raise Internal(f"{self.name} is not running")
        job = _Job(path, fn)
        self._q.put(job)
        result: T = job.future.result()
        return result

    def stop(self) -> None:
        if self.is_alive():
            self._q.put(_STOP)
            self.join(timeout=5)


class NsThread(_Worker):
    """A thread that enters one namespace for its whole life and keeps an IPRoute open."""

    def __init__(self, path: str | None, name: str = "cnm-host-netlink") -> None:
        super().__init__(name)
        self.path = path
        self.start()
        self._ready.result()

    def run(self) -> None:
        try:
            if self.path is not None:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    setns(fd, self.path)
                finally:
                    os.close(fd)
                if thread_ns_inode() != ns_inode(self.path):
                    raise Internal(f"thread did not enter namespace {self.path}")
            ipr = IPRoute()
            # The raw socket of the hot path (rtnl.py); it belongs to this namespace too.
            self.rtnl = Rtnl()
        except BaseException as e:
            self._ready.set_exception(e)
            return
        self._ready.set_result(None)
        try:
            while True:
                job = self._q.get()
                if job is _STOP:
                    return
                try:
                    job.future.set_result(job.fn(ipr))
                except BaseException as e:
                    job.future.set_exception(e)
        finally:
            ipr.close()
            self.rtnl.close()

    def call(self, fn: Callable[[IPRoute], T]) -> T:
        return self.submit(None, fn)


class Handles:
    """The netlink handles of one sandbox namespace, made while the visitor is inside it:
    a raw socket for the hot path (kept), and pyroute2 on first use in a visit (slow paths
    only; closed when the visit ends: each holds several descriptors, and hundreds of
    cached ones would crowd the descriptors under 1024, see fds.py)."""

    def __init__(self) -> None:
        self.rtnl = Rtnl()
        self._ipr: IPRoute | None = None

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            ipr = IPRoute()
            # pyroute2 opens its socket on first use: make that happen now, inside.
            netlink_call(lambda: ipr.link("get", index=1), "open netlink")
            self._ipr = ipr
        return self._ipr

    def end_visit(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def close(self) -> None:
        self.rtnl.close()
        self.end_visit()


class Visitor(_Worker):
    """A thread that visits sandbox namespaces, one job at a time, and always comes home.

    It keeps one netlink handle per recently visited namespace (opening one costs ~0.7 ms);
    a handle's socket pins its namespace, so ``forget`` closes it before the namespace goes.
    """

    MAX_HANDLES = 256

    def __init__(self, name: str = "cnm-netns-visitor") -> None:
        super().__init__(name)
        self._handles: dict[str, Handles] = {}
        self.start()
        self._ready.result()

    def run(self) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        home_ino = thread_ns_inode()
        self._ready.set_result(None)
        try:
            while True:
                job = self._q.get()
                if job is _STOP:
                    return
                try:
                    job.future.set_result(self._visit(job))
                except BaseException as e:
                    job.future.set_exception(e)
                setns(home, "home")
                if thread_ns_inode() != home_ino:
                    # Never run another job from a foreign namespace: stop, and let every
                    # later call fail loudly ("not running").
                    return
        finally:
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()
            os.close(home)

    def _visit(self, job: _Job) -> Any:
        path = job.path
        assert path is not None
        if job.fn is _create:
            return _create(path)
        if job.fn is _forget:
            handle = self._handles.pop(path, None)
            if handle is not None:
                handle.close()
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"network namespace {path} does not exist") from None
        try:
            setns(fd, path)
        finally:
            os.close(fd)
        if thread_ns_inode() != ns_inode(path):
            raise Internal(f"thread did not enter namespace {path}")
        handles = self._handles.pop(path, None)
        if handles is None:
            handles = Handles()
            while len(self._handles) >= self.MAX_HANDLES:
                old = next(iter(self._handles))
                self._handles.pop(old).close()
        self._handles[path] = handles  # most recently used last
        try:
            return job.fn(handles)
        finally:
            handles.end_visit()

    def call(self, path: str, fn: Callable[[Handles], T]) -> T:
        """Run ``fn(handles)`` with the netlink handles of the namespace at ``path``."""
        return self.submit(path, fn)

    def create(self, path: str) -> None:
        """Create a network namespace bound at ``path``, with its loopback up."""
        self.submit(path, _create)

    def forget(self, path: str) -> None:
        """Close the cached handle of ``path`` (before the namespace is deleted)."""
        self.submit(path, _forget)


def _forget(path: str) -> None:
    """Marker job: handled by the visitor itself."""


def _create(path: str) -> None:
    # Runs on the visitor thread: unshare gives this thread a fresh namespace, which the
    # bind mount keeps alive after the thread goes home.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    try:
        unshare(CLONE_NEWNET)
        mount("/proc/thread-self/ns/net", path, None, MS_BIND)
        with IPRoute() as ipr:
            netlink_call(lambda: ipr.link("set", index=1, state="up"), "loopback up")
        # Announce an interface's addresses when it comes up (gratuitous ARP, unsolicited
        # NA), so peers drop a cached MAC at once when an address comes back on a new
        # endpoint; without it they keep sending to the old MAC for up to ~30 s.
        # Interfaces made here later start without IPv6 (as Docker does on IPv4-only
        # networks): no link-local address, no MLD/DAD multicast flooding the bridge. An
        # endpoint with an IPv6 address turns it back on for its own interface.
        for key, value in (("net/ipv4/conf/all/arp_notify", "1"),
                           ("net/ipv6/conf/all/ndisc_notify", "1"),
                           ("net/ipv6/conf/default/disable_ipv6", "1")):
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(value)
    except BaseException:
        with contextlib.suppress(CnmError):
            umount(path)
        os.unlink(path)
        raise


def delete(path: str) -> None:
    """Unbind and remove a namespace file. Already gone is success."""
    try:
        umount(path)
    except CnmError as e:
        # EINVAL: not a mount point (unbound already, or a plain leftover file).
        if not isinstance(e, NotFound) and e.errno != errno.EINVAL:
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise KernelError(f"remove {path}: {e.strerror}") from None
