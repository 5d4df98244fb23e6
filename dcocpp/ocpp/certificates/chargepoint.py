"""The charge point's own certificate (security profile 3's TLS client certificate), signed by
the central system: a new key pair, a certificate signing request for it, and the certificate
that comes back, checked before it is kept.

Layout (in the certificate store's directory)::

    charge-point/<sha256>.pem        the certificate (PEM) with the chain the central system
                                     sent after it
    keys/<sha256>.key                its private key (PEM, unencrypted, mode 0600)
    keys/charge-point-pending.key    the key of the request not answered yet

A certificate and its key share the SHA-256 of the certificate's DER as their name, so that a
power cut between writing the two leaves either pair whole: the key is written first, the
certificate second, and the pair the new one replaces is removed last. A request's key
survives a restart, so a CertificateSigned that arrives after one still matches it.

What a CertificateSigned must be to be kept (`install_signed`): at most
CertificateSignedMaxChainSize characters, PEM certificates, the first one's public key the
pending request's, its CN the charge point id, valid now by the station's clock, and chained
(through the certificates after it) to an installed CentralSystemRootCertificate. The chain is
verified with `cryptography`'s client verifier: its WebPKI profile would ask a subjectAltName of
the end entity, which OCPP's certificates (identity in the CN) do not carry, so the end
entity's extensions are permitted as they are; the CA certificates keep the WebPKI rules
(basicConstraints, keyUsage, key identifiers).

No OCPP message types here: the sender of the signing request (`send_csr`) is the OCPP
session's, and the 1.6 handlers translate the rest.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from dcocpp.ocpp.certificates import CertificateRejected, CertificateStoreError
from dcocpp.ocpp.certificates.chains import VerificationError, verify_chain
from dcocpp.ocpp.certificates.store import CertificateStore, RootKind
from dcocpp.storage.atomicfile import remove_file, replace_file

__all__ = ["RENEWAL_MARGIN", "ChargePointCertificate", "ChargePointCertificates", "SendCsr"]

log = logging.getLogger(__name__)

# A certificate that expires within this margin is renewed (at security profile 3): a month
# leaves the central system's operators time to sign one, over many attempts if need be.
RENEWAL_MARGIN = timedelta(days=30)
_FOLDER = "charge-point"
_PENDING_KEY = "charge-point-pending.key"

# Sends the PEM CSR to the central system; whether it accepted the request.
SendCsr = Callable[[str], Awaitable[bool]]


@attrs.frozen
class ChargePointCertificate:
    """A certificate of the charge point's, with the chain that came with it, and its key."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # what followed it in CertificateSigned
    path: Path  # the certificate and its chain (PEM), for TLS
    key_path: Path

    def valid_at(self, now: datetime) -> bool:
        return self.certificate.not_valid_before_utc <= now <= self.certificate.not_valid_after_utc


