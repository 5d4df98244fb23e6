"""Waiting for news under trio, whose `Event` is set once and never cleared (trio #637: a
clear that races with waiters loses wake-ups). Two idioms replace the event after it is set;
here each has a name.

`Pulse` is a broadcast: it wakes every task waiting at the moment it fires and remembers
nothing, so a waiter checks its condition and waits again (no await between the check and
the wait: no change slips by). `WakeUp` is a flag for one consumer: set by anyone, it stays set
until the consumer clears it, so news that arrives while the consumer is busy is not lost.
"""

from __future__ import annotations

import trio


class Pulse:
    """Wakes every task waiting now; a task that waits afterwards waits for the next pulse.

    Waiters loop: ``while not condition(): await pulse.wait()``; whoever changes what the
    condition reads calls `fire`."""

    def __init__(self) -> None:
        # What trio's own primitives (Event, Condition) park their waiters in.
        self._waiters = trio.lowlevel.ParkingLot()

    def fire(self) -> None:
        """Wake every task waiting now."""
        self._waiters.unpark_all()

    async def wait(self) -> None:
        """Until the next `fire`."""
        await self._waiters.park()


class WakeUp:
    """A flag one task waits for: `set` by anyone (it stays set until cleared), `wait` returns
    at once while it is set, and the waiting task `clear`s it once it has acted on the news.
    For a single consumer: a second task waiting on it would miss a wake-up cleared under it."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        """Until the flag is set (a checkpoint even when it is set already)."""
        await self._event.wait()
