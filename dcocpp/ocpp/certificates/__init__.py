"""The charge point's certificate store, version-neutral (OCPP 1.6's security whitepaper and
OCPP 2.0.1 ask the same of it): the root certificates the central system installs
(`store.CertificateStore`), their RFC 6960 CertIDs (`certid`), the checks a root must pass
(`roots`), and the TLS contexts the connection to the central system trusts (`tls`). No OCPP
message types here: the 1.6 handlers (`dcocpp.ocpp.securityhandlers`) translate.

Errors::

    errors.OcppError
    └── CertificateError              the root of this package
        ├── CertificateRejected       a certificate that may not be installed (the reason)
        └── CertificateStoreError     the store's files could not be written or removed
"""

from __future__ import annotations

from dcocpp.ocpp.errors import OcppError

__all__ = ["CertificateError", "CertificateRejected", "CertificateStoreError"]


class CertificateError(OcppError):
    """Root of the certificate store's errors."""


class CertificateRejected(CertificateError):
    """The certificate may not be installed; the text says why (it never quotes a key)."""


class CertificateStoreError(CertificateError):
    """The store's files could not be written or removed (the store is unchanged)."""
