"""RFC 6960 CertIDs: how OCPP names an installed certificate (CertificateHashData).

The OCSP request builder of `cryptography` computes them as RFC 6960 defines: the hash of the
DER issuer name, the hash of the issuer's public key bits (the subjectPublicKey BIT STRING, for
a self-signed root its own key) and the serial number.
"""

from __future__ import annotations

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

__all__ = ["ALGORITHMS", "CertId", "cert_id"]

# OCPP's HashAlgorithmEnumType -> the hash.
ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}


@attrs.frozen
class CertId:
    """A certificate's CertID: the hashes in lower-case hex, the serial number in hex without
    leading zeros."""

    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str

    def matches(self, other: CertId) -> bool:
        """The same certificate, however the hex digits are written (case, leading zeros)."""
        return (
            self.hash_algorithm == other.hash_algorithm
            and self.issuer_name_hash.lower() == other.issuer_name_hash.lower()
            and self.issuer_key_hash.lower() == other.issuer_key_hash.lower()
            and self.serial_number.lower().lstrip("0") == other.serial_number.lower().lstrip("0")
        )


def cert_id(
    certificate: x509.Certificate, issuer: x509.Certificate, algorithm: str = "SHA256"
) -> CertId:
    """The CertID of `certificate` issued by `issuer` (itself, for a self-signed root)."""
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate, issuer, ALGORITHMS[algorithm]())
        .build()
    )
    return CertId(
        hash_algorithm=algorithm,
        issuer_name_hash=request.issuer_name_hash.hex(),
        issuer_key_hash=request.issuer_key_hash.hex(),
        serial_number=format(request.serial_number, "x"),
    )
