"""A failing disk under the station database (dcocpp/storage/database.py): every failure is
one message that names the file and SQLite's reason, and nothing is lost unnoticed.

- A full disk or a read-only database: the write fails whole (nothing half written), what was
  written before stays; while the station runs, the failure ends it (relays commanded open)
  and the next start stops the transaction as after a power cut, delivering what was queued.
- A damaged, deleted or older database (its write-ahead log lost after a crash): the open is
  refused, leaving the files as they are, until the operator accepts the loss
  (`accept_data_loss`, `dcocpp run --accept-data-loss`); the data directory's record
  (dcocpp/storage/datarecord.py) is what tells.

The failures are made without root (tests/storage_faults.py). Exit statuses and the one line a
process prints are in tests/test_integration_storage.py.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call
from ocpp.v16.enums import AvailabilityType

from dcocpp.cli import commands as cli
from dcocpp.storage.database import (
    CHECKPOINT_INTERVAL,
    DATABASE_NAME,
    SCHEMA_VERSION,
    Database,
    DataLossRefused,
    StorageError,
)
from dcocpp.storage.datarecord import RECORD_NAME
from tests.csms import FakeCsms
from tests.station_harness import charger_config, running_station
from tests.storage_faults import (
    crash_after_transactions,
    fill_disk,
    make_read_only,
    overwrite_header,
    overwrite_page,
    shm,
    truncate,
    wal,
)
from tests.test_scenarios_offline import go_offline

T0 = "2026-01-01T00:00:00Z"
GO_ON = "restore it, or start once with --accept-data-loss to go on without them"
NEW_INSTEAD = (
    "restore it from a backup, or start once with --accept-data-loss to keep it aside and "
    "begin with a new, empty database"
)


def start(db: Database, connector_id: int, id_tag: str) -> int:
    """A transaction with its StartTransaction, as the outbox stores it; its local id."""
    fields = {
        "connector_id": connector_id,
        "id_tag": id_tag,
        "meter_start": 1000,
        "started_at": T0,
        "reservation_id": None,
        "last_meter_wh": 1000,
        "last_meter_at": T0,
    }
    payload = {"connector_id": connector_id, "id_tag": id_tag, "meter_start": 1000}
    local_id, _ = db.begin_transaction(fields, {**payload, "timestamp": T0}, id_tag)
    return local_id


def content(data_dir: Path) -> tuple[list[str], list[tuple[str, int | None]]]:
    """(idTags of the transactions, (action, local id) of the queued messages) on disk."""
    db = Database.open(data_dir)
    try:
        return (
            [row.id_tag for row in db.transactions()],
            [(m.action, m.local_id) for m in db.queued_messages()],
        )
    finally:
        db.close()


def files(data_dir: Path) -> dict[str, bytes]:
    """What the database's files hold now, by name: the main file and a -wal file with
    anything in it (an empty one, and the -shm index, are SQLite's housekeeping)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(data_dir.glob(f"{DATABASE_NAME}*"))
        if not p.name.endswith("-shm") and p.stat().st_size > 0
    }


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "dcocpp.storage.database" and r.levelno == logging.WARNING
    ]


# --- a full disk, a read-only database -------------------------------------------------------


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Database]:
    """Every database the station opens, in order: the last one is the one it writes to
    (the faults apply to a connection, its own)."""
    databases: list[Database] = []
    open_database = Database.open

    def open_and_keep(data_dir: Path, **options: Any) -> Database:
        db = open_database(data_dir, **options)
        databases.append(db)
        return db

    monkeypatch.setattr(Database, "open", open_and_keep)
    return databases


FAULTS: list[tuple[str, Callable[[Database], None], str]] = [
    ("full", fill_disk, "database or disk is full (SQLITE_FULL)"),
    ("read-only", make_read_only, "attempt to write a readonly database (SQLITE_READONLY)"),
]


