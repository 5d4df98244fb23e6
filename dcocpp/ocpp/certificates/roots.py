"""What makes a certificate acceptable as a root the charger trusts: one PEM certificate, valid
now, a CA (basicConstraints CA=true), and either self-signed or signed by a certificate the
charger already holds (so that its issuer, and with it its CertID, is known)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from dcocpp.ocpp.certificates import CertificateRejected

__all__ = ["check_root", "issued_by", "parse_one"]


def parse_one(pem: str) -> x509.Certificate:
    """The one certificate of a PEM text; `CertificateRejected` for none, several or garbage."""
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateRejected(f"not a PEM certificate that can be read ({exc})") from None
    if len(certificates) != 1:
        raise CertificateRejected(f"one certificate expected, {len(certificates)} given")
    return certificates[0]


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `certificate` (its name and its signature)."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def check_root(
    certificate: x509.Certificate, now: datetime, holders: Iterable[x509.Certificate]
) -> x509.Certificate:
    """Raise `CertificateRejected` unless `certificate` may be installed as a root at `now`;
    return its issuer: itself, or the one of `holders` that signed it."""
    if now < certificate.not_valid_before_utc:
        raise CertificateRejected(
            f"not valid before {certificate.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    if now > certificate.not_valid_after_utc:
        raise CertificateRejected(
            f"expired on {certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise CertificateRejected("not a CA certificate (no basicConstraints)") from None
    except ValueError as exc:  # an extension that cannot be parsed
        raise CertificateRejected(f"its extensions cannot be read ({exc})") from None
    if not constraints.value.ca:
        raise CertificateRejected("not a CA certificate (basicConstraints CA is false)")
    if issued_by(certificate, certificate):
        return certificate
    for holder in holders:
        if issued_by(certificate, holder):
            return holder
    raise CertificateRejected(
        "neither self-signed nor signed by an installed certificate"
        f" (issuer {certificate.issuer.rfc4514_string()})"
    )
