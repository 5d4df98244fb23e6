"""TLS of https:// and ftps:// servers: verified against the system's CA certificates plus the
charger's CA bundle (the file transfer servers are often the central system's own, with a
certificate from its CA, and as often a public CDN)."""

from __future__ import annotations

import ssl
from pathlib import Path

from dcocpp.ocpp.transfer.errors import TransferError
from dcocpp.storage.oserrors import reason


def client_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A verifying client context (host name and chain; TLS 1.2 or newer, as OCPP's security
    profiles require): the system's CAs (OpenSSL's default paths, /etc/ssl/certs on Debian),
    and those in `ca_bundle` when that file exists (like `security.csmsCaBundle`, which
    may be absent: then the system's alone)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle is not None and ca_bundle.is_file():
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except ssl.SSLError as exc:
            raise TransferError(f"CA bundle {ca_bundle}: no certificates in it ({exc})") from exc
        except OSError as exc:
            raise TransferError(f"CA bundle {ca_bundle}: cannot read it: {reason(exc)}") from exc
    return context


def describe(exc: ssl.SSLError) -> str:
    """A TLS failure in an operator's words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the server's certificate is not trusted: {exc.verify_message} "
            "(is its CA in the system's CAs or the CA bundle?)"
        )
    return f"TLS: {exc.reason or exc}"
