"""GetDiagnostics (OCPP 1.6 5.9, errata 3.50) on a whole station against the FakeCsms, with
the archive uploaded to real servers on loopback: the in-process HTTP file server
(tests/file_server.py) and pyftpdlib in its own process (tests/peers/ftp_server.py).

Real time, short: the bytes move through the kernel and a worker thread (the archive, FTP),
while an autojump clock would jump past them; retry intervals are 1 s.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call

from dcocpp.cli.sim import format_status
from dcocpp.clock import ocpp_time
from dcocpp.ocpp.diagnostics.archive import within
from dcocpp.storage.database import SCHEMA_VERSION
from tests.file_server import FileServer, serve_files
from tests.processes import ManagedProcess
from tests.station_harness import Harness, charger_config, running_station

USER = "charger"
PASSWORD = "s3cr3t-Pa55"
AUTH_KEY = "0123456789abcdef0123"  # AuthorizationKey: must never leave the charger
LIMIT = 20.0  # seconds a step may take at most
CONSOLE_LOG = "dcocpp-console.log"


def console_log(folder: Path) -> None:
    """A console log with a line long before the window, and one within it."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now().astimezone()
    old = (now - timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S,000")
    recent = now.strftime("%Y-%m-%d %H:%M:%S,000")
    (folder / CONSOLE_LOG).write_text(
        f"{old} INFO    dcocpp: OLD-LINE outside the window\n"
        f"{recent} WARNING dcocpp: RECENT-LINE inside the window\n"
        "  a traceback line without a time goes with the line before\n",
        encoding="utf-8",
    )


@pytest.fixture
async def station(tmp_path: Path) -> AsyncIterator[Harness]:
    config = charger_config(tmp_path)
    console_log(config.log_dir)
    async with running_station(config, keys={"AuthorizationKey": AUTH_KEY}) as h:
        await h.booted()
        yield h


@pytest.fixture
async def http_server() -> AsyncIterator[FileServer]:
    async with serve_files(FileServer(credentials=(USER, PASSWORD))) as server:
        yield server


@pytest.fixture
def ftp_root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "ftp-root"
    (root / "diag").mkdir(parents=True)
    argv = [sys.executable, "-m", "tests.peers.ftp_server", "--root", str(root)]
    process = ManagedProcess([*argv, "--user", USER, "--password", PASSWORD], name="ftp server")
    try:
        line = process.stdout.wait_for_line(lambda s: s.startswith("LISTENING "), 15)
        yield root, int(line.split()[1])
    finally:
        process.stop()


def get_diagnostics(location: str, **fields: Any) -> call.GetDiagnostics:
    start = ocpp_time(datetime.now(UTC) - timedelta(days=1))
    return call.GetDiagnostics(location=location, start_time=start, **fields)


def statuses(h: Harness) -> list[str]:
    return [p["status"] for p in h.csms.received("DiagnosticsStatusNotification")]


async def wait_statuses(h: Harness, count: int) -> list[str]:
    await h.wait_calls("DiagnosticsStatusNotification", count, limit=LIMIT)
    return statuses(h)


def check_archive(data: bytes) -> dict[str, bytes]:
    """The archive opens; its members by name."""
    assert data
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {}
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            assert extracted is not None
            members[member.name] = extracted.read()
    return members


def check_contents(members: dict[str, bytes]) -> None:
    console = members[f"logs/{CONSOLE_LOG}"].decode()
    assert "RECENT-LINE" in console and "a traceback line" in console
    assert "OLD-LINE" not in console  # before startTime
    configuration = json.loads(members["configuration.json"])
    assert configuration["AuthorizationKey"] == "(redacted)"
    assert configuration["HeartbeatInterval"]
    assert configuration["GetConfigurationMaxKeys"] != "(redacted)"  # not a secret
    assert not any(AUTH_KEY.encode() in data for data in members.values())
    status = json.loads(members["status.json"])
    assert [c["id"] for c in status["connectors"]] == [1, 2]
    database = json.loads(members["database.json"])
    assert database["schemaVersion"] == SCHEMA_VERSION
    assert "outboxByAction" in database
    versions = json.loads(members["versions.json"])
    assert set(versions) == {"dcocpp", "python", "ocpp", "trio"}


@pytest.mark.tc("TC_045_1")
async def test_tc_045_1_get_diagnostics_uploads_the_archive_over_http(
    station: Harness, http_server: FileServer
) -> None:
    h = station
    location = http_server.url("/diag", f"{USER}:{PASSWORD}")
    result = await h.csms_call(get_diagnostics(location, retries=1, retry_interval=1))
    assert result.file_name and result.file_name.endswith(".tar.gz")
    assert await wait_statuses(h, 2) == ["Uploading", "Uploaded"]
    data = http_server.received[f"/diag/{result.file_name}"]
    check_contents(check_archive(data))
    assert len(http_server.requests_of("PUT")) == 1
    # The archive is gone from the data directory once uploaded.
    assert not list(h.station.config.data_dir.glob("*.tar.gz"))
    # The operator sees what went where, without the password.
    shown = h.station.snapshot()["chargePoint"]["diagnostics"]
    assert shown["status"] == "Uploaded"
    upload = shown["upload"]
    assert upload["location"] == http_server.url("/diag")
    assert (upload["attempt"], upload["attempts"]) == (1, 2)
    assert upload["bytes_done"] == upload["bytes_total"] == len(data)
    await trio.sleep(0.2)
    assert statuses(h) == ["Uploading", "Uploaded"]  # one notification per step


@pytest.mark.tc("TC_045_1")
async def test_tc_045_1_get_diagnostics_uploads_the_archive_over_ftp(
    station: Harness, ftp_root: tuple[Path, int]
) -> None:
    h = station
    root, port = ftp_root
    location = f"ftp://{USER}:{PASSWORD}@127.0.0.1:{port}/diag"
    result = await h.csms_call(get_diagnostics(location))
    assert result.file_name
    assert await wait_statuses(h, 2) == ["Uploading", "Uploaded"]
    check_contents(check_archive((root / "diag" / result.file_name).read_bytes()))


@pytest.mark.tc("TC_045_2")
async def test_tc_045_2_refused_upload_reports_upload_failed_after_every_attempt(
    station: Harness, http_server: FileServer
) -> None:
    h = station
    http_server.refuse_put = http_server.refuse_post = True
    location = http_server.url("/diag", f"{USER}:{PASSWORD}")
    began = trio.current_time()
    result = await h.csms_call(get_diagnostics(location, retries=2, retry_interval=1))
    assert result.file_name
    assert await wait_statuses(h, 2) == ["Uploading", "UploadFailed"]
    assert trio.current_time() - began >= 2  # two intervals between the three attempts
    assert len(http_server.requests_of("PUT")) == 3  # retries + 1, each seen by the server
    shown = h.station.snapshot()["chargePoint"]["diagnostics"]
    assert shown["status"] == "UploadFailed"
    assert (shown["upload"]["attempt"], shown["upload"]["attempts"]) == (3, 3)
    assert PASSWORD not in json.dumps(shown)
    assert not list(h.station.config.data_dir.glob("*.tar.gz"))
    await trio.sleep(0.2)
    assert statuses(h) == ["Uploading", "UploadFailed"]


@pytest.mark.tc("TC_054")
async def test_tc_054_triggered_diagnostics_status_is_uploading_while_an_upload_runs_else_idle(
    station: Harness, http_server: FileServer
) -> None:
    h = station

    async def trigger() -> str:
        since = h.csms.mark()
        result = await h.csms_call(
            call.TriggerMessage(requested_message="DiagnosticsStatusNotification")
        )
        assert result.status == "Accepted"
        with trio.fail_after(LIMIT):
            await h.csms.wait_for(
                lambda: bool(h.csms.received("DiagnosticsStatusNotification", since))
            )
        return str(h.csms.received("DiagnosticsStatusNotification", since)[0]["status"])

    assert await trigger() == "Idle"
    http_server.refuse_put = http_server.refuse_post = True
    location = http_server.url("/diag", f"{USER}:{PASSWORD}")
    await h.csms_call(get_diagnostics(location, retries=1, retry_interval=2))
    # The first attempt failed (its POST was refused too): the charger waits for its retry.
    # (Not as soon as the server saw the POST: the charger has yet to read the refusal.)

    def upload_state() -> dict[str, Any] | None:
        state: dict[str, Any] | None = h.station.snapshot()["chargePoint"]["diagnostics"]["upload"]
        return state

    await h.wait_until(
        lambda: (upload_state() or {}).get("next_attempt_at") is not None, limit=LIMIT, poll=0.01
    )
    assert http_server.requests_of("POST")
    assert await trigger() == "Uploading"  # waiting for its retry
    upload = upload_state()
    assert upload is not None
    assert upload["attempt"] == 1 and upload["next_attempt_at"] is not None
    assert "waiting" in format_status(h.station.snapshot())
    http_server.refuse_put = False
    await h.wait_until(lambda: "Uploaded" in statuses(h), limit=LIMIT)
    assert await trigger() == "Idle"  # 4.4: no upload runs (the operator sees Uploaded)


async def test_get_diagnostics_to_a_location_it_cannot_use_has_nothing_to_send(
    station: Harness,
) -> None:
    h = station
    result = await h.csms_call(get_diagnostics("gopher://files.example/diag"))
    assert result.file_name is None
    await trio.sleep(0.2)
    assert statuses(h) == []
    assert h.station.snapshot()["chargePoint"]["diagnostics"]["status"] == "Idle"


async def test_the_final_status_survives_a_connection_lost_during_the_upload(
    station: Harness, http_server: FileServer
) -> None:
    h = station
    http_server.refuse_put = http_server.refuse_post = True
    location = http_server.url("/diag", f"{USER}:{PASSWORD}")
    await h.csms_call(get_diagnostics(location, retries=1, retry_interval=1))
    await wait_statuses(h, 1)
    outbox = h.station.outbox
    assert outbox is not None
    await h.wait_until(lambda: len(outbox) == 0, limit=LIMIT, poll=0.01)  # Uploading answered
    await h.network.drop()  # the link goes; the upload goes on
    http_server.refuse_put = False
    await h.wait_until(lambda: bool(http_server.received), limit=LIMIT)
    assert await wait_statuses(h, 2) == ["Uploading", "Uploaded"]


def test_log_lines_are_kept_within_the_time_window() -> None:
    lines = [
        "a first line without a time\n",
        "2026-12-07T01:00:00.000Z csms >> early\n",
        "  continued early\n",
        "2026-12-07T02:00:00.000Z csms >> inside\n",
        "  continued inside\n",
        "2026-12-07 03:30:00,123+00:00 late\n",
    ]
    start = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)
    stop = datetime(2026, 12, 7, 3, tzinfo=UTC)
    assert list(within(lines, start, stop)) == [lines[0], lines[3], lines[4]]
    assert list(within(lines, None, None)) == lines
