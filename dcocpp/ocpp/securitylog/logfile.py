"""The security log: one line per security event (and per change of what the charger trusts),
in `<logDir>/security.log`, rotated by size.

A line is `<UTC time with milliseconds>Z <entry>[ (sent)][: <detail>]`, e.g.
`2026-12-07T01:53:13.123Z SecurityEvent StartupOfTheDevice (sent)` or
`2026-12-07T01:54:00.000Z CertificateInstalled: CentralSystemRootCertificate ...`; "(sent)"
marks an event that also went to the central system. A detail is kept on its line (control
characters escaped), so no text can forge an entry. Details come from the charger's own code
(never a key, a password or a URL's credentials).

The stdlib's `RotatingFileHandler` rotates (`security.log.1` ... `.4` at 1 MiB each: years of
events). Each line is written and flushed before `event`/`note` returns, one at a time in the
order asked for, by a `Runner` (a worker thread: never on the event loop); a disk that cannot
take it is reported once, not per line. `cut` copies the entries of a time window, oldest
first, for GetLog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import trio

from dcocpp.clock import ocpp_time
from dcocpp.ocpp.diagnostics.archive import within
from dcocpp.ocpp.errors import OcppError
from dcocpp.ocpp.messagelog import RotatingLogFile
from dcocpp.storage.asyncdb import Runner, WorkerThread
from dcocpp.storage.oserrors import reason

log = logging.getLogger(__name__)

SECURITY_LOG = "security.log"
MAX_BYTES = 1024 * 1024
BACKUP_COUNT = 4
_ESCAPED = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {ord("\\"): "\\\\"}


class SecurityLogError(OcppError):
    """The security log cannot be opened, or a window of it not copied (the path, the cause)."""


class SecurityLog:
    """`open()` creates the file (and its directory); `close()` closes it. Entries made while
    it is not open are logged to the console only."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_bytes: int = MAX_BYTES,
        backup_count: int = BACKUP_COUNT,
        run: Runner | None = None,
    ):
        self.path = path
        self._clock = clock
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._handler: RotatingLogFile | None = None
        self._run: Runner = run if run is not None else WorkerThread()
        self._failing = False  # the last write failed (said once)

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingLogFile(
                self.path,
                maxBytes=self._max_bytes,
                backupCount=self._backup_count,
                encoding="utf-8",
            )
        except OSError as exc:
            raise SecurityLogError(f"security log {self.path}: {reason(exc)}") from exc
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler = handler

    def close(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            try:
                handler.close()
            except OSError as exc:  # its last flush, on a full disk
                log.warning("%s: not closed cleanly: %s", self.path, reason(exc))

    async def event(
        self, kind: str, tech_info: str | None, *, sent: bool, at: datetime | None = None
    ) -> None:
        """A security event of the whitepaper's list (`sent`: it goes to the central system)."""
        await self.note(f"SecurityEvent {kind}{' (sent)' if sent else ''}", tech_info, at=at)

    async def note(
        self, entry: str, detail: str | None = None, *, at: datetime | None = None
    ) -> None:
        """Any other entry: what the charger trusts changed (`CertificateInstalled`, ...)."""
        moment = ocpp_time(at or self._clock())
        line = f"{moment} {entry}" + ("" if detail is None else f": {detail.translate(_ESCAPED)}")
        # Shielded: an entry that was asked for is written, whatever cancels its caller.
        with trio.CancelScope(shield=True):
            await self._run(lambda: self._write(line))

    def _write(self, line: str) -> None:
        handler = self._handler
        if handler is None:
            log.info("security log (not open): %s", line)
            return
        handler.handle(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))
        error = handler.take_error()
        if error is not None and not self._failing:
            log.error(
                "%s: cannot write (%s): entries are lost until it can again", self.path, error
            )
        elif error is None and self._failing:
            log.warning("%s: written again", self.path)
        self._failing = error is not None

    def files(self) -> list[Path]:
        """The log's files that exist, oldest first."""
        names = [f"{self.path.name}.{n}" for n in range(self._backup_count, 0, -1)]
        paths = [self.path.with_name(name) for name in names] + [self.path]
        return [path for path in paths if path.is_file()]

    def cut(
        self, target: Path, start: datetime | None, stop: datetime | None, *, title: str
    ) -> int:
        """Write to `target` a `# title` line and the entries from `start` to `stop` (either
        may be open), oldest first; returns how many. Blocking: run it in a worker thread.
        No entry is written meanwhile (nor is the log rotated under it)."""
        start = None if start is None else start.astimezone(UTC)
        stop = None if stop is None else stop.astimezone(UTC)
        handler = self._handler
        if handler is not None:
            handler.acquire()
        count = 0
        try:
            with target.open("w", encoding="utf-8") as out:
                out.write(f"# {title}\n")
                for path in self.files():
                    try:
                        source = path.open(encoding="utf-8", errors="replace", newline="")
                    except FileNotFoundError:
                        continue
                    with source:
                        for line in within(source, start, stop):
                            out.write(line)
                            count += 1
        except OSError as exc:
            target.unlink(missing_ok=True)
            raise SecurityLogError(f"{target}: cannot write: {reason(exc)}") from exc
        finally:
            if handler is not None:
                handler.release()
        return count