@pytest.mark.parametrize(
    ("fault", "reason"), [pytest.param(f, r, id=name) for name, f, r in FAULTS]
)
def test_a_write_the_disk_refuses_names_the_file_and_sqlites_reason_and_loses_nothing_written(
    tmp_path: Path, fault: Callable[[Database], None], reason: str
) -> None:
    db = Database.open(tmp_path)
    local_id = start(db, 1, "TAG-1")
    fault(db)
    with pytest.raises(StorageError) as refused:
        for n in range(1000):  # until the database would have to grow
            db.queue_message("MeterValues", local_id, {"connector_id": 1, "n": n, "pad": "x" * 500})
            db.record_meter(local_id, 1000 + n, T0)
    path = tmp_path / DATABASE_NAME
    assert re.fullmatch(
        rf"database {re.escape(str(path))}: cannot (queue MeterValues|store the meter reading):"
        rf" {re.escape(reason)}",
        str(refused.value),
    ), refused.value
    queued = db.queued_messages()
    db.close()
    # Every write that returned is there after a restart, the refused one not even in part.
    with closing(Database.open(tmp_path)) as again:
        assert [row.id_tag for row in again.transactions()] == ["TAG-1"]
        assert again.queued_messages() == queued
    assert [m.payload.get("n") for m in queued[1:]] == list(range(len(queued) - 1))


@pytest.mark.parametrize(
    ("fault", "reason"), [pytest.param(f, r, id=name) for name, f, r in FAULTS]
)
async def test_a_write_failing_mid_transaction_stops_the_charger_and_the_next_start_bills_it(
    autojump_clock: Any,
    tmp_path: Path,
    opened: list[Database],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Callable[[Database], None],
    reason: str,
) -> None:
    """The disk fails while a session charges offline (its meter values queue up): the
    station ends with the error (a process exits 1, tests/test_integration_storage.py) and
    commands every relay open first; nothing it had stored is lost: the next start delivers
    the queued meter values and stops the transaction as after a power cut."""
    config = charger_config(tmp_path)
    csms = FakeCsms()
    keys = {"MeterValueSampleInterval": 5, "ClockAlignedDataInterval": 0}
    with pytest.raises(BaseExceptionGroup) as ended:
        async with running_station(config, csms, keys=keys) as h:
            hardware = h.hardware
            await h.booted()
            transaction_id = await h.start_charging(1, "TAG-1")
            await trio.sleep(30)  # delivered meter values, a persisted reading
            await go_offline(h)
            await trio.sleep(20)  # meter values queue up
            fault(opened[-1])
            await trio.sleep_forever()  # until the station ends
    # One error (the operator reads one line), naming the file, what failed and why.
    (error,) = _leaves(ended.value)
    path = config.data_dir / DATABASE_NAME
    assert isinstance(error, StorageError), error
    assert re.fullmatch(
        rf"database {re.escape(str(path))}: cannot [a-z A-Za-z]+: {re.escape(reason)}",
        str(error),
    ), error
    assert "the database failed: commanding every relay open, then stopping" in caplog.text
    assert not hardware.relay_closed(1)

    monkeypatch.undo()
    with closing(Database.open(config.data_dir)) as db:
        (row,) = db.transactions()
        queued = db.queued_messages()
    assert (row.transaction_id, row.stopped) == (transaction_id, False)
    waiting = [m.action for m in queued]
    assert waiting and set(waiting) == {"MeterValues"}, queued
    since = csms.mark()
    async with running_station(config, csms) as h:
        await h.wait_calls("StopTransaction", since=since)
        await h.wait_until(lambda: h.station.outbox is not None and h.station.outbox.empty)
    sent = [(a, p) for _, a, p in csms.calls[since:] if a in ("MeterValues", "StopTransaction")]
    assert [a for a, _ in sent] == [*waiting, "StopTransaction"]
    assert [p for a, p in sent[:-1]] == [
        {**m.payload, "transaction_id": transaction_id} for m in queued
    ]
    stop = sent[-1][1]
    assert (stop["transaction_id"], stop["reason"]) == (transaction_id, "PowerLoss")
    # At least the reading persisted before the disk failed (what a power cut bills).
    assert stop["meter_stop"] >= row.last_meter_wh > row.meter_start, (stop, row)


async def test_change_availability_that_cannot_be_stored_is_rejected(
    autojump_clock: Any, tmp_path: Path, opened: list[Database], caplog: pytest.LogCaptureFixture
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config) as h:
        await h.booted()
        outbox = h.station.outbox
        assert outbox is not None
        await h.wait_until(lambda: outbox.empty)  # nothing else writes now
        make_read_only(opened[-1])
        answer = await h.csms_call(
            call.ChangeAvailability(connector_id=1, type=AvailabilityType.inoperative)
        )
        assert answer.status == "Rejected"
        assert h.connector(1).machine.status == "Available"
    path = config.data_dir / DATABASE_NAME
    assert (
        f"ChangeAvailability of connector 1 rejected: database {path}: cannot store availability:"
        " attempt to write a readonly database (SQLITE_READONLY)"
    ) in caplog.text


