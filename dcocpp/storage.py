"""The station's database: what must survive a power cut, in SQLite under the data directory.

One file, WAL journal, `synchronous=FULL` so that a write has reached the disk before we
acknowledge the state it describes to anyone. The schema is versioned with `PRAGMA user_version`
and migrated forward on open, so a newer dcocpp opens an older data directory.
"""

from __future__ import annotations

import decimal
import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from dcocpp.oserrors import directory_problem

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
        # Every transaction the station ran, from its start until its StopTransaction was
        # delivered: what a power cut must not forget (who, where, meter start, the latest
        # meter reading, and the central system's transactionId once it is known).
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
]
SCHEMA_VERSION = len(MIGRATIONS)


class StorageError(Exception):
    """The one exception root of the storage layer."""


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
class ReservationRow:
    """A reservation as stored (see the `reservations` table); connector 0 = any gun."""

    reservation_id: int
    connector_id: int
    id_tag: str
    parent_id_tag: str | None
    expiry_date: str  # OCPP dateTime, UTC


@attrs.frozen
class QueuedMessage:
    """A transaction-related message waiting in the outbox (see the `outbox` table)."""

    seq: int
    action: str
    local_id: int | None
    payload: dict[str, Any]
    id_tag: str | None
    attempts: int
    parked: bool


class Database:
    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, data_dir: Path) -> Database:
        path = data_dir / DATABASE_NAME
        prepare_data_dir(data_dir)
        try:
            # Autocommit: every statement is its own durable transaction unless we group them.
            connection = sqlite3.connect(path, isolation_level=None)
            db = cls(connection, path)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=FULL")
                db._migrate()
            except BaseException:
                connection.close()
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"database {path}: cannot open it: {exc}") from exc
        return db

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
        self._db.close()

    # --- availability ------------------------------------------------------------------------

    def availability(self) -> dict[int, bool]:
        """connector id -> operative, for every connector the central system ever set."""
        rows = self._db.execute("SELECT connector_id, operative FROM availability")
        return {cid: bool(operative) for cid, operative in rows}

    def set_availability(self, connector_id: int, operative: bool) -> None:
        try:
            self._db.execute(
                "INSERT INTO availability (connector_id, operative) VALUES (?, ?)"
                " ON CONFLICT (connector_id) DO UPDATE SET operative = excluded.operative",
                (connector_id, operative),
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot store availability: {exc}") from exc

    # --- transactions and the transaction message outbox ----------------------------------
    # The OCPP layer's outbox (ocpp/transactions.py) is the only user: it keeps a mirror in
    # memory and writes here first, so a message exists on disk before anyone is told.

    def transactions(self) -> list[TransactionRow]:
        rows = self._db.execute(f"SELECT {_TX_COLUMNS} FROM transactions ORDER BY local_id")
        return [TransactionRow(*row) for row in rows]

    def queued_messages(self) -> list[QueuedMessage]:
        rows = self._db.execute(
            "SELECT seq, action, local_id, payload, id_tag, attempts, parked FROM outbox"
            " ORDER BY seq"
        )
        return [
            QueuedMessage(seq, action, local_id, json.loads(payload), id_tag, attempts, bool(p))
            for seq, action, local_id, payload, id_tag, attempts, p in rows
        ]

    def begin_transaction(
        self, fields: Mapping[str, Any], start_payload: Mapping[str, Any], id_tag: str
    ) -> tuple[int, int]:
        """Store a new transaction (`fields`: the `transactions` columns but local_id,
        transaction_id and stopped; its local_id is assigned here) and its StartTransaction,
        atomically; returns (local_id, the message's seq)."""
        columns = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        try:
            with self._db:
                self._db.execute("BEGIN")
                cursor = self._db.execute(
                    f"INSERT INTO transactions ({columns}) VALUES ({marks})", tuple(fields.values())
                )
                local_id = cursor.lastrowid
                assert local_id is not None
                seq = self._insert_message("StartTransaction", local_id, start_payload, id_tag)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot store a new transaction: {exc}") from exc
        return local_id, seq

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
        try:
            with self._db:
                self._db.execute("BEGIN")
                seq = self._insert_message(action, local_id, payload, id_tag)
                if stops:
                    self._db.execute(
                        "UPDATE transactions SET stopped = 1 WHERE local_id = ?", (local_id,)
                    )
                    # The StopTransaction carries the samples now.
                    self._db.execute("DELETE FROM transaction_data WHERE local_id = ?", (local_id,))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot queue {action}: {exc}") from exc
        return seq

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
        rows = self._db.execute("SELECT local_id, sample FROM transaction_data ORDER BY id")
        samples: dict[int, list[dict[str, Any]]] = {}
        for local_id, sample in rows:
            samples.setdefault(local_id, []).append(json.loads(sample))
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

    # --- authorization cache and local authorization list -----------------------------------
    # idTagInfo is stored as the JSON of the snake_case dict the OCPP layer uses.

    def auth_cache(self) -> dict[str, dict[str, Any]]:
        """idTag -> idTagInfo, the least recently updated first (the cache evicts from there)."""
        try:
            rows = self._db.execute("SELECT id_tag, info FROM auth_cache ORDER BY rowid")
            return {id_tag: json.loads(info) for id_tag, info in rows}
        except (sqlite3.Error, ValueError) as exc:
            raise StorageError(f"cannot read the authorization cache: {exc}") from exc

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
        """(listVersion, idTag -> idTagInfo); version 0 when no list was ever sent."""
        try:
            row = self._db.execute("SELECT version FROM local_list_version WHERE id = 0").fetchone()
            rows = self._db.execute("SELECT id_tag, info FROM local_list")
            return (row[0] if row else 0), {id_tag: json.loads(info) for id_tag, info in rows}
        except (sqlite3.Error, ValueError) as exc:
            raise StorageError(f"cannot read the local authorization list: {exc}") from exc

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
        try:
            rows = self._db.execute(
                "SELECT connector_id, profile FROM charging_profiles ORDER BY charging_profile_id"
            )
            return [
                (connector_id, json.loads(profile, parse_float=decimal.Decimal))
                for connector_id, profile in rows
            ]
        except (sqlite3.Error, ValueError) as exc:
            raise StorageError(f"cannot read the charging profiles: {exc}") from exc

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
        try:
            rows = self._db.execute(
                "SELECT reservation_id, connector_id, id_tag, parent_id_tag, expiry_date"
                " FROM reservations ORDER BY reservation_id"
            )
            return [ReservationRow(*row) for row in rows]
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the reservations: {exc}") from exc

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

    # --- writing ------------------------------------------------------------------------------

    def _write(self, what: str, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Run `statements` as one durable transaction; StorageError(what) when it fails."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                for sql, parameters in statements:
                    self._db.execute(sql, parameters)
        except sqlite3.Error as exc:
            raise StorageError(f"{what}: {exc}") from exc


def _set_list_version(version: int) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO local_list_version (id, version) VALUES (0, ?)"
        " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        (version,),
    )


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