class ChargePointCertificates:
    """The charge point certificate in the store's directory (`load` reads it) and the request
    for a new one. `generation` changes with every certificate installed (TLS contexts are
    rebuilt on it). `send_csr` is set by the OCPP session that carries the request."""

    def __init__(
        self,
        store: CertificateStore,
        *,
        charge_point_id: str,
        clock: Callable[[], datetime],
        organization: Callable[[], str | None] = lambda: None,
        max_chain_size: Callable[[], int | None] = lambda: None,
        send_csr: SendCsr | None = None,
    ):
        self._store = store
        self._charge_point_id = charge_point_id
        self._clock = clock
        self._organization = organization
        self._max_chain_size = max_chain_size
        self.send_csr = send_csr
        self._folder = store.directory / _FOLDER
        self._keys = store.directory / "keys"
        self._current: ChargePointCertificate | None = None
        self._pending: ec.EllipticCurvePrivateKey | None = None
        self.generation = 0

    @property
    def current(self) -> ChargePointCertificate | None:
        return self._current

    @property
    def pending(self) -> bool:
        """A signing request was sent and no certificate for its key installed yet."""
        return self._pending is not None

    def valid_now(self) -> bool:
        return self._current is not None and self._current.valid_at(self._clock())

    def renewal_reason(self, margin: timedelta = RENEWAL_MARGIN) -> str | None:
        """Why a new certificate is needed now (none, or it expires within `margin`), or None."""
        current = self._current
        if current is None:
            return "the charge point has no certificate"
        expiry = current.certificate.not_valid_after_utc
        if expiry - self._clock() <= margin:
            return f"its certificate expires on {expiry:%Y-%m-%dT%H:%M:%SZ}"
        return None

    def is_current(self, chain_pem: str) -> bool:
        """Whether the first certificate of `chain_pem` is the one in use."""
        if self._current is None:
            return False
        try:
            first = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            return False
        return first == self._current.certificate

    # --- loading -----------------------------------------------------------------------------

    def load(self) -> None:
        """Read the certificate (the newest whose key is there and matches) and the pending
        key. What cannot be read is logged and not used."""
        found = []
        for path in sorted(self._folder.glob("*.pem")) if self._folder.is_dir() else []:
            key_path = self._keys / f"{path.stem}.key"
            try:
                certificates = x509.load_pem_x509_certificates(path.read_bytes())
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
                log.error("charge point certificate %s cannot be used: %s", path, exc)
                continue
            if not _same_key(certificates[0].public_key(), key.public_key()):
                log.error("charge point certificate %s does not match its key", path)
                continue
            found.append(
                ChargePointCertificate(certificates[0], tuple(certificates[1:]), path, key_path)
            )
        self._current = max(found, key=lambda c: c.certificate.not_valid_before_utc, default=None)
        pending = self._keys / _PENDING_KEY
        self._pending = None
        if pending.is_file():
            try:
                key = serialization.load_pem_private_key(pending.read_bytes(), password=None)
            except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
                log.error("the pending signing request's key %s cannot be read: %s", pending, exc)
            else:
                if isinstance(key, ec.EllipticCurvePrivateKey):
                    self._pending = key
        self.generation += 1

    # --- the request -------------------------------------------------------------------------

    def new_request(self) -> str:
        """A new key pair (EC P-256), its private key kept as the pending one, and the PEM
        certificate signing request for it: CN the charge point id, O the CPO's name.
        Raises `CertificateStoreError` when the key cannot be stored."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._store.write_private_key(_PENDING_KEY, pem)
        self._pending = key
        names = [x509.NameAttribute(NameOID.COMMON_NAME, self._charge_point_id)]
        organization = self._organization()
        if organization:
            names.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        else:
            log.warning("certificate signing request without an organization: CpoName is not set")
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name(names))
            .sign(key, hashes.SHA256())
        )
        return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def can_request(self) -> bool:
        """Whether a SignCertificate can be sent (an OCPP session carries it)."""
        return self.send_csr is not None

    async def request_certificate(self) -> bool:
        """Ask the central system to sign a new certificate (SignCertificate): a new key pair,
        its CSR sent through `send_csr`. Whether the central system accepted the request (the
        certificate itself comes later, in CertificateSigned). Failures are logged, never
        raised: a key that cannot be stored, no sender, a request refused or not answered."""
        if self.send_csr is None:
            log.error("no certificate signing request can be sent: no OCPP session carries one")
            return False
        try:
            csr = self.new_request()
        except CertificateStoreError as exc:
            log.error("certificate signing request not sent: %s", exc)
            return False
        log.info("sending a certificate signing request for %s", self._charge_point_id)
        return await self.send_csr(csr)

    # --- the answer --------------------------------------------------------------------------

    def install_signed(self, chain_pem: str) -> ChargePointCertificate:
        """Keep the certificate of CertificateSigned (see the module's docstring), or raise
        `CertificateRejected` (why) or `CertificateStoreError`."""
        limit = self._max_chain_size()
        if limit is not None and len(chain_pem) > limit:
            raise CertificateRejected(
                f"the chain is {len(chain_pem)} characters,"
                f" CertificateSignedMaxChainSize is {limit}"
            )
        try:
            certificates = x509.load_pem_x509_certificates(chain_pem.encode())
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
            raise CertificateRejected(f"not PEM certificates that can be read ({exc})") from None
        leaf, chain = certificates[0], certificates[1:]
        pending = self._pending
        if pending is None:
            raise CertificateRejected("no certificate signing request is pending")
        if not _same_key(leaf.public_key(), pending.public_key()):
            raise CertificateRejected("its public key is not the one of the signing request")
        names = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [self._charge_point_id]:
            shown = ", ".join(str(n) for n in names) or "none"
            raise CertificateRejected(f"its CN is {shown}, not the charge point id")
        now = self._clock()
        if now < leaf.not_valid_before_utc:
            raise CertificateRejected(
                f"not valid before {leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
            )
        if now > leaf.not_valid_after_utc:
            raise CertificateRejected(f"expired on {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
        self._verify_chain(leaf, chain, now)
        return self._keep(leaf, chain_pem, pending)

    def _verify_chain(
        self, leaf: x509.Certificate, chain: list[x509.Certificate], now: datetime
    ) -> None:
        roots = [i.certificate for i in self._store.installed(RootKind.CENTRAL_SYSTEM)]
        if not roots:
            raise CertificateRejected("no CentralSystemRootCertificate is installed to verify it")
        try:
            verify_chain(leaf, chain, roots, now)
        except VerificationError as exc:
            raise CertificateRejected(
                f"it does not chain to an installed CentralSystemRootCertificate ({exc})"
            ) from None

    def _keep(
        self, leaf: x509.Certificate, chain_pem: str, key: ec.EllipticCurvePrivateKey
    ) -> ChargePointCertificate:
        name = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
        path = self._folder / f"{name}.pem"
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key_path = self._store.write_private_key(f"{name}.key", key_pem)
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            replace_file(path, chain_pem if chain_pem.endswith("\n") else chain_pem + "\n")
        except OSError as exc:
            raise CertificateStoreError(f"cannot write {path}: {exc}") from exc
        certificates = x509.load_pem_x509_certificates(chain_pem.encode())
        installed = ChargePointCertificate(leaf, tuple(certificates[1:]), path, key_path)
        replaced, self._current = self._current, installed
        self._pending = None
        self.generation += 1
        # The new pair is whole on disk: what it replaces may go (a failure only leaves files).
        stale = [self._keys / _PENDING_KEY]
        if replaced is not None and replaced.path != path:
            stale += [replaced.path, replaced.key_path]
        for old in stale:
            try:
                remove_file(old)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("charge point certificate: cannot remove %s: %s", old, exc)
        log.info(
            "charge point certificate installed: %s, valid until %s (%s)",
            leaf.subject.rfc4514_string(),
            f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
            path.name,
        )
        return installed


def _same_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(der, spki) == b.public_bytes(der, spki)
