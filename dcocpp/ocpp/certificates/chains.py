"""Chain checks of OCPP certificates with `cryptography`'s verifier.

Its WebPKI profile refuses an end entity without a subjectAltName, which OCPP certificates
(a charge point's CN-only certificate, a manufacturer's code-signing one) do not carry. The
client verifier lets the end-entity extension policy be relaxed (its server verifier does
not); the CAs stay under the WebPKI rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

__all__ = ["VerificationError", "verify_chain"]


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> None:
    """`leaf` is valid at `now` and chains through `intermediates` to one of `roots` (not
    empty); VerificationError otherwise."""
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(now)
        .extension_policies(
            ee_policy=ExtensionPolicy.permit_all(),
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
        )
        .build_client_verifier()
    )
    verifier.verify(leaf, list(intermediates))