# --- a damaged database -------------------------------------------------------------------------


DAMAGES: list[tuple[str, Callable[[Path], None], str]] = [
    ("header overwritten", overwrite_header, "file is not a database (SQLITE_NOTADB)"),
    ("truncated", truncate, "database disk image is malformed (SQLITE_CORRUPT)"),
    (
        "a table's page overwritten",
        lambda path: overwrite_page(path, "outbox"),
        "database disk image is malformed (SQLITE_CORRUPT)",
    ),
]


def _with_data(data_dir: Path) -> None:
    db = Database.open(data_dir)
    for n in range(40):
        start(db, 1 + n % 2, f"TAG-{n}")
    db.close()


@pytest.mark.parametrize(
    ("damage", "reason"), [pytest.param(d, r, id=name) for name, d, r in DAMAGES]
)
def test_a_damaged_database_is_refused_untouched(
    tmp_path: Path, damage: Callable[[Path], None], reason: str
) -> None:
    _with_data(tmp_path)
    path = tmp_path / DATABASE_NAME
    damage(path)
    before = files(tmp_path)
    with pytest.raises(DataLossRefused) as refused:
        Database.open(tmp_path)
    assert str(refused.value) == f"database {path} is damaged: {reason}; {NEW_INSTEAD}"
    assert files(tmp_path) == before


def test_a_damaged_database_accepted_as_lost_is_kept_aside_for_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _with_data(tmp_path)
    path = tmp_path / DATABASE_NAME
    overwrite_header(path)
    damaged = path.read_bytes()
    Database.open(tmp_path, accept_data_loss=True).close()
    (aside,) = tmp_path.glob(f"{DATABASE_NAME}.damaged-*")
    assert aside.read_bytes() == damaged
    assert warnings(caplog) == [
        f"database {path} is damaged: file is not a database (SQLITE_NOTADB); as "
        f"--accept-data-loss asks: keeping it as {aside.name} and beginning with a new, "
        "empty database"
    ]
    assert content(tmp_path) == ([], [])  # a new database, which opens without a word
    assert warnings(caplog) == warnings(caplog)[:1]


# --- a deleted database, a lost write-ahead log ---------------------------------------------


def test_the_first_open_records_that_the_directory_holds_a_database(tmp_path: Path) -> None:
    Database.open(tmp_path).close()
    record = json.loads((tmp_path / RECORD_NAME).read_text(encoding="utf-8"))
    assert record["database"] == DATABASE_NAME
    assert record["schemaVersion"] == SCHEMA_VERSION
    assert record["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["created"])
    Database.open(tmp_path).close()
    again = json.loads((tmp_path / RECORD_NAME).read_text(encoding="utf-8"))
    assert (again["created"], again["generation"]) == (record["created"], 2)


def test_init_creates_the_database_and_its_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["init", str(tmp_path)]) == cli.EXIT_OK
    data_dir = tmp_path / "data"
    assert f"created {data_dir / DATABASE_NAME}" in capsys.readouterr().out
    assert (data_dir / RECORD_NAME).is_file()
    (data_dir / DATABASE_NAME).unlink()
    with pytest.raises(DataLossRefused, match="is missing"):
        Database.open(data_dir)


def test_a_data_directory_from_before_records_is_adopted(tmp_path: Path) -> None:
    """An older dcocpp wrote no record: its database opens as before, and is recorded."""
    _with_data(tmp_path)
    (tmp_path / RECORD_NAME).unlink()
    transactions, _ = content(tmp_path)
    assert len(transactions) == 40
    assert (tmp_path / RECORD_NAME).is_file()


def test_a_deleted_database_is_refused(tmp_path: Path) -> None:
    Database.open(tmp_path).close()
    created = json.loads((tmp_path / RECORD_NAME).read_text(encoding="utf-8"))["created"]
    crash_after_transactions(tmp_path, 2)
    for leftover in tmp_path.glob(f"{DATABASE_NAME}*"):
        leftover.unlink()
    path = tmp_path / DATABASE_NAME
    with pytest.raises(DataLossRefused) as refused:
        Database.open(tmp_path)
    assert str(refused.value) == (
        f"database {path} is missing, but {tmp_path / RECORD_NAME} records one there since "
        f"{created}; restore it (with its -wal file), or start once with --accept-data-loss to "
        "begin with a new, empty database"
    )
    assert not path.exists()  # not created by the refused open


