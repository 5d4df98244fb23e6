"""GetDiagnostics' work, version-neutral: collect the archive, upload it with retries
(`uploads.py`), and keep the status the central system (TriggerMessage) and the operator
(`/api/status`) see.

`request` builds the archive (in a worker thread, in the data directory) and returns its file
name at once; the upload then runs in the service's own nursery (`run`). One upload at a time:
a new request cancels the one running (the central system asked anew). GetLog's DiagnosticsLog
(`logs.py`) builds the same archive with `collect`.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from dcocpp.ocpp.configuration import SPECS, ConfigurationStore
from dcocpp.ocpp.control import DiagnosticsSource
from dcocpp.ocpp.diagnostics.archive import ArchiveError, build_archive
from dcocpp.ocpp.diagnostics.uploads import Upload, Uploads, UploadState
from dcocpp.ocpp.transfer import TransferError
from dcocpp.ocpp.transfer.urls import parse

log = logging.getLogger(__name__)

# Configuration keys whose values never leave the charger, besides the write-only ones
# (AuthorizationKey, a vendor's ...Password; not GetConfigurationMaxKeys).
_SECRET_NAME = re.compile(r"(key|password|secret|token|passphrase)$", re.IGNORECASE)
REDACTED = "(redacted)"
_VERSIONED = ("dcocpp", "ocpp", "trio")

Report = Callable[[UploadState], Awaitable[None]]


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
        self.work_dir = work_dir

        async def report_state(state: UploadState, _: Upload) -> None:
            await report(state)

        self.uploads = Uploads("diagnostics", report_state, ca_bundle=ca_bundle, clock=clock)

    @property
    def state(self) -> UploadState:
        return self.uploads.state

    @property
    def upload(self) -> Upload | None:
        return self.uploads.upload

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hosts the uploads until cancelled."""
        await self.uploads.run(task_status=task_status)

    @property
    def current(self) -> UploadState:
        """What a triggered DiagnosticsStatusNotification says (OCPP 1.6 4.4): Uploading
        while an upload runs (also between its attempts), else Idle, whatever the last one
        ended with (`state`, which the operator sees)."""
        return UploadState.UPLOADING if self.uploads.running else UploadState.IDLE

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
        self.uploads.cancel()
        archive = await self.collect(self.uploads, start, stop)
        if archive is None:
            return None
        self.uploads.start(archive, location, retries=retries, retry_interval=retry_interval)
        return archive.name

    async def collect(
        self, uploads: Uploads, start: datetime | None, stop: datetime | None
    ) -> Path | None:
        """Write the archive of the log files from `start` to `stop` and the documents into
        `work_dir`, named for `uploads`; None when it cannot be written (logged)."""
        archive = self.work_dir / uploads.file_name(self.work_dir, "diagnostics", ".tar.gz")
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
            log.error("diagnostics: nothing to send: %s", exc)
            return None
        log.info("diagnostics archive %s: %s", archive.name, ", ".join(names))
        return archive

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

    def snapshot(self) -> dict[str, Any]:
        """For the local API: the state and the upload in progress (or the last one)."""
        return self.uploads.snapshot()


def versions() -> dict[str, str]:
    """The software this charger runs."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found
