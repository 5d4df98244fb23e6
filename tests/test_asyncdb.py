"""The station database off the event loop (dcocpp/storage/asyncdb.py), on the real clock: a real
SQLite file in tmp_path whose commits are made slow, as a busy flash or a frozen file system
makes them (`storage_faults.slow_commits`). What the module docstring promises, one test
each: the loop runs on while a write waits for the disk, and the caller hears of it only once
it is committed; writes are stored in the order they were asked for; a caller cancelled before
its turn has nothing written, one cancelled while its write runs gets it stored and its
outcome; SQLite's refusals come back as the synchronous call raises them; and every call of
the database, read or write, waits for the disk in the thread, the loop beating on."""

from __future__ import annotations

import contextlib
import inspect
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from dcocpp.storage.asyncdb import AsyncDatabase
from dcocpp.storage.database import (
    DATABASE_NAME,
    FirmwarePlanRow,
    ReservationRow,
    StorageError,
    UploadRow,
)
from tests.starvation import Starvation
from tests.storage_faults import make_read_only, slow_commits

SLOW_COMMIT = 0.5  # s a commit takes on the slow disk
SLOW_STATEMENT = 0.1  # s each statement takes, where every call is tried
TICK = 0.01  # s between two beats of the loop's heartbeat
# The longest the loop may stand still while the disk is slow: far below the PLC's 300 ms.
LOOP_MARGIN = 0.1


