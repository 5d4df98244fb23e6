"""The time grid the driver's writer and supervisor share (`_next_tick`): with equal periods
their deadlines are the same float, so they wake up together."""

from __future__ import annotations

import hypothesis
from hypothesis import strategies as st

from dcocpp.hardware.plc.driver import _next_tick

starts = st.floats(0, 1e6, allow_nan=False)
periods = st.sampled_from([0.05, 0.1, 0.25, 0.3, 0.5, 1 / 3])


@hypothesis.given(starts, periods, st.integers(0, 10**7), st.floats(0, 1, exclude_max=True))
def test_next_tick_is_the_first_grid_point_after_now(
    start: float, period: float, k: int, fraction: float
) -> None:
    now = start + k * period + fraction * period
    tick = _next_tick(start, period, now)
    assert now < tick <= now + period * (1 + 1e-9) + 1e-6
    # On the grid: asked from any later time before it, the same float.
    later = now + (tick - now) / 2
    if later < tick:  # (not when now is a rounding step below the tick)
        assert _next_tick(start, period, later) == tick


@hypothesis.given(starts, periods, st.integers(0, 10**7))
def test_a_task_woken_on_a_tick_sleeps_a_whole_period(start: float, period: float, k: int) -> None:
    now = start + k * period  # exactly a tick, as under trio's autojump clock
    assert _next_tick(start, period, now) > now
    assert _next_tick(start, period, _next_tick(start, period, now)) > _next_tick(
        start, period, now
    )
