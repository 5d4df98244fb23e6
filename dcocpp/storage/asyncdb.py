"""The station database for the event loop: its statements run in a worker thread.

A write with `synchronous=FULL` waits for the disk (an fsync, more at a checkpoint), and a disk
can be slow or stop answering for seconds (flash wear levelling, a file system frozen for a
snapshot or remounted). On the event loop that would stop everything else with it, the PLC's
RelayControl keep-alive among it (the PLC opens every relay after about 300 ms without one)
and the local API. `AsyncDatabase` offers what `database.Database` does, as coroutines that run
it in a worker thread (`WorkerThread`); `database.Database` stays the synchronous, SQL-only part.

Order. One call at a time, in the order they were made: a call takes its place in line (a
`trio.CapacityLimiter(1)`, first come first served) before it yields to any other task. A
caller that changes its memory and then asks for the write, with no checkpoint in between,
has its write ordered with the others as its memory change is.

On disk before it is acknowledged. A call returns once SQLite has committed, and raises the
StorageError the synchronous call would: the callers await it before they answer the central
system or act on what it stores (the relay of a transaction closes after its
StartTransaction is stored).

Cancellation. A caller cancelled while it waits for its turn has nothing written (it gets
trio.Cancelled). Once its statements run they cannot be stopped: the caller waits for them
(`abandon_on_cancel=False`, trio's default) and gets their outcome, the cancellation taking
effect at its next checkpoint; so it never goes on believing something was stored that was
not, nor the other way round, and the database is never left half-written (every call is one
SQLite transaction).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from dcocpp.storage.database import (
    Database,
    FirmwarePlanRow,
    QueuedMessage,
    ReservationRow,
    SessionRow,
    TransactionRow,
    UploadRow,
)

__all__ = ["AsyncDatabase", "Runner", "WorkerThread"]

T = TypeVar("T")


class Runner(Protocol):
    """Runs blocking calls for the event loop, one at a time, in the order they were made."""

    async def __call__(self, fn: Callable[[], T]) -> T: ...


class WorkerThread:
    """A `Runner` that runs each call in a worker thread (see the module docstring)."""

    def __init__(self) -> None:
        self._line = trio.CapacityLimiter(1)

    async def __call__(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._line, thread_name="dcocpp-db")


class AsyncDatabase:
    """`database.Database` off the event loop. `open` it (in the worker thread too: its checks
    read the whole file), `close` it when done; the methods are those of `database.Database`
    (see there), awaited."""

    def __init__(self, db: Database, run: Runner | None = None):
        self._db = db
        self._run: Runner = run if run is not None else WorkerThread()
        self.path = db.path

    @classmethod
    async def open(
        cls, data_dir: Path, *, run: Runner | None = None, accept_data_loss: bool = False
    ) -> AsyncDatabase:
        """`database.Database.open`, in the worker thread (it raises the same errors)."""
        run = run if run is not None else WorkerThread()
        db = await run(
            functools.partial(Database.open, data_dir, accept_data_loss=accept_data_loss)
        )
        return cls(db, run)

    async def close(self) -> None:
        """Close the database (a clean close checkpoints: it writes)."""
        await self._run(self._db.close)

    # --- availability ------------------------------------------------------------------------

    async def availability(self) -> dict[int, bool]:
        return await self._run(self._db.availability)

    async def set_availability(self, connector_id: int, operative: bool) -> None:
        await self._run(functools.partial(self._db.set_availability, connector_id, operative))

    # --- transactions and the transaction message outbox ----------------------------------

    async def transactions(self) -> list[TransactionRow]:
        return await self._run(self._db.transactions)

    async def queued_messages(self) -> list[QueuedMessage]:
        return await self._run(self._db.queued_messages)

    async def begin_transaction(
        self, fields: Mapping[str, Any], start_payload: Mapping[str, Any], id_tag: str
    ) -> tuple[int, int]:
        return await self._run(
            functools.partial(self._db.begin_transaction, fields, start_payload, id_tag)
        )

    async def queue_message(
        self,
        action: str,
        local_id: int | None,
        payload: Mapping[str, Any],
        id_tag: str | None = None,
        *,
        stops: bool = False,
    ) -> int:
        return await self._run(
            functools.partial(
                self._db.queue_message, action, local_id, payload, id_tag, stops=stops
            )
        )

    async def transaction_data(self) -> dict[int, list[dict[str, Any]]]:
        return await self._run(self._db.transaction_data)

    async def add_transaction_data(
        self, local_id: int, sample: Mapping[str, Any], energy_wh: int, at: str
    ) -> None:
        await self._run(
            functools.partial(self._db.add_transaction_data, local_id, sample, energy_wh, at)
        )

    async def record_meter(self, local_id: int, energy_wh: int, at: str) -> None:
        await self._run(functools.partial(self._db.record_meter, local_id, energy_wh, at))

    async def message_delivered(
        self, seq: int, *, finished: int | None = None, confirmed: tuple[int, int] | None = None
    ) -> None:
        await self._run(
            functools.partial(
                self._db.message_delivered, seq, finished=finished, confirmed=confirmed
            )
        )

    async def message_failed(self, seq: int, attempts: int, parked: bool) -> None:
        await self._run(functools.partial(self._db.message_failed, seq, attempts, parked))

    async def unpark_messages(self) -> None:
        await self._run(self._db.unpark_messages)

    # --- session history ----------------------------------------------------------------------

    async def sessions(self, limit: int) -> list[SessionRow]:
        return await self._run(functools.partial(self._db.sessions, limit))

    async def session(self, session_id: int) -> SessionRow | None:
        return await self._run(functools.partial(self._db.session, session_id))

    async def session_samples(self, sessions: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
        return await self._run(functools.partial(self._db.session_samples, list(sessions)))

    # --- authorization cache and local authorization list -----------------------------------

    async def auth_cache(self) -> dict[str, dict[str, Any]]:
        return await self._run(self._db.auth_cache)

    async def put_auth_cache(self, id_tag: str, info: Mapping[str, Any]) -> None:
        await self._run(functools.partial(self._db.put_auth_cache, id_tag, info))

    async def delete_auth_cache(self, id_tags: Iterable[str] | None = None) -> None:
        await self._run(functools.partial(self._db.delete_auth_cache, id_tags))

    async def local_list(self) -> tuple[int, dict[str, dict[str, Any]]]:
        return await self._run(self._db.local_list)

    async def replace_local_list(
        self, version: int, entries: Mapping[str, Mapping[str, Any]]
    ) -> None:
        await self._run(functools.partial(self._db.replace_local_list, version, entries))

    async def update_local_list(
        self, version: int, changes: Mapping[str, Mapping[str, Any] | None]
    ) -> None:
        await self._run(functools.partial(self._db.update_local_list, version, changes))

    # --- charging profiles -------------------------------------------------------------------

    async def charging_profiles(self) -> list[tuple[int, dict[str, Any]]]:
        return await self._run(self._db.charging_profiles)

    async def put_charging_profile(
        self, connector_id: int, profile: Mapping[str, Any], *, replaces: Iterable[int] = ()
    ) -> None:
        await self._run(
            functools.partial(
                self._db.put_charging_profile, connector_id, profile, replaces=list(replaces)
            )
        )

    async def delete_charging_profiles(self, profile_ids: Iterable[int]) -> None:
        await self._run(functools.partial(self._db.delete_charging_profiles, list(profile_ids)))

    # --- reservations ------------------------------------------------------------------------

    async def reservations(self) -> list[ReservationRow]:
        return await self._run(self._db.reservations)

    async def put_reservation(self, row: ReservationRow) -> None:
        await self._run(functools.partial(self._db.put_reservation, row))

    async def delete_reservations(self, reservation_ids: Iterable[int]) -> None:
        await self._run(functools.partial(self._db.delete_reservations, list(reservation_ids)))

    # --- firmware ----------------------------------------------------------------------------

    async def firmware_plan(self) -> FirmwarePlanRow | None:
        return await self._run(self._db.firmware_plan)

    async def firmware_version(self) -> str | None:
        return await self._run(self._db.firmware_version)

    async def firmware_step(
        self,
        plan: FirmwarePlanRow | None,
        messages: Sequence[tuple[str, Mapping[str, Any]]] = (),
        *,
        version: str | None = None,
    ) -> list[int]:
        return await self._run(
            functools.partial(self._db.firmware_step, plan, list(messages), version=version)
        )

    # --- uploads -----------------------------------------------------------------------------

    async def running_uploads(self) -> list[UploadRow]:
        return await self._run(self._db.running_uploads)

    async def upload_step(
        self, kind: str, running: UploadRow | None, action: str, payload: Mapping[str, Any]
    ) -> int:
        return await self._run(
            functools.partial(self._db.upload_step, kind, running, action, dict(payload))
        )