@contextlib.contextmanager
def committed(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only look at what the database file holds, committed, from outside."""
    uri = f"{(data_dir / DATABASE_NAME).absolute().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        yield connection


def queued(data_dir: Path) -> list[tuple[int, str]]:
    with committed(data_dir) as connection:
        return list(connection.execute("SELECT seq, action FROM outbox ORDER BY seq"))


@contextlib.asynccontextmanager
async def slow_database(tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    """The database of tmp_path off the loop (its own worker thread), on a slow disk."""
    db = await AsyncDatabase.open(tmp_path)
    slow_commits(db._db, SLOW_COMMIT)
    try:
        yield db
    finally:
        with trio.CancelScope(shield=True):
            await db.close()


class Heartbeat:
    """Beats every TICK on the loop; `longest` is the longest pause between two beats."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await trio.sleep(TICK)
            now = time.monotonic()
            self.longest = max(self.longest, now - last - TICK)
            last = now


async def test_the_loop_runs_on_while_a_write_waits_for_the_disk(tmp_path: Path) -> None:
    with Starvation() as starvation:
        async with slow_database(tmp_path) as db, trio.open_nursery() as nursery:
            heart = Heartbeat()
            nursery.start_soon(heart.run)
            began = time.monotonic()
            seq = await db.queue_message("SecurityEventNotification", None, {"type": "X"})
            took = time.monotonic() - began
            assert queued(tmp_path) == [(seq, "SecurityEventNotification")]  # committed
            nursery.cancel_scope.cancel()
    assert took >= SLOW_COMMIT  # answered once the disk had it, not before
    assert heart.longest < LOOP_MARGIN + starvation.longest


async def test_writes_are_stored_in_the_order_they_were_asked_for(tmp_path: Path) -> None:
    """While one write waits for the disk, others are asked for by tasks that resume in any
    order afterwards: the database numbers them in the order they were asked for."""
    seqs: dict[str, int] = {}

    async def write(action: str) -> None:
        seqs[action] = await db.queue_message(action, None, {})

    async with slow_database(tmp_path) as db, trio.open_nursery() as nursery:
        nursery.start_soon(write, "first")
        await trio.testing.wait_all_tasks_blocked()  # its write runs (the disk is slow)
        for action in ("second", "third", "fourth"):
            nursery.start_soon(write, action)
            await trio.testing.wait_all_tasks_blocked()  # in line, in this order
    assert sorted(seqs, key=seqs.__getitem__) == ["first", "second", "third", "fourth"]
    assert [action for _, action in queued(tmp_path)] == ["first", "second", "third", "fourth"]


async def test_a_caller_cancelled_before_its_turn_has_nothing_written(tmp_path: Path) -> None:
    async with slow_database(tmp_path) as db, trio.open_nursery() as nursery:
        nursery.start_soon(db.queue_message, "first", None, {})
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(SLOW_COMMIT / 5) as waiting:
            await db.queue_message("cancelled", None, {})  # waits for "first" to be written
        assert waiting.cancelled_caught
    assert [action for _, action in queued(tmp_path)] == ["first"]


async def test_a_caller_cancelled_while_its_write_runs_gets_it_stored(tmp_path: Path) -> None:
    async with slow_database(tmp_path) as db:
        seq = None
        with trio.CancelScope() as scope:
            scope.deadline = trio.current_time() + SLOW_COMMIT / 5  # while it commits
            seq = await db.queue_message("written", None, {})
            await trio.lowlevel.checkpoint()  # where the cancellation lands
        assert scope.cancelled_caught
        assert seq is not None  # the caller heard its outcome before the cancellation
        assert queued(tmp_path) == [(seq, "written")]


async def test_a_write_the_database_refuses_raises_as_the_synchronous_one(
    tmp_path: Path,
) -> None:
    db = await AsyncDatabase.open(tmp_path)
    try:
        make_read_only(db._db)
        with pytest.raises(StorageError) as refused:
            await db.set_availability(1, False)
        assert str(refused.value) == (
            f"database {tmp_path / DATABASE_NAME}: cannot store availability: attempt to"
            " write a readonly database (SQLITE_READONLY)"
        )
    finally:
        await db.close()
    with committed(tmp_path) as connection:
        assert list(connection.execute("SELECT * FROM availability")) == []


AT = "2026-11-23T23:50:00Z"
TX_FIELDS = {
    "connector_id": 1,
    "id_tag": "TAG",
    "meter_start": 0,
    "started_at": AT,
    "reservation_id": None,
    "last_meter_wh": 0,
    "last_meter_at": AT,
}
PROFILE = {
    "charging_profile_id": 1,
    "stack_level": 0,
    "charging_profile_purpose": "TxDefaultProfile",
    "charging_profile_kind": "Relative",
    "charging_schedule": {
        "charging_rate_unit": "A",
        "charging_schedule_period": [{"start_period": 0, "limit": 16}],
    },
}
# Every call of the station database, with arguments it takes (rows need not exist).
CALLS: dict[str, tuple[object, ...]] = {
    "availability": (),
    "set_availability": (1, False),
    "transactions": (),
    "queued_messages": (),
    "begin_transaction": (TX_FIELDS, {"connector_id": 1, "id_tag": "TAG"}, "TAG"),
    "queue_message": ("MeterValues", None, {"connector_id": 1, "meter_value": []}),
    "transaction_data": (),
    "add_transaction_data": (1, {"timestamp": AT, "sampled_value": []}, 10, AT),
    "record_meter": (1, 10, AT),
    "message_delivered": (1,),
    "message_failed": (1, 1, True),
    "unpark_messages": (),
    "auth_cache": (),
    "put_auth_cache": ("tag", {"status": "Accepted"}),
    "delete_auth_cache": (None,),
    "local_list": (),
    "replace_local_list": (1, {"tag": {"status": "Accepted"}}),
    "update_local_list": (2, {"tag": None}),
    "charging_profiles": (),
    "put_charging_profile": (1, PROFILE),
    "delete_charging_profiles": ([1],),
    "reservations": (),
    "put_reservation": (ReservationRow(1, 1, "TAG", None, AT),),
    "delete_reservations": ([1],),
    "firmware_plan": (),
    "firmware_version": (),
    "firmware_step": (
        FirmwarePlanRow("http://x/f", AT, 1, 60, 1, "downloading", None, "f"),
        [("FirmwareStatusNotification", {"status": "Downloading"})],
    ),
    "running_uploads": (),
    "upload_step": (
        "log",
        UploadRow("log", 7, "security-log.log", "http://x/logs"),
        "LogStatusNotification",
        {"status": "Uploading", "request_id": 7},
    ),
    "sessions": (10,),
    "session": (1,),
    "session_samples": ([1],),
}


def test_every_call_of_the_database_is_listed() -> None:
    calls = {
        name
        for name, member in vars(AsyncDatabase).items()
        if inspect.iscoroutinefunction(member) and name not in ("open", "close")
    }
    assert calls == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_every_call_waits_for_the_disk_off_the_loop(tmp_path: Path, name: str) -> None:
    """Every statement of every call takes SLOW_STATEMENT: the call takes that long at least,
    and the loop beats on meanwhile."""
    db = await AsyncDatabase.open(tmp_path)

    def trace(statement: str) -> None:
        time.sleep(SLOW_STATEMENT)

    db._db._db.set_trace_callback(trace)
    try:
        with Starvation() as starvation:
            async with trio.open_nursery() as nursery:
                heart = Heartbeat()
                nursery.start_soon(heart.run)
                began = time.monotonic()
                await getattr(db, name)(*CALLS[name])
                took = time.monotonic() - began
                nursery.cancel_scope.cancel()
    finally:
        db._db._db.set_trace_callback(None)
        await db.close()
    assert took >= SLOW_STATEMENT
    assert heart.longest < LOOP_MARGIN + starvation.longest
