"""A wall clock that steps (NTP, an operator) and a central system whose time differs, through
the whole station on virtual time (issue 12, item 6): transaction timestamps never go back,
durations and Relative charging profiles follow the monotonic clock, clock-aligned values stay
on the grid, and the station's clock follows the central system's beyond the threshold."""

from __future__ import annotations

import itertools
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call

from dcocpp.clock import ocpp_time, parse_ocpp_time
from dcocpp.clock.stationclock import SYNC_THRESHOLD_S, TrioWallClock
from tests.csms import FakeCsms
from tests.station_harness import WALL_START, Harness, charger_config, running_station
from tests.test_smart_charging import profile, set_profile, setpoint, wait_setpoint

pytestmark = pytest.mark.usefixtures("backend")

HOUR = timedelta(hours=1)
SAMPLE_INTERVAL = 60


def meter_value_times(h: Harness, transaction_id: int | None) -> list[tuple[float, str, str]]:
    """(arrival, timestamp, context) of every MeterValue of the transaction (None: of none),
    in order."""
    out = []
    for arrival, action, payload in h.csms.calls:
        if action == "MeterValues" and payload.get("transaction_id") == transaction_id:
            for value in payload["meter_value"]:
                context = value["sampled_value"][0].get("context", "Sample.Periodic")
                out.append((arrival, value["timestamp"], context))
    return out


async def sleep_until_elapsed(began: float, seconds: float) -> None:
    await trio.sleep_until(began + seconds)


async def test_a_wall_clock_step_back_and_forward_during_a_transaction(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The clock steps back an hour 150 s into a transaction with a Relative 10 A -> 16 A
    profile and periodic meter values, and forward an hour 330 s in: the StopTransaction is
    not stamped before the StartTransaction, no timestamp of the transaction goes back, the
    profile's limit is what it says for the time charged (10 A until 600 s, at the next
    unrelated event too, then 16 A), and the meter values keep their 60 s period."""
    caplog.set_level(logging.INFO)
    origin = trio.current_time()
    system = TrioWallClock(WALL_START)
    config = charger_config(tmp_path)
    keys = {"MeterValueSampleInterval": SAMPLE_INTERVAL, "ClockAlignedDataInterval": 0}
    async with running_station(config, clock=system, keys=keys) as h:
        await h.booted()
        tx_id = await h.start_charging(1, "TAG-CLOCK")
        began = h.csms.calls[-1][0]  # about when it started (the Charging status)
        body = profile(1, "TxProfile", [(0, 10), (600, 16)], kind="Relative", transaction_id=tx_id)
        assert await set_profile(h, 1, body) == "Accepted"
        await wait_setpoint(h, 1, 10)

        await sleep_until_elapsed(began, 150)
        system.offset = -HOUR  # NTP steps the system clock back
        await sleep_until_elapsed(began, 200)
        await h.hardware.plug(2)  # an unrelated event: the limits are recomputed
        await trio.sleep(1)
        assert setpoint(h, 1) == 10

        await sleep_until_elapsed(began, 330)
        system.offset = timedelta(0)  # and forward again
        await sleep_until_elapsed(began, 400)
        await h.hardware.unplug(2)
        await trio.sleep(1)
        assert setpoint(h, 1) == 10
        await sleep_until_elapsed(began, 595)
        assert setpoint(h, 1) == 10
        await wait_setpoint(h, 1, 16, limit=10)

        # Back once more: the StopTransaction comes while the clock is behind the start.
        system.offset = -HOUR
        await trio.sleep(5)
        await h.csms_call(call.RemoteStopTransaction(transaction_id=tx_id))
        (stop,) = await h.wait_calls("StopTransaction")

    (start,) = h.csms.received("StartTransaction")
    started = parse_ocpp_time(start["timestamp"])
    assert parse_ocpp_time(stop["timestamp"]) >= started
    samples = meter_value_times(h, tx_id)
    stamps = [parse_ocpp_time(stamp) for _, stamp, _ in samples]
    assert stamps and stamps == sorted(stamps) and stamps[0] >= started
    assert parse_ocpp_time(stop["timestamp"]) >= stamps[-1]
    for sample in stop.get("transaction_data", []):
        assert parse_ocpp_time(sample["timestamp"]) >= started
    # While the clock was right, the timestamps are its time: the truth, not clamped.
    right = [
        (stamp, ocpp_time(WALL_START + timedelta(seconds=t - origin)))
        for t, stamp, _ in samples
        if t < began + 150
    ]
    assert right and all(stamp == truth for stamp, truth in right)
    # Periodic meter values every 60 s of the monotonic clock, through both steps.
    periodic = [t for t, _, context in samples if context == "Sample.Periodic"]
    assert len(periodic) >= 10
    assert [round(b - a, 6) for a, b in itertools.pairwise(periodic)] == [SAMPLE_INTERVAL] * (
        len(periodic) - 1
    )
    stepped = [r.getMessage() for r in caplog.records if "the system clock stepped" in r.message]
    assert len(stepped) == 3, stepped
    assert "-3600.0 s" in stepped[0] and "+3600.0 s" in stepped[1]
    behind = [r for r in caplog.records if "behind the transaction's last message" in r.message]
    assert len(behind) == 2  # once per step back, not once per message


async def test_a_remote_start_profile_outlives_a_forward_step_of_the_clock(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """The TxProfile of a RemoteStartTransaction waits for its EV ConnectionTimeOut seconds
    of the monotonic clock: a clock that steps an hour forward meanwhile does not drop it."""
    system = TrioWallClock(WALL_START)
    async with running_station(charger_config(tmp_path), clock=system) as h:
        await h.booted()
        body = profile(7, "TxProfile", [(0, 20)], kind="Relative")
        result = await h.csms_call(
            call.RemoteStartTransaction(id_tag="TAG-REMOTE", connector_id=1, charging_profile=body)
        )
        assert result.status == "Accepted"
        system.offset = HOUR
        await trio.sleep(10)
        since = h.csms.mark()
        await h.station.plug(1)
        await h.wait_status(1, "Charging", since=since)
        await wait_setpoint(h, 1, 20)


async def test_clock_aligned_meter_values_stay_on_the_grid_when_the_clock_steps(
    autojump_clock: Any, tmp_path: Path
) -> None:
    """ClockAlignedDataInterval 900 s: the clock reads 23:50:30 and steps back 7 minutes; the
    next Sample.Clock value is taken at 23:45:00 by the new time, not at the instant the old
    time had planned (00:00 then, 23:53 by the new time). Outside a transaction: within one,
    its timestamp would not go back before the transaction's last message."""
    origin = trio.current_time()
    system = TrioWallClock(WALL_START)
    async with running_station(charger_config(tmp_path), clock=system) as h:
        await h.booted()

        def aligned() -> list[str]:
            times = meter_value_times(h, None)
            return [stamp for _, stamp, context in times if context == "Sample.Clock"]

        await trio.sleep_until(origin + 30)
        system.offset = -timedelta(minutes=7)
        await h.wait_until(lambda: bool(aligned()), limit=600)
    assert aligned() == ["2026-11-23T23:45:00.000Z"]