@pytest.mark.parametrize("writes", [2, 2 * CHECKPOINT_INTERVAL + 5], ids=["few", "checkpointed"])
def test_a_write_ahead_log_lost_after_a_crash_is_refused_and_the_data_comes_back_with_it(
    tmp_path: Path, writes: int
) -> None:
    """The transactions a crashed process wrote since its last checkpoint are only in the
    -wal file: without it the database is older than recorded and the open is refused,
    leaving it as it is; with the file back, nothing is missing. With several checkpoints
    behind it (the main file holding most), the missing tail shows all the same."""
    Database.open(tmp_path).close()
    crash_after_transactions(tmp_path, writes)
    kept = wal(tmp_path).rename(tmp_path / "kept-wal")
    shm(tmp_path).unlink()
    main = (tmp_path / DATABASE_NAME).read_bytes()
    with pytest.raises(DataLossRefused) as refused:
        Database.open(tmp_path)
    path = tmp_path / DATABASE_NAME
    assert re.fullmatch(
        rf"database {re.escape(str(path))} lacks writes recorded in "
        rf"{re.escape(str(tmp_path / RECORD_NAME))} \(generation \d+ of \d+\): its write-ahead"
        rf" log {DATABASE_NAME}-wal is missing; {re.escape(GO_ON)}",
        str(refused.value),
    ), refused.value
    assert files(tmp_path) == {DATABASE_NAME: main}  # untouched, nothing added
    with pytest.raises(DataLossRefused) as again:
        Database.open(tmp_path)
    assert str(again.value) == str(refused.value)

    wal(tmp_path).unlink(missing_ok=True)
    shm(tmp_path).unlink(missing_ok=True)
    kept.rename(wal(tmp_path))
    transactions, queued = content(tmp_path)
    assert transactions == [f"TAG-{n}" for n in range(writes)]
    assert [action for action, _ in queued] == ["StartTransaction"] * writes


def _put_back_an_older_copy(data_dir: Path, starts: int) -> Path:
    """The operator restores a copy of the database taken after a clean stop, `starts`
    starts (each writing a transaction) later; the copy's path."""
    _with_data(data_dir)
    old = data_dir / "backup.sqlite3"
    shutil.copyfile(data_dir / DATABASE_NAME, old)
    for n in range(starts):
        with closing(Database.open(data_dir)) as db:
            start(db, 1, f"LATER-{n}")
    shutil.copyfile(old, data_dir / DATABASE_NAME)
    return old


@pytest.mark.parametrize("starts", [1, 3])
def test_an_older_copy_of_the_database_is_refused_as_an_older_copy(
    tmp_path: Path, starts: int
) -> None:
    """A copy put back is not a lost write-ahead log, even one start old (then its generation
    is just one behind, as a main file without its -wal file is after a crash)."""
    _put_back_an_older_copy(tmp_path, starts)
    path = tmp_path / DATABASE_NAME
    with pytest.raises(DataLossRefused) as refused:
        Database.open(tmp_path)
    assert str(refused.value) == (
        f"database {path} is an older copy than the last one this directory held (generation"
        f" 1; {tmp_path / RECORD_NAME} records generation {1 + starts}); put the latest copy"
        " back (with its -wal file), or start once with --accept-data-loss to go on with this"
        " one"
    )


def test_an_older_copy_the_operator_accepts_is_a_warning_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _put_back_an_older_copy(tmp_path, 2)
    Database.open(tmp_path, accept_data_loss=True).close()
    (warning,) = warnings(caplog)
    assert warning.endswith(
        "; as --accept-data-loss asks: going on with this older copy (what was written after"
        " it is lost)"
    ), warning
    caplog.clear()
    assert content(tmp_path)[0] == [f"TAG-{n}" for n in range(40)]
    assert warnings(caplog) == []


def test_a_write_ahead_log_taken_in_by_another_program_is_not_a_loss(tmp_path: Path) -> None:
    """After a crash, an operator's sqlite3 looks at the database and, closing it, moves the
    -wal file into the main file and removes it: nothing is missing, nothing is refused."""
    Database.open(tmp_path).close()
    crash_after_transactions(tmp_path, 2)
    with closing(sqlite3.connect(tmp_path / DATABASE_NAME)) as connection:
        assert connection.execute("SELECT count(*) FROM transactions").fetchone() == (2,)
    assert not wal(tmp_path).exists()
    assert content(tmp_path)[0] == ["TAG-0", "TAG-1"]


