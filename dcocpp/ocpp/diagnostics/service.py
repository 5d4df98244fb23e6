"""GetDiagnostics' work, version-neutral: collect the archive, upload it with retries, and
keep the status the central system (TriggerMessage) and the operator (`/api/status`) see.

`request` builds the archive (in a worker thread, in the data directory) and returns its file
name at once; the upload then runs in the service's own nursery (`run`, in the boot's
nursery: a lost connection to the central system does not end it). Each attempt has
`ATTEMPT_TIMEOUT` seconds (a cancel scope); attempts = retries + 1, `interval` seconds apart.
`report` hears each step once: UPLOADING before the first attempt, then UPLOADED, or
UPLOAD_FAILED only after the last attempt. The archive is removed once the upload ended.
One upload at a time: a new request cancels the one running (the central system asked anew).
"""

from __future__ import annotations

import enum
import importlib.metadata
import logging
import platform
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import trio

from dcocpp.clock import ocpp_time
from dcocpp.ocpp.configuration import SPECS, ConfigurationStore
from dcocpp.ocpp.control import DiagnosticsSource
from dcocpp.ocpp.diagnostics.archive import ArchiveError, build_archive
from dcocpp.ocpp.transfer import TransferError, upload
from dcocpp.ocpp.transfer.urls import parse, redact

log = logging.getLogger(__name__)

# One upload attempt may take this long (a server that never answers costs no more).
ATTEMPT_TIMEOUT = 300.0
# retryInterval absent: this many seconds between attempts.
DEFAULT_RETRY_INTERVAL = 60
# Configuration keys whose values never leave the charger, besides the write-only ones
# (AuthorizationKey, a vendor's ...Password; not GetConfigurationMaxKeys).
_SECRET_NAME = re.compile(r"(key|password|secret|token|passphrase)$", re.IGNORECASE)
REDACTED = "(redacted)"
_VERSIONED = ("dcocpp", "ocpp", "trio")


class UploadState(enum.Enum):
    IDLE = "Idle"  # nothing uploaded since the start
    UPLOADING = "Uploading"
    UPLOADED = "Uploaded"
    UPLOAD_FAILED = "UploadFailed"


Report = Callable[[UploadState], Awaitable[None]]


@attrs.define
class Upload:
    """The upload in progress (or the last one), as the operator sees it."""

    file_name: str
    location: str  # without credentials
    attempts: int
    attempt: int = 0
    bytes_done: int = 0
    bytes_total: int | None = None
    next_attempt_at: str | None = None  # OCPP dateTime while waiting for a retry
    error: str | None = None  # the last attempt's failure


