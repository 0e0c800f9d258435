from __future__ import annotations

import errno

import pytest

from cnm import errors
from cnm.errors import (
    AlreadyExists,
    CnmError,
    Conflict,
    Exhausted,
    Internal,
    InUse,
    InvalidArgument,
    KernelError,
    NotFound,
    Partial,
    PermissionDenied,
    Unavailable,
    Unsupported,
)


@pytest.mark.parametrize(
    "cls, code, http, exit_code",
    [
        (InvalidArgument, "invalid-argument", 400, 2),
        (NotFound, "not-found", 404, 1),
        (AlreadyExists, "already-exists", 409, 1),
        (Conflict, "conflict", 409, 1),
        (InUse, "in-use", 409, 1),
        (Exhausted, "exhausted", 409, 1),
        (Unsupported, "unsupported", 501, 1),
        (PermissionDenied, "permission-denied", 403, 1),
        (KernelError, "kernel-error", 500, 1),
        (Unavailable, "unavailable", 503, 3),
        (Internal, "internal", 500, 1),
    ],
)
def test_status_table(cls: type[CnmError], code: str, http: int, exit_code: int) -> None:
    err = cls("something failed")
    assert err.code == code
    assert errors.http_status(err) == http
    assert errors.exit_code(err) == exit_code


def test_partial_and_unknown_codes() -> None:
    p = Partial("removing sandbox", [NotFound("a gone"), KernelError("b stuck")])
    assert p.code == "partial-failure"
    assert errors.http_status(p) == 500
    assert p.message == "removing sandbox: a gone; b stuck"
    assert len(p.errors) == 2
    odd = CnmError("x")
    odd.code = "no-such-code"
    assert errors.http_status(odd) == 500 and errors.exit_code(odd) == 1


def test_cni_codes() -> None:
    assert errors.mapping(InvalidArgument("x")).cni == 7
    assert errors.mapping(Exhausted("x")).cni == 11
    assert errors.mapping(Unavailable("x")).cni == 11


@pytest.mark.parametrize(
    "code, cls",
    [
        (errno.EEXIST, AlreadyExists),
        (errno.ENOENT, NotFound),
        (errno.ENODEV, NotFound),
        (errno.ESRCH, NotFound),
        (errno.EPERM, PermissionDenied),
        (errno.EACCES, PermissionDenied),
        (errno.EOPNOTSUPP, Unsupported),
        (errno.EAFNOSUPPORT, Unsupported),
        (errno.EBUSY, InUse),
        (errno.EADDRNOTAVAIL, Conflict),
        (errno.EINVAL, KernelError),
        (99999, KernelError),
    ],
)
def test_from_errno(code: int, cls: type[CnmError]) -> None:
    err = errors.from_errno(code, "veth cnmv123")
    assert type(err) is cls
    assert err.message.startswith("veth cnmv123: ")
    assert err.errno == code


def test_errno_is_kept_only_on_translations_and_never_sent() -> None:
    assert KernelError("boom").errno is None
    assert "errno" not in errors.from_errno(errno.EINVAL, "x").to_dict()


def test_from_errno_details() -> None:
    assert errors.from_errno(errno.EPERM, "x").hint == "cnm needs root (CAP_NET_ADMIN)"
    assert "EINVAL" in errors.from_errno(errno.EINVAL, "x").message
    assert "not supported by this kernel" in errors.from_errno(errno.EOPNOTSUPP, "x").message


@pytest.mark.parametrize("err", [
    InvalidArgument("bad subnet", hint="did you mean 10.0.0.0/24?"),
    NotFound("network 'x' not found"),
    Conflict("address taken", hint='by sandbox "a"'),
    Unavailable("daemon down"),
    KernelError("boom"),
])
def test_from_dict_round_trip(err: CnmError) -> None:
    back = errors.from_dict(err.to_dict())
    assert type(back) is type(err)
    assert (back.code, back.message, back.hint) == (err.code, err.message, err.hint)
    assert back.to_dict() == err.to_dict()


def test_to_dict_omits_an_empty_hint() -> None:
    assert NotFound("x").to_dict() == {"code": "not-found", "message": "x"}


def test_from_dict_of_partial_and_unknown() -> None:
    p = errors.from_dict(Partial("rm", [KernelError("a")]).to_dict())
    assert isinstance(p, Internal) and p.message == "rm: a"
    u = errors.from_dict({"code": "brand-new", "message": "m"})
    assert isinstance(u, Internal)
    assert u.code == "brand-new" and u.message == "m"
    assert errors.http_status(u) == 500