# --- the operator accepts the loss ---------------------------------------------------------


def _lose_the_database(data_dir: Path) -> None:
    for leftover in data_dir.glob(f"{DATABASE_NAME}*"):
        leftover.unlink()


def _lose_the_wal(data_dir: Path) -> None:
    wal(data_dir).unlink()
    shm(data_dir).unlink()


@pytest.mark.parametrize(
    ("loss", "consequence", "left"),
    [
        pytest.param(
            _lose_the_database,
            "beginning with a new, empty database (what it held is lost)",
            [],
            id="deleted",
        ),
        pytest.param(_lose_the_wal, "going on without them", ["BEFORE"], id="wal-removed"),
    ],
)
def test_a_loss_the_operator_accepts_is_a_warning_once_then_the_directory_is_sound_again(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    loss: Callable[[Path], None],
    consequence: str,
    left: list[str],
) -> None:
    with closing(Database.open(tmp_path)) as db:
        start(db, 1, "BEFORE")
    crash_after_transactions(tmp_path, 2)
    loss(tmp_path)
    with pytest.raises(DataLossRefused):
        Database.open(tmp_path)
    caplog.set_level(logging.WARNING, logger="dcocpp.storage.database")
    Database.open(tmp_path, accept_data_loss=True).close()
    (warning,) = warnings(caplog)
    assert warning.endswith(f"; as --accept-data-loss asks: {consequence}"), warning
    caplog.clear()
    assert content(tmp_path)[0] == left
    assert warnings(caplog) == []  # the directory is sound again: no flag, no word


def test_a_wal_left_without_its_database_is_kept_aside_not_replayed_into_a_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Database.open(tmp_path).close()
    crash_after_transactions(tmp_path, 2)
    leftover = wal(tmp_path).read_bytes()
    (tmp_path / DATABASE_NAME).unlink()
    with pytest.raises(DataLossRefused, match="is missing"):
        Database.open(tmp_path)
    Database.open(tmp_path, accept_data_loss=True).close()
    (kept,) = tmp_path.glob(f"{DATABASE_NAME}.orphaned-*-wal")
    assert kept.read_bytes() == leftover
    (warning,) = warnings(caplog)
    assert warning.endswith(
        "as --accept-data-loss asks: beginning with a new, empty database (what it held is lost;"
        f" its leftover -wal file is kept as {kept.name})"
    ), warning
    assert content(tmp_path) == ([], [])


def test_the_flag_with_nothing_missing_says_to_leave_it_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Database.open(tmp_path).close()
    Database.open(tmp_path, accept_data_loss=True).close()
    assert warnings(caplog) == [
        f"--accept-data-loss given, but nothing is missing in {tmp_path}: leave it off the "
        "command line, or a later loss would go unnoticed"
    ]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        pytest.param(lambda r: "{", "Expecting property name", id="not-json"),
        pytest.param(lambda r: "[]", "not a JSON object", id="a-list"),
        pytest.param(lambda r: {**r, "created": None}, "no 'created'", id="no-created"),
        pytest.param(lambda r: {**r, "generation": True}, "not integers", id="generation-true"),
        pytest.param(lambda r: {**r, "generation": 2.0}, "not integers", id="generation-float"),
        pytest.param(lambda r: {**r, "schemaVersion": False}, "not integers", id="schema-false"),
        pytest.param(
            lambda r: {**r, "checkpointedGeneration": True}, "not integers", id="checkpointed-true"
        ),
        pytest.param(lambda r: {**r, "generation": -1}, "not integers", id="negative"),
    ],
)
def test_an_unreadable_record_is_refused_until_accepted(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], why: str
) -> None:
    """A JSON `true` is no generation (bool is an int in Python), nor is 2.0 or -1."""
    _with_data(tmp_path)
    record = tmp_path / RECORD_NAME
    changed = change(json.loads(record.read_text(encoding="utf-8")))
    if isinstance(changed, dict):
        changed = {key: value for key, value in changed.items() if value is not None}
    record.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(DataLossRefused) as refused:
        Database.open(tmp_path)
    assert str(refused.value).startswith(f"{record} is unreadable (")
    assert why in str(refused.value)
    Database.open(tmp_path, accept_data_loss=True).close()
    assert json.loads(record.read_text(encoding="utf-8"))["database"] == DATABASE_NAME
    assert len(content(tmp_path)[0]) == 40


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
