"""The station database as an operator meets its failures: `python -m dcocpp run` refuses to
start on a database that lost data, with one line that names the file, says what is missing and
how to go on, and exit status 1; nothing of what is there is touched, so putting the missing
file back brings everything back. `--accept-data-loss` starts anyway, deliberately, with a
WARNING that says what is lost.

The scene (`crashed`): a charger set up with `dcocpp init` runs two transactions offline (the
central system is not there: both StartTransactions wait in the database) and is killed with
SIGKILL, so that what it wrote since it opened the database is in the -wal file only. Then the
database, or that -wal file, goes. In-process, with every failure and its exact message:
tests/test_storage_failures.py.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from dcocpp.cli.commands import EXIT_OK, EXIT_RUNTIME_ERROR
from dcocpp.storage.database import DATABASE_NAME, Database, TransactionRow
from dcocpp.storage.datarecord import RECORD_NAME
from tests.processes import (
    REPO_ROOT,
    ManagedProcess,
    api_port,
    api_request,
    preset_user_keys,
    wait_api_status,
)
from tests.storage_faults import overwrite_header, shm, wal

pytestmark = pytest.mark.process

TIMEOUT = 30.0  # a start, a state change, an exit: each takes a second or two
CLOSED_CSMS = "ws://127.0.0.1:1/ocpp"  # nothing listens on port 1: the charger is offline


def command(charger: Path) -> list[str]:
    """`dcocpp run` of the charger `dcocpp init` set up in `charger`, offline."""
    config = str(charger / "charger.json")
    return [sys.executable, "-m", "dcocpp", "run", "--config", config, "--csms", CLOSED_CSMS]


def refused_start(charger: Path) -> str:
    """Start the charger, which must refuse: exit status 1 and one line (with -q nothing
    else is printed); that line without its time stamp and level."""
    done = subprocess.run(
        [*command(charger), "-q"],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == EXIT_RUNTIME_ERROR, done.stderr
    (line,) = done.stderr.splitlines()
    prefix = " ERROR   dcocpp: "
    assert prefix in line, line
    return line.split(prefix, 1)[1]


def stored(charger: Path) -> tuple[list[TransactionRow], list[tuple[str, int | None]]]:
    """The transactions and (action, local id) of the queued messages, read-only."""
    path = charger / "data" / DATABASE_NAME
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        db = Database(connection, path)
        return db.transactions(), [(m.action, m.local_id) for m in db.queued_messages()]


def start_transaction_ids(charger: Path) -> list[str]:
    rows, queued = stored(charger)
    starts = {local_id for action, local_id in queued if action == "StartTransaction"}
    return [row.id_tag for row in rows if row.local_id in starts]


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A charger killed with SIGKILL while two offline transactions ran (see the module
    docstring); tests change copies of it."""
    charger = tmp_path_factory.mktemp("crashed") / "charger"
    init = [sys.executable, "-m", "dcocpp", "init", str(charger)]
    subprocess.run(init, cwd=REPO_ROOT, capture_output=True, timeout=TIMEOUT, check=True)
    assert (charger / "data" / RECORD_NAME).is_file()  # init made the database and its record
    preset_user_keys(charger, AllowOfflineTxForUnknownId=True, WebSocketPingInterval=0)
    with ManagedProcess([*command(charger), "--api", "127.0.0.1:0"], name="charger") as run:
        port = api_port(run, TIMEOUT)
        for gun, tag in ((1, "OFFLINE-1"), (2, "OFFLINE-2")):
            api_request(port, "POST", f"/api/connectors/{gun}/plug", {})
            api_request(port, "POST", f"/api/connectors/{gun}/authorize", {"idTag": tag})
        wait_api_status(
            port,
            run,
            lambda s: [c["status"] for c in s["connectors"]] == ["Charging", "Charging"],
            "both guns charging offline",
            TIMEOUT,
        )
        run.send_signal(signal.SIGKILL)
        assert run.wait(TIMEOUT) == -signal.SIGKILL
    assert start_transaction_ids(charger) == ["OFFLINE-1", "OFFLINE-2"]
    return charger


@pytest.fixture
def charger(crashed: Path, tmp_path: Path) -> Path:
    """A copy of the crashed charger, for one test to change."""
    return Path(shutil.copytree(crashed, tmp_path / "charger"))


def _accepted_start(charger: Path, warning: str) -> None:
    """Start with --accept-data-loss: the WARNING, then the station up; SIGTERM stops it."""
    argv = [*command(charger), "--accept-data-loss"]
    with ManagedProcess(argv, name="charger") as run:
        line = run.stderr.wait_for_line(
            lambda s: " WARNING dcocpp.storage.database: " in s, TIMEOUT
        )
        assert line.split(" WARNING dcocpp.storage.database: ", 1)[1] == warning
        run.stderr.wait_for_line(lambda s: "station DCOCPP-001 up" in s, TIMEOUT)
        run.send_signal(signal.SIGTERM)
        assert run.wait(TIMEOUT) == EXIT_OK, run.describe()