class DiagnosticsService:
    def __init__(
        self,
        source: DiagnosticsSource,
        store: ConfigurationStore,
        work_dir: Path,
        report: Report,
        *,
        ca_bundle: Path | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._source = source
        self._store = store
        self._work_dir = work_dir
        self._report = report
        self._ca_bundle = ca_bundle
        self._clock = clock
        self.state = UploadState.IDLE
        self.upload: Upload | None = None
        self._nursery: trio.Nursery | None = None
        self._running: trio.CancelScope | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the uploads until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    @property
    def current(self) -> UploadState:
        """What a triggered DiagnosticsStatusNotification says (OCPP 1.6 4.4): Uploading
        while an upload runs (also between its attempts), else Idle, whatever the last one
        ended with (`state`, which the operator sees)."""
        return UploadState.UPLOADING if self._running is not None else UploadState.IDLE

    async def request(
        self,
        location: str,
        *,
        retries: int | None = None,
        retry_interval: int | None = None,
        start: datetime | None = None,
        stop: datetime | None = None,
    ) -> str | None:
        """Collect the archive (into `work_dir`, which must exist) and start its upload to
        the directory URL `location`; returns the archive's file name, None when there is
        nothing to send (the location cannot be used, or the archive cannot be written: both
        logged)."""
        try:
            parse(location)
        except TransferError as exc:
            log.warning("GetDiagnostics: nothing to send: %s", exc)
            return None
        if self._nursery is None:
            raise RuntimeError("DiagnosticsService.run() must be running")
        if self._running is not None:
            log.info("diagnostics upload replaced by a new request: %s", self.upload)
            self._running.cancel()
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        file_name = f"diagnostics-{stamp}.tar.gz"
        taken = 1
        while (self._work_dir / file_name).exists():  # a request within the same second
            taken += 1
            file_name = f"diagnostics-{stamp}-{taken}.tar.gz"
        archive = self._work_dir / file_name
        documents = await self._documents()
        try:
            names = await trio.to_thread.run_sync(
                lambda: build_archive(
                    archive,
                    log_files=self._source.log_files(),
                    documents=documents,
                    start=start,
                    stop=stop,
                )
            )
        except ArchiveError as exc:
            log.error("GetDiagnostics: nothing to send: %s", exc)
            return None
        log.info("diagnostics archive %s: %s", file_name, ", ".join(names))
        attempts = max(1, (retries or 0) + 1)
        interval = DEFAULT_RETRY_INTERVAL if retry_interval is None else max(0, retry_interval)
        self.upload = Upload(file_name, redact(location), attempts)
        self._running = scope = trio.CancelScope()
        self.state = UploadState.UPLOADING  # a TriggerMessage right after the answer says so
        self._nursery.start_soon(self._upload, scope, self.upload, archive, location, interval)
        return file_name

    async def _documents(self) -> dict[str, Any]:
        documents = await self._source.diagnostics_documents()
        documents["configuration"] = self._configuration()
        documents["versions"] = versions()
        return documents

    def _configuration(self) -> dict[str, str | None]:
        """Every key with its value; a secret (a write-only key, one whose name ends in Key,
        Password, Secret, Token or Passphrase) only as `(redacted)` when set."""
        result: dict[str, str | None] = {}
        for name in self._store.keys:
            value = self._store.get(name)
            spec = SPECS.get(name)
            secret = (spec is not None and spec.write_only) or _SECRET_NAME.search(name)
            result[name] = REDACTED if secret and value else value
        return result

    async def _upload(
        self, scope: trio.CancelScope, job: Upload, archive: Path, location: str, interval: int
    ) -> None:
        with scope:
            try:
                await self._set(UploadState.UPLOADING)
                final = await self._attempts(job, archive, location, interval)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(lambda: archive.unlink(missing_ok=True))
                if self._running is scope:
                    self._running = None
            await self._set(final)  # once the archive is gone: nothing is left behind

    async def _attempts(
        self, job: Upload, archive: Path, location: str, interval: int
    ) -> UploadState:
        """Upload until an attempt succeeds or the last one failed; the final state."""

        def progress(done: int, total: int | None) -> None:
            job.bytes_done, job.bytes_total = done, total

        for attempt in range(1, job.attempts + 1):
            job.attempt, job.next_attempt_at = attempt, None
            job.bytes_done = 0
            log.info(
                "uploading diagnostics %s to %s (attempt %d of %d)",
                job.file_name,
                job.location,
                attempt,
                job.attempts,
            )
            with trio.move_on_after(ATTEMPT_TIMEOUT) as deadline:
                try:
                    await upload(
                        archive,
                        location,
                        job.file_name,
                        ca_bundle=self._ca_bundle,
                        progress=progress,
                    )
                except TransferError as exc:
                    job.error = str(exc)
                else:
                    job.error = None
                    log.info("diagnostics %s uploaded to %s", job.file_name, job.location)
                    return UploadState.UPLOADED
            if deadline.cancelled_caught:
                job.error = f"no answer within {ATTEMPT_TIMEOUT:g} s"
            if attempt < job.attempts:
                job.next_attempt_at = ocpp_time(self._clock() + timedelta(seconds=interval))
                log.warning(
                    "diagnostics upload attempt %d of %d failed: %s; next in %d s",
                    attempt,
                    job.attempts,
                    job.error,
                    interval,
                )
                await trio.sleep(interval)
        log.error(
            "diagnostics upload of %s failed after %d attempt(s): %s",
            job.file_name,
            job.attempts,
            job.error,
        )
        return UploadState.UPLOAD_FAILED

    async def _set(self, state: UploadState) -> None:
        self.state = state
        await self._report(state)

    def snapshot(self) -> dict[str, Any]:
        """For the local API: the state and the upload in progress (or the last one)."""
        job = self.upload
        return {
            "status": self.state.value,
            "upload": None if job is None else attrs.asdict(job),
        }


def versions() -> dict[str, str]:
    """The software this charger runs."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found
