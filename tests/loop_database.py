"""The station database in tests on trio's virtual clock: its statements run on the loop.

`autojump_clock` jumps to the next deadline whenever no task can run, also while a worker
thread works: a database write in `asyncdb.WorkerThread` would take virtual time (an fsync
long enough for a relay's ack deadline to pass). So the tests on that clock give the station
`on_the_loop`, which keeps what the thread promises (call order, nothing written for a caller
cancelled before its turn, a started write finished) but runs the statements at once; the
tests on the real clock, and the charger, use the thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio
import trio.testing

from dcocpp.storage.asyncdb import AsyncDatabase, Runner
from dcocpp.storage.database import Database

T = TypeVar("T")


async def on_the_loop(fn: Callable[[], T]) -> T:
    await trio.lowlevel.checkpoint_if_cancelled()
    result = fn()
    await trio.lowlevel.cancel_shielded_checkpoint()
    return result


def runner_for_the_clock() -> Runner | None:
    """`on_the_loop` on trio's virtual clock, else None (the worker thread)."""
    return (
        on_the_loop if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock) else None
    )


def on_loop(db: Database) -> AsyncDatabase:
    """`db` for the OCPP layer's stores, its statements run on the loop."""
    return AsyncDatabase(db, on_the_loop)
