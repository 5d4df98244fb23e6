"""A signed firmware's checks (the security whitepaper's secure firmware update; OCPP 2.0.1
alike): the signing certificate when the update is requested, the file's signature once it
is downloaded.

The signing certificate (PEM; certificates after the first are intermediates) must be valid
now and chain to an installed ManufacturerRootCertificate. It is verified with
`cryptography`'s client verifier, whose WebPKI profile would ask the end entity for a
subjectAltName and clientAuth a code-signing certificate has no reason to carry: its
extensions are permitted as they are, the CA certificates keep the WebPKI rules.

The signature is base64 of an RSA PKCS#1 v1.5 or a DER ECDSA signature with SHA-256 over the
whole file, which is hashed as it is read (a firmware image is megabytes): blocking, callers
run `verify_signature` in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from dcocpp.ocpp.certificates.chains import VerificationError, verify_chain
from dcocpp.ocpp.errors import OcppError
from dcocpp.storage.oserrors import reason

__all__ = ["SigningCertificateRejected", "check_signing_certificate", "decode", "verify_signature"]

_CHUNK = 1 << 16


class SigningCertificateRejected(OcppError):
    """The signing certificate cannot be trusted (the text says why)."""


def check_signing_certificate(
    pem: str, roots: Sequence[x509.Certificate], now: datetime
) -> x509.Certificate:
    """The signing certificate of `pem`, valid at `now` and chained to one of `roots`;
    SigningCertificateRejected otherwise."""
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        problem = f"not a PEM certificate that can be read ({exc})"
        raise SigningCertificateRejected(problem) from None
    if not roots:
        raise SigningCertificateRejected("no ManufacturerRootCertificate is installed")
    leaf, intermediates = certificates[0], certificates[1:]
    try:
        verify_chain(leaf, intermediates, roots, now)
    except VerificationError as exc:
        raise SigningCertificateRejected(
            f"{leaf.subject.rfc4514_string()}: not valid now or not chained to an installed"
            f" ManufacturerRootCertificate ({exc})"
        ) from None
    return leaf


def decode(signature: str) -> bytes:
    """The signature's bytes; ValueError when it is not base64 (or empty)."""
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the signature is not base64 ({exc})") from None
    if not raw:
        raise ValueError("the signature is empty")
    return raw


def verify_signature(path: Path, certificate_pem: str, signature: str) -> str | None:
    """Why the file at `path` does not bear `signature` by the first certificate of
    `certificate_pem`'s key; None when it does."""
    try:
        public_key = x509.load_pem_x509_certificates(certificate_pem.encode())[0].public_key()
        raw = decode(signature)
    except (ValueError, UnsupportedAlgorithm) as exc:
        return str(exc)
    digest = hashes.Hash(hashes.SHA256())
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        return f"{path}: cannot read: {reason(exc)}"
    hashed = digest.finalize()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(raw, hashed, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(raw, hashed, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:
            return f"a {type(public_key).__name__} signs no firmware (RSA or ECDSA expected)"
    except InvalidSignature:
        return "the signature does not match the file and the signing certificate's key"
    return None
