"""The time window of a log request (GetDiagnostics' startTime/stopTime, GetLog's
oldestTimestamp/latestTimestamp): either end may be open."""

from __future__ import annotations

from datetime import datetime

from dcocpp.clock import parse_ocpp_time
from dcocpp.ocpp.errors import CallError


def time_window(
    start: str | None, stop: str | None, names: str
) -> tuple[datetime | None, datetime | None]:
    """Both ends parsed (None: open); a CALLERROR PropertyConstraintViolation naming the
    fields (`names`) when one is no dateTime."""
    try:
        return (
            None if start is None else parse_ocpp_time(start),
            None if stop is None else parse_ocpp_time(stop),
        )
    except ValueError:
        raise CallError("PropertyConstraintViolation", f"{names} is no dateTime") from None