# --- following the central system's time ------------------------------------------------------


def time_corrections(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "following the central system's time" in r.message
    ]


def setting_system_time(h: Harness) -> list[dict[str, Any]]:
    return [
        p for p in h.csms.received("SecurityEventNotification") if p["type"] == "SettingSystemTime"
    ]


async def test_the_clock_follows_a_central_system_an_hour_off(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A central system an hour ahead: the BootNotification.conf sets the station's clock to
    its time (one WARNING line with the old and the new time, a SettingSystemTime security
    event); when its time moves another hour, the next Heartbeat.conf does it again. The
    transaction messages are stamped by the central system's time from then on."""
    caplog.set_level(logging.INFO)
    central = TrioWallClock(WALL_START)
    central.offset = HOUR
    csms = FakeCsms(clock=central, security_events=True)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        await h.wait_until(lambda: len(setting_system_time(h)) == 1)
        assert abs((h.station.clock.now() - central.now()).total_seconds()) < 1
        (first,) = time_corrections(caplog)
        assert "BootNotification" in first and re.search(r"\+3(599|600)\.\d s", first)
        assert "T23:50:00" in first and "T00:50:00" in first  # the old and the new time

        central.offset = 2 * HOUR
        since = h.csms.mark()
        await h.wait_calls("Heartbeat", since=since, limit=301)
        await h.wait_until(lambda: len(setting_system_time(h)) == 2)
        assert abs((h.station.clock.now() - central.now()).total_seconds()) < 1
        second = time_corrections(caplog)[1]
        assert "Heartbeat" in second and re.search(r"\+3(599|600)\.\d s", second)

        await h.start_charging(1, "TAG-SYNCED")
    (start,) = h.csms.received("StartTransaction")
    assert abs((parse_ocpp_time(start["timestamp"]) - central.now()).total_seconds()) < 400
    events = setting_system_time(h)
    assert all(e["tech_info"] and "central system" in e["tech_info"] for e in events)
    assert parse_ocpp_time(events[0]["timestamp"]) > WALL_START + HOUR - timedelta(seconds=5)


async def test_a_difference_within_the_threshold_is_not_followed(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    central = TrioWallClock(WALL_START)
    central.offset = timedelta(seconds=SYNC_THRESHOLD_S - 1)
    csms = FakeCsms(clock=central, security_events=True)
    async with running_station(charger_config(tmp_path), csms) as h:
        await h.booted()
        await h.wait_calls("Heartbeat", limit=301)
        await trio.sleep(1)
        assert h.station.clock.offset == timedelta(0)
    assert time_corrections(caplog) == []
    assert setting_system_time(h) == []


async def test_a_system_clock_step_asks_the_central_systems_time_at_once(
    autojump_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The system clock steps back an hour (a wrong NTP server) while the central system's
    time is right: the step is logged, a Heartbeat goes out at once (not after the 300 s
    interval), and its answer sets the station's clock right again."""
    caplog.set_level(logging.INFO)
    system = TrioWallClock(WALL_START)
    csms = FakeCsms(clock=TrioWallClock(WALL_START), security_events=True)
    async with running_station(charger_config(tmp_path), csms, clock=system) as h:
        await h.booted()
        await trio.sleep(10)
        since = h.csms.mark()
        stepped_at = trio.current_time()
        system.offset = -HOUR
        await h.wait_calls("Heartbeat", since=since, limit=5)
        await h.wait_until(lambda: len(setting_system_time(h)) == 2, limit=5)
        assert trio.current_time() - stepped_at < 5
        assert abs((h.station.clock.now() - csms.clock.now()).total_seconds()) < 1  # type: ignore[union-attr]
    assert any("the system clock stepped" in r.message for r in caplog.records)
    system_event, followed = setting_system_time(h)
    assert "system clock" in system_event["tech_info"]
    assert "central system" in followed["tech_info"]
