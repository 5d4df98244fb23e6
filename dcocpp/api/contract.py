"""What the local API's server and its clients agree on: addresses, the token rule, the fault
kinds. Standard library only, so that `dcocpp status` and `dcocpp sim` never load the server's
web framework."""

from __future__ import annotations

import ipaddress
import re

FAULT_KINDS = ("estop", "earth", "comm", "meter", "lock")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_API = "127.0.0.1:8765"
ID_TAG_MAX_LENGTH = 20  # OCPP 1.6 IdToken is a CiString20
# Where the command line finds the API token (`run` to require it, `status`/`sim` to send it).
TOKEN_ENV = "DCOCPP_API_TOKEN"
TOKEN_MIN_LENGTH = 16
NEEDS_TOKEN = f"not a loopback address, so the API needs a token: set {TOKEN_ENV} (or --api-token)"


class ApiError(Exception):
    """The API server cannot run (e.g. its address is in use or cannot be resolved): `address`
    is where it was to listen (HOST:PORT), `reason` why it cannot."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot serve the API on {address}: {reason}")
        self.address = address
        self.reason = reason


_PORT = re.compile(r"[0-9]{1,9}")


def parse_address(text: str) -> tuple[str, int]:
    """`"HOST:PORT"` -> (host, port); `":PORT"` means 127.0.0.1, IPv6 goes in brackets.

    >>> parse_address("[::1]:8765")
    ('::1', 8765)
    """
    example = "expected HOST:PORT, e.g. 127.0.0.1:8765, :8765 or [::1]:8765"
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}: {example}")
        if not host:
            raise ValueError(f"bad address {text!r}: empty IPv6 address in brackets")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError(f"bad address {text!r}: {example}")
        if ":" in host:
            raise ValueError(f"bad address {text!r}: put an IPv6 address in brackets, {example}")
        host = host or DEFAULT_HOST
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise ValueError(f"bad port {port_text!r} in {text!r}: must be a number 0..65535")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of `parse_address`: brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether serving on `host` (as given to --api) is reachable from this machine only:
    127.0.0.0/8, ::1 (also IPv4-mapped) or `localhost`. 0.0.0.0 and :: are every interface;
    any other host name may resolve to anything, so it is not."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def token_problem(token: str) -> str | None:
    """What is wrong with an API token (never quoting it), or None."""
    if len(token) < TOKEN_MIN_LENGTH:
        return (
            f"must be at least {TOKEN_MIN_LENGTH} characters (make one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        return "must be printable ASCII without spaces (it travels in an HTTP header)"
    return None
