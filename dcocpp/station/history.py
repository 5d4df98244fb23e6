"""The session history as the operator reads it (`GET /api/transactions`): the database's
sessions with what they billed, and each one's meter values as points of a plot.

Figures come from what the charger sent the central system: the start and stop readings
(meterStart, meterStop: the energy), and the MeterValue samples of its MeterValues and
StopTransaction.transactionData. The peak power is the highest sampled Power.Active.Import,
or where none was sampled the steepest rise of the energy register between two readings; the
average is the energy over the duration. Pure functions on the storage layer's rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from dcocpp.clock import parse_ocpp_time
from dcocpp.storage.database import SessionRow

# Measurand -> (the point's field, the factor from each unit to the field's).
_MEASURANDS: dict[str, tuple[str, dict[str, float]]] = {
    "Energy.Active.Import.Register": ("energyWh", {"Wh": 1.0, "kWh": 1000.0}),
    "Power.Active.Import": ("powerW", {"W": 1.0, "kW": 1000.0}),
    "Current.Import": ("currentA", {"A": 1.0}),
    "Current.Offered": ("offeredA", {"A": 1.0}),
    "Voltage": ("voltageV", {"V": 1.0}),
    "SoC": ("soc", {"Percent": 1.0}),
}
_DEFAULT_UNITS = {
    "Energy.Active.Import.Register": "Wh",
    "Power.Active.Import": "W",
    "Current.Import": "A",
    "Current.Offered": "A",
    "Voltage": "V",
    "SoC": "Percent",
}
_FIELDS = ("energyWh", "powerW", "currentA", "offeredA", "voltageV", "soc")


def points(session: SessionRow, samples: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The session's readings in time order: {"at": OCPP dateTime, and per field sampled
    (energyWh, powerW, currentA, offeredA, voltageV, soc) its value}; the start and stop
    readings are points too. Samples that cannot be read (no time, a value that is no number,
    a unit that is not known) are left out."""
    found: list[tuple[datetime, dict[str, Any]]] = []
    start = _parsed(session.started_at)
    if start is not None:
        found.append((start, {"at": session.started_at, "energyWh": float(session.meter_start)}))
    for sample in samples:
        at = sample.get("timestamp")
        when = _parsed(at)
        if when is None:
            continue
        point: dict[str, Any] = {"at": at}
        for value in sample.get("sampled_value") or ():
            if not isinstance(value, Mapping):
                continue
            measurand = value.get("measurand", "Energy.Active.Import.Register")
            known = _MEASURANDS.get(measurand)
            if known is None:
                continue
            field, units = known
            factor = units.get(value.get("unit") or _DEFAULT_UNITS[measurand])
            number = _number(value.get("value"))
            if factor is None or number is None or field in point:
                continue
            point[field] = number * factor
        if len(point) > 1:
            found.append((when, point))
    stop = _parsed(session.stopped_at)
    if stop is not None and session.meter_stop is not None:
        found.append((stop, {"at": session.stopped_at, "energyWh": float(session.meter_stop)}))
    found.sort(key=lambda item: item[0])
    return [point for _, point in found]


def summary(session: SessionRow, series: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A session of the history: ids, times, reason, energy (Wh), duration (s), peak and
    average power (kW); the stop's fields are None while it runs."""
    running = session.stopped_at is None
    energy = None if session.meter_stop is None else session.meter_stop - session.meter_start
    start, stop = _parsed(session.started_at), _parsed(session.stopped_at)
    duration = None if start is None or stop is None else (stop - start).total_seconds()
    average = (
        None
        if energy is None or not duration or duration <= 0
        else round(energy / (duration / 3600) / 1000, 3)
    )
    peak = _peak_w(series)
    return {
        "id": session.id,
        "transactionId": session.transaction_id,
        "connectorId": session.connector_id,
        "idTag": session.id_tag,
        "startedAt": session.started_at,
        "stoppedAt": session.stopped_at,
        # StopTransaction leaves the reason out when it is Local (OCPP 1.6 7.42).
        "reason": None if running else session.reason or "Local",
        "meterStartWh": session.meter_start,
        "meterStopWh": session.meter_stop,
        "energyWh": energy,
        "durationS": duration,
        "peakKw": None if peak is None else round(peak / 1000, 3),
        "averageKw": average,
    }


def _peak_w(series: Sequence[Mapping[str, Any]]) -> float | None:
    powers = [point["powerW"] for point in series if "powerW" in point]
    if powers:
        return max(powers)
    rises = []
    readings = [
        (when, point["energyWh"])
        for point in series
        if "energyWh" in point and (when := _parsed(point["at"])) is not None
    ]
    for (t0, e0), (t1, e1) in itertools.pairwise(readings):
        seconds = (t1 - t0).total_seconds()
        if seconds > 0:
            rises.append((e1 - e0) * 3600 / seconds)
    return max(rises) if rises else None


def _parsed(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_ocpp_time(text)
    except ValueError:
        return None


def _number(text: Any) -> float | None:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None
