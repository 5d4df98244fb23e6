"""The station's database: what must survive a power cut, in SQLite under the data directory.

One file, WAL journal, `synchronous=FULL` so that a write has reached the disk before we
acknowledge the state it describes to anyone. The schema is versioned with `PRAGMA user_version`
and migrated forward on open, so a newer dcocpp opens an older data directory.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
]
SCHEMA_VERSION = len(MIGRATIONS)


class StorageError(Exception):
    """The one exception root of the storage layer."""


class Database:
    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, data_dir: Path) -> Database:
        path = data_dir / DATABASE_NAME
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
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
            raise StorageError(f"cannot open the database {path}: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"cannot create the data directory {data_dir}: {exc}") from exc
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
            log.info("database %s migrated to schema version %d", self.path, target + 1)

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

    # --- authorization cache and local authorization list -----------------------------------
    # idTagInfo is stored as the JSON of the snake_case dict the OCPP layer uses.

    def auth_cache(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT id_tag, info FROM auth_cache")
        return {id_tag: json.loads(info) for id_tag, info in rows}

    def put_auth_cache(self, id_tag: str, info: Mapping[str, Any]) -> None:
        self._write(
            "cannot store the authorization cache",
            [
                (
                    "INSERT INTO auth_cache (id_tag, info) VALUES (?, ?)"
                    " ON CONFLICT (id_tag) DO UPDATE SET info = excluded.info",
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
        row = self._db.execute("SELECT version FROM local_list_version WHERE id = 0").fetchone()
        rows = self._db.execute("SELECT id_tag, info FROM local_list")
        return (row[0] if row else 0), {id_tag: json.loads(info) for id_tag, info in rows}

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
