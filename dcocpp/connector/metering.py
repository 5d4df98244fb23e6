"""Meter readings as OCPP MeterValues: measurands, units, contexts, and clock alignment."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ocpp.v16.enums import Measurand, ReadingContext, UnitOfMeasure

from dcocpp.hardware.interface import MeterReading


def seconds_to_next_aligned(now: datetime, interval: int) -> float:
    """Seconds until the next multiple of `interval` seconds after midnight UTC (OCPP 1.6
    ClockAlignedDataInterval)."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = (now - midnight).total_seconds()
    return interval - (elapsed % interval) or interval


# measurand -> (unit, function giving the value from a reading and the offered current)
_MEASURANDS: dict[str, tuple[UnitOfMeasure, Any]] = {
    Measurand.energy_active_import_register: (UnitOfMeasure.wh, lambda r, _: round(r.energy_wh)),
    Measurand.power_active_import: (UnitOfMeasure.w, lambda r, _: round(r.power_w, 1)),
    Measurand.current_import: (UnitOfMeasure.a, lambda r, _: round(r.current_a, 2)),
    Measurand.voltage: (UnitOfMeasure.v, lambda r, _: round(r.voltage_v, 1)),
    Measurand.soc: (UnitOfMeasure.percent, lambda r, _: None if r.soc is None else round(r.soc, 1)),
    Measurand.current_offered: (UnitOfMeasure.a, lambda _, offered: round(offered, 1)),
    Measurand.power_offered: (
        UnitOfMeasure.w,
        lambda r, offered: round(offered * r.voltage_v, 1),
    ),
}


# What this charger can measure: SupportedMeasurands must not promise more (the station hands
# this to the configuration store, which refuses a key file that does).
MEASURANDS = frozenset(_MEASURANDS)


def meter_value(
    reading: MeterReading,
    measurands: Iterable[str],
    context: ReadingContext,
    timestamp: str,
    *,
    offered_a: float = 0.0,
) -> dict[str, Any] | None:
    """One MeterValue (snake_case, ready for the v16 dataclasses) with a sampled value per
    configured measurand this meter can provide now (SoC only while the EV tells it); None
    when it can provide none of them: OCPP has no MeterValue without a sampled value."""
    sampled = []
    for measurand in measurands:
        spec = _MEASURANDS.get(measurand)
        if spec is None:
            continue  # SupportedMeasurands keeps these out; a caller's list may not
        unit, value_of = spec
        value = value_of(reading, offered_a)
        if value is None:
            continue
        entry = {"value": str(value), "context": context, "measurand": measurand, "unit": unit}
        if measurand == Measurand.soc:
            entry["location"] = "EV"
        sampled.append(entry)
    if not sampled:
        return None
    return {"timestamp": timestamp, "sampled_value": sampled}
