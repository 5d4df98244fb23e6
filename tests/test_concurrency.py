"""The named trio idioms of `dcocpp.concurrency`: the pulse that wakes everyone waiting, the
wake-up flag of one consumer, and the task that a new run replaces."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from dcocpp.concurrency import Pulse, RestartableTask, WakeUp


async def test_a_pulse_wakes_every_task_waiting_when_it_fires(autojump_clock: Any) -> None:
    pulse = Pulse()
    woken: list[tuple[str, float]] = []

    async def waiter(name: str) -> None:
        await pulse.wait()
        woken.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "a")
        nursery.start_soon(waiter, "b")
        await trio.sleep(5)
        assert woken == []
        pulse.fire()
    assert sorted(woken) == [("a", 5.0), ("b", 5.0)]


async def test_a_pulse_is_not_remembered_by_a_task_that_waits_after_it(
    autojump_clock: Any,
) -> None:
    pulse = Pulse()
    pulse.fire()  # nobody waits: nothing is kept
    with trio.move_on_after(10) as idle:
        await pulse.wait()
    assert idle.cancelled_caught
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pulse.wait)
        await trio.sleep(1)
        pulse.fire()
    assert trio.current_time() == 11


async def test_a_wake_up_set_while_its_consumer_is_busy_holds_until_cleared(
    autojump_clock: Any,
) -> None:
    wake = WakeUp()
    wake.set()  # before the consumer waits
    await wake.wait()
    await wake.wait()  # still set: the consumer has not cleared it
    assert wake.is_set() and trio.current_time() == 0
    wake.clear()
    assert not wake.is_set()
    with trio.move_on_after(10) as idle:
        await wake.wait()
    assert idle.cancelled_caught


async def test_clearing_a_wake_up_that_is_not_set_keeps_its_waiter_waiting_for_the_next_set(
    autojump_clock: Any,
) -> None:
    wake = WakeUp()
    woken_at: list[float] = []

    async def consumer() -> None:
        await wake.wait()
        woken_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.sleep(1)
        wake.clear()  # nothing to clear: the consumer is not cut off
        await trio.sleep(1)
        wake.set()
    assert woken_at == [2.0]


async def test_a_restarted_timer_fires_once_counting_from_the_restart(
    autojump_clock: Any,
) -> None:
    timer = RestartableTask()
    fired: list[float] = []

    async def fire_after(delay: float) -> None:
        await trio.sleep(delay)
        fired.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        timer.restart(nursery, fire_after, 10)
        await trio.sleep(5)
        timer.restart(nursery, fire_after, 10)  # the first run is cancelled
        await trio.sleep(20)
    assert fired == [15.0]


async def test_a_cancelled_run_ends_at_its_next_checkpoint_and_cancel_is_idempotent(
    autojump_clock: Any,
) -> None:
    timer = RestartableTask()
    steps: list[str] = []

    async def run() -> None:
        steps.append("began")
        await trio.sleep(1)
        steps.append("slept")

    async with trio.open_nursery() as nursery:
        timer.restart(nursery, run)
        timer.cancel()  # before it began: it begins, and ends at its first checkpoint
        timer.cancel()
    assert steps == ["began"]
    assert trio.current_time() == 0


async def test_a_run_that_ended_by_itself_leaves_the_next_restart_unharmed(
    autojump_clock: Any,
) -> None:
    timer = RestartableTask()
    runs: list[int] = []

    async def run(number: int) -> None:
        runs.append(number)

    async with trio.open_nursery() as nursery:
        timer.restart(nursery, run, 1)
        await trio.sleep(1)
        timer.restart(nursery, run, 2)  # cancelling the ended run's scope does nothing
    assert runs == [1, 2]


async def test_what_a_run_raises_goes_to_the_nursery() -> None:
    timer = RestartableTask()

    async def broken() -> None:
        raise ValueError("broken")

    with pytest.raises(ExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            timer.restart(nursery, broken)
    assert raised.group_contains(ValueError, match="broken")
