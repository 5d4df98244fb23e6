"""The data directory's record of its database: `<dataDir>/dcocpp-data.json`, beside it.

A database file cannot say that it is missing, and SQLite cannot tell that the write-ahead log
holding a database's latest writes was lost: the record can. It names the database, when it
was first recorded, its schema version, its *generation*, a number the database holds too, and
the generation its main file held at the last checkpoint (see dcocpp/storage/database.py for
how they are kept so that a lost write-ahead log, and an older copy put back, show). Written
atomically (dcocpp/storage/atomicfile.py) when the database is created, when its generation
rises and at a clean close; read at every open.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from dcocpp.storage.atomicfile import replace_file

RECORD_NAME = "dcocpp-data.json"
# For whoever finds the file: what it is for, and why it must stay.
_ABOUT = (
    "dcocpp: this directory holds the charger's database. Keep this file with it: without "
    "the database it names, the charger refuses to start instead of losing its data unnoticed."
)


@attrs.frozen
class DataRecord:
    database: str  # the database's file name, in the same directory
    created: str  # when the database was first recorded here (UTC, ISO 8601)
    schema_version: int
    generation: int
    # The generation the main file held, without its write-ahead log, the last time all of
    # the log was moved into it (a checkpoint, a clean close); None when not known (a record
    # of an older dcocpp). A database below it is an older copy, not one that lost its log.
    checkpointed: int | None = None


def load(path: Path) -> DataRecord | None:
    """The record in `path`; None when there is none. OSError when it cannot be read,
    ValueError when what it holds is not a record."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    document: Any = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("not a dcocpp data record: not a JSON object")
    try:
        record = DataRecord(
            document["database"],
            document["created"],
            document["schemaVersion"],
            document["generation"],
            document.get("checkpointedGeneration"),
        )
    except KeyError as exc:
        raise ValueError(f"not a dcocpp data record: no {exc.args[0]!r}") from exc
    if not (isinstance(record.database, str) and isinstance(record.created, str)):
        raise ValueError("not a dcocpp data record: its names are not strings")
    numbers = [record.schema_version, record.generation]
    if record.checkpointed is not None:
        numbers.append(record.checkpointed)
    # JSON's true is no number, though Python's bool is an int.
    if not all(type(number) is int and number >= 0 for number in numbers):
        raise ValueError("not a dcocpp data record: its numbers are not integers (0 or more)")
    return record


def save(path: Path, record: DataRecord) -> None:
    """Write the record to `path`, whole or not at all (OSError)."""
    document: dict[str, Any] = {
        "about": _ABOUT,
        "database": record.database,
        "created": record.created,
        "schemaVersion": record.schema_version,
        "generation": record.generation,
    }
    if record.checkpointed is not None:
        document["checkpointedGeneration"] = record.checkpointed
    replace_file(path, json.dumps(document, indent=2) + "\n")