def test_a_wal_lost_after_a_crash_refuses_the_start_and_the_wal_put_back_recovers_both(
    charger: Path,
) -> None:
    data = charger / "data"
    kept = wal(data).rename(charger / "kept-wal")
    shm(data).unlink()
    main = (data / DATABASE_NAME).read_bytes()
    line = refused_start(charger)
    assert line.startswith(
        f"database {data / DATABASE_NAME} lacks writes recorded in {data / RECORD_NAME} "
        "(generation "
    ), line
    assert line.endswith(
        f"): its write-ahead log {DATABASE_NAME}-wal is missing; restore it, or start once with "
        "--accept-data-loss to go on without them"
    ), line
    assert (data / DATABASE_NAME).read_bytes() == main  # untouched

    wal(data).unlink(missing_ok=True)
    kept.rename(wal(data))
    with ManagedProcess(command(charger), name="charger") as run:
        for nth in (1, 2):
            run.stderr.wait_for_line(lambda s: "was cut off by a power loss" in s, TIMEOUT, nth=nth)
        run.send_signal(signal.SIGTERM)
        assert run.wait(TIMEOUT) == EXIT_OK, run.describe()
    rows, queued = stored(charger)
    assert sorted((row.id_tag, row.stopped) for row in rows) == [
        ("OFFLINE-1", True),
        ("OFFLINE-2", True),
    ]
    for row in rows:  # both wait for the central system, started and stopped
        mine = [action for action, local_id in queued if local_id == row.local_id]
        assert mine == ["StartTransaction", "StopTransaction"], queued


def test_a_lost_wal_accepted_by_the_operator_goes_on_without_its_transactions(
    charger: Path,
) -> None:
    data = charger / "data"
    wal(data).unlink()
    shm(data).unlink()
    line = refused_start(charger)
    assert refused_start(charger) == line  # the refusal changed nothing: it says it again
    problem = line.split("; restore it", 1)[0]
    _accepted_start(charger, f"{problem}; as --accept-data-loss asks: going on without them")
    assert stored(charger)[0] == []  # as the database was before the two transactions


def test_a_deleted_database_refuses_the_start_until_the_operator_accepts_the_loss(
    charger: Path,
) -> None:
    data = charger / "data"
    for leftover in data.glob(f"{DATABASE_NAME}*"):
        leftover.unlink()
    line = refused_start(charger)
    problem = (
        f"database {data / DATABASE_NAME} is missing, but {data / RECORD_NAME} records one "
        "there since "
    )
    assert line.startswith(problem), line
    assert line.endswith(
        "; restore it (with its -wal file), or start once with --accept-data-loss to begin "
        "with a new, empty database"
    ), line
    assert not (data / DATABASE_NAME).exists()
    _accepted_start(
        charger,
        f"{line.split('; restore it', 1)[0]}; as --accept-data-loss asks: beginning with a "
        "new, empty database (what it held is lost)",
    )
    assert stored(charger) == ([], [("SecurityEventNotification", None)])


def test_a_damaged_database_is_one_line_at_start_and_kept_aside_when_the_loss_is_accepted(
    charger: Path,
) -> None:
    data = charger / "data"
    path = data / DATABASE_NAME
    overwrite_header(path)
    damaged = path.read_bytes()
    assert refused_start(charger) == (
        f"database {path} is damaged: file is not a database (SQLITE_NOTADB); restore it from "
        "a backup, or start once with --accept-data-loss to keep it aside and begin with a "
        "new, empty database"
    )
    assert path.read_bytes() == damaged
    with ManagedProcess([*command(charger), "--accept-data-loss"], name="charger") as run:
        line = run.stderr.wait_for_line(
            lambda s: " WARNING dcocpp.storage.database: " in s, TIMEOUT
        )
        run.stderr.wait_for_line(lambda s: "station DCOCPP-001 up" in s, TIMEOUT)
        run.send_signal(signal.SIGTERM)
        assert run.wait(TIMEOUT) == EXIT_OK, run.describe()
    (aside,) = data.glob(f"{DATABASE_NAME}.damaged-*[0-9]Z")
    assert aside.read_bytes() == damaged
    assert line.endswith(
        f"database {path} is damaged: file is not a database (SQLITE_NOTADB); as "
        f"--accept-data-loss asks: keeping it as {aside.name} and beginning with a new, empty "
        "database"
    ), line
