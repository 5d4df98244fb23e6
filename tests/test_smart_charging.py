"""Smart charging through the whole station: charging profiles set, cleared and reported by the
central system (OCTT TC_056..TC_082, docs/conformance.md "Smart charging"), and
their enforcement: the current setpoint each gun's hardware receives, and what the meter values
show, on the simulated guns and on the PLC backend, on virtual time."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call

from dcocpp.clock import parse_ocpp_time
from dcocpp.hardware.ev import EvModel
from dcocpp.hardware.plc.emulated import InProcessPlcHardware
from dcocpp.hardware.simulation import SimulatedHardware
from dcocpp.ocpp.smartcharging import format_datetime
from tests.station_harness import Harness, charger_config, running_station, statuses_of

# Every scenario runs on the simulated guns and on the PLC backend (emulated PLCs on CAN).
pytestmark = pytest.mark.usefixtures("backend")

# The OCTT's <Configured max time deviation> (see tests/test_composite_schedule.py).
DEVIATION = 4
# The guns' own maximum (configs/charger.json): 200 A, 75 kW, nominal 375 V.
MAX_A = 200
SAMPLED = {"MeterValueSampleInterval": 10}


# --- helpers ---------------------------------------------------------------------------------


def setpoint(h: Harness, connector_id: int) -> float:
    """The current limit the gun's hardware holds (the emulated PLC's, on the PLC backend)."""
    hardware = h.station.hardware
    if isinstance(hardware, SimulatedHardware):
        return hardware.state(connector_id).current_limit_a
    assert isinstance(hardware, InProcessPlcHardware)
    return hardware.plcs.state(connector_id).current_limit_a


def wall_now(h: Harness) -> datetime:
    """The station's wall clock, to the second (what a schedule's start looks like)."""
    return h.station.clock.now().replace(microsecond=0)


def schedule(
    periods: list[tuple[int, float | int]],
    *,
    unit: str = "A",
    start: datetime | None = None,
    duration: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "charging_rate_unit": unit,
        "charging_schedule_period": [{"start_period": s, "limit": v} for s, v in periods],
    }
    if start is not None:
        body["start_schedule"] = format_datetime(start)
    if duration is not None:
        body["duration"] = duration
    return body


def profile(
    profile_id: int,
    purpose: str,
    periods: list[tuple[int, float | int]],
    *,
    stack_level: int = 0,
    kind: str = "Absolute",
    transaction_id: int | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    **schedule_fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "charging_profile_id": profile_id,
        "stack_level": stack_level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": kind,
        "charging_schedule": schedule(periods, **schedule_fields),
    }
    if transaction_id is not None:
        body["transaction_id"] = transaction_id
    if valid_from is not None:
        body["valid_from"] = format_datetime(valid_from)
    if valid_to is not None:
        body["valid_to"] = format_datetime(valid_to)
    return body


async def set_profile(h: Harness, connector_id: int, body: dict[str, Any]) -> str:
    result = await h.csms_call(
        call.SetChargingProfile(connector_id=connector_id, cs_charging_profiles=body)
    )
    return str(result.status)


async def composite(
    h: Harness, connector_id: int, duration: int, unit: str | None = "A"
) -> dict[str, Any]:
    result = await h.csms_call(
        call.GetCompositeSchedule(
            connector_id=connector_id, duration=duration, charging_rate_unit=unit
        )
    )
    return {
        "status": result.status,
        "connector_id": result.connector_id,
        "schedule_start": result.schedule_start,
        "charging_schedule": result.charging_schedule,
    }


def periods(result: dict[str, Any]) -> list[tuple[int, Decimal]]:
    return [
        (p["start_period"], Decimal(str(p["limit"])))
        for p in result["charging_schedule"]["charging_schedule_period"]
    ]


def expect(*pairs: tuple[int, float | int | str]) -> list[tuple[int, Decimal]]:
    return [(s, Decimal(str(v))) for s, v in pairs]


async def wait_setpoint(h: Harness, connector_id: int, amps: float, *, limit: float = 1.0) -> None:
    """Until the gun's hardware holds `amps` (within `limit` virtual seconds)."""
    await h.wait_until(
        lambda: setpoint(h, connector_id) == pytest.approx(amps), limit=limit, poll=0.001
    )


