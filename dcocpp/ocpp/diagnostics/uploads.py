"""Uploads of a file the charger wrote (a diagnostics archive, a log), version-neutral: one at
a time, with retries, each step reported once.

`start` hands the file to the upload, which runs in the service's own nursery (`run`, in the
boot's nursery: a lost connection to the central system does not end it). Each attempt has
`ATTEMPT_TIMEOUT` seconds (a cancel scope); attempts = retries + 1, `interval` seconds apart.
`report` hears each step once: UPLOADING before the first attempt, then UPLOADED, or
UPLOAD_FAILED only after the last attempt (the job says what the server's refusal meant, where
it told). The file is removed once the upload ended. A new upload cancels the one running (the
central system asked anew); that one reports nothing more.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import trio

from dcocpp.clock import ocpp_time
from dcocpp.ocpp.transfer import TransferError, upload
from dcocpp.ocpp.transfer.urls import redact

log = logging.getLogger(__name__)

# One upload attempt may take this long (a server that never answers costs no more).
ATTEMPT_TIMEOUT = 300.0
# retryInterval absent: this many seconds between attempts.
DEFAULT_RETRY_INTERVAL = 60


class UploadState(enum.Enum):
    IDLE = "Idle"  # nothing uploaded since the start
    UPLOADING = "Uploading"
    UPLOADED = "Uploaded"
    UPLOAD_FAILED = "UploadFailed"


@attrs.define
class Upload:
    """The upload in progress (or the last one), as the operator sees it."""

    file_name: str
    location: str  # without credentials
    attempts: int
    request_id: int | None = None  # the central system's, where its request has one
    attempt: int = 0
    bytes_done: int = 0
    bytes_total: int | None = None
    next_attempt_at: str | None = None  # OCPP dateTime while waiting for a retry
    error: str | None = None  # the last attempt's failure
    refusal: str | None = None  # what the last attempt's refusal meant (a `Refusal`'s value)


Report = Callable[[UploadState, Upload], Awaitable[None]]


class Uploads:
    """The uploads of one kind (`what`, for the log: "diagnostics", "log")."""

    def __init__(
        self,
        what: str,
        report: Report,
        *,
        ca_bundle: Path | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._what = what
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
    def running(self) -> bool:
        """An upload is under way (or waiting for its next attempt)."""
        return self._running is not None

    def cancel(self) -> bool:
        """Cancel the upload running, if any (it reports nothing more); whether one ran."""
        if self._running is None:
            return False
        log.info("%s upload replaced by a new request: %s", self._what, self.upload)
        self._running.cancel()
        self._running = None
        return True

    def file_name(self, folder: Path, prefix: str, suffix: str) -> str:
        """`<prefix>-<UTC time><suffix>`, one that is not in `folder` yet."""
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{prefix}-{stamp}{suffix}"
        taken = 1
        while (folder / name).exists():  # a request within the same second
            taken += 1
            name = f"{prefix}-{stamp}-{taken}{suffix}"
        return name

    def start(
        self,
        file: Path,
        location: str,
        *,
        retries: int | None = None,
        retry_interval: int | None = None,
        request_id: int | None = None,
    ) -> None:
        """Upload `file` into the directory URL `location` under its own name (and remove it
        afterwards), cancelling the upload running."""
        if self._nursery is None:
            raise RuntimeError(f"{self._what} Uploads.run() must be running")
        self.cancel()
        attempts = max(1, (retries or 0) + 1)
        interval = DEFAULT_RETRY_INTERVAL if retry_interval is None else max(0, retry_interval)
        self.upload = job = Upload(file.name, redact(location), attempts, request_id)
        self._running = scope = trio.CancelScope()
        self.state = UploadState.UPLOADING  # a trigger right after the answer says so
        self._nursery.start_soon(self._upload, scope, job, file, location, interval)

    async def _upload(
        self, scope: trio.CancelScope, job: Upload, file: Path, location: str, interval: int
    ) -> None:
        with scope:
            try:
                await self._set(UploadState.UPLOADING, job)
                final = await self._attempts(job, file, location, interval)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(lambda: file.unlink(missing_ok=True))
                if self._running is scope:
                    self._running = None
            await self._set(final, job)  # once the file is gone: nothing is left behind

    async def _attempts(self, job: Upload, file: Path, location: str, interval: int) -> UploadState:
        """Upload until an attempt succeeds or the last one failed; the final state."""

        def progress(done: int, total: int | None) -> None:
            job.bytes_done, job.bytes_total = done, total

        what = self._what
        for attempt in range(1, job.attempts + 1):
            job.attempt, job.next_attempt_at = attempt, None
            job.bytes_done = 0
            log.info(
                "uploading %s %s to %s (attempt %d of %d)",
                what,
                job.file_name,
                job.location,
                attempt,
                job.attempts,
            )
            with trio.move_on_after(ATTEMPT_TIMEOUT) as deadline:
                try:
                    await upload(
                        file, location, job.file_name, ca_bundle=self._ca_bundle, progress=progress
                    )
                except TransferError as exc:
                    job.error = str(exc)
                    job.refusal = None if exc.refusal is None else exc.refusal.value
                else:
                    job.error = job.refusal = None
                    log.info("%s %s uploaded to %s", what, job.file_name, job.location)
                    return UploadState.UPLOADED
            if deadline.cancelled_caught:
                job.error, job.refusal = f"no answer within {ATTEMPT_TIMEOUT:g} s", None
            if attempt < job.attempts:
                job.next_attempt_at = ocpp_time(self._clock() + timedelta(seconds=interval))
                log.warning(
                    "%s upload attempt %d of %d failed: %s; next in %d s",
                    what,
                    attempt,
                    job.attempts,
                    job.error,
                    interval,
                )
                await trio.sleep(interval)
        log.error(
            "%s upload of %s failed after %d attempt(s): %s",
            what,
            job.file_name,
            job.attempts,
            job.error,
        )
        return UploadState.UPLOAD_FAILED

    async def _set(self, state: UploadState, job: Upload) -> None:
        self.state = state
        await self._report(state, job)

    def snapshot(self) -> dict[str, Any]:
        """For the local API: the state and the upload in progress (or the last one)."""
        job = self.upload
        return {
            "status": self.state.value,
            "upload": None if job is None else attrs.asdict(job),
        }
