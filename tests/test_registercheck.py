"""Which meter registers are believed (`dcocpp/hardware/registercheck.py`): what a gun of a given
rating can deliver between readings, with the margins for the register's 0.1 kWh step and the
readings' timing jitter; a doubted meter and how it is believed again."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcocpp.hardware.registercheck import (
    JITTER_S,
    RESOLUTION_WH,
    SETTLE_S,
    RegisterGuard,
    RegisterRun,
)

RATING_W = 72_000.0  # 20 Wh per second
RATE = RATING_W / 3600


def test_a_register_may_rise_by_the_rating_over_the_time_elapsed_and_no_more() -> None:
    run = RegisterRun(RATING_W, 1_000_000, at=0.0)
    allowed = RATE * (10 + JITTER_S) + RESOLUTION_WH
    assert run.doubt(1_000_000 + allowed, at=10.0) is None
    assert run.doubt(1_000_000 + allowed + 1, at=10.0) == (
        f"meter register rose {allowed + 1:.0f} Wh in 10.0 s"
    )


def test_a_register_that_goes_back_is_not_believed() -> None:
    run = RegisterRun(RATING_W, 1_000_000, at=0.0)
    run.add(1_000_100, at=10.0)
    assert run.doubt(1_000_000, at=11.0) == "meter register went back 100 Wh"
    assert run.doubt(0, at=11.0) == "meter register went back 1000100 Wh"
    assert run.doubt(math.nan, at=11.0) == "meter register unreadable (nan)"


def test_a_creeping_register_is_caught_against_every_earlier_reading() -> None:
    """Each step alone is within the margins of the one before; together they are not."""
    run = RegisterRun(RATING_W, 0, at=0.0)
    at, wh = 0.0, 0.0
    doubts = []
    for _ in range(100):
        at += 1.0
        wh += RATE * 1.0 + 60  # 60 Wh more per second than the rating allows
        why = run.doubt(wh, at)
        if why is not None:
            doubts.append(why)
            break
        run.add(wh, at)
    assert doubts and at <= 10  # (2 s x 20 Wh + 100 Wh) / 60 Wh per s: caught within 3 s


def test_a_register_read_again_later_bounds_the_next_rise_from_then() -> None:
    """An idle meter read for hours does not bank the rating's worth of those hours."""
    run = RegisterRun(RATING_W, 1_000_000, at=0.0)
    run.add(1_000_000, at=36_000.0)  # ten hours later, unchanged
    assert run.doubt(1_500_000, at=36_001.0) is not None
    assert run.doubt(1_000_100, at=36_001.0) is None


# Physics: any power up to the rating, the register floored to 0.1 kWh, each reading taken up to
# JITTER_S after the meter measured it. Nothing of it is ever doubted.
@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.0, 30.0),  # seconds between measurements
            st.floats(0.0, 1.0),  # power, as a share of the rating
            st.floats(0.0, JITTER_S),  # how late the reading is taken
        ),
        min_size=1,
        max_size=60,
    ),
    start=st.floats(0, 1e9),
)
def test_a_meter_that_obeys_physics_is_always_believed(
    steps: list[tuple[float, float, float]], start: float
) -> None:
    energy, measured = start, 0.0
    guard = RegisterGuard(RATING_W)
    guard.feed(start // 100 * 100, at=0.0)
    last_read = 0.0
    for seconds, share, late in steps:
        measured += seconds
        energy += RATING_W * share * seconds / 3600
        # Readings come in order: one taken late is not overtaken by the next.
        last_read = max(last_read, measured + late)
        guard.feed(energy // 100 * 100, at=last_read)
        assert guard.doubt is None
        assert guard.energy_wh == energy // 100 * 100


def test_a_doubted_meter_keeps_its_register_and_is_believed_again_after_a_glitch() -> None:
    guard = RegisterGuard(RATING_W)
    guard.feed(1_000_000, at=0.0)
    guard.feed(0, at=0.2)  # one bad reading
    assert guard.doubt == "meter register went back 1000000 Wh"
    assert guard.energy_wh == 1_000_000
    at = 0.2
    while at < 0.4 + SETTLE_S:
        at = round(at + 0.2, 1)
        guard.feed(1_000_000, at=at)
        assert guard.energy_wh == 1_000_000
    assert guard.doubt is None


def test_a_reset_register_is_believed_from_its_new_value_once_it_counts_consistently() -> None:
    guard = RegisterGuard(RATING_W)
    guard.feed(1_000_000, at=0.0)
    guard.feed(0, at=1.0)
    guard.feed(100, at=5.0)
    assert guard.doubt is not None and guard.energy_wh == 1_000_000
    guard.feed(200, at=1.0 + SETTLE_S)
    assert guard.doubt is None and guard.energy_wh == 200


@pytest.mark.parametrize("flaps", [2, 30])
def test_a_meter_that_keeps_contradicting_itself_stays_doubted(flaps: int) -> None:
    guard = RegisterGuard(RATING_W)
    guard.feed(1_000_000, at=0.0)
    at = 0.0
    for _ in range(flaps):
        for wh in (0, 1_000_000):
            at += SETTLE_S / 2
            guard.feed(wh, at)
            assert guard.doubt is not None
    assert guard.energy_wh == 1_000_000


def test_a_meter_over_range_is_doubted_until_consistent_for_a_while_after() -> None:
    guard = RegisterGuard(RATING_W)
    guard.feed(1_000_000, at=0.0)
    guard.distrust("meter over range (OVERRANGE)")
    guard.feed(1_000_000, at=1.0)
    guard.distrust("meter over range (OVERRANGE)")  # the readings so far do not count
    guard.feed(1_000_000, at=2.0)
    guard.feed(1_000_000, at=1.0 + SETTLE_S)
    assert guard.doubt == "meter over range (OVERRANGE)"
    guard.feed(1_000_000, at=2.0 + SETTLE_S)
    assert guard.doubt is None
