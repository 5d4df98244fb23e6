"""Per-test PKIs built with `cryptography`, shaped as central systems issue them: EC P-256,
CA certificates with basicConstraints CA=true (critical), keyUsage and a Subject Key
Identifier, every issued certificate with the Authority Key Identifier of its issuer (what
OpenSSL's strict verification, and Python 3.13's default context, require), and server
certificates that may carry their identity in the CN only (OCPP's certificate profile)."""

from __future__ import annotations

import ssl
import tempfile
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.station_harness import WALL_START

NOW = datetime.now(UTC)
# Valid by the system's clock (which TLS verifies with) and by the harness's station clock.
VALID_FROM = min(NOW, WALL_START) - timedelta(days=1)
VALID_TO = max(NOW, WALL_START) + timedelta(days=365)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dcocpp tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@attrs.frozen
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def server_context(
        self, chain: Sequence[Issued] = (), maximum: ssl.TLSVersion | None = None
    ) -> ssl.SSLContext:
        """A server context presenting this certificate (and `chain` after it)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if maximum is not None:
            # A server that speaks only what Python deprecates (TLS 1.0/1.1), on purpose.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                context.maximum_version = maximum
            if maximum < ssl.TLSVersion.TLSv1_2:
                context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 allows TLS 1.1 only so
        self.write_chain(context, chain)
        return context

    def write_chain(self, context: ssl.SSLContext, chain: Sequence[Issued]) -> None:
        """Load this certificate (`chain` after it) and its key into `context`."""
        with tempfile.TemporaryDirectory() as folder:
            cert = Path(folder) / "cert.pem"
            key = Path(folder) / "key.pem"
            cert.write_text(self.pem + "".join(c.pem for c in chain))
            key.write_bytes(self.key_pem)
            context.load_cert_chain(cert, key)


def issue(
    subject: str,
    issuer: Issued | None = None,
    *,
    ca: bool = True,
    san: list[str] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    basic_constraints: bool = True,
    serial: int | None = None,
    issuer_name: str | None = None,
) -> Issued:
    """A certificate for `subject`, signed by `issuer` (self-signed without one). A CA by
    default; `ca=False` gives a TLS server certificate, with `san` DNS names or none (CN
    only)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer is not None else key
    issuer_subject = issuer.certificate.subject if issuer is not None else _name(subject)
    if issuer_name is not None:
        issuer_subject = _name(issuer_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before or VALID_FROM)
        .not_valid_after(not_after or VALID_TO)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False
            )
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def sign_csr(
    csr_pem: str,
    issuer: Issued,
    *,
    common_name: str | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    """The certificate a central system's CA issues for a charge point's CSR: the CSR's subject
    (or CN `common_name` instead), no subjectAltName, clientAuth, key identifiers."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    subject = csr.subject if common_name is None else _name(common_name)
    public_key = csr.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or VALID_FROM)
        .not_valid_after(not_after or VALID_TO)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def pem_of(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
