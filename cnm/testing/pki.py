"""Certificates for tests: a CA of trustme's (the test extra) writing each certificate it
issues, with the CA's own, into a directory of its own (Docker's ca.pem, cert.pem, key.pem;
the key 0600). ``cnm.lab.etcd`` takes one to run its members with TLS."""

from __future__ import annotations

import os
from pathlib import Path

import trustme

from cnm.tls import TlsFiles


class Pki:
    """A throwaway CA whose files go under ``base``."""

    def __init__(self, base: str | Path) -> None:
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA()
        self._ca.cert_pem.write_to_path(str(self.base / "ca.pem"))

    @property
    def ca(self) -> str:
        return str(self.base / "ca.pem")

    def issue(self, name: str, *identities: str) -> TlsFiles:
        """A certificate (and key) for ``identities``, in ``base/name``."""
        d = self.base / name
        d.mkdir()
        leaf = self._ca.issue_cert(*identities)
        self._ca.cert_pem.write_to_path(str(d / "ca.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
        leaf.private_key_pem.write_to_path(str(d / "key.pem"))
        os.chmod(d / "key.pem", 0o600)
        return TlsFiles.from_dir(str(d))
