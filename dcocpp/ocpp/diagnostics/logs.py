"""GetLog's work (the security whitepaper; OCPP 2.0.1 alike), version-neutral: the security
log's entries of a time window as a text file, or the diagnostics archive, uploaded with
retries as GetDiagnostics' (`uploads.py`), each step reported with the request's id.

`request` writes the file (in a worker thread, into the diagnostics' work directory) and
starts its upload at once; it says whether it replaced an upload still running, which then
reports nothing more. `status` is what a triggered LogStatusNotification says.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from dcocpp.clock import ocpp_time
from dcocpp.ocpp.diagnostics.service import DiagnosticsService
from dcocpp.ocpp.diagnostics.uploads import Report, Upload, Uploads, UploadState
from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.transfer import TransferError
from dcocpp.ocpp.transfer.urls import parse

log = logging.getLogger(__name__)


class LogKind(enum.Enum):
    SECURITY = "SecurityLog"
    DIAGNOSTICS = "DiagnosticsLog"


class LogSource(Protocol):
    """The security log (`dcocpp.ocpp.securitylog.SecurityLog`)."""

    def cut(
        self, target: Path, start: datetime | None, stop: datetime | None, *, title: str
    ) -> int: ...


@attrs.frozen
class LogRequest:
    file_name: str | None  # None: nothing to send (the location, or the file: logged)
    replaced: bool = False  # an upload was still running: it is cancelled


class LogService:
    def __init__(
        self,
        security_log: LogSource,
        diagnostics: DiagnosticsService,
        report: Report,
        *,
        charge_point_id: str,
        ca_bundle: Path | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._security_log = security_log
        self._diagnostics = diagnostics
        self._charge_point_id = charge_point_id
        self.uploads = Uploads("log", report, ca_bundle=ca_bundle, clock=clock)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the uploads until cancelled."""
        await self.uploads.run(task_status=task_status)

    async def request(
        self,
        kind: LogKind,
        location: str,
        request_id: int,
        *,
        retries: int | None = None,
        retry_interval: int | None = None,
        oldest: datetime | None = None,
        latest: datetime | None = None,
    ) -> LogRequest:
        """Write the log `kind` from `oldest` to `latest` and start its upload to the
        directory URL `location`."""
        try:
            parse(location)
        except TransferError as exc:
            log.warning("GetLog %d: nothing to send: %s", request_id, exc)
            return LogRequest(None)
        replaced = self.uploads.cancel()
        if kind is LogKind.SECURITY:
            file = await self._security_entries(oldest, latest)
        else:
            file = await self._diagnostics.collect(self.uploads, oldest, latest)
        if file is None:
            return LogRequest(None, replaced)
        self.uploads.start(
            file, location, retries=retries, retry_interval=retry_interval, request_id=request_id
        )
        return LogRequest(file.name, replaced)

    async def _security_entries(
        self, oldest: datetime | None, latest: datetime | None
    ) -> Path | None:
        folder = self._diagnostics.work_dir
        target = folder / self.uploads.file_name(folder, "security-log", ".log")
        window = f"from {_or(oldest, 'the first')} to {_or(latest, 'the last')}"
        title = f"security log of charge point {self._charge_point_id}: entries {window}"
        try:
            count = await trio.to_thread.run_sync(
                lambda: self._security_log.cut(target, oldest, latest, title=title)
            )
        except OcppError as exc:
            log.error("security log: nothing to send: %s", exc)
            return None
        log.info("security log %s: %d entries %s", target.name, count, window)
        return target

    def status(self) -> tuple[UploadState, int | None]:
        """Uploading with its request's id while an upload runs (also between attempts),
        else Idle."""
        job = self.uploads.upload
        if self.uploads.running and job is not None:
            return UploadState.UPLOADING, job.request_id
        return UploadState.IDLE, None

    def snapshot(self) -> dict[str, Any]:
        return self.uploads.snapshot()


def log_status(state: UploadState, job: Upload) -> str:
    """The step as the log upload status names it (UploadLogStatus, in the security
    whitepaper and 2.0.1 alike): a failure says what the server's refusal meant, where it
    told (PermissionDenied, NotSupportedOperation, BadMessage), else UploadFailure."""
    if state is UploadState.UPLOAD_FAILED:
        return job.refusal or "UploadFailure"
    return state.value


def _or(moment: datetime | None, open_end: str) -> str:
    return open_end if moment is None else ocpp_time(moment)
