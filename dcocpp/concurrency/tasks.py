"""A task that a new run replaces: a timer started again, a sampler per transaction.

The idiom: cancel the previous run's scope, make a new scope, start the task in a nursery
under it. hypercorn's `TrioSingleTask` does the same behind a lock and `nursery.start`;
here `restart` and `cancel` are plain calls, so that an owner can make them in the middle of
synchronous bookkeeping (the connector's effects, the reservations' ends).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVarTuple

import trio

Args = TypeVarTuple("Args")


class RestartableTask:
    """At most one run of a task at a time, in a nursery its owner gives."""

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None

    def restart(
        self,
        nursery: trio.Nursery,
        fn: Callable[[*Args], Awaitable[object]],
        *args: *Args,
    ) -> None:
        """Cancel the run before, if any, and start `fn(*args)` in `nursery` under a cancel
        scope of its own. What `fn` raises goes to `nursery`, as with `start_soon`."""
        self.cancel()
        scope = self._scope = trio.CancelScope()
        nursery.start_soon(_under, scope, fn, *args, name=fn)

    def cancel(self) -> None:
        """Cancel the run, if any: it ends at its next checkpoint (one cancelled before it
        began ends at its first)."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


async def _under(
    scope: trio.CancelScope,
    fn: Callable[[*Args], Awaitable[object]],
    *args: *Args,
) -> None:
    with scope:
        await fn(*args)
