"""The file transfer service's one exception, and what a server's refusal says."""

from __future__ import annotations

import enum

from dcocpp.ocpp.errors import OcppError


class Refusal(enum.Enum):
    """A server's refusal that says more than "failed" (the names OCPP's log upload status
    uses for them, in the security whitepaper and 2.0.1 alike)."""

    PERMISSION_DENIED = "PermissionDenied"  # the login or the rights
    NOT_SUPPORTED = "NotSupportedOperation"  # no way to store a file there
    BAD_MESSAGE = "BadMessage"  # the server could not read what it was sent


# HTTP status codes and FTP reply codes (RFC 959) that tell a refusal apart.
_HTTP = {
    400: Refusal.BAD_MESSAGE,
    401: Refusal.PERMISSION_DENIED,
    403: Refusal.PERMISSION_DENIED,
    405: Refusal.NOT_SUPPORTED,
    501: Refusal.NOT_SUPPORTED,
}
_FTP = {
    "500": Refusal.BAD_MESSAGE,
    "501": Refusal.BAD_MESSAGE,
    "502": Refusal.NOT_SUPPORTED,
    "504": Refusal.NOT_SUPPORTED,
    "530": Refusal.PERMISSION_DENIED,
    "532": Refusal.PERMISSION_DENIED,
}


class TransferError(OcppError):
    """A download or upload that did not happen, in an operator's words: the URL with its
    credentials removed, the step, the cause (`ftp://files.example/fw.bin: login refused:
    530 Login incorrect.`). Never holds a URL's user name or password. `refusal` says what
    the server's answer meant, where it tells (None: a failure of another kind)."""

    def __init__(self, message: str, *, refusal: Refusal | None = None):
        super().__init__(message)
        self.refusal = refusal


def http_refusal(status: int) -> Refusal | None:
    return _HTTP.get(status)


def ftp_refusal(reply: str) -> Refusal | None:
    """Of an FTP reply as ftplib's errors carry it (`530 Login incorrect.`)."""
    return _FTP.get(reply.strip()[:3])
