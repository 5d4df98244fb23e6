"""The AuthorizationKey and the Basic-auth password it stands for (OCPP 1.6 security whitepaper,
security profiles 1 and 2).

The central system sets the key over OCPP as hex digits (20 to 40 bytes: 40 to 80 digits), and
the password is the decoded bytes, not the digits (OCTT TC_085): they need not be printable.
The configuration files hold the key the same way. A key that is not hex (one an older dcocpp
took as text, 16 to 40 printable characters) still works as it did then: its text's UTF-8 bytes
are the password, so that an update does not cut a charger off from the central system that
was given that key.
"""

from __future__ import annotations

import re

__all__ = ["MAX_OCTETS", "MIN_OCTETS", "is_hex_key", "password"]

MIN_OCTETS = 20
MAX_OCTETS = 40
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def is_hex_key(text: str) -> bool:
    """Whether `text` is a key as OCPP sends it: 20 to 40 bytes in hex digits."""
    return bool(_HEX.fullmatch(text)) and MIN_OCTETS <= len(text) // 2 <= MAX_OCTETS


def password(key: str) -> bytes:
    """The Basic-auth password of a key: its bytes, or for a legacy text key its UTF-8."""
    return bytes.fromhex(key) if is_hex_key(key) else key.encode()
