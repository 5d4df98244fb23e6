"""The station's database: what must survive a power cut, in SQLite under the data directory.

One file, WAL journal, `synchronous=FULL` so that a write has reached the disk before we
acknowledge the state it describes to anyone. The schema is versioned with `PRAGMA user_version`
and migrated forward on open, so a newer dcocpp opens an older data directory.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

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
