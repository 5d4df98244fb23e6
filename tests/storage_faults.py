"""A failing disk for the station database, without root: what SQLite itself can be told, and
files changed the way a crash, a flash fault or an operator changes them.

- full: `PRAGMA max_page_count` pinned to the database's size (SQLite answers SQLITE_FULL,
  "database or disk is full", as for a full file system);
- read-only: `PRAGMA query_only` on the connection (SQLITE_READONLY, "attempt to write a
  readonly database"; as root, chmod would not stop a write);
- slow: every commit sleeps in the thread that makes it (SQLite's trace callback sees the
  COMMIT), as a busy flash or a file system frozen for a while makes it wait;
- damaged: the header overwritten, the file truncated, or one page of a table overwritten;
- deleted, or its write-ahead log lost after a crash: `crash_after_transactions` leaves a
  database the way SIGKILL does (its last writes only in the -wal file), then the files go.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

from dcocpp.storage.database import DATABASE_NAME, Database
from tests.processes import REPO_ROOT

PAGE_SIZE = 4096  # SQLite's default, what the station's database uses


def fill_disk(db: Database) -> None:
    """From now on the database cannot grow: the next write that needs a new page fails."""
    connection = db._db  # the station's own connection: the limit is per connection
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")


def make_read_only(db: Database) -> None:
    """From now on every write of this connection fails."""
    db._db.execute("PRAGMA query_only = 1")


def slow_commits(db: Database, seconds: float) -> None:
    """From now on every commit of `db` takes `seconds` longer, in the thread that makes it."""

    def trace(statement: str) -> None:
        if statement == "COMMIT":
            time.sleep(seconds)

    db._db.set_trace_callback(trace)


def overwrite_header(path: Path) -> None:
    """What is left when something else wrote over the start of the file."""
    with path.open("r+b") as file:
        file.write(b"not a database, for sure" * 4)


def truncate(path: Path) -> None:
    """Half of the file, as a copy or a file system repair may leave it."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size // 2)


def overwrite_page(path: Path, table: str) -> None:
    """The root page of `table` (the database closed and checkpointed) overwritten, as a
    failing flash block leaves it: the header and every other table still read."""
    with closing(sqlite3.connect(path)) as connection:  # the last one: it leaves no -wal
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
        ).fetchone()
    with path.open("r+b") as file:
        file.seek((root - 1) * PAGE_SIZE)
        file.write(b"\xff" * PAGE_SIZE)


def wal(data_dir: Path) -> Path:
    return data_dir / f"{DATABASE_NAME}-wal"


def shm(data_dir: Path) -> Path:
    return data_dir / f"{DATABASE_NAME}-shm"


_CRASHING_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from dcocpp.storage.database import Database

    db = Database.open(Path(sys.argv[1]))
    for n in range(int(sys.argv[2])):
        tag = f"TAG-{n}"
        at = "2026-01-01T00:00:00Z"
        fields = dict(
            connector_id=1 + n % 2, id_tag=tag, meter_start=1000 * n, started_at=at,
            reservation_id=None, last_meter_wh=1000 * n, last_meter_at=at,
        )
        start = dict(
            connector_id=fields["connector_id"], id_tag=tag, meter_start=1000 * n, timestamp=at
        )
        db.begin_transaction(fields, start, tag)
    os._exit(0)  # as SIGKILL: no close, no checkpoint
    """
)


def crash_after_transactions(data_dir: Path, count: int) -> None:
    """A process opens the database of `data_dir`, starts `count` transactions (each with its
    queued StartTransaction) and dies without closing it: what it wrote since its last
    checkpoint (its open, for fewer than CHECKPOINT_INTERVAL writes) is in the -wal file only."""
    subprocess.run(
        [sys.executable, "-c", _CRASHING_CHILD, str(data_dir), str(count)],
        cwd=REPO_ROOT,
        check=True,
        timeout=60,
    )