def sampled(payload: dict[str, Any]) -> dict[str, float]:
    """measurand -> value of a MeterValues payload's (single) meter value."""
    (value,) = payload["meter_value"]
    return {s["measurand"]: float(s["value"]) for s in value["sampled_value"]}


def periodic(h: Harness, connector_id: int, since: int = 0) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, measurands) of the connector's Sample.Periodic meter values."""
    out = []
    for t, action, p in h.csms.calls[since:]:
        if action == "MeterValues" and p["connector_id"] == connector_id:
            contexts = {s.get("context") for mv in p["meter_value"] for s in mv["sampled_value"]}
            if contexts == {"Sample.Periodic"}:
                out.append((t, sampled(p)))
    return out


async def next_sample(h: Harness, connector_id: int) -> tuple[float, dict[str, float]]:
    since = h.csms.mark()
    await h.wait_until(lambda: len(periodic(h, connector_id, since)) >= 1)
    return periodic(h, connector_id, since)[0]


# --- OCTT conformance cases ----------------------------------------------------------------------


async def test_tc_056_tx_default_profile_then_composite_schedule(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        start = wall_now(h)
        body = profile(1, "TxDefaultProfile", [(0, 10), (100, 16.5)], start=start, duration=300)
        assert await set_profile(h, 1, body) == "Accepted"
        result = await composite(h, 1, 400)
        await wait_setpoint(h, 1, 10)
        assert setpoint(h, 2) == MAX_A  # a connector-1 profile
    x = int((parse_ocpp_time(result["schedule_start"]) - start).total_seconds())
    assert result == {
        "status": "Accepted",
        "connector_id": 1,
        "schedule_start": format_datetime(start + timedelta(seconds=x)),
        "charging_schedule": {
            "duration": 400,
            "start_schedule": format_datetime(start + timedelta(seconds=x)),
            "charging_rate_unit": "A",
            "charging_schedule_period": [
                {"start_period": 0, "limit": 10},
                {"start_period": 100 - x, "limit": Decimal("16.5")},
                # The profile is over: the gun's own maximum (OCPP has no "no limit").
                {"start_period": 300 - x, "limit": MAX_A},
            ],
        },
    }


async def test_tc_057_tx_profile_during_a_transaction(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-057")
        body = profile(1, "TxProfile", [(0, 16), (60, 32)], kind="Relative", transaction_id=tx_id)
        assert await set_profile(h, 1, body) == "Accepted"
        await wait_setpoint(h, 1, 16)
        result = await composite(h, 1, 120)
        started = parse_ocpp_time(h.connector(1).transaction.started_at)  # type: ignore[union-attr]
        # Relative: its periods count from the start of the transaction.
        elapsed = (parse_ocpp_time(result["schedule_start"]) - started).total_seconds()
        assert periods(result) == expect((0, 16), (int(60 - elapsed), 32))
        await trio.sleep(61)
        assert setpoint(h, 1) == 32
        assert h.connector(1).machine.status == "Charging"


async def test_tc_058_1_tx_profile_without_transaction_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        body = profile(1, "TxProfile", [(0, 16)], kind="Relative")
        assert await set_profile(h, 1, body) == "Rejected"
        assert await set_profile(h, 0, body) == "Rejected"  # never on connector 0
        result = await composite(h, 1, 60)
        assert setpoint(h, 1) == MAX_A
    assert periods(result) == expect((0, MAX_A))


async def test_tc_058_2_tx_profile_with_a_wrong_transaction_id_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-058")
        body = profile(1, "TxProfile", [(0, 16)], kind="Relative", transaction_id=tx_id + 1)
        assert await set_profile(h, 1, body) == "Rejected"
        body["transaction_id"] = tx_id
        assert await set_profile(h, 2, body) == "Rejected"  # connector 2 runs no transaction
        await trio.sleep(1)
        assert setpoint(h, 1) == MAX_A


async def test_tc_059_remote_start_with_a_tx_profile(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path), keys=SAMPLED) as h:
        await h.booted()
        since = h.csms.mark()
        await h.station.plug(1)
        body = profile(7, "TxProfile", [(0, 20)], kind="Relative")
        result = await h.csms_call(
            call.RemoteStartTransaction(id_tag="TAG-059", connector_id=1, charging_profile=body)
        )
        assert result.status == "Accepted"
        await h.wait_status(1, "Charging", since=since)
        await wait_setpoint(h, 1, 20)
        await h.wait_until(lambda: h.transaction_id(1) is not None)
        reported = await composite(h, 1, 60)
        _, values = await next_sample(h, 1)
        assert values["Current.Import"] == pytest.approx(20, abs=0.05)
        # The TxProfile leaves with its transaction.
        await h.csms_call(call.RemoteStopTransaction(transaction_id=h.transaction_id(1)))
        await h.wait_calls("StopTransaction")
        await wait_setpoint(h, 1, MAX_A)
        cleared = await h.csms_call(call.ClearChargingProfile(id=7))
        assert cleared.status == "Unknown"
        assert len(h.station.session.charging_profiles.installed) == 0  # type: ignore[union-attr]
    assert periods(reported) == expect((0, 20))


async def test_tc_060_remote_start_with_a_non_tx_profile_rejected(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        await h.station.plug(1)
        for purpose in ("TxDefaultProfile", "ChargePointMaxProfile"):
            body = profile(1, purpose, [(0, 16)], kind="Relative")
            result = await h.csms_call(
                call.RemoteStartTransaction(id_tag="TAG-060", connector_id=1, charging_profile=body)
            )
            assert result.status == "Rejected"
        await trio.sleep(5)
        assert h.csms.received("StartTransaction") == []
        assert h.connector(1).machine.status == "Preparing"


async def test_tc_066_composite_of_three_stacked_purposes(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The exact periods of tests/test_composite_schedule.py::test_tc_066, through the wire."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-066")
        now = wall_now(h)
        start = now - timedelta(seconds=DEVIATION)
        window = {"valid_from": start, "valid_to": now + timedelta(seconds=DEVIATION + 401)}
        cp_max = profile(1, "ChargePointMaxProfile", [(0, 10)], start=start, duration=86404)
        default = profile(
            2,
            "TxDefaultProfile",
            [(0, 6), (60, 10), (120, 8), (180, 15), (260, 8)],
            start=start,
            duration=300 + DEVIATION,
            **window,
        )
        tx = profile(
            3,
            "TxProfile",
            [(0, 8), (50, 11), (140, 16), (200, 6), (240, 12)],
            start=start,
            duration=260 + DEVIATION,
            transaction_id=tx_id,
            **window,
        )
        assert await set_profile(h, 0, cp_max) == "Accepted"
        assert await set_profile(h, 1, default) == "Accepted"
        assert await set_profile(h, 1, tx) == "Accepted"
        result = await composite(h, 1, 400)
        await wait_setpoint(h, 1, 8)
    x = int((parse_ocpp_time(result["schedule_start"]) - start).total_seconds())
    assert result["status"] == "Accepted" and result["connector_id"] == 1
    assert result["charging_schedule"]["duration"] == 400
    assert result["charging_schedule"]["charging_rate_unit"] == "A"
    assert periods(result) == expect(
        (0, 8),
        (50 - x, 10),
        (200 - x, 6),
        (240 - x, 10),
        (260 - x + DEVIATION, 8),
        (300 - x + DEVIATION, 10),
    )


async def test_tc_067_clear_charging_profile(autojump_clock: Any, tmp_path: Path) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        installed = h.station.session.charging_profiles  # type: ignore[union-attr]

        def ids() -> set[int]:
            return {e.profile.charging_profile_id for e in installed.installed}

        async def clear(**criteria: Any) -> str:
            return str((await h.csms_call(call.ClearChargingProfile(**criteria))).status)

        for profile_id, level, limit in ((1, 0, 32), (2, 1, 16), (3, 2, 8)):
            body = profile(profile_id, "TxDefaultProfile", [(0, limit)], stack_level=level)
            body["charging_profile_kind"] = "Relative"
            assert await set_profile(h, 1, body) == "Accepted"
        cp_max = profile(4, "ChargePointMaxProfile", [(0, 100)], kind="Relative")
        assert await set_profile(h, 0, cp_max) == "Accepted"
        await wait_setpoint(h, 1, 8)
        # By id.
        assert await clear(id=3) == "Accepted"
        assert ids() == {1, 2, 4}
        await wait_setpoint(h, 1, 16)
        # By purpose and stack level.
        assert await clear(charging_profile_purpose="TxDefaultProfile", stack_level=1) == "Accepted"
        assert ids() == {1, 4}
        await wait_setpoint(h, 1, 32)
        assert await clear(charging_profile_purpose="TxDefaultProfile", stack_level=1) == "Unknown"
        assert await clear(id=99) == "Unknown"
        # All of them.
        assert await clear() == "Accepted"
        assert ids() == set()
        await wait_setpoint(h, 1, MAX_A)
        assert await clear() == "Unknown"


async def test_tc_072_stacked_tx_default_profiles(autojump_clock: Any, tmp_path: Path) -> None:
    """The exact periods of tests/test_composite_schedule.py::test_tc_072, through the wire."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        now = wall_now(h)
        start = now - timedelta(seconds=DEVIATION)
        window = {"valid_from": start, "valid_to": now + timedelta(seconds=DEVIATION + 401)}
        low = profile(
            1,
            "TxDefaultProfile",
            [(0, 6), (100, 8), (200, 10)],
            start=start,
            duration=400 + DEVIATION,
            **window,
        )
        high = profile(
            2,
            "TxDefaultProfile",
            [(0, 7), (100, 9)],
            stack_level=1,
            start=start,
            duration=150 + DEVIATION,
            **window,
        )
        assert await set_profile(h, 1, low) == "Accepted"
        assert await set_profile(h, 1, high) == "Accepted"
        result = await composite(h, 1, 350)
        await wait_setpoint(h, 1, 7)
    x = int((parse_ocpp_time(result["schedule_start"]) - start).total_seconds())
    assert periods(result) == expect((0, 7), (100 - x, 9), (150 - x + DEVIATION, 8), (200 - x, 10))


async def test_the_longest_composite_schedule_is_at_most_max_periods_and_says_how_far(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """GetCompositeSchedule for 2^31 - 1 s over a daily profile of 24 periods (596,524 periods
    in all): ChargingScheduleMaxPeriods of them, and the answer's duration is the span they
    cover, up to where the first one left out begins."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        start = wall_now(h)
        hourly = [(hour * 3600, 10 + hour) for hour in range(24)]
        body = profile(1, "TxDefaultProfile", hourly, kind="Recurring", start=start)
        body["recurrency_kind"] = "Daily"
        assert await set_profile(h, 0, body) == "Accepted"
        result = await composite(h, 1, 2**31 - 1)
        max_periods = h.store.get_int("ChargingScheduleMaxPeriods")
    assert result["status"] == "Accepted" and max_periods == 24
    x = int((parse_ocpp_time(result["schedule_start"]) - start).total_seconds())
    assert periods(result) == expect(
        (0, 10), *((hour * 3600 - x, 10 + hour) for hour in range(1, 24))
    )
    assert result["charging_schedule"]["duration"] == 86400 - x  # the next day's 10 A


async def test_tc_082_tx_default_profile_during_a_transaction(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A TxDefaultProfile of 6 A arrives while the gun charges at 200 A: the hardware holds
    the new setpoint before the next meter sample, and that sample shows the power drop."""
    measurands = "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage,"
    keys = {**SAMPLED, "MeterValuesSampledData": measurands + "Current.Offered"}
    async with running_station(charger_config(tmp_path), keys=keys) as h:
        await h.booted()
        await h.start_charging(1, "TAG-082")
        before_time, before = await next_sample(h, 1)
        assert before["Current.Import"] == pytest.approx(MAX_A, abs=0.1)
        body = profile(1, "TxDefaultProfile", [(0, 6)], kind="Relative")
        assert await set_profile(h, 0, body) == "Accepted"  # connector 0: every connector
        set_at = trio.current_time()
        await wait_setpoint(h, 1, 6, limit=0.1)
        assert setpoint(h, 2) == 6
        applied_at = trio.current_time()
        after_time, after = await next_sample(h, 1)
        assert h.connector(1).machine.status == "Charging"
    assert applied_at - set_at < 0.1 and applied_at < after_time
    assert after_time - before_time == pytest.approx(10, abs=1e-6)
    assert after["Current.Import"] == pytest.approx(6, abs=0.05)
    assert after["Power.Active.Import"] == pytest.approx(6 * after["Voltage"], rel=0.01)
    assert after["Power.Active.Import"] < before["Power.Active.Import"] / 30
    # What the charger offers follows the limit too.
    assert before["Current.Offered"] == pytest.approx(MAX_A)
    assert after["Current.Offered"] == pytest.approx(6)


# --- enforcement -------------------------------------------------------------------------------


async def test_a_future_period_changes_the_setpoint_at_that_instant(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=SAMPLED) as h:
        await h.booted()
        await h.start_charging(1, "TAG-T")
        start = wall_now(h) + timedelta(seconds=1)
        body = profile(1, "TxDefaultProfile", [(0, 32), (60, 12.5)], start=start, duration=120)
        assert await set_profile(h, 1, body) == "Accepted"
        # Wall time -> trio time of the two changes (the harness's wall clock runs with trio).
        change = trio.current_time() + (start - h.station.clock.now()).total_seconds()
        await trio.sleep_until(change + 0.001)
        assert setpoint(h, 1) == 32
        await trio.sleep_until(change + 59.999)
        assert setpoint(h, 1) == 32
        await trio.sleep_until(change + 60.001)
        if isinstance(h.station.hardware, InProcessPlcHardware):
            await wait_setpoint(h, 1, 12.5, limit=0.05)  # one ConfigCmd on the bus
        assert setpoint(h, 1) == 12.5
        await trio.sleep_until(change + 120.001)
        await wait_setpoint(h, 1, MAX_A, limit=0.05)  # the profile's duration is over
        _, values = await next_sample(h, 1)
    assert values["Current.Import"] == pytest.approx(MAX_A, abs=0.1)


async def test_two_guns_share_the_charge_point_max_profile(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=SAMPLED) as h:
        await h.booted()
        body = profile(1, "ChargePointMaxProfile", [(0, 120)], kind="Relative")
        assert await set_profile(h, 0, body) == "Accepted"
        # Idle guns hold the share they would get if they started now: all of it.
        await wait_setpoint(h, 1, 120)
        await wait_setpoint(h, 2, 120)
        await h.start_charging(1, "TAG-A")
        await wait_setpoint(h, 2, 60)  # would share with gun 1
        assert setpoint(h, 1) == 120  # alone: all of it
        _, alone = await next_sample(h, 1)
        await h.start_charging(2, "TAG-B")
        await wait_setpoint(h, 1, 60)
        await wait_setpoint(h, 2, 60)
        samples = [await next_sample(h, cid) for cid in (1, 2)]
        # A TxDefaultProfile below the share: gun 2 takes 20 A, gun 1 the rest.
        low = profile(2, "TxDefaultProfile", [(0, 20)], kind="Relative")
        assert await set_profile(h, 2, low) == "Accepted"
        await wait_setpoint(h, 2, 20)
        await wait_setpoint(h, 1, 100)
        await h.csms_call(call.RemoteStopTransaction(transaction_id=h.transaction_id(2)))
        await h.wait_calls("StopTransaction")
        await wait_setpoint(h, 1, 120)
        composite_0 = await composite(h, 0, 60)
    assert alone["Current.Import"] == pytest.approx(120, abs=0.05)
    for _, values in samples:
        assert values["Current.Import"] == pytest.approx(60, abs=0.05)
    assert periods(composite_0) == expect((0, 120))  # the station limit itself


async def test_a_zero_limit_suspends_and_a_positive_one_resumes(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=SAMPLED) as h:
        await h.booted()
        await h.start_charging(1, "TAG-0")
        since = h.csms.mark()
        start = wall_now(h)
        body = profile(1, "TxDefaultProfile", [(0, 0), (30, 16)], start=start, duration=3600)
        assert await set_profile(h, 1, body) == "Accepted"
        await h.wait_status(1, "SuspendedEVSE", since=since)
        await h.wait_until(lambda: not h.relay_closed(1), limit=1)
        _, paused = await next_sample(h, 1)
        await h.wait_status(1, "Charging", since=h.csms.mark())
        resumed_at = h.station.clock.now()
        assert setpoint(h, 1) == 16
        await trio.sleep(1)  # the PLC's meter reports the current after its next frames
        _, resumed = await next_sample(h, 1)
        assert h.csms.received("StopTransaction") == []
    assert statuses_of(h, 1, since) == ["SuspendedEVSE", "Charging"]
    assert paused["Current.Import"] == 0 and paused["Power.Active.Import"] == 0
    assert resumed["Current.Import"] == pytest.approx(16, abs=0.05)
    assert (resumed_at - start).total_seconds() == pytest.approx(30, abs=0.5)


async def test_a_zero_limit_before_the_transaction_starts_it_suspended(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        body = profile(1, "TxDefaultProfile", [(0, 0)], kind="Relative")
        assert await set_profile(h, 0, body) == "Accepted"
        await wait_setpoint(h, 1, 0)
        since = h.csms.mark()
        await h.station.plug(1)
        await h.station.present_id(1, "TAG-Z")
        await h.wait_status(1, "SuspendedEVSE", since=since)
        await trio.sleep(5)
        assert not h.relay_closed(1)
        assert (await h.csms_call(call.ClearChargingProfile())).status == "Accepted"
        await h.wait_status(1, "Charging", since=since)
    assert statuses_of(h, 1, since) == ["Preparing", "SuspendedEVSE", "Charging"]


async def test_a_power_limit_becomes_current_at_the_guns_voltage(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path), keys=SAMPLED) as h:
        await h.booted()
        await h.start_charging(1, "TAG-W")
        await next_sample(h, 1)
        volts = h.station.hardware.gun(1).read_meter().voltage_v
        body = profile(1, "TxDefaultProfile", [(0, 11000)], kind="Relative", unit="W")
        assert await set_profile(h, 1, body) == "Accepted"
        await h.wait_until(lambda: setpoint(h, 1) < MAX_A, limit=0.1, poll=0.001)
        # 11 kW at the measured voltage, rounded down to 0.1 A.
        assert 11000 / volts - 0.15 <= setpoint(h, 1) <= 11000 / volts
        _, values = await next_sample(h, 1)
        in_watts = await composite(h, 1, 60, "W")
    assert values["Power.Active.Import"] == pytest.approx(11000, rel=0.005)
    assert values["Power.Active.Import"] <= 11000 * 1.001
    assert periods(in_watts) == expect((0, 11000))


async def test_a_power_limit_follows_the_rising_battery_voltage(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """A small battery at 11 kW: in 10 minutes its voltage rises by about 6 %. The current is
    converted again as it rises (every RECONVERT_S), so the power stays at the limit rather
    than creeping up with the voltage."""
    async with running_station(charger_config(tmp_path), keys=SAMPLED) as h:
        await h.booted()
        await h.start_charging(1, "TAG-W", ev=EvModel(capacity_wh=10_000, soc=20))
        body = profile(1, "TxDefaultProfile", [(0, 11000)], kind="Relative", unit="W")
        assert await set_profile(h, 1, body) == "Accepted"
        await h.wait_until(lambda: setpoint(h, 1) < MAX_A, limit=0.1, poll=0.001)
        first = setpoint(h, 1)
        volts_before = h.station.hardware.gun(1).read_meter().voltage_v
        await trio.sleep(600)
        _, values = await next_sample(h, 1)
        volts_after = h.station.hardware.gun(1).read_meter().voltage_v
        last = setpoint(h, 1)
    assert volts_after > volts_before * 1.05
    assert last < first * 0.96
    assert 11000 * 0.98 <= values["Power.Active.Import"] <= 11000 * 1.005


async def test_a_limit_that_only_follows_the_voltage_is_logged_once(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A limit in W converted again at the rising voltage every RECONVERT_S is the same fact
    to the operator: one INFO line when the limit changes, the conversions at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="dcocpp.station.limits")
    async with running_station(charger_config(tmp_path), keys=SAMPLED) as h:
        await h.booted()
        await h.start_charging(1, "TAG-W", ev=EvModel(capacity_wh=10_000, soc=20))
        body = profile(1, "TxDefaultProfile", [(0, 11000)], kind="Relative", unit="W")
        assert await set_profile(h, 1, body) == "Accepted"
        await h.wait_until(lambda: setpoint(h, 1) < MAX_A, limit=0.1, poll=0.001)
        first = setpoint(h, 1)
        await trio.sleep(600)
        assert h.station.limits is not None
        last = h.station.limits.applied[1]  # the PLC's own may still be on its way
        # Up to now: virtual time goes on while the station stops (its database closes in a
        # worker thread), and with it the conversions.
        lines = [
            (record.levelno, record.getMessage())
            for record in caplog.records
            if record.getMessage().startswith("connector 1: current limit ")
        ]
    assert [text for level, text in lines if level == logging.INFO] == [
        f"connector 1: current limit {MAX_A:.1f} A",  # at boot
        f"connector 1: current limit {first:.1f} A",  # the profile
    ]
    conversions = [text for level, text in lines if level == logging.DEBUG]
    assert len(conversions) >= 10  # every RECONVERT_S while the voltage rose
    assert conversions[-1] == f"connector 1: current limit {last} A (at the voltage measured now)"


@pytest.mark.usefixtures("backend")
async def test_a_limit_sent_again_after_a_fault_is_not_logged_again(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Hardware back from a fault gets its setpoint again (it may have lost it); for the
    operator that is the same limit, logged at INFO once."""
    caplog.set_level(logging.DEBUG, logger="dcocpp.station.limits")
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        for _ in range(3):
            await h.station.set_fault(1, "earth", True)
            await h.station.set_fault(1, "earth", False)
    infos = [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.INFO
        and record.getMessage().startswith("connector 1: current limit ")
    ]
    assert infos == [f"connector 1: current limit {MAX_A:.1f} A"]


async def test_profiles_survive_a_restart_but_tx_profiles_do_not(
    autojump_clock: Any, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-R")
        cp_max = profile(1, "ChargePointMaxProfile", [(0, 150)], kind="Relative")
        default = profile(2, "TxDefaultProfile", [(0, 40.5)], kind="Relative")
        tx = profile(3, "TxProfile", [(0, 10)], kind="Relative", transaction_id=tx_id)
        assert await set_profile(h, 0, cp_max) == "Accepted"
        assert await set_profile(h, 2, default) == "Accepted"
        assert await set_profile(h, 1, tx) == "Accepted"
        await wait_setpoint(h, 1, 10)
    async with running_station(config) as h:
        await h.booted()
        installed = h.station.session.charging_profiles.installed  # type: ignore[union-attr]
        assert {(e.connector_id, e.profile.charging_profile_id) for e in installed} == {
            (0, 1),
            (2, 2),
        }
        await wait_setpoint(h, 2, 40.5)
        assert setpoint(h, 1) == 150  # its own composite, under the station limit
        reported = await composite(h, 2, 60)
    assert periods(reported) == expect((0, "40.5"))


async def test_configured_limits_are_enforced(autojump_clock: Any, tmp_path: Path) -> None:
    """ChargeProfileMaxStackLevel 10, ChargingScheduleMaxPeriods 24,
    MaxChargingProfilesInstalled 20 (configs/ocpp16-config.json)."""
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        keys = await h.csms_call(
            call.GetConfiguration(
                key=[
                    "ChargeProfileMaxStackLevel",
                    "ChargingScheduleAllowedChargingRateUnit",
                    "ChargingScheduleMaxPeriods",
                    "MaxChargingProfilesInstalled",
                    "SupportedFeatureProfiles",
                ]
            )
        )
        too_high = profile(1, "TxDefaultProfile", [(0, 16)], kind="Relative", stack_level=11)
        too_long = profile(1, "TxDefaultProfile", [(s, 16) for s in range(0, 250, 10)])
        too_long["charging_profile_kind"] = "Relative"
        statuses = [await set_profile(h, 1, too_high), await set_profile(h, 1, too_long)]
        for level in range(11):  # 11 + 9 = 20 profiles installed
            body = profile(10 + level, "TxDefaultProfile", [(0, 16)], kind="Relative")
            body["stack_level"] = level
            statuses.append(await set_profile(h, 1, body))
        for level in range(9):
            body = profile(30 + level, "TxDefaultProfile", [(0, 16)], kind="Relative")
            body["stack_level"] = level
            statuses.append(await set_profile(h, 2, body))
        extra = profile(50, "TxDefaultProfile", [(0, 16)], kind="Relative", stack_level=9)
        statuses.append(await set_profile(h, 2, extra))
        # Replacing one (same connector, purpose and stackLevel) is no extra profile.
        again = profile(51, "TxDefaultProfile", [(0, 8)], kind="Relative", stack_level=8)
        statuses.append(await set_profile(h, 2, again))
        wrong_connector = profile(60, "ChargePointMaxProfile", [(0, 16)], kind="Relative")
        statuses.append(await set_profile(h, 1, wrong_connector))
        statuses.append(await set_profile(h, 3, again))  # no connector 3
    reported = {k["key"]: (k["value"], k["readonly"]) for k in keys.configuration_key}
    profiles, _ = reported.pop("SupportedFeatureProfiles")
    assert "SmartCharging" in profiles.split(",")
    assert reported == {
        "ChargeProfileMaxStackLevel": ("10", True),
        "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", True),
        "ChargingScheduleMaxPeriods": ("24", True),
        "MaxChargingProfilesInstalled": ("20", True),
    }
    assert statuses == ["Rejected", "Rejected"] + ["Accepted"] * 20 + [
        "Rejected",
        "Accepted",
        "Rejected",
        "Rejected",
    ]


async def test_without_the_feature_profile_nothing_is_taken(
    autojump_clock: Any, tmp_path: Path
) -> None:
    async with running_station(charger_config(tmp_path)) as h:
        await h.booted()
        h.store.set_value("SupportedFeatureProfiles", "Core,RemoteTrigger")
        body = profile(1, "TxDefaultProfile", [(0, 6)], kind="Relative")
        assert await set_profile(h, 1, body) == "NotSupported"
        cleared = await h.csms_call(call.ClearChargingProfile())
        reported = await composite(h, 1, 60)
        remote = await h.csms_call(
            call.RemoteStartTransaction(
                id_tag="TAG-N",
                connector_id=1,
                charging_profile=profile(2, "TxProfile", [(0, 6)], kind="Relative"),
            )
        )
    assert cleared.status == "Unknown"
    assert reported["status"] == "Rejected" and reported["charging_schedule"] is None
    assert remote.status == "Rejected"
