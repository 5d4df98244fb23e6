"""The certificates the charger holds, persisted in the data directory.

Layout (`directory` is `<dataDir>/certificates`)::

    csms-root/<sha256>.pem           CentralSystemRootCertificates: what TLS trusts
    manufacturer-root/<sha256>.pem   ManufacturerRootCertificates (signed firmware)
    csms-root-fallback/<sha256>.pem  the CSMS root a new one replaced under
                                     AdditionalRootCertificateCheck, until a connection
                                     verifies with the new one
    keys/                            private keys (mode 0700, each file 0600)

A file is named after the SHA-256 of its certificate's DER and holds that certificate in PEM,
followed by its issuer's when it is not self-signed (so that its CertID stays known after the
issuer is gone). Every file is written whole (temporary file, fsync, rename) before the change
is reported. Synchronous: one change costs a few fsyncs, as a configuration key does.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dcocpp.ocpp.certificates import CertificateRejected, CertificateStoreError
from dcocpp.ocpp.certificates.certid import ALGORITHMS, CertId, cert_id
from dcocpp.ocpp.certificates.roots import check_root, issued_by, parse_one
from dcocpp.storage.atomicfile import move_file, remove_file, replace_file

__all__ = ["CertificateStore", "Installed", "RootKind"]

log = logging.getLogger(__name__)

_FALLBACK = "csms-root-fallback"
_KEYS = "keys"


class RootKind(enum.Enum):
    """What a root certificate is trusted for (its folder in the store)."""

    CENTRAL_SYSTEM = "csms-root"  # the central system's TLS server certificate
    MANUFACTURER = "manufacturer-root"  # firmware signing certificates


@attrs.frozen
class Installed:
    kind: RootKind
    certificate: x509.Certificate
    issuer: x509.Certificate  # itself for a self-signed root
    path: Path

    def cert_id(self, algorithm: str = "SHA256") -> CertId:
        return cert_id(self.certificate, self.issuer, algorithm)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(Encoding.PEM).decode("ascii")


class CertificateStore:
    """The installed root certificates; `load` reads them, every change is on disk before it
    returns. `generation` changes with every change (TLS contexts are rebuilt on it)."""

    def __init__(self, directory: Path, *, clock: Callable[[], datetime]):
        self.directory = directory
        self._clock = clock
        self._installed: dict[RootKind, list[Installed]] = {kind: [] for kind in RootKind}
        self._fallback: Installed | None = None
        self.generation = 0

    def load(self) -> None:
        """Read the store. A file that cannot be read is logged and not trusted (left for the
        operator to look at)."""
        for kind in RootKind:
            self._installed[kind] = self._read(self.directory / kind.value, kind)
        fallbacks = self._read(self.directory / _FALLBACK, RootKind.CENTRAL_SYSTEM)
        self._fallback = fallbacks[0] if fallbacks else None
        self.generation += 1

    # --- reading ---------------------------------------------------------------------------

    def installed(self, kind: RootKind) -> list[Installed]:
        return list(self._installed[kind])

    def count(self) -> int:
        """How many certificates count against CertificateStoreMaxLength (not the fallback)."""
        return sum(len(certificates) for certificates in self._installed.values())

    @property
    def fallback(self) -> Installed | None:
        """The CSMS root the current one replaced, until a connection verifies without it."""
        return self._fallback

    def find(self, wanted: CertId) -> Installed | None:
        """The installed certificate `wanted` names (with whatever hash algorithm it uses)."""
        if wanted.hash_algorithm not in ALGORITHMS:
            return None
        for certificates in self._installed.values():
            for installed in certificates:
                if installed.cert_id(wanted.hash_algorithm).matches(wanted):
                    return installed
        return None

    # --- changing --------------------------------------------------------------------------

    def install(
        self,
        kind: RootKind,
        pem: str,
        *,
        max_count: int | None = None,
        replace_signed: bool = False,
    ) -> Installed:
        """Install the root certificate in `pem`, or raise `CertificateRejected` (why) or
        `CertificateStoreError`. `max_count`: CertificateStoreMaxLength. `replace_signed`:
        AdditionalRootCertificateCheck: a new CSMS root must be signed by the installed one
        and replaces it (which stays as the fallback until a connection verifies with the new
        one). A certificate already installed is installed (nothing changes)."""
        certificate = parse_one(pem)
        holders = [i.certificate for certificates in self._installed.values() for i in certificates]
        issuer = check_root(certificate, self._clock(), holders)
        path = self.directory / kind.value / f"{_fingerprint(certificate)}.pem"
        for installed in self._installed[kind]:
            if installed.path == path:
                return installed
        replaced = None
        current = self._installed[kind]
        if replace_signed and kind is RootKind.CENTRAL_SYSTEM and current:
            replaced = next((i for i in current if issued_by(certificate, i.certificate)), None)
            if replaced is None:
                raise CertificateRejected(
                    "AdditionalRootCertificateCheck: not signed by the installed"
                    " CentralSystemRootCertificate it would replace"
                )
        count = self.count() + (0 if replaced is not None else 1)
        if max_count is not None and count > max_count:
            raise CertificateRejected(
                f"the store is full: it holds {self.count()},"
                f" CertificateStoreMaxLength is {max_count}"
            )
        text = _pem(certificate) + ("" if issuer is certificate else _pem(issuer))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(path, text)
        except OSError as exc:
            raise CertificateStoreError(f"cannot write {path}: {exc}") from exc
        installed = Installed(kind, certificate, issuer, path)
        if replaced is not None:
            self._retire(replaced, installed)
        self._installed[kind].append(installed)
        self.generation += 1
        log.info(
            "certificate store: %s installed: %s (%s)",
            kind.value,
            certificate.subject.rfc4514_string(),
            path.name,
        )
        return installed

    def delete(self, installed: Installed) -> None:
        """Remove an installed certificate; `CertificateStoreError` when the file stays."""
        try:
            remove_file(installed.path)
        except FileNotFoundError:
            pass  # gone already: what was asked for
        except OSError as exc:
            raise CertificateStoreError(f"cannot remove {installed.path}: {exc}") from exc
        self._installed[installed.kind].remove(installed)
        self.generation += 1
        log.info(
            "certificate store: %s deleted: %s (%s)",
            installed.kind.value,
            installed.certificate.subject.rfc4514_string(),
            installed.path.name,
        )

    def drop_fallback(self) -> None:
        """A connection verified with the new CSMS root: the old one is no longer trusted."""
        fallback = self._fallback
        if fallback is None:
            return
        try:
            remove_file(fallback.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Still trusted as a fallback; tried again after the next connection.
            log.error("certificate store: cannot remove the fallback %s: %s", fallback.path, exc)
            return
        self._fallback = None
        self.generation += 1
        log.info("certificate store: the replaced CSMS root is no longer trusted")

    def write_private_key(self, name: str, pem: bytes) -> Path:
        """Store a private key (PEM) as `keys/<name>`: the folder mode 0700, the file 0600,
        written whole. Raises `CertificateStoreError`. Never logged."""
        folder = self.directory / _KEYS
        path = folder / name
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(folder, 0o700)
            replace_file(path, pem.decode("ascii"))  # mkstemp: mode 0600
        except (OSError, UnicodeDecodeError) as exc:
            raise CertificateStoreError(f"cannot write the key {path}: {exc}") from exc
        return path

    # --- internals -------------------------------------------------------------------------

    def _retire(self, replaced: Installed, successor: Installed) -> None:
        """Move `replaced` to the fallback folder (one fallback at a time)."""
        target = self.directory / _FALLBACK / replaced.path.name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if self._fallback is not None:
                remove_file(self._fallback.path)
            move_file(replaced.path, target)
        except OSError as exc:
            # Undo the new one: the central system is told Failed, the old root stays.
            try:
                remove_file(successor.path)
            except OSError as undo:
                log.error("certificate store: cannot remove %s again: %s", successor.path, undo)
            raise CertificateStoreError(f"cannot keep {replaced.path} as fallback: {exc}") from exc
        self._installed[replaced.kind].remove(replaced)
        self._fallback = attrs.evolve(replaced, path=target)

    def _read(self, folder: Path, kind: RootKind) -> list[Installed]:
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.glob("*.pem")):
            try:
                certificates = x509.load_pem_x509_certificates(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.error("certificate store: %s cannot be read, not trusted: %s", path, exc)
                continue
            issuer = certificates[1] if len(certificates) > 1 else certificates[0]
            found.append(Installed(kind, certificates[0], issuer, path))
        return found


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(Encoding.PEM).decode("ascii")
