"""What a central system may be billed: the checks the billing tests share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dcocpp.hardware.registercheck import JITTER_S, RESOLUTION_WH
from tests.station_harness import Harness


def registers(meter_values: list[dict[str, Any]]) -> list[int]:
    """The Energy.Active.Import.Register readings of MeterValue samples, in order."""
    return [
        int(float(value["value"]))
        for meter_value in meter_values
        for value in meter_value["sampled_value"]
        if value.get("measurand") == "Energy.Active.Import.Register"
    ]


def assert_billed_physically(h: Harness, max_power_w: float) -> None:
    """Every transaction's bill is what a gun of this rating can deliver: meterStop between
    meterStart and meterStart + rating x duration (+ the meter's resolution and timing
    jitter), and every register reported on the way (MeterValues, stop samples) in that
    range and never decreasing."""
    stops = h.csms.received("StopTransaction")
    assert stops
    for stop in stops:
        tx_id = stop["transaction_id"]
        start = h.csms.transactions[tx_id]
        meter_start, meter_stop = start["meter_start"], stop["meter_stop"]
        duration = _seconds(stop["timestamp"]) - _seconds(start["timestamp"]) + JITTER_S
        ceiling = meter_start + max_power_w * duration / 3600 + RESOLUTION_WH
        assert meter_start <= meter_stop <= ceiling, (meter_start, meter_stop, ceiling)
        sampled = registers(
            [
                meter_value
                for payload in h.csms.received("MeterValues")
                if payload.get("transaction_id") == tx_id
                for meter_value in payload["meter_value"]
            ]
        )
        for values in (sampled, registers(stop.get("transaction_data", []))):
            assert values == sorted(values), values
            assert all(meter_start <= wh <= meter_stop for wh in values), (values, meter_stop)


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
