"""The station's clock on its own (dcocpp.clock): steps of the system clock noticed,
slewing not mistaken for one, the central system's time followed only beyond the threshold,
plausible and not too often, and a transaction's timestamps never going back."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from dcocpp.clock.stationclock import (
    CHECK_INTERVAL_S,
    FOLLOW_INTERVAL_S,
    LATEST,
    SYNC_THRESHOLD_S,
    ClockStep,
    StationClock,
    TransactionClock,
    TrioWallClock,
)

START = datetime(2026, 11, 23, 23, 50, tzinfo=UTC)


class SlewingClock(TrioWallClock):
    """A system clock that NTP slews: `rate` seconds per second faster than trio's."""

    def __init__(self, start: datetime, rate: float):
        super().__init__(start)
        self._began = trio.current_time()
        self.rate = rate

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=(trio.current_time() - self._began) * self.rate)


def steps_of(clock: StationClock) -> list[ClockStep]:
    steps: list[ClockStep] = []
    clock.subscribe(steps.append)
    return steps


async def test_a_step_of_the_system_clock_is_noticed_logged_and_told(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    system = TrioWallClock(START)
    clock = StationClock(system)
    steps = steps_of(clock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.watch)
        await trio.sleep(10)
        system.offset = -timedelta(hours=1)
        await trio.sleep(CHECK_INTERVAL_S + 0.1)  # noticed within one interval
        nursery.cancel_scope.cancel()
    (step,) = steps
    assert step.system and step.seconds == pytest.approx(-3600)
    assert step.after == step.before - timedelta(hours=1)
    assert clock.now() == system.now()  # passed through: the system's time is the station's
    (line,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "the system clock stepped" in line.message and "-3600.0 s" in line.message


async def test_slewing_and_small_jitter_are_no_step(autojump_clock: Any) -> None:
    """NTP slewing at 500 ppm for a day, read once an hour: no step."""
    clock = StationClock(SlewingClock(START, rate=0.0005))
    steps = steps_of(clock)
    for _ in range(24):
        clock.now()
        await trio.sleep(3600)
    assert steps == []


async def test_the_central_systems_time_is_followed_beyond_the_threshold_with_half_the_round_trip(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = StationClock(TrioWallClock(START))
    steps = steps_of(clock)
    assert clock.follow(START + timedelta(seconds=SYNC_THRESHOLD_S - 0.5), 0.0, "Heartbeat") is None
    # 4 s off, and written some 2 s ago (half the 4 s round trip): 6 s, but it may be 4 or 8.
    assert clock.follow(START + timedelta(seconds=4), 4.0, "Heartbeat") is None
    assert steps == [] and clock.offset == timedelta(0)
    step = clock.follow(START - timedelta(hours=1), 2.0, "BootNotification")
    assert step is not None and not step.system
    # The central system's time plus half the round trip (1 s).
    assert clock.now() == START - timedelta(hours=1) + timedelta(seconds=1)
    assert steps == [step] and step.seconds == pytest.approx(-3599)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "BootNotification.conf" in line and "2.000 s round trip" in line
    assert "2026-11-23T23:50:00.000Z -> 2026-11-23T22:50:01.000Z (-3599.0 s" in line


async def test_an_implausible_or_flapping_central_time_is_not_followed(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = StationClock(TrioWallClock(START))
    for wrong in (datetime(1970, 1, 1, tzinfo=UTC), LATEST, datetime(9999, 12, 31, tzinfo=UTC)):
        assert clock.follow(wrong, 0.0, "Heartbeat") is None
    assert clock.offset == timedelta(0)
    assert sum("not plausible" in r.message for r in caplog.records) == 3
    assert clock.follow(START + timedelta(hours=1), 0.0, "Heartbeat") is not None
    # Back again at once (a central system that answers triggered Heartbeats so): not yet.
    await trio.sleep(FOLLOW_INTERVAL_S - 1)
    assert clock.follow(START, 0.0, "Heartbeat") is None
    assert clock.offset == timedelta(hours=1)
    await trio.sleep(1)
    assert clock.follow(START + timedelta(seconds=FOLLOW_INTERVAL_S), 0.0, "Heartbeat") is not None
    assert abs(clock.offset) < timedelta(seconds=1)


async def test_an_offset_ends_when_the_system_clock_catches_up(autojump_clock: Any) -> None:
    """The system clock was an hour slow (no NTP yet at boot) and the central system's time
    was followed; when NTP steps the system clock forward that hour, the station's clock does
    not move: the offset is no longer needed."""
    system = TrioWallClock(START - timedelta(hours=1))
    clock = StationClock(system)
    steps = steps_of(clock)
    clock.now()
    assert clock.follow(START, 0.0, "BootNotification") is not None
    await trio.sleep(100)
    system.offset = timedelta(hours=1)
    assert clock.now() == START + timedelta(seconds=100)
    assert clock.offset == timedelta(0)
    assert [s.system for s in steps] == [False, True]
    assert steps[1].seconds == pytest.approx(0)


async def test_a_transaction_stamps_never_go_back_and_it_counts_monotonic_time(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    system = TrioWallClock(START)
    times = TransactionClock(StationClock(system), "connector 1")
    assert times.started_at == "2026-11-23T23:50:00.000Z"
    await trio.sleep(100)
    assert times.stamp() == "2026-11-23T23:51:40.000Z"
    system.offset = -timedelta(hours=1)
    await trio.sleep(100)
    assert times.stamp() == "2026-11-23T23:51:40.000Z"  # held: the clock is behind it
    assert times.stamp() == "2026-11-23T23:51:40.000Z"
    assert times.elapsed() == pytest.approx(200)
    # Relative profiles: began 200 s before the station's time now, whatever that says.
    assert times.began() == system.now() - timedelta(seconds=200)
    system.offset = timedelta(0)
    assert times.stamp() == "2026-11-23T23:53:20.000Z"  # the truth again once it is ahead
    behind = [r for r in caplog.records if "behind the transaction's last message" in r.message]
    assert len(behind) == 1 and "3500.0 s behind" in behind[0].message
