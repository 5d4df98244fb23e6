"""GetLog (security whitepaper; issue 15, item 7) on a whole station against the FakeCsms: the
security log (or the diagnostics archive) uploaded to real servers on loopback, the in-process
HTTP file server and pyftpdlib in its own process, with LogStatusNotification per step and the
request's requestId; and the triggered LogStatusNotification (ExtendedTriggerMessage).

Real time, short (as tests/test_diagnostics.py): retry intervals are 1 s. The station's wall
clock is the harness's virtual one, starting at WALL_START: the log's times are around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp.v16 import call

from dcocpp.clock import ocpp_time
from dcocpp.ocpp.securitylog import SECURITY_LOG
from tests.file_server import FileServer, serve_files
from tests.station_harness import WALL_START, Harness, charger_config, running_station
from tests.test_diagnostics import (
    AUTH_KEY,
    LIMIT,
    PASSWORD,
    USER,
    check_archive,
    check_contents,
    console_log,
    ftp_root,
    http_server,
)

__all__ = ["ftp_root", "http_server"]  # fixtures shared with tests/test_diagnostics.py

OLD_ENTRY = "SecurityEvent InvalidMessages: OLD-ENTRY outside the window"


@pytest.fixture
async def station(tmp_path: Path) -> AsyncIterator[Harness]:
    """A station whose security log holds an entry from a month before the start."""
    config = charger_config(tmp_path)
    console_log(config.log_dir)
    old = ocpp_time(WALL_START - timedelta(days=30))
    (config.log_dir / SECURITY_LOG).write_text(f"{old} {OLD_ENTRY}\n", encoding="utf-8")
    async with running_station(config, keys={"AuthorizationKey": AUTH_KEY}) as h:
        await h.booted()
        yield h


def get_log(log_type: str, location: str, request_id: int, **fields: Any) -> call.GetLog:
    window = {
        "remoteLocation": location,
        "oldestTimestamp": ocpp_time(WALL_START - timedelta(days=1)),
        "latestTimestamp": ocpp_time(WALL_START + timedelta(days=1)),
    }
    return call.GetLog(log=window, log_type=log_type, request_id=request_id, **fields)


def statuses(h: Harness) -> list[tuple[str, int | None]]:
    return [(p["status"], p.get("request_id")) for p in h.csms.received("LogStatusNotification")]


async def wait_statuses(h: Harness, count: int) -> list[tuple[str, int | None]]:
    await h.wait_calls("LogStatusNotification", count, limit=LIMIT)
    return statuses(h)


def check_security_log(text: str, charge_point_id: str) -> None:
    """Readable text: a title, then the entries of the window (the boot's), not the old one."""
    first, *entries = text.splitlines()
    assert first.startswith(f"# security log of charge point {charge_point_id}: entries from ")
    assert any("SecurityEvent StartupOfTheDevice (sent)" in line for line in entries)
    assert all(line[:4] == str(WALL_START.year) for line in entries)
    assert OLD_ENTRY not in text


@pytest.mark.tc("TC_079")
async def test_tc_079_get_log_uploads_the_security_log_over_http(
    station: Harness, http_server: FileServer
) -> None:
    h = station
    location = http_server.url("/logs", f"{USER}:{PASSWORD}")
    result = await h.csms_call(get_log("SecurityLog", location, 79, retries=1, retry_interval=1))
    assert result.status == "Accepted"
    assert result.filename and result.filename.startswith("security-log-")
    assert await wait_statuses(h, 2) == [("Uploading", 79), ("Uploaded", 79)]
    text = http_server.received[f"/logs/{result.filename}"].decode("utf-8")
    check_security_log(text, h.station.config.charge_point.id)
    assert not list(h.station.config.data_dir.glob("security-log-*"))  # removed once sent
    shown = h.station.snapshot()["chargePoint"]["logs"]
    assert shown["status"] == "Uploaded"
    assert shown["upload"]["request_id"] == 79
    assert shown["upload"]["location"] == http_server.url("/logs")  # no password
    await trio.sleep(0.2)
    assert len(statuses(h)) == 2  # one notification per step


async def test_tc_079_get_log_uploads_the_security_log_over_ftp(
    station: Harness, ftp_root: tuple[Path, int]
) -> None:
    h = station
    root, port = ftp_root
    location = f"ftp://{USER}:{PASSWORD}@127.0.0.1:{port}/diag"
    result = await h.csms_call(get_log("SecurityLog", location, 7))
    assert result.status == "Accepted"
    assert await wait_statuses(h, 2) == [("Uploading", 7), ("Uploaded", 7)]
    text = (root / "diag" / result.filename).read_text(encoding="utf-8")
    check_security_log(text, h.station.config.charge_point.id)


async def test_get_log_of_the_diagnostics_log_uploads_the_diagnostics_archive(
    station: Harness, http_server: FileServer
) -> None:
    h = station
    location = http_server.url("/logs", f"{USER}:{PASSWORD}")
    # The console log's lines are of the real time, the security log's of the station's clock.
    now = datetime.now(UTC)
    window = get_log("DiagnosticsLog", location, 3)
    window.log["oldestTimestamp"] = ocpp_time(min(WALL_START, now) - timedelta(days=1))
    window.log["latestTimestamp"] = ocpp_time(max(WALL_START, now) + timedelta(days=1))
    result = await h.csms_call(window)
    assert result.status == "Accepted" and result.filename.endswith(".tar.gz")
    assert await wait_statuses(h, 2) == [("Uploading", 3), ("Uploaded", 3)]
    members = check_archive(http_server.received[f"/logs/{result.filename}"])
    check_contents(members)
    assert "StartupOfTheDevice" in members[f"logs/{SECURITY_LOG}"].decode()


async def test_a_refused_log_upload_reports_upload_failure_after_the_last_attempt(
    station: Harness, http_server: FileServer
) -> None:
    h = station
    http_server.refuse_put, http_server.refusal = True, 500
    location = http_server.url("/logs", f"{USER}:{PASSWORD}")
    began = trio.current_time()
    result = await h.csms_call(get_log("SecurityLog", location, 11, retries=2, retry_interval=1))
    assert result.status == "Accepted"
    assert await wait_statuses(h, 2) == [("Uploading", 11), ("UploadFailure", 11)]
    assert trio.current_time() - began >= 2  # two intervals between the three attempts
    assert len(http_server.requests_of("PUT")) == 3
    assert not list(h.station.config.data_dir.glob("security-log-*"))


@pytest.mark.parametrize("server", ["http", "ftp"])
async def test_refused_credentials_report_permission_denied(
    station: Harness, http_server: FileServer, ftp_root: tuple[Path, int], server: str
) -> None:
    """HTTP 401 (or 403) and FTP 530: the server says who may not, not that it failed."""
    h = station
    if server == "http":
        location = http_server.url("/logs", f"{USER}:Bad-Pa55")
    else:
        location = f"ftp://{USER}:Bad-Pa55@127.0.0.1:{ftp_root[1]}/diag"
    result = await h.csms_call(get_log("SecurityLog", location, 12, retries=1, retry_interval=1))
    assert result.status == "Accepted"
    assert await wait_statuses(h, 2) == [("Uploading", 12), ("PermissionDenied", 12)]
    upload = h.station.snapshot()["chargePoint"]["logs"]["upload"]
    assert upload["attempt"] == 2 and upload["refusal"] == "PermissionDenied"
    assert "Bad-Pa55" not in str(upload)


async def test_a_get_log_that_replaces_a_running_upload_is_accepted_canceled(
    station: Harness, http_server: FileServer
) -> None:
    """The first upload hangs (its server never answers); a second GetLog cancels it (its
    connection is closed, nothing more is reported for it) and goes through, and a triggered
    LogStatusNotification says which upload runs: Idle before, Uploading with the running
    request's id meanwhile, Idle after."""
    h = station

    async def triggered() -> tuple[str, int | None]:
        since = h.csms.mark()
        result = await h.csms_call(
            call.ExtendedTriggerMessage(requested_message="LogStatusNotification")
        )
        assert result.status == "Accepted"
        [status] = await h.wait_calls("LogStatusNotification", since=since, limit=LIMIT)
        return status["status"], status.get("request_id")

    assert await triggered() == ("Idle", None)
    async with serve_files(FileServer(silent=True)) as silent:
        first = await h.csms_call(get_log("SecurityLog", silent.url("/logs"), 21))
        assert first.status == "Accepted"
        await h.wait_until(lambda: bool(silent.requests), limit=LIMIT, poll=0.01)
        assert await triggered() == ("Uploading", 21)
        location = http_server.url("/logs", f"{USER}:{PASSWORD}")
        second = await h.csms_call(get_log("SecurityLog", location, 22))
        assert second.status == "AcceptedCanceled"
        assert second.filename != first.filename
        with trio.fail_after(LIMIT):
            await silent.hung_up.wait()
        await h.wait_until(lambda: ("Uploaded", 22) in statuses(h), limit=LIMIT)
    assert await triggered() == ("Idle", None)
    # Per step through the outbox, and the triggered ones: request 21 ends without a word.
    assert [s for s in statuses(h) if s[1] is not None] == [
        ("Uploading", 21),  # its step
        ("Uploading", 21),  # triggered
        ("Uploading", 22),
        ("Uploaded", 22),
    ]


async def test_get_log_to_a_location_it_cannot_use_is_rejected(station: Harness) -> None:
    h = station
    result = await h.csms_call(get_log("SecurityLog", "gopher://files.example/logs", 5))
    assert result.status == "Rejected" and result.filename is None
    await trio.sleep(0.2)
    assert statuses(h) == []
