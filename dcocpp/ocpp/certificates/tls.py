"""What the charge point trusts of the central system's TLS certificate.

TLS 1.2 or newer. The server certificate must verify against the installed
CentralSystemRootCertificates plus the configured CA bundle; the system's CAs only when there
is neither (a charger pointed at a central system with a public certificate then works out of
the box; one given a root trusts nothing else). Installed certificates are trust anchors even
when they are not self-signed (a CSMS root signed by the one it replaced, under
AdditionalRootCertificateCheck): `VERIFY_X509_PARTIAL_CHAIN`. Certificates are checked strictly
(`VERIFY_X509_STRICT`: e.g. a CA certificate needs its Subject Key Identifier, a certificate
it issued the Authority Key Identifier), as Python 3.13's default context does, so a charger
behaves alike on every Python. The host name is checked against the subjectAltName, or, where
a certificate has none (OCPP's certificate profile puts the identity in the CN), against the
CN: `hostname_checks_common_name`. The client certificate (security profile 3) is the charge
point certificate, when one is presented at all: the caller says whether.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from dcocpp.ocpp.certificates.chargepoint import ChargePointCertificates
from dcocpp.ocpp.certificates.store import CertificateStore, Installed, RootKind

__all__ = ["CentralSystemTrust", "client_context"]

log = logging.getLogger(__name__)

# Given the PEM of the roots to trust (may be empty) and whether to present a client
# certificate: a client context, and whether it presents one.
BuildContext = Callable[[str, bool], tuple[ssl.SSLContext, bool]]


def client_context(*, trusted_pem: str, ca_bundle: Path | None) -> ssl.SSLContext:
    """A client context trusting `trusted_pem` and the `ca_bundle` file (when it exists), or
    the system's CAs when neither gives any."""
    cafile = str(ca_bundle) if ca_bundle is not None and ca_bundle.is_file() else None
    context = ssl.create_default_context(cafile=cafile, cadata=trusted_pem or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.hostname_checks_common_name = True
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    return context


class CentralSystemTrust:
    """The TLS contexts a connection to the central system tries, rebuilt when the store
    changes: the one trusting the installed CSMS roots, then, while a replaced root is kept as
    the fallback, one trusting that instead. A connection that verifies with the first drops
    the fallback (`verified`)."""

    def __init__(
        self,
        store: CertificateStore | None,
        build: BuildContext,
        *,
        ca_bundle: Path | None = None,
        charge_point: ChargePointCertificates | None = None,
    ):
        self._store = store
        self._build = build
        self._ca_bundle = ca_bundle
        self._charge_point = charge_point
        self._built: dict[bool, tuple[tuple[int, int], list[ssl.SSLContext], bool]] = {}

    def contexts(self, *, client_certificate: bool = True) -> list[ssl.SSLContext]:
        """The contexts to try in turn; with `client_certificate`, presenting one if there
        is one."""
        return self._current(client_certificate)[1]

    def client_certificate(self, wanted: bool = True) -> bool:
        """Whether the contexts present a client certificate (security profile 3)."""
        return self._current(wanted)[2]

    def has_roots(self) -> bool:
        """Whether anything but the system's CAs is trusted: an installed CSMS root, or the
        configured CA bundle."""
        bundle = self._ca_bundle is not None and self._ca_bundle.is_file()
        return bool(self._roots()) or bundle

    def verified(self, index: int) -> None:
        """The connection verified with `contexts()[index]`."""
        store = self._store
        if store is None or store.fallback is None:
            return
        if index == 0:
            store.drop_fallback()
        else:
            log.warning(
                "the central system's certificate verifies only with the CSMS root that was"
                " replaced: it stays trusted as the fallback"
            )

    def _current(self, wanted: bool) -> tuple[tuple[int, int], list[ssl.SSLContext], bool]:
        generation = (
            self._store.generation if self._store is not None else 0,
            self._charge_point.generation if self._charge_point is not None else 0,
        )
        built = self._built.get(wanted)
        if built is None or built[0] != generation:
            roots = self._roots()
            context, presented = self._build(_pem(roots), wanted)
            contexts = [context]
            fallback = self._store.fallback if self._store is not None else None
            if fallback is not None:
                contexts.append(self._build(fallback.pem, wanted)[0])
            self._built[wanted] = built = (generation, contexts, presented)
        return built

    def _roots(self) -> list[Installed]:
        return self._store.installed(RootKind.CENTRAL_SYSTEM) if self._store is not None else []


def _pem(roots: list[Installed]) -> str:
    return "".join(root.pem for root in roots)
