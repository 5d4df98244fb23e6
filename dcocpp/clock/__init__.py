"""Time, as every layer reads and writes it: the wall clocks and the one OCPP dateTime format
(`ocpp_time`) and parse (`parse_ocpp_time`). No trio: the pure cores (the connector's rules, the
smart-charging schedules) use it too. The station's clock, which follows the central system's
and notices steps on trio's monotonic clock, is `stationclock`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class WallClock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The system's UTC time (the station's clock is this, following the central system's:
    `dcocpp.clock.stationclock.StationClock`)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def ocpp_time(moment: datetime, timespec: str = "milliseconds") -> str:
    """An aware datetime -> OCPP dateTime: UTC with a Z (`timespec` as `isoformat`'s)."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_ocpp_time(text: str) -> datetime:
    """An OCPP dateTime -> an aware UTC datetime.

    OCPP 1.6 wants UTC; a value without an offset is taken as UTC (some central systems leave
    the Z out), one with another offset is converted. Raises ValueError, also for an instant
    that UTC cannot express (0001-01-01T00:00:00+01:00, 9999-12-31T23:00:00-02:00)."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is outside the range of UTC dates") from None
