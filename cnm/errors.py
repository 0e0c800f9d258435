"""The one error tree of cnm, and the one table that maps it onto every surface.

Every failure a user can see is a ``CnmError`` with a stable kebab-case ``code``, a message
that says what failed and on what, and an optional hint. Lower-layer errors (netlink errno,
sqlite) are translated once, where they happen, never re-wrapped further up.
"""

from __future__ import annotations

import errno as _errno

# No dataclasses or typing at run time: cnm-cni imports this module in a process started for
# every CNI call, and those two cost ~7 ms of its start-up (dataclasses pulls in inspect).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class CnmError(Exception):
    """Base of every error cnm reports to a user."""

    code = "internal"

    def __init__(self, message: str, *, hint: str | None = None,
                 errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # The kernel's errno, when the error is its translation (from_errno): for code that
        # must tell one errno from another of the same class. Not part of the wire form.
        self.errno = errno

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


class InvalidArgument(CnmError):
    """The request itself is malformed: a bad CIDR, an unknown option, a bad name."""

    code = "invalid-argument"


class NotFound(CnmError):
    code = "not-found"


class AlreadyExists(CnmError):
    code = "already-exists"


class Conflict(CnmError):
    """The request is well formed but clashes with existing state (overlap, address taken)."""

    code = "conflict"


class InUse(CnmError):
    """The object is still used by others (a network with endpoints)."""

    code = "in-use"


class Exhausted(CnmError):
    """No free subnet in the pools, or no free address in a subnet."""

    code = "exhausted"


class Unsupported(CnmError):
    """The kernel, driver or mode cannot do what was asked."""

    code = "unsupported"


class PermissionDenied(CnmError):
    code = "permission-denied"


class KernelError(CnmError):
    """The kernel refused an operation for a reason not covered above."""

    code = "kernel-error"


class TooLarge(CnmError):
    """A request over a limit of cnm.limits that is refused before it is read (a body)."""

    code = "too-large"


class Unavailable(CnmError):
    """The daemon cannot be reached (a client-side error)."""

    code = "unavailable"


class StoreUnavailable(CnmError):
    """The cluster store (etcd) did not answer in time: no member reachable, or no quorum."""

    code = "store-unavailable"


class Internal(CnmError):
    code = "internal"


class MethodNotAllowed(InvalidArgument):
    """A method the path does not have (the HTTP answer says which it has: Allow)."""

    code = "method-not-allowed"


class Partial(CnmError):
    """Teardown tried every step; some failed. ``errors`` holds them all."""

    code = "partial-failure"

    def __init__(self, what: str, errors: list[CnmError]) -> None:
        detail = "; ".join(e.message for e in errors)
        super().__init__(f"{what}: {detail}")
        self.errors = errors


class Mapping_:
    """Where one error code lands on each surface: HTTP status, CLI exit code, CNI code."""

    __slots__ = ("http", "exit", "cni")

    def __init__(self, http: int, exit: int, cni: int) -> None:
        self.http, self.exit, self.cni = http, exit, cni


# CNI error codes: 7 invalid network config, 11 try again later, 999 = plugin specific.
_TABLE: dict[str, Mapping_] = {
    InvalidArgument.code: Mapping_(400, 2, 7),
    NotFound.code: Mapping_(404, 1, 999),
    AlreadyExists.code: Mapping_(409, 1, 999),
    Conflict.code: Mapping_(409, 1, 999),
    InUse.code: Mapping_(409, 1, 11),
    Exhausted.code: Mapping_(409, 1, 11),
    Unsupported.code: Mapping_(501, 1, 999),
    PermissionDenied.code: Mapping_(403, 1, 999),
    KernelError.code: Mapping_(500, 1, 999),
    TooLarge.code: Mapping_(413, 2, 7),
    MethodNotAllowed.code: Mapping_(405, 2, 7),
    Unavailable.code: Mapping_(503, 3, 11),
    StoreUnavailable.code: Mapping_(503, 1, 11),
    Partial.code: Mapping_(500, 1, 999),
    Internal.code: Mapping_(500, 1, 999),
}

_BY_CODE: dict[str, type[CnmError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, AlreadyExists, Conflict, InUse, Exhausted,
        Unsupported, PermissionDenied, KernelError, TooLarge, Unavailable, StoreUnavailable,
        Internal, Partial, MethodNotAllowed,
    )
}


def mapping(err: CnmError) -> Mapping_:
    return _TABLE.get(err.code, _TABLE[Internal.code])


def http_status(err: CnmError) -> int:
    return mapping(err).http


def exit_code(err: CnmError) -> int:
    return mapping(err).exit


def cni_code(err: CnmError) -> int:
    """The CNI error code (SPEC: 7 invalid config, 11 try again later, 999 plugin's own)."""
    return mapping(err).cni


def from_dict(data: dict[str, Any]) -> CnmError:
    """Rebuild an error from its wire form (the API client side)."""
    cls = _BY_CODE.get(str(data.get("code", "")), Internal)
    if cls is Partial:
        return Internal(str(data.get("message", "")), hint=data.get("hint"))
    err = cls(str(data.get("message", "unknown error")), hint=data.get("hint"))
    err.code = str(data.get("code", err.code))
    return err


def from_errno(code: int, what: str) -> CnmError:
    """Translate a kernel errno once, in the adapter that saw it; the error keeps ``code``
    as its ``errno``."""
    err = _translate(code, what)
    err.errno = code
    return err


def _translate(code: int, what: str) -> CnmError:
    text = _errno.errorcode.get(code, str(code))
    if code == _errno.EEXIST:
        return AlreadyExists(f"{what}: already exists")
    if code in (_errno.ENOENT, _errno.ENODEV, _errno.ESRCH):
        return NotFound(f"{what}: not found")
    if code in (_errno.EPERM, _errno.EACCES):
        return PermissionDenied(f"{what}: permission denied", hint="cnm needs root (CAP_NET_ADMIN)")
    if code in (_errno.EOPNOTSUPP, _errno.EAFNOSUPPORT, _errno.EPROTONOSUPPORT):
        return Unsupported(f"{what}: not supported by this kernel ({text})")
    if code == _errno.EBUSY:
        return InUse(f"{what}: device or resource busy")
    if code in (_errno.EMFILE, _errno.ENFILE):
        return KernelError(f"{what}: too many open files",
                           hint="raise cnmd's open-file limit (ulimit -n, LimitNOFILE)")
    if code == _errno.EADDRNOTAVAIL:
        return Conflict(f"{what}: address not available")
    return KernelError(f"{what}: {_errno.errorcode.get(code, code)} ({code})")
