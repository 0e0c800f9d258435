"""Mutual TLS for the API over TCP: the daemon serves only clients whose certificate its CA
signed, the client talks only to a daemon whose certificate its CA signed for the host it
dialled. TLS 1.2 or later; a private key readable by anyone but its owner is refused.

The files are Docker's: ``--tlscacert``, ``--tlscert``, ``--tlskey``, or ``ca.pem``,
``cert.pem`` and ``key.pem`` in ``CNM_CERT_PATH``.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass

from cnm.errors import InvalidArgument


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str
    key: str

    @classmethod
    def from_dir(cls, path: str) -> TlsFiles:
        return cls(os.path.join(path, "ca.pem"), os.path.join(path, "cert.pem"),
                   os.path.join(path, "key.pem"))


def check_key(path: str) -> None:
    """Refuse a private key file that its group or others may read or write."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as e:
        raise InvalidArgument(f"TLS key {path}: {e.strerror}") from None
    if mode & 0o077:
        raise InvalidArgument(f"TLS key {path} is readable by others (mode {mode:04o})",
                              hint=f"chmod 600 {path}")


def _load(ctx: ssl.SSLContext, files: TlsFiles) -> ssl.SSLContext:
    for what, path in (("CA certificate", files.ca), ("certificate", files.cert),
                       ("key", files.key)):
        if not os.path.isfile(path):
            raise InvalidArgument(f"TLS {what} {path}: no such file")
    check_key(files.key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=files.ca)
        ctx.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as e:
        raise InvalidArgument(f"TLS files {files.cert}, {files.key}, {files.ca}: "
                              f"{e.reason or e}") from None
    return ctx


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The daemon's side: a client certificate signed by the CA is required."""
    ctx = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), files)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """The client's side: the daemon's certificate is signed by the CA and names the host."""
    ctx = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), files)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def explain(err: ssl.SSLError | ssl.CertificateError) -> str:
    """What a TLS failure means, in words: the verification message, or the alert that
    the other side sent (which names what it did not accept)."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return err.verify_message or str(err)
    reason = (getattr(err, "reason", None) or str(err)).lower()
    for words, meaning in (
            ("certificate_required", "the daemon requires a client certificate"),
            ("peer_did_not_return_a_certificate", "the client sent no certificate"),
            ("eof occurred", "the other side closed the connection during TLS (cnmd does "
                             "so when it refuses a client's certificate)"),
            ("unknown_ca", "the other side does not trust the CA that signed this "
                           "certificate"),
            ("certificate_expired", "the other side found this certificate expired"),
            ("bad_certificate", "the other side refused this certificate"),
            ("wrong_version", "the other side does not speak TLS"),
            ("unsupported_protocol", "no TLS version both sides accept (1.2 or later)"),
            ("protocol_version", "no TLS version both sides accept (1.2 or later)")):
        if words in reason:
            return meaning
    return reason
