"""GetDiagnostics' and GetLog's uploads cut off by a restart (a reset, a crash, a kill): the
central system heard Uploading, and must not wait for the end forever. After the next boot it
hears UploadFailed (GetDiagnostics) or UploadFailure with the requestId (GetLog), exactly once;
the archive was a temporary file, so the upload is not taken up again.

The upload hangs at a server that never answers (the in-process HTTP file server on loopback);
restarts are a soft Reset in the same process, or new Stations on the same data directory (the
process gone). Real time, short (the archive is written in a worker thread).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
from ocpp.v16 import call

from dcocpp.clock import ocpp_time
from dcocpp.storage.database import Database
from tests.csms import FakeCsms
from tests.file_server import FileServer, serve_files
from tests.station_harness import WALL_START, Harness, charger_config, running_station

LIMIT = 20.0  # seconds a step may take at most


@pytest.fixture
async def silent_server() -> AsyncIterator[FileServer]:
    """Takes the upload's request and never answers it: the upload runs until cut off."""
    async with serve_files(FileServer(silent=True)) as server:
        yield server


def diagnostics(csms: FakeCsms) -> list[str]:
    return [p["status"] for p in csms.received("DiagnosticsStatusNotification")]


def logs(csms: FakeCsms) -> list[tuple[str, int | None]]:
    return [(p["status"], p.get("request_id")) for p in csms.received("LogStatusNotification")]


def leftovers(h: Harness) -> list[str]:
    data = h.station.config.data_dir
    return sorted(p.name for p in data.iterdir() if p.name.startswith(("diagnostics-", "security")))


async def delivered(h: Harness) -> None:
    """Until the outbox is empty: what was told is answered (not sent again after a restart)."""
    outbox = h.station.outbox
    assert outbox is not None
    await h.wait_until(lambda: outbox.empty, limit=LIMIT, poll=0.02)


async def uploading(h: Harness, server: FileServer) -> None:
    """Until the server holds the upload's request (Uploading told, and answered)."""
    await h.wait_until(lambda: bool(server.requests), limit=LIMIT, poll=0.02)
    await delivered(h)


async def test_a_soft_reset_during_a_diagnostics_upload_is_upload_failed_once_after_it(
    silent_server: FileServer, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    async with running_station(config) as h:
        await h.booted()
        start = ocpp_time(datetime.now(UTC) - timedelta(days=1))
        result = await h.csms_call(
            call.GetDiagnostics(location=silent_server.url("/diag"), start_time=start)
        )
        assert result.file_name
        await uploading(h, silent_server)
        assert diagnostics(h.csms) == ["Uploading"]
        boots = len(h.csms.received("BootNotification"))
        assert (await h.csms_call(call.Reset(type="Soft"))).status == "Accepted"
        await h.wait_until(lambda: "UploadFailed" in diagnostics(h.csms), limit=LIMIT, poll=0.05)
        assert len(h.csms.received("BootNotification")) > boots  # after the next boot
        await trio.sleep(0.5)
        assert diagnostics(h.csms) == ["Uploading", "UploadFailed"]
        shown = h.station.snapshot()["chargePoint"]["diagnostics"]
        assert shown["status"] == "UploadFailed"
        assert shown["upload"]["file_name"] == result.file_name
        assert "restart" in shown["upload"]["error"]
        trigger = call.TriggerMessage(requested_message="DiagnosticsStatusNotification")
        assert (await h.csms_call(trigger)).status == "Accepted"
        await h.wait_until(lambda: len(diagnostics(h.csms)) == 3, limit=LIMIT, poll=0.05)
        assert diagnostics(h.csms)[-1] == "Idle"  # nothing runs any more
        assert leftovers(h) == []


async def test_a_get_log_upload_cut_off_by_a_killed_process_is_upload_failure_once(
    silent_server: FileServer, tmp_path: Path
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    window = {
        "remoteLocation": silent_server.url("/logs"),
        "oldestTimestamp": ocpp_time(WALL_START - timedelta(days=1)),
    }
    async with running_station(config, csms) as h:
        await h.booted()
        result = await h.csms_call(call.GetLog(log=window, log_type="SecurityLog", request_id=42))
        assert result.status == "Accepted"
        await uploading(h, silent_server)
        assert logs(csms) == [("Uploading", 42)]
    # The process is gone mid-upload (what a kill leaves: its file too).
    (config.data_dir / result.filename).write_text("what a killed upload left")
    for _ in range(2):
        async with running_station(config, csms) as h:
            await h.booted()
            await h.wait_until(lambda: len(logs(csms)) >= 2, limit=LIMIT, poll=0.05)
            await delivered(h)
            await trio.sleep(0.3)
            assert leftovers(h) == []
    assert logs(csms) == [("Uploading", 42), ("UploadFailure", 42)]  # once, of two boots
    db = Database.open(config.data_dir)
    try:
        assert db.running_uploads() == []
    finally:
        db.close()


async def test_an_upload_that_ended_is_not_reported_again_after_a_restart(
    tmp_path: Path,
) -> None:
    config = charger_config(tmp_path)
    csms = FakeCsms()
    async with serve_files(FileServer()) as server:
        async with running_station(config, csms) as h:
            await h.booted()
            await h.csms_call(call.GetDiagnostics(location=server.url("/diag")))
            await h.wait_until(lambda: len(diagnostics(csms)) == 2, limit=LIMIT, poll=0.05)
            await delivered(h)
        async with running_station(config, csms) as h:
            await h.booted()
            await trio.sleep(0.5)
    assert diagnostics(csms) == ["Uploading", "Uploaded"]
