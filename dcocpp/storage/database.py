"""The station's database: what must survive a power cut, in SQLite under the data directory.

One file, WAL journal, `synchronous=FULL` so that a write has reached the disk before we
acknowledge the state it describes to anyone. The schema is versioned with `PRAGMA user_version`
and migrated forward on open, so a newer dcocpp opens an older data directory.

Nothing is lost unnoticed. The data directory's record (dcocpp/storage/datarecord.py) says that it
holds a database, and the database's *generation*: a number kept in the database too, raised
at every open and after every checkpoint of the write-ahead log. SQLite's automatic checkpoints
are off: the database checkpoints every CHECKPOINT_INTERVAL writes and raises the generation
right after, so the main file without its -wal file (which holds every write since the last
checkpoint) is always below the recorded generation. A clean close checkpoints everything
into the main file, so nothing is missing without it then. The record also keeps the
generation the main file held at the last complete checkpoint (at open, every
CHECKPOINT_INTERVAL writes, at a clean close): a main file that lost its -wal file holds at
least that one, an older copy put back holds less. At open, a database that is missing, below
the recorded generation (its -wal file lost after a crash, or an older copy), or damaged
(`PRAGMA quick_check`) is refused with one line that says which and how to go on, unless the
operator accepts the loss (`accept_data_loss`: `dcocpp run --accept-data-loss`).

Every failure is a StorageError whose message names the file, what could not be done and
SQLite's reason with its code (`database or disk is full (SQLITE_FULL)`), and the state of the
file system when that explains it (full, read-only).

Rows are read back checked (dcocpp/storage/columns.py): what a bit flip, a hand edit or an older
version's bug left in a row never becomes a traceback at the start, nor a boot loop. A row
that cannot be understood is dropped as it is read (at the start: every reader runs then),
with one ERROR line naming its table, its key, what is wrong and what the row held; every
other row stays. A transaction is never dropped, it must be billed: a column that cannot be
read stands in for by what can (its start reading for its latest one, and so on), each said in
an ERROR line; a queued message whose payload cannot be read comes with `unreadable` set, for
the outbox to rebuild from its transaction (ocpp/transactions.py).

Everything here is synchronous and blocks on the disk: the station reaches it through
`dcocpp.storage.asyncdb.AsyncDatabase`, which runs it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
from ocpp.v16.enums import AuthorizationStatus

from dcocpp.clock import ocpp_time
from dcocpp.storage import columns, datarecord
from dcocpp.storage.columns import Unreadable, shown
from dcocpp.storage.datarecord import RECORD_NAME, DataRecord
from dcocpp.storage.oserrors import directory_problem, reason

log = logging.getLogger(__name__)

DATABASE_NAME = "dcocpp.sqlite3"

# Index i holds the statements that migrate schema version i to i + 1. Append only.
MIGRATIONS: list[list[str]] = [
    [
        # The availability the central system asked for, per connector (0 = the charge point).
        # A change scheduled behind a running session is stored at once: after a power cut it
        # is in force from the start.
        """CREATE TABLE availability (
               connector_id INTEGER PRIMARY KEY,
               operative    INTEGER NOT NULL
           )""",
    ],
    [
        # Every transaction the station ran, from its start until its last message (its
        # StopTransaction, or a parked MeterValues that follows it) was delivered: what a
        # power cut must not forget (who, where, meter start, the latest meter reading, and
        # the central system's transactionId once it is known).
        """CREATE TABLE transactions (
               local_id       INTEGER PRIMARY KEY,
               connector_id   INTEGER NOT NULL,
               id_tag         TEXT NOT NULL,
               meter_start    INTEGER NOT NULL,
               started_at     TEXT NOT NULL,
               reservation_id INTEGER,
               transaction_id INTEGER,
               last_meter_wh  INTEGER NOT NULL,
               last_meter_at  TEXT NOT NULL,
               stopped        INTEGER NOT NULL DEFAULT 0
           )""",
        # Transaction-related messages not yet answered, in the order they must be sent.
        # `payload` is the call's JSON with transactionId left for send time when the message
        # belongs to a transaction (local_id), so an offline transaction's messages carry the
        # central system's id once StartTransaction.conf has given it.
        """CREATE TABLE outbox (
               seq      INTEGER PRIMARY KEY AUTOINCREMENT,
               action   TEXT NOT NULL,
               local_id INTEGER,
               payload  TEXT NOT NULL,
               id_tag   TEXT,
               attempts INTEGER NOT NULL DEFAULT 0,
               parked   INTEGER NOT NULL DEFAULT 0
           )""",
    ],
    [
        # idTagInfo the central system returned (AuthorizationCacheEnabled), and the local
        # authorization list it sent (SendLocalList), with the list's version (0: none yet).
        """CREATE TABLE auth_cache (
               id_tag TEXT PRIMARY KEY,
               info   TEXT NOT NULL
           )""",
        """CREATE TABLE local_list (
               id_tag TEXT PRIMARY KEY,
               info   TEXT NOT NULL
           )""",
        """CREATE TABLE local_list_version (
               id      INTEGER PRIMARY KEY CHECK (id = 0),
               version INTEGER NOT NULL
           )""",
    ],
    [
        # Reservations (ReserveNow) until used, cancelled or expired; connector 0 = any gun.
        """CREATE TABLE reservations (
               reservation_id INTEGER PRIMARY KEY,
               connector_id   INTEGER NOT NULL,
               id_tag         TEXT NOT NULL,
               parent_id_tag  TEXT,
               expiry_date    TEXT NOT NULL
           )""",
        # Installed charging profiles (SetChargingProfile), as the profile's snake_case JSON.
        """CREATE TABLE charging_profiles (
               charging_profile_id INTEGER PRIMARY KEY,
               connector_id        INTEGER NOT NULL,
               profile             TEXT NOT NULL
           )""",
    ],
    [
        # idTags are case-insensitive (dcocpp.idtags): the cache and the local list are keyed
        # by the folded tag. SQLite's lower() folds ASCII only, as idtags.key does; of tags that
        # fold to one, the newest row (highest rowid: INSERT OR REPLACE inserts anew) stays.
        """DELETE FROM auth_cache WHERE rowid NOT IN
               (SELECT max(rowid) FROM auth_cache GROUP BY lower(id_tag))""",
        "UPDATE auth_cache SET id_tag = lower(id_tag)",
        """DELETE FROM local_list WHERE rowid NOT IN
               (SELECT max(rowid) FROM local_list GROUP BY lower(id_tag))""",
        "UPDATE local_list SET id_tag = lower(id_tag)",
    ],
    [
        # A running transaction's StopTxnSampledData / StopTxnAlignedData samples, so that a
        # PowerLoss stop after a power cut still carries them (transactionData). Deleted once
        # its StopTransaction, which carries them, is queued.
        """CREATE TABLE transaction_data (
               id       INTEGER PRIMARY KEY AUTOINCREMENT,
               local_id INTEGER NOT NULL,
               sample   TEXT NOT NULL
           )""",
    ],
    [
        # The database's generation, which the data directory's record follows (see the
        # module docstring): one row.
        """CREATE TABLE data_generation (
               id         INTEGER PRIMARY KEY CHECK (id = 0),
               generation INTEGER NOT NULL
           )""",
    ],
    [
        # UpdateFirmware's plan, from the request until the installed firmware's first boot
        # told the central system (one row): where from (with its credentials: the data
        # directory is private), when, how many attempts and how far, and its phase.
        """CREATE TABLE firmware_plan (
               id               INTEGER PRIMARY KEY CHECK (id = 0),
               location         TEXT NOT NULL,
               retrieve_date    TEXT NOT NULL,
               attempts         INTEGER NOT NULL,
               retry_interval   INTEGER NOT NULL,
               attempt          INTEGER NOT NULL,
               phase            TEXT NOT NULL,
               expected_version TEXT,
               file_name        TEXT NOT NULL
           )""",
        # The firmware version an install recorded (one row; none: charger.json's).
        """CREATE TABLE firmware_version (
               id      INTEGER PRIMARY KEY CHECK (id = 0),
               version TEXT NOT NULL
           )""",
    ],
    [
        # A signed firmware update (SignedUpdateFirmware) keeps its request id, signing
        # certificate (PEM), signature (base64) and install date in the plan; all NULL for
        # UpdateFirmware's.
        "ALTER TABLE firmware_plan ADD COLUMN request_id INTEGER",
        "ALTER TABLE firmware_plan ADD COLUMN signing_certificate TEXT",
        "ALTER TABLE firmware_plan ADD COLUMN signature TEXT",
        "ALTER TABLE firmware_plan ADD COLUMN install_date TEXT",
        # The upload running of each kind (GetDiagnostics', GetLog's), from the write of its
        # Uploading until the write of its final status: one left at boot was cut off.
        """CREATE TABLE uploads (
               kind       TEXT PRIMARY KEY,
               request_id INTEGER,
               file_name  TEXT NOT NULL,
               location   TEXT NOT NULL
           )""",
    ],
    [
        # The session history the operator looks back on (the console, GET /api/transactions):
        # a transaction's row leaves `transactions` once its last message is delivered; this
        # one stays, with what it billed, until HISTORY_KEPT newer ones push it out. local_id
        # links it to its running transaction (SQLite may give a later one the same local_id
        # again: the newest row of a local_id is the running one).
        """CREATE TABLE session_history (
               id             INTEGER PRIMARY KEY AUTOINCREMENT,
               local_id       INTEGER NOT NULL,
               connector_id   INTEGER NOT NULL,
               id_tag         TEXT NOT NULL,
               transaction_id INTEGER,
               started_at     TEXT NOT NULL,
               meter_start    INTEGER NOT NULL,
               stopped_at     TEXT,
               meter_stop     INTEGER,
               reason         TEXT
           )""",
        "CREATE INDEX session_history_by_local_id ON session_history (local_id)",
        # Each MeterValue the session sent (MeterValues, and StopTransaction's
        # transactionData), as the message's snake_case JSON: the session's plot.
        """CREATE TABLE session_samples (
               id      INTEGER PRIMARY KEY AUTOINCREMENT,
               session INTEGER NOT NULL,
               sample  TEXT NOT NULL
           )""",
        "CREATE INDEX session_samples_by_session ON session_samples (session)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
# Writes between two checkpoints of the write-ahead log (a write is a few pages: about as
# often as SQLite's own automatic checkpoint, every 1000 pages).
CHECKPOINT_INTERVAL = 250
# Sessions the history keeps (with their samples); older ones are deleted as new ones begin.
HISTORY_KEPT = 1000
# What lets the operator start on a database that lost data (`dcocpp run`).
ACCEPT_DATA_LOSS = "--accept-data-loss"
# SQLite's primary result codes for a file whose content is not a sound database.
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# ... and for a write the disk or its file system refused (the file system's state may say why).
_DISK_REFUSED = {
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
}
# Below this much free space a file system counts as full: a write needs pages and WAL frames.
_LOW_SPACE = 1 << 20
# The most an OCPP 1.6 integer (meterStart, meterStop) carries.
_MAX_WH = 2**31 - 1
_AUTHORIZATION_STATUSES = {status.value for status in AuthorizationStatus}

T = TypeVar("T")
Statement = tuple[str, tuple[Any, ...]]


class StorageError(Exception):
    """The one exception root of the storage layer."""


class DataLossRefused(StorageError):
    """The database lacks what the data directory's record says it held (missing, older,
    damaged): opening it would lose that unnoticed. `accept_data_loss` goes on."""


class _Damaged(Exception):
    """Within `Database.open`: the file is not a sound database (SQLite's reason)."""


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory when it is missing; StorageError naming it when it is not a
    directory the charger can write (checked before anything reads or writes in it)."""
    problem = directory_problem(data_dir)
    if problem is not None:
        raise StorageError(f"data directory {data_dir}: {problem}")


_TX_COLUMNS = (
    "local_id, connector_id, id_tag, meter_start, started_at, reservation_id, transaction_id,"
    " last_meter_wh, last_meter_at, stopped"
)


@attrs.frozen
class TransactionRow:
    """A transaction as stored (see the `transactions` table)."""

    local_id: int | None  # None until stored
    connector_id: int
    id_tag: str
    meter_start: int
    started_at: str
    reservation_id: int | None
    transaction_id: int | None
    last_meter_wh: int
    last_meter_at: str
    stopped: bool = attrs.field(converter=bool)


@attrs.frozen
class SessionRow:
    """A session of the history (see the `session_history` table); the stop fields are None
    while it runs. `reason` None on a stopped session: StopTransaction without one (Local)."""

    id: int
    local_id: int
    connector_id: int
    id_tag: str
    transaction_id: int | None
    started_at: str
    meter_start: int
    stopped_at: str | None
    meter_stop: int | None
    reason: str | None


@attrs.frozen
class ReservationRow:
    """A reservation as stored (see the `reservations` table); connector 0 = any gun."""

    reservation_id: int
    connector_id: int
    id_tag: str
    parent_id_tag: str | None
    expiry_date: str  # OCPP dateTime, UTC


@attrs.frozen
class FirmwarePlanRow:
    """UpdateFirmware's plan as stored (see the `firmware_plan` table)."""

    location: str
    retrieve_date: str  # OCPP dateTime, UTC
    attempts: int
    retry_interval: int
    attempt: int  # the attempt under way or next (0: none begun)
    phase: str
    expected_version: str | None
    file_name: str
    # A signed update's (SignedUpdateFirmware); None for UpdateFirmware's.
    request_id: int | None = None
    signing_certificate: str | None = None  # PEM
    signature: str | None = None  # base64
    install_date: str | None = None  # OCPP dateTime, UTC


_FIRMWARE_PHASES = frozenset(
    {"scheduled", "downloading", "downloaded", "verified", "installing", "installed"}
)

# What uploads there are: GetDiagnostics', GetLog's.
_UPLOAD_KINDS = frozenset({"diagnostics", "log"})


@attrs.frozen
class UploadRow:
    """An upload under way (see the `uploads` table): its kind ("diagnostics", "log"), the
    request's id where it has one, its file, where to (without credentials)."""

    kind: str
    request_id: int | None
    file_name: str
    location: str


@attrs.frozen
class QueuedMessage:
    """A transaction-related message waiting in the outbox (see the `outbox` table).
    `payload` is None when the stored one cannot be read (`unreadable` says why): the
    outbox rebuilds it from its transaction where it can."""

    seq: int
    action: str
    local_id: int | None
    payload: dict[str, Any] | None
    id_tag: str | None
    attempts: int
    parked: bool
    unreadable: str | None = None


class Database:
    """The station database. `open` it (with its checks and the data directory's record);
    tests also wrap a connection of their own (then nothing is recorded or checkpointed)."""

    def __init__(
        self, connection: sqlite3.Connection, path: Path, *, record_path: Path | None = None
    ):
        self._db = connection
        self.path = path
        self._record_path = record_path
        self._record: DataRecord | None = None  # as last written (`open` writes one)
        self._writes = 0  # since the last checkpoint

    @classmethod
    def open(cls, data_dir: Path, *, accept_data_loss: bool = False) -> Database:
        """Open the database of `data_dir`, creating it (and the directory's record) when the
        directory has none. StorageError naming the file and SQLite's reason when it cannot
        be opened; DataLossRefused when it is missing, below the recorded generation or
        damaged, unless `accept_data_loss`: then a WARNING says what is lost, and a missing or
        damaged database (kept aside under another name) is replaced by a new one."""
        prepare_data_dir(data_dir)
        path = data_dir / DATABASE_NAME
        record_path = data_dir / RECORD_NAME
        loss = _Loss(accept_data_loss)
        record = _read_record(record_path, loss)
        if record is not None and not path.exists():
            aside = _aside_name(path, "orphaned")
            leftover = _wal(path).exists()
            loss.found(
                f"database {path} is missing, but {record_path} records one there since "
                f"{record.created}",
                f"restore it (with its -wal file), or start once with {ACCEPT_DATA_LOSS} to "
                "begin with a new, empty database",
                "beginning with a new, empty database (what it held is lost"
                + (f"; its leftover -wal file is kept as {_wal(aside).name})" if leftover else ")"),
            )
            _set_aside(path, aside)  # a -wal file without its database must not be replayed
            record = None
        try:
            db = cls._open_checked(path, record_path, record, loss)
        except _Damaged as damaged:
            aside = _aside_name(path, "damaged")
            loss.found(
                f"database {path} is damaged: {damaged}",
                f"restore it from a backup, or start once with {ACCEPT_DATA_LOSS} to keep it "
                "aside and begin with a new, empty database",
                f"keeping it as {aside.name} and beginning with a new, empty database",
            )
            _set_aside(path, aside)
            db = cls._open_checked(path, record_path, None, loss)
        if accept_data_loss and not loss.accepted:
            log.warning(
                "%s given, but nothing is missing in %s: leave it off the command line, or a "
                "later loss would go unnoticed",
                ACCEPT_DATA_LOSS,
                data_dir,
            )
        return db

    @classmethod
    def _open_checked(
        cls, path: Path, record_path: Path, record: DataRecord | None, loss: _Loss
    ) -> Database:
        """Check the file against `record`, then connect, migrate it and raise its
        generation. _Damaged when the file is not a sound database."""
        try:
            version = _check(path, record_path, record, loss) if path.exists() else 0
            # Autocommit: every statement is its own durable transaction unless we group them.
            # Used from the worker thread of the event loop's `AsyncDatabase` (one call at a
            # time, whichever thread of trio's cache runs it), not only from this one.
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _open_failure(exc, path) from exc
        db = cls(connection, path, record_path=record_path)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA wal_autocheckpoint=0")  # ours: see the docstring
            db._migrate()
            if record is None and version > 0:  # from before records (or the record deleted)
                log.debug("recording in %s that this directory holds %s", record_path, path)
            # What the main file holds now, before the new generation goes into the log.
            checkpointed = _generation(connection) if db._checkpoint() else None
            db._advance(
                record.created if record is not None else _now(),
                checkpointed,
                # Never below the record, also after a loss was accepted: the generation
                # of this directory only rises.
                floor=record.generation if record is not None else 0,
            )
        except sqlite3.Error as exc:
            connection.close()
            raise _open_failure(exc, path) from exc
        except BaseException:
            connection.close()
            raise
        return db

    def _advance(self, created: str, checkpointed: int | None, *, floor: int = 0) -> None:
        """Raise the generation (above `floor` too), then record it with `checkpointed`, the
        generation the main file holds: the record never runs ahead of the file."""
        with self._db:
            self._db.execute("BEGIN")
            # An unreadable one (`_check` said so) counts as 0.
            generation = max(_generation(self._db) or 0, floor) + 1
            self._db.execute(
                "INSERT INTO data_generation (id, generation) VALUES (0, ?)"
                " ON CONFLICT (id) DO UPDATE SET generation = excluded.generation",
                (generation,),
            )
        self._save_record(
            DataRecord(DATABASE_NAME, created, SCHEMA_VERSION, generation, checkpointed)
        )

    def _save_record(self, record: DataRecord) -> None:
        assert self._record_path is not None
        try:
            datarecord.save(self._record_path, record)
        except OSError as exc:
            raise StorageError(f"{self._record_path}: cannot write it: {reason(exc)}") from exc
        self._record = record

    def _checkpoint(self) -> bool:
        """Move the write-ahead log into the main file; whether all of it went (PASSIVE
        never waits for a reader, e.g. an operator's sqlite3: what it still reads stays)."""
        busy, frames, moved = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return bool(busy == 0 and frames == moved)

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {version}, newer than this dcocpp "
                f"understands ({SCHEMA_VERSION}); refusing to touch it"
            )
        for target in range(version, SCHEMA_VERSION):
            with self._db:  # one transaction per step: a failed migration leaves no half
                self._db.execute("BEGIN")
                for statement in MIGRATIONS[target]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target + 1}")
        # One line for the whole change (none when there was nothing to do).
        if version == 0:
            log.info("database %s created (schema version %d)", self.path, SCHEMA_VERSION)
        elif version < SCHEMA_VERSION:
            log.info(
                "database %s migrated from schema version %d to %d",
                self.path,
                version,
                SCHEMA_VERSION,
            )

    def close(self) -> None:
        """Close the connection, all of the write-ahead log moved into the main file first
        and recorded as such (so that a copy of this file put back later shows as older)."""
        try:
            if self._record is not None and self._checkpoint():
                self._save_record(attrs.evolve(self._record, checkpointed=self._record.generation))
        except (sqlite3.Error, StorageError) as exc:
            # Nothing is lost: the log stays, and the record keeps the last checkpoint's
            # generation, which the main file holds (or more).
            log.debug("database %s: checkpoint at close not recorded: %s", self.path, exc)
        finally:
            self._db.close()

    # --- availability ------------------------------------------------------------------------

    def availability(self) -> dict[int, bool]:
        """connector id -> operative, for every connector the central system ever set."""
        rows = self._read(
            "cannot read the availability",
            "availability",
            "connector_id",
            lambda row: (row["connector_id"], columns.flag("operative", row["operative"])),
            "the connector is operative",
        )
        return dict(rows)

    def set_availability(self, connector_id: int, operative: bool) -> None:
        self._write(
            "cannot store availability",
            [
                (
                    "INSERT INTO availability (connector_id, operative) VALUES (?, ?)"
                    " ON CONFLICT (connector_id) DO UPDATE SET operative = excluded.operative",
                    (connector_id, operative),
                )
            ],
        )

    # --- transactions and the transaction message outbox ----------------------------------
    # The OCPP layer's outbox (ocpp/transactions.py) is the only user: it keeps a mirror in
    # memory and writes here first, so a message exists on disk before anyone is told.

    def transactions(self) -> list[TransactionRow]:
        """Every stored transaction, by local id. Never drops one (see the module docstring):
        a column that cannot be read is replaced, with an ERROR line, by what can be."""
        with self._reading("cannot read the transactions"):
            rows = self._db.execute(
                f"SELECT {_TX_COLUMNS} FROM transactions ORDER BY local_id"
            ).fetchall()
            stops = {
                local_id
                for (local_id,) in self._db.execute(
                    "SELECT local_id FROM outbox WHERE action = 'StopTransaction'"
                )
            }
        return [self._transaction(row, stops) for row in rows]

    def _transaction(self, row: Sequence[Any], stops: set[Any]) -> TransactionRow:
        """A `transactions` row as the station uses it; what cannot be read stands in for by
        what can (`stops`: the local ids of the queued StopTransactions)."""
        (local_id, connector_id, id_tag, meter_start, started_at) = row[:5]
        (reservation_id, transaction_id, last_meter_wh, last_meter_at, stopped) = row[5:]
        key = f"local_id {local_id}"

        def read(
            check: Callable[[str, Any], T], column: str, value: Any, fallback: T, then: str
        ) -> T:
            return self._or("transactions", key, check, column, value, fallback, then)

        def say(problem: str) -> None:
            log.error("database %s: transactions row %s: %s", self.path, key, problem)

        connector_id = read(
            columns.integer,
            "connector_id",
            connector_id,
            0,
            "it is stopped and billed without knowing its connector (0)",
        )
        id_tag = read(
            columns.text, "id_tag", id_tag, "(unreadable)", "it is stopped without its idTag"
        )
        start_wh, start_problem = _checked(_meter_reading, "meter_start", meter_start)
        last_wh, last_problem = _checked(_meter_reading, "last_meter_wh", last_meter_wh)
        if start_problem and last_problem:
            say(
                f"{start_problem}, and {last_problem}: billing from 0 Wh (or a stop sample it"
                " carries, if higher)"
            )
        elif last_problem:
            say(
                f"{last_problem}; billing from meter_start {start_wh} Wh instead (or a stop"
                " sample it carries, if higher)"
            )
        elif start_problem:
            say(f"{start_problem}; taking its latest reading {last_wh} Wh for it")
        start_wh = start_wh if start_wh is not None else (last_wh or 0)
        last_wh = last_wh if last_wh is not None else start_wh
        started, start_problem = _checked(columns.timestamp, "started_at", started_at)
        last_at, last_problem = _checked(columns.timestamp, "last_meter_at", last_meter_at)
        if started is None and last_at is None:
            started = last_at = _now()
            say(f"{start_problem}, and {last_problem}: taking now ({started}) for both")
        elif last_at is None:
            say(f"{last_problem}; taking its start ({started}) for its latest reading's time")
        elif started is None:
            say(f"{start_problem}; taking its latest reading's time ({last_at}) for its start")
        started = started or last_at
        last_at = last_at or started
        assert started is not None and last_at is not None
        reservation_id = read(
            columns.optional_integer, "reservation_id", reservation_id, None, "ignored"
        )
        transaction_id = read(
            columns.optional_integer,
            "transaction_id",
            transaction_id,
            None,
            "its MeterValues and StopTransaction cannot be sent unless its StartTransaction"
            " is still queued",
        )
        queued = local_id in stops
        stopped = read(
            columns.flag,
            "stopped",
            stopped,
            queued,
            f"taken as {int(queued)}: a StopTransaction of it is {'' if queued else 'not '}queued",
        )
        return TransactionRow(
            local_id,
            connector_id,
            id_tag,
            start_wh,
            started,
            reservation_id,
            transaction_id,
            last_wh,
            last_at,
            stopped,
        )

    def queued_messages(self) -> list[QueuedMessage]:
        """The outbox in queue order. A message that cannot be attributed (its action, its
        transaction) is dropped; one whose payload cannot be read comes with `unreadable`."""
        with self._reading("cannot read the queued messages"):
            local_ids = self._transaction_ids()

        def decode(row: dict[str, Any]) -> QueuedMessage:
            action = columns.text("action", row["action"])
            local_id = columns.optional_integer("local_id", row["local_id"])
            if local_id is not None and local_id not in local_ids:
                raise Unreadable(f"local_id {local_id} names no stored transaction")
            try:
                payload, unreadable = columns.json_object("payload", row["payload"]), None
            except Unreadable as exc:
                payload, unreadable = None, str(exc)
            key = f"seq {row['seq']}"
            return QueuedMessage(
                row["seq"],
                action,
                local_id,
                payload,
                self._or(
                    "outbox",
                    key,
                    columns.optional_text,
                    "id_tag",
                    row["id_tag"],
                    None,
                    "its answer's idTagInfo is not cached",
                ),
                self._or(
                    "outbox",
                    key,
                    columns.integer,
                    "attempts",
                    row["attempts"],
                    0,
                    "counting its attempts from 0",
                ),
                self._or("outbox", key, columns.flag, "parked", row["parked"], False, "not parked"),
                unreadable,
            )

        return self._read(
            "cannot read the queued messages",
            "outbox",
            "seq",
            decode,
            "the message is not sent",
            order="seq",
        )

    def _transaction_ids(self) -> set[int]:
        return {local_id for (local_id,) in self._db.execute("SELECT local_id FROM transactions")}

    def begin_transaction(
        self, fields: Mapping[str, Any], start_payload: Mapping[str, Any], id_tag: str
    ) -> tuple[int, int]:
        """Store a new transaction (`fields`: the `transactions` columns but local_id,
        transaction_id and stopped; its local_id is assigned here) and its StartTransaction,
        atomically; returns (local_id, the message's seq)."""
        columns = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self._writing("cannot store a new transaction"):
            cursor = self._db.execute(
                f"INSERT INTO transactions ({columns}) VALUES ({marks})", tuple(fields.values())
            )
            local_id = cursor.lastrowid
            assert local_id is not None
            seq = self._insert_message("StartTransaction", local_id, start_payload, id_tag)
            self._begin_session(local_id, fields)
        return local_id, seq

    def _begin_session(self, local_id: int, fields: Mapping[str, Any]) -> None:
        """The new transaction's history row; the oldest beyond HISTORY_KEPT go."""
        self._db.execute(
            "INSERT INTO session_history"
            " (local_id, connector_id, id_tag, started_at, meter_start) VALUES (?, ?, ?, ?, ?)",
            (
                local_id,
                fields["connector_id"],
                fields["id_tag"],
                fields["started_at"],
                fields["meter_start"],
            ),
        )
        kept = "SELECT id FROM session_history ORDER BY id DESC LIMIT ?"
        self._db.execute(
            f"DELETE FROM session_samples WHERE session NOT IN ({kept})", (HISTORY_KEPT,)
        )
        self._db.execute(f"DELETE FROM session_history WHERE id NOT IN ({kept})", (HISTORY_KEPT,))

    def _session_samples(self, local_id: int, samples: Iterable[Any]) -> None:
        for sample in samples:
            self._db.execute(
                "INSERT INTO session_samples (session, sample)"
                " SELECT max(id), ? FROM session_history WHERE local_id = ? HAVING count(*) > 0",
                (json.dumps(sample), local_id),
            )

    def queue_message(
        self,
        action: str,
        local_id: int | None,
        payload: Mapping[str, Any],
        id_tag: str | None = None,
        *,
        stops: bool = False,
    ) -> int:
        """Append a message to the outbox; with `stops`, mark its transaction stopped in the
        same write. Returns the message's seq."""
        with self._writing(f"cannot queue {action}"):
            seq = self._insert_message(action, local_id, payload, id_tag)
            if local_id is not None and action == "MeterValues":
                self._session_samples(local_id, payload.get("meter_value") or ())
            if stops:
                self._db.execute(
                    "UPDATE transactions SET stopped = 1 WHERE local_id = ?", (local_id,)
                )
                # The StopTransaction carries the samples now.
                self._db.execute("DELETE FROM transaction_data WHERE local_id = ?", (local_id,))
                self._stop_session(local_id, payload)
        return seq

    def _stop_session(self, local_id: int | None, stop: Mapping[str, Any]) -> None:
        """The history row of the transaction `stop` (a StopTransaction's payload) ends."""
        self._db.execute(
            "UPDATE session_history SET stopped_at = ?, meter_stop = ?, reason = ?"
            " WHERE id = (SELECT max(id) FROM session_history WHERE local_id = ?)",
            (stop.get("timestamp"), stop.get("meter_stop"), stop.get("reason"), local_id),
        )
        if local_id is not None:
            self._session_samples(local_id, stop.get("transaction_data") or ())

    def _insert_message(
        self, action: str, local_id: int | None, payload: Mapping[str, Any], id_tag: str | None
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO outbox (action, local_id, payload, id_tag) VALUES (?, ?, ?, ?)",
            (action, local_id, json.dumps(dict(payload)), id_tag),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def transaction_data(self) -> dict[int, list[dict[str, Any]]]:
        """local_id -> the stop samples of each transaction not stopped yet, in order."""
        with self._reading("cannot read the stop samples"):
            local_ids = self._transaction_ids()

        def decode(row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            local_id = columns.integer("local_id", row["local_id"])
            if local_id not in local_ids:
                raise Unreadable(f"local_id {local_id} names no stored transaction")
            return local_id, columns.json_object("sample", row["sample"])

        samples: dict[int, list[dict[str, Any]]] = {}
        for local_id, sample in self._read(
            "cannot read the stop samples",
            "transaction_data",
            "id",
            decode,
            "its transaction's StopTransaction goes without it",
            order="id",
        ):
            samples.setdefault(local_id, []).append(sample)
        return samples

    def add_transaction_data(
        self, local_id: int, sample: Mapping[str, Any], energy_wh: int, at: str
    ) -> None:
        """A stop sample, with the meter reading it was taken at as the transaction's latest
        (in one write: a PowerLoss stop never bills less than a sample it carries)."""
        self._write(
            "cannot store a stop sample",
            [
                (
                    "INSERT INTO transaction_data (local_id, sample) VALUES (?, ?)",
                    (local_id, json.dumps(dict(sample))),
                ),
                _meter_update(local_id, energy_wh, at),
            ],
        )

    def record_meter(self, local_id: int, energy_wh: int, at: str) -> None:
        self._write("cannot store the meter reading", [_meter_update(local_id, energy_wh, at)])

    def message_delivered(
        self, seq: int, *, finished: int | None = None, confirmed: tuple[int, int] | None = None
    ) -> None:
        """The message was answered: delete it, in one write with what the answer means:
        `finished` names a transaction whose StopTransaction it was (forgotten with it),
        `confirmed` is (local_id, transactionId) from a StartTransaction.conf."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM outbox WHERE seq = ?", (seq,))
        ]
        if confirmed is not None:
            statements.append(
                (
                    "UPDATE transactions SET transaction_id = ? WHERE local_id = ?",
                    (confirmed[1], confirmed[0]),
                )
            )
            statements.append(
                (
                    "UPDATE session_history SET transaction_id = ?"
                    " WHERE id = (SELECT max(id) FROM session_history WHERE local_id = ?)",
                    (confirmed[1], confirmed[0]),
                )
            )
        if finished is not None:
            statements.append(("DELETE FROM transactions WHERE local_id = ?", (finished,)))
        self._write("cannot remove a delivered message", statements)

    def message_failed(self, seq: int, attempts: int, parked: bool) -> None:
        self._write(
            "cannot store a message's attempts",
            [
                (
                    "UPDATE outbox SET attempts = ?, parked = ? WHERE seq = ?",
                    (attempts, int(parked), seq),
                )
            ],
        )

    def unpark_messages(self) -> None:
        self._write(
            "cannot unpark messages",
            [("UPDATE outbox SET attempts = 0, parked = 0 WHERE parked = 1", ())],
        )

    # --- session history ----------------------------------------------------------------------

    def sessions(self, limit: int) -> list[SessionRow]:
        """The newest `limit` sessions of the history, newest first. A row that cannot be read
        is dropped (an ERROR line says what it held; its samples go with the next pruning):
        the history is for looking back, nothing is billed from it."""
        return self._read(
            "cannot read the session history",
            "session_history",
            "id",
            _session_row,
            "the session is left out of the history",
            order="id DESC",
            where=(
                "WHERE id IN (SELECT id FROM session_history ORDER BY id DESC LIMIT ?)",
                (limit,),
            ),
        )

    def session(self, session_id: int) -> SessionRow | None:
        """The history's session `session_id` (`SessionRow.id`), None if there is none."""
        rows = self._read(
            "cannot read the session history",
            "session_history",
            "id",
            _session_row,
            "the session is left out of the history",
            where=("WHERE id = ?", (session_id,)),
        )
        return rows[0] if rows else None

    def session_samples(self, sessions: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
        """The MeterValue samples of those history sessions (by `SessionRow.id`), in order;
        one that cannot be read is dropped (said in an ERROR line)."""
        ids = sorted(set(sessions))
        found: dict[int, list[dict[str, Any]]] = {session: [] for session in ids}
        if not ids:
            return found

        def decode(row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            return (
                columns.integer("session", row["session"]),
                columns.json_object("sample", row["sample"]),
            )

        marks = ", ".join("?" for _ in ids)
        for session, sample in self._read(
            "cannot read the session samples",
            "session_samples",
            "id",
            decode,
            "the session's plot goes without it",
            order="id",
            where=(f"WHERE session IN ({marks})", tuple(ids)),
        ):
            found[session].append(sample)
        return found

    # --- authorization cache and local authorization list -----------------------------------
    # idTagInfo is stored as the JSON of the snake_case dict the OCPP layer uses.

    def auth_cache(self) -> dict[str, dict[str, Any]]:
        """idTag -> idTagInfo, the least recently updated first (the cache evicts from there)."""
        entries = self._read(
            "cannot read the authorization cache",
            "auth_cache",
            "id_tag",
            _id_tag_entry,
            "the tag is not cached",
            order="rowid",
        )
        return dict(entries)

    def put_auth_cache(self, id_tag: str, info: Mapping[str, Any]) -> None:
        self._write(
            "cannot store the authorization cache",
            [
                (
                    # REPLACE gives the row a new rowid: rowid order is update order.
                    "INSERT OR REPLACE INTO auth_cache (id_tag, info) VALUES (?, ?)",
                    (id_tag, json.dumps(dict(info))),
                )
            ],
        )

    def delete_auth_cache(self, id_tags: Iterable[str] | None = None) -> None:
        """Forget the given tags, or every tag (ClearCache) when None."""
        statements: list[tuple[str, tuple[Any, ...]]]
        if id_tags is None:
            statements = [("DELETE FROM auth_cache", ())]
        else:
            statements = [("DELETE FROM auth_cache WHERE id_tag = ?", (t,)) for t in id_tags]
        self._write("cannot clear the authorization cache", statements)

    def local_list(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """(listVersion, idTag -> idTagInfo); version 0 when no list was ever sent, or when
        an entry could not be read (it is dropped): the list is no longer the one the
        central system sent, which version 0 makes it send whole again."""
        what = "cannot read the local authorization list"
        entries = self._read(
            what,
            "local_list",
            "id_tag",
            _id_tag_entry,
            "the tag is left out of the list, whose version becomes 0 so that the central"
            " system sends it whole again",
            also=[_set_list_version(0)],
        )
        versions = self._read(
            what,
            "local_list_version",
            "id",
            lambda row: columns.integer("version", row["version"]),
            "the list's version counts as 0",
        )
        return (versions[0] if versions else 0), dict(entries)

    def replace_local_list(self, version: int, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """A Full update: the list becomes `entries`, atomically."""
        statements: list[tuple[str, tuple[Any, ...]]] = [("DELETE FROM local_list", ())]
        statements += [
            ("INSERT INTO local_list (id_tag, info) VALUES (?, ?)", (t, json.dumps(dict(i))))
            for t, i in entries.items()
        ]
        statements.append(_set_list_version(version))
        self._write("cannot store the local authorization list", statements)

    def update_local_list(
        self, version: int, changes: Mapping[str, Mapping[str, Any] | None]
    ) -> None:
        """A Differential update: each tag set to its idTagInfo, or removed (None), atomically."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for id_tag, info in changes.items():
            if info is None:
                statements.append(("DELETE FROM local_list WHERE id_tag = ?", (id_tag,)))
            else:
                statements.append(
                    (
                        "INSERT INTO local_list (id_tag, info) VALUES (?, ?)"
                        " ON CONFLICT (id_tag) DO UPDATE SET info = excluded.info",
                        (id_tag, json.dumps(dict(info))),
                    )
                )
        statements.append(_set_list_version(version))
        self._write("cannot store the local authorization list", statements)

    # --- charging profiles -------------------------------------------------------------------
    # A profile is stored as the JSON of the snake_case dict the OCPP layer reads back with
    # `parse_profile`; its Decimal numbers (16.25 A) are written and read back exactly.

    def charging_profiles(self) -> list[tuple[int, dict[str, Any]]]:
        """(connector_id, profile) of every installed charging profile, by id."""

        def decode(row: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            connector_id = columns.integer("connector_id", row["connector_id"])
            profile = columns.json_object("profile", row["profile"], decimals=True)
            key, named = row["charging_profile_id"], profile.get("charging_profile_id")
            if type(named) is not int or named != key:  # deleted by the id it names
                raise Unreadable(f"profile is profile {shown(named)}, not {key}")
            return connector_id, profile

        return self._read(
            "cannot read the charging profiles",
            "charging_profiles",
            "charging_profile_id",
            decode,
            "the profile is not applied",
            order="charging_profile_id",
        )

    def put_charging_profile(
        self, connector_id: int, profile: Mapping[str, Any], *, replaces: Iterable[int] = ()
    ) -> None:
        """Install `profile` (keyed by its charging_profile_id) on `connector_id`, and remove
        the profiles it `replaces` (their ids), atomically."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM charging_profiles WHERE charging_profile_id = ?", (profile_id,))
            for profile_id in replaces
        ]
        statements.append(
            (
                "INSERT OR REPLACE INTO charging_profiles"
                " (charging_profile_id, connector_id, profile) VALUES (?, ?, ?)",
                (
                    profile["charging_profile_id"],
                    connector_id,
                    json.dumps(dict(profile), default=_json_decimal),
                ),
            )
        )
        self._write("cannot store the charging profile", statements)

    def delete_charging_profiles(self, profile_ids: Iterable[int]) -> None:
        """Remove the charging profiles with these ids, atomically."""
        self._write(
            "cannot remove charging profiles",
            [
                ("DELETE FROM charging_profiles WHERE charging_profile_id = ?", (profile_id,))
                for profile_id in profile_ids
            ],
        )

    # --- reservations ------------------------------------------------------------------------
    # ReserveNow's reservations until used, cancelled, expired or ended by their connector.

    def reservations(self) -> list[ReservationRow]:
        """Every stored reservation, by id."""
        return self._read(
            "cannot read the reservations",
            "reservations",
            "reservation_id",
            lambda row: ReservationRow(
                row["reservation_id"],
                columns.integer("connector_id", row["connector_id"]),
                columns.text("id_tag", row["id_tag"]),
                columns.optional_text("parent_id_tag", row["parent_id_tag"]),
                columns.timestamp("expiry_date", row["expiry_date"]),
            ),
            "the reservation is not restored",
            order="reservation_id",
        )

    def put_reservation(self, row: ReservationRow) -> None:
        """Store a reservation, replacing the one with the same id (ReserveNow replaces)."""
        self._write(
            "cannot store the reservation",
            [
                (
                    "INSERT OR REPLACE INTO reservations (reservation_id, connector_id, id_tag,"
                    " parent_id_tag, expiry_date) VALUES (?, ?, ?, ?, ?)",
                    attrs.astuple(row),
                )
            ],
        )

    def delete_reservations(self, reservation_ids: Iterable[int]) -> None:
        """Forget these reservations, atomically."""
        self._write(
            "cannot remove reservations",
            [
                ("DELETE FROM reservations WHERE reservation_id = ?", (reservation_id,))
                for reservation_id in reservation_ids
            ],
        )

    # --- firmware -------------------------------------------------------------------------------
    # UpdateFirmware's plan and the version an install recorded. Every change of the plan's
    # phase is written with the status notification that tells it (`firmware_step`): a
    # restart at any point neither loses nor repeats one.

    def firmware_plan(self) -> FirmwarePlanRow | None:
        """The plan, None when there is none (or the stored one cannot be read: dropped)."""
        rows = self._read(
            "cannot read the firmware plan",
            "firmware_plan",
            "id",
            _firmware_plan,
            "the firmware update is forgotten",
        )
        return rows[0] if rows else None

    def firmware_version(self) -> str | None:
        """The firmware version the last install recorded (None: none did)."""
        rows = self._read(
            "cannot read the firmware version",
            "firmware_version",
            "id",
            lambda row: _version_text(row["version"]),
            "the configured firmwareVersion is reported",
        )
        return rows[0] if rows else None

    def firmware_step(
        self,
        plan: FirmwarePlanRow | None,
        messages: Sequence[tuple[str, Mapping[str, Any]]] = (),
        *,
        version: str | None = None,
    ) -> list[int]:
        """In one write: the plan (None: deleted), the installed `version` when given, and
        `messages` appended to the outbox. Returns the messages' seqs."""
        with self._writing("cannot store the firmware update"):
            self._db.execute("DELETE FROM firmware_plan")
            if plan is not None:
                self._db.execute(
                    "INSERT INTO firmware_plan (id, location, retrieve_date, attempts,"
                    " retry_interval, attempt, phase, expected_version, file_name, request_id,"
                    " signing_certificate, signature, install_date)"
                    " VALUES (0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    attrs.astuple(plan),
                )
            if version is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO firmware_version (id, version) VALUES (0, ?)",
                    (version,),
                )
            return [
                self._insert_message(action, None, payload, None) for action, payload in messages
            ]

    # --- uploads --------------------------------------------------------------------------------
    # The upload running of each kind, written with its Uploading and deleted with its final
    # status (`upload_step`): one still here at boot was cut off by the restart.

    def running_uploads(self) -> list[UploadRow]:
        """The uploads the last run left running (a row that cannot be read: dropped)."""
        return self._read(
            "cannot read the running uploads",
            "uploads",
            "kind",
            lambda row: UploadRow(
                _upload_kind(row["kind"]),
                columns.optional_integer("request_id", row["request_id"]),
                _file_name(row["file_name"]),
                columns.text("location", row["location"]),
            ),
            "its end is not reported",
        )

    def upload_step(
        self, kind: str, running: UploadRow | None, action: str, payload: Mapping[str, Any]
    ) -> int:
        """In one write: the upload of `kind` running (None: it ended) and the status message
        that tells it appended to the outbox. Returns the message's seq."""
        with self._writing(f"cannot queue {action}"):
            self._db.execute("DELETE FROM uploads WHERE kind = ?", (kind,))
            if running is not None:
                self._db.execute(
                    "INSERT INTO uploads (kind, request_id, file_name, location)"
                    " VALUES (?, ?, ?, ?)",
                    attrs.astuple(running),
                )
            return self._insert_message(action, None, payload, None)

    # --- reading ------------------------------------------------------------------------------

    def _read(
        self,
        what: str,
        table: str,
        key: str,
        decode: Callable[[dict[str, Any]], T],
        consequence: str,
        *,
        order: str = "rowid",
        also: Sequence[Statement] = (),
        where: Statement = ("", ()),
    ) -> list[T]:
        """`decode` of every row of `table` (a dict by column name; those `where` selects), in
        `order`. The rows it finds Unreadable are dropped, with `also`, in one write, each
        with an ERROR line naming it by its `key` column, saying what is wrong and
        `consequence`, and showing what it held."""
        with self._reading(what):
            condition, parameters = where
            cursor = self._db.execute(
                f"SELECT rowid, * FROM {table} {condition} ORDER BY {order}", parameters
            )
            names = [description[0] for description in cursor.description[1:]]
            rows = cursor.fetchall()
        decoded: list[T] = []
        unreadable: list[tuple[int, dict[str, Any], str]] = []
        for rowid, *values in rows:
            row = dict(zip(names, values, strict=True))
            try:
                decoded.append(decode(row))
            except Unreadable as exc:
                unreadable.append((rowid, row, str(exc)))
        if not unreadable:
            return decoded
        self._write(
            f"cannot drop the rows of {table} that cannot be read",
            [(f"DELETE FROM {table} WHERE rowid = ?", (rowid,)) for rowid, _, _ in unreadable]
            + list(also),
        )
        for _, row, problem in unreadable:
            log.error(
                "database %s: %s row %s %s cannot be read: %s; dropped, %s (the row held %s)",
                self.path,
                table,
                key,
                shown(row[key]),
                problem,
                consequence,
                ", ".join(f"{name} {shown(value)}" for name, value in row.items() if name != key),
            )
        return decoded

    def _or(
        self,
        table: str,
        key: str,
        check: Callable[[str, Any], T],
        column: str,
        value: Any,
        fallback: T,
        then: str,
    ) -> T:
        """`check(column, value)`, or `fallback` with an ERROR line (the row is kept)."""
        try:
            return check(column, value)
        except Unreadable as exc:
            log.error("database %s: %s row %s: %s; %s", self.path, table, key, exc, then)
            return fallback

    # --- writing ------------------------------------------------------------------------------

    def _write(self, what: str, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Run `statements` as one durable transaction (see `_writing`)."""
        with self._writing(what):
            for sql, parameters in statements:
                self._db.execute(sql, parameters)

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """The statements run inside are one durable transaction: all written or, on a
        failure, none; StorageError naming the file, `what` and SQLite's reason."""
        try:
            self._checkpoint_when_due()
            with self._db:
                self._db.execute("BEGIN")
                yield
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path}: {what}: {_reason(exc, self.path)}") from exc

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """StorageError naming the file, `what` and the reason for a read that fails (a
        damaged page, a stored JSON value that does not parse)."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path}: {what}: {_reason(exc, self.path)}") from exc
        except ValueError as exc:
            raise StorageError(f"database {self.path}: {what}: {exc}") from exc

    def _checkpoint_when_due(self) -> None:
        """Every CHECKPOINT_INTERVAL writes, before the next: the write-ahead log into the
        main file, then a new generation (see the module docstring). Never blocks on a
        reader (PASSIVE): what a reader still needs stays in the log until the next one."""
        if self._record is None:  # a connection of a test's own: SQLite's defaults
            return
        self._writes += 1
        if self._writes <= CHECKPOINT_INTERVAL:
            return
        self._writes = 1
        record = self._record
        self._advance(
            record.created, record.generation if self._checkpoint() else record.checkpointed
        )


def _set_list_version(version: int) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO local_list_version (id, version) VALUES (0, ?)"
        " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        (version,),
    )


def _checked(check: Callable[[str, Any], T], column: str, value: Any) -> tuple[T | None, str]:
    """(the value, "") or (None, what is wrong with it)."""
    try:
        return check(column, value), ""
    except Unreadable as exc:
        return None, str(exc)


def _positive(column: str, value: Any) -> int:
    if columns.integer(column, value) < 1:
        raise Unreadable(f"{column} {shown(value)} is not 1 or more")
    return int(value)


def _firmware_phase(value: Any) -> str:
    phase = columns.text("phase", value)
    if phase not in _FIRMWARE_PHASES:
        raise Unreadable(f"phase {shown(value)} is none of {', '.join(sorted(_FIRMWARE_PHASES))}")
    return phase


def _firmware_plan(row: Mapping[str, Any]) -> FirmwarePlanRow:
    plan = FirmwarePlanRow(
        columns.text("location", row["location"]),
        columns.timestamp("retrieve_date", row["retrieve_date"]),
        _positive("attempts", row["attempts"]),
        columns.integer("retry_interval", row["retry_interval"]),
        columns.integer("attempt", row["attempt"]),
        _firmware_phase(row["phase"]),
        columns.optional_text("expected_version", row["expected_version"]),
        _file_name(row["file_name"]),
        columns.optional_integer("request_id", row["request_id"]),
        columns.optional_text("signing_certificate", row["signing_certificate"]),
        columns.optional_text("signature", row["signature"]),
        _optional_timestamp("install_date", row["install_date"]),
    )
    signed = (plan.request_id, plan.signing_certificate, plan.signature)
    if any(value is not None for value in signed) and None in signed:
        # Half a signed update: installing it unchecked would be a lie to the central system.
        raise Unreadable("request_id, signing_certificate and signature are not all set")
    return plan


def _upload_kind(value: Any) -> str:
    kind = columns.text("kind", value)
    if kind not in _UPLOAD_KINDS:
        raise Unreadable(f"kind {shown(value)} is none of {', '.join(sorted(_UPLOAD_KINDS))}")
    return kind


def _optional_timestamp(column: str, value: Any) -> str | None:
    return None if value is None else columns.timestamp(column, value)


def _file_name(value: Any) -> str:
    """A plain file name (in the data directory, or its firmware folder)."""
    name = columns.text("file_name", value)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise Unreadable(f"file_name {shown(value)} is not a file name")
    return name


def _version_text(value: Any) -> str:
    version = columns.text("version", value)
    if not 1 <= len(version) <= 50:
        raise Unreadable(f"version {shown(value)} is not 1 to 50 characters")
    return version


def _meter_reading(column: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_WH:
        raise Unreadable(
            f"{column} {shown(value)} is not a meter reading (an integer from 0 to {_MAX_WH})"
        )
    return value


def _session_row(row: dict[str, Any]) -> SessionRow:
    stopped_at, meter_stop = row["stopped_at"], row["meter_stop"]
    return SessionRow(
        columns.integer("id", row["id"]),
        columns.integer("local_id", row["local_id"]),
        columns.integer("connector_id", row["connector_id"]),
        columns.text("id_tag", row["id_tag"]),
        columns.optional_integer("transaction_id", row["transaction_id"]),
        columns.timestamp("started_at", row["started_at"]),
        _meter_reading("meter_start", row["meter_start"]),
        None if stopped_at is None else columns.timestamp("stopped_at", stopped_at),
        None if meter_stop is None else _meter_reading("meter_stop", meter_stop),
        columns.optional_text("reason", row["reason"]),
    )


def _id_tag_entry(row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(idTag, idTagInfo) of an `auth_cache` or `local_list` row: the idTagInfo as the OCPP
    layer stores it (snake_case status, expiry_date, parent_id_tag) and reads it back."""
    id_tag = columns.text("id_tag", row["id_tag"])
    info = columns.json_object("info", row["info"])
    status = info.get("status")
    if not isinstance(status, str) or status not in _AUTHORIZATION_STATUSES:
        raise Unreadable(f"info status {shown(status)} is not an authorization status")
    if info.get("expiry_date") is not None:
        columns.timestamp("info expiry_date", info["expiry_date"])
    columns.optional_text("info parent_id_tag", info.get("parent_id_tag"))
    return id_tag, info


def _json_decimal(value: Any) -> Any:
    # json cannot write a Decimal; as int or float it reads back (parse_float=Decimal) exactly:
    # the float's shortest repr of 16.25 is "16.25".
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _meter_update(local_id: int, energy_wh: int, at: str) -> tuple[str, tuple[Any, ...]]:
    """The statement that makes a reading the transaction's latest (what PowerLoss bills)."""
    return (
        "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ? WHERE local_id = ?",
        (energy_wh, at, local_id),
    )


class _Loss:
    """What `Database.open` found missing: refused (DataLossRefused), or, when the operator
    accepts the loss, a WARNING."""

    def __init__(self, accept: bool):
        self.accept = accept
        self.accepted = False

    def found(self, problem: str, how_to_go_on: str, what_happens: str) -> None:
        if not self.accept:
            raise DataLossRefused(f"{problem}; {how_to_go_on}")
        self.accepted = True
        log.warning("%s; as %s asks: %s", problem, ACCEPT_DATA_LOSS, what_happens)


def _read_record(path: Path, loss: _Loss) -> DataRecord | None:
    try:
        return datarecord.load(path)
    except OSError as exc:
        raise StorageError(f"{path}: cannot read it: {reason(exc)}") from exc
    except ValueError as exc:
        loss.found(
            f"{path} is unreadable ({exc})",
            "it records the database this directory holds: restore it, or start once with "
            f"{ACCEPT_DATA_LOSS} to write it anew",
            "writing it anew",
        )
        return None


def _check(path: Path, record_path: Path, record: DataRecord | None, loss: _Loss) -> int:
    """Before anything may change it, on a connection that cannot write (a writing one would
    move the -wal file into the main file as it closes, whatever the check found): the file is
    sound, and holds at least the recorded generation. Its schema version."""
    wal = _wal(path)
    # An empty one holds nothing (a refused open may leave one: this check cannot remove it).
    wal_was_there = wal.exists() and wal.stat().st_size > 0
    uri = f"{path.absolute().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise _Damaged(f"{problems[0]} (PRAGMA quick_check)")
        version: int = connection.execute("PRAGMA user_version").fetchone()[0]
        generation = _generation(connection)
    if generation is None:
        # Refusing would stop the charger for one unreadable number; the file is sound.
        log.error(
            "database %s: its generation (table data_generation) is unreadable, so whether it"
            " lacks writes recorded in %s cannot be told; going on with what it holds",
            path,
            record_path,
        )
    elif record is None or generation >= record.generation:
        pass
    elif record.checkpointed is not None and generation < record.checkpointed:
        # Below what the main file alone held at the last checkpoint: no lost log explains it.
        loss.found(
            f"database {path} is an older copy than the last one this directory held "
            f"(generation {generation}; {record_path} records generation {record.generation})",
            f"put the latest copy back (with its -wal file), or start once with "
            f"{ACCEPT_DATA_LOSS} to go on with this one",
            "going on with this older copy (what was written after it is lost)",
        )
    else:
        older = record.checkpointed is None  # a record of an older dcocpp cannot tell
        if wal_was_there:
            cause = f"its write-ahead log {wal.name} is not the one it was written with"
        else:
            cause = f"its write-ahead log {wal.name} is missing"
        loss.found(
            f"database {path} lacks writes recorded in {record_path} "
            f"(generation {generation} of {record.generation}): {cause}"
            + (", or it is an older copy" if older else ""),
            f"restore it, or start once with {ACCEPT_DATA_LOSS} to go on without them",
            "going on without them",
        )
    return version


def _generation(connection: sqlite3.Connection) -> int | None:
    """The database's generation; 0 before it has one (new, or older than the record); None
    when what it holds is no generation (an integer, 0 or more)."""
    try:
        row = connection.execute("SELECT generation FROM data_generation WHERE id = 0").fetchone()
    except sqlite3.OperationalError:  # no such table: a schema older than generations
        return 0
    if row is None:
        return 0
    generation = row[0]
    return generation if type(generation) is int and generation >= 0 else None


def _open_failure(exc: sqlite3.Error, path: Path) -> Exception:
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _DAMAGED:
        return _Damaged(_reason(exc, path))
    return StorageError(f"database {path}: cannot open it: {_reason(exc, path)}")


def _wal(path: Path) -> Path:
    return path.with_name(f"{path.name}-wal")


def _aside_name(path: Path, why: str) -> Path:
    return path.with_name(f"{path.name}.{why}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")


def _set_aside(path: Path, aside: Path) -> None:
    """Rename the database `path` and its -wal and -shm files, those there are, to `aside`
    (kept together: SQLite opens them as one)."""
    try:
        for suffix in ("-wal", "-shm", ""):
            source = path.with_name(path.name + suffix)
            if source.exists():
                source.rename(aside.with_name(aside.name + suffix))
    except OSError as exc:
        raise StorageError(f"database {path}: cannot keep it aside: {reason(exc)}") from exc


def _now() -> str:
    return ocpp_time(datetime.now(UTC), "seconds")


def _reason(exc: sqlite3.Error, path: Path) -> str:
    """SQLite's reason with its code (`database or disk is full (SQLITE_FULL)`), and the
    state of the file system when the disk refused and that state explains it."""
    name = getattr(exc, "sqlite_errorname", None)
    text = f"{exc} ({name})" if name else str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _DISK_REFUSED:
        return text
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return text
    if stats.f_flag & os.ST_RDONLY:
        return f"{text}; the file system of {path.parent} is read-only"
    free = stats.f_bavail * stats.f_frsize
    if free < _LOW_SPACE:
        return f"{text}; the file system of {path.parent} is full ({free} bytes free)"
    return text
