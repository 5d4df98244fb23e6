"""The authorization cache: idTagInfo the central system returned, kept for LocalPreAuthorize
and offline authorization (OCPP 1.6 section 3.5.1)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ocpp.v16.enums import AuthorizationStatus


def _parse_expiry(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class AuthorizationCache:
    """In memory for now; the offline issue persists it."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._clock = clock  # the station's wall clock: expiry dates are wall-clock times

    def update(self, id_tag: str, id_tag_info: dict[str, Any]) -> None:
        """Remember the latest idTagInfo the central system gave for a tag."""
        self._entries[id_tag] = dict(id_tag_info)

    def lookup(self, id_tag: str) -> dict[str, Any] | None:
        """The cached idTagInfo, with an expired Accepted entry reported as Expired."""
        info = self._entries.get(id_tag)
        if info is None:
            return None
        expiry = _parse_expiry(info.get("expiry_date"))
        if expiry is not None and expiry <= self._clock():
            return {**info, "status": AuthorizationStatus.expired}
        return info

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
