"""The station database: created under the data directory, versioned, migrated forward, and
refusing a data directory written by a newer dcocpp."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from dcocpp.storage.database import DATABASE_NAME, SCHEMA_VERSION, Database, StorageError


def test_created_under_the_data_directory_with_wal_and_the_current_schema(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "data")
    db.close()
    connection = sqlite3.connect(tmp_path / "data" / DATABASE_NAME)
    try:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()


def test_availability_survives_reopening(tmp_path: Path) -> None:
    db = Database.open(tmp_path)
    db.set_availability(0, True)
    db.set_availability(2, False)
    db.set_availability(2, True)
    db.set_availability(1, False)
    db.close()
    db = Database.open(tmp_path)
    try:
        assert db.availability() == {0: True, 1: False, 2: True}
    finally:
        db.close()


def test_an_empty_old_file_is_migrated(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / DATABASE_NAME).close()  # version 0: no tables yet
    db = Database.open(tmp_path)
    try:
        assert db.availability() == {}
    finally:
        db.close()


def _storage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dcocpp.storage.database"]


def test_a_new_database_is_one_line_created(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dcocpp.storage.database")
    Database.open(tmp_path).close()
    path = tmp_path / DATABASE_NAME
    assert _storage_lines(caplog) == [f"database {path} created (schema version {SCHEMA_VERSION})"]
    caplog.clear()
    Database.open(tmp_path).close()  # up to date: nothing to say
    assert _storage_lines(caplog) == []


def test_a_migration_is_one_line_from_which_to_which_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dcocpp.storage.database import MIGRATIONS

    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    for statements in MIGRATIONS[:2]:
        for statement in statements:
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 2")
    connection.close()
    caplog.set_level(logging.INFO, logger="dcocpp.storage.database")
    Database.open(tmp_path).close()
    assert _storage_lines(caplog) == [
        f"database {tmp_path / DATABASE_NAME} migrated from schema version 2 to {SCHEMA_VERSION}"
    ]


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StorageError, match="newer than this dcocpp"):
        Database.open(tmp_path)


def test_an_unwritable_data_directory_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="data directory"):
        Database.open(blocker / "data")


@pytest.mark.parametrize(
    ("where", "problem"),
    [
        ("file", "not a directory"),
        ("file/data", "cannot create it: not a directory"),
    ],
)
def test_a_data_directory_that_cannot_be_used_is_named_with_the_cause(
    tmp_path: Path, where: str, problem: str
) -> None:
    (tmp_path / "file").write_text("not a directory")
    data_dir = tmp_path / where
    with pytest.raises(StorageError) as info:
        Database.open(data_dir)
    assert str(info.value) == f"data directory {data_dir}: {problem}"


def test_a_data_directory_of_every_older_version_is_migrated_keeping_its_data(
    tmp_path: Path,
) -> None:
    """A newer dcocpp opens what an older one wrote: each older schema, with data in it, is
    migrated forward step by step and the data stays."""
    from dcocpp.storage.database import MIGRATIONS

    for version in range(1, SCHEMA_VERSION):
        data_dir = tmp_path / f"v{version}"
        data_dir.mkdir()
        connection = sqlite3.connect(data_dir / DATABASE_NAME)
        for statements in MIGRATIONS[:version]:
            for statement in statements:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {version}")
        connection.execute("INSERT INTO availability (connector_id, operative) VALUES (2, 0)")
        connection.commit()
        connection.close()

        db = Database.open(data_dir)
        try:
            assert db.availability() == {2: False}
            # The newer tables work.
            db.put_auth_cache("tag", {"status": "Accepted"})
            assert db.auth_cache() == {"tag": {"status": "Accepted"}}
            assert db.queued_messages() == [] and db.transactions() == []
        finally:
            db.close()
        check = sqlite3.connect(data_dir / DATABASE_NAME)
        try:
            assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            check.close()


def test_stored_id_tags_are_folded_keeping_the_newest_of_one_tag(tmp_path: Path) -> None:
    """Schema 5 keys the authorization cache and the local list by the folded idTag (idTags
    are case-insensitive): an older database's "ABC" and "abc" become one entry, the newer."""
    from dcocpp.storage.database import MIGRATIONS

    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    for statements in MIGRATIONS[:4]:
        for statement in statements:
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 4")
    rows = [("ABC", "Blocked"), ("Other", "Accepted"), ("abc", "Accepted")]
    for table in ("auth_cache", "local_list"):
        for tag, status in rows:
            connection.execute(
                f"INSERT INTO {table} (id_tag, info) VALUES (?, ?)",
                (tag, json.dumps({"status": status})),
            )
    connection.execute("INSERT INTO local_list_version (id, version) VALUES (0, 3)")
    connection.commit()
    connection.close()

    db = Database.open(tmp_path)
    try:
        expected = {"other": {"status": "Accepted"}, "abc": {"status": "Accepted"}}
        assert db.auth_cache() == expected
        assert list(db.auth_cache()) == ["other", "abc"]  # the order of the updates stays
        assert db.local_list() == (3, expected)
    finally:
        db.close()
