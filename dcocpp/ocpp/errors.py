"""Errors of the OCPP layer. `OcppError` is the one root; nothing else escapes this package."""

from __future__ import annotations

from typing import Any


class OcppError(Exception):
    """Root of every error the OCPP layer raises."""


class TransportError(OcppError):
    """The WebSocket to the peer could not be opened (refused, TLS, HTTP reject, subprotocol).
    `security_event`: the security whitepaper's event this failure is, if any."""

    def __init__(self, message: str, *, security_event: str | None = None):
        super().__init__(message)
        self.security_event = security_event


class UntrustedCertificate(TransportError):
    """The central system's TLS certificate does not verify against what the charger trusts
    (or does not name the host connected to)."""

    def __init__(self, message: str):
        super().__init__(message, security_event="InvalidCentralSystemCertificate")


class ConnectionLost(OcppError):
    """The WebSocket closed while a CALL was outstanding or being sent."""


class CallError(OcppError):
    """An OCPP-J CALLERROR: raised by handlers and validation, and by `call()` when the
    peer answered one. `code` is one of the OCPP 1.6 RPC framework error codes."""

    def __init__(self, code: str, description: str = "", details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description
        self.details = details or {}


class InvalidPayload(OcppError):
    """A payload we were about to send, or a CALLRESULT we received, fails the OCPP schema."""

    def __init__(self, action: str, error: CallError):
        super().__init__(f"{action}: {error}")
        self.action = action
        self.error = error


class UnsendablePayload(InvalidPayload):
    """A payload we were about to send fails the OCPP schema: it was not sent. The charger's
    own bug (the central system has nothing to do with it), so retrying it cannot help."""
