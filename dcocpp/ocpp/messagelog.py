"""The OCPP message log: every frame in and out, with a timestamp, one line each.

It is a plain stdlib logger ("dcocpp.messages") so that where it goes (a size-rotated file under
the log directory, see `dcocpp.logs`) is decided in one place. Frames that would reveal the
AuthorizationKey are redacted before they reach any handler.
"""

from __future__ import annotations

import json
import logging

MESSAGE_LOGGER = "dcocpp.messages"
_SECRET_KEYS = ("AuthorizationKey",)
REDACTED = "<redacted>"


def redact(text: str) -> str:
    """Hide the value of a ChangeConfiguration that sets a secret key."""
    if not any(key in text for key in _SECRET_KEYS):  # cheap test first: frames are hot
        return text
    try:
        frame = json.loads(text)
        payload = frame[3]
        if frame[0] == 2 and payload.get("key") in _SECRET_KEYS and "value" in payload:
            payload["value"] = REDACTED
            return json.dumps(frame, separators=(",", ":"))
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        pass
    return text


class MessageLog:
    """Writes `<peer> <direction> <frame>` lines; direction is `>>` for sent, `<<` received."""

    def __init__(self, peer: str, logger: logging.Logger | None = None):
        self.peer = peer
        self._logger = logger or logging.getLogger(MESSAGE_LOGGER)

    def sent(self, text: str) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            self._logger.info("%s >> %s", self.peer, redact(text))

    def received(self, text: str | bytes) -> None:
        if self._logger.isEnabledFor(logging.INFO):
            if isinstance(text, bytes):
                text = text.decode("utf-8", "backslashreplace")
            self._logger.info("%s << %s", self.peer, redact(text))

    def note(self, what: str) -> None:
        """A line about the connection itself (opened, closed, dropped frame)."""
        self._logger.info("%s -- %s", self.peer, what)
