"""Logging for the whole process: operator lines on stderr, the OCPP message log in a file
(`dcocpp.ocpp.messagelog`, written in batches by its own thread)."""

from __future__ import annotations

import logging
from pathlib import Path

from dcocpp.ocpp.messagelog import close_message_file, open_message_file
from dcocpp.storage.oserrors import directory_problem, reason

MESSAGE_LOG_NAME = "ocpp-messages.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# An operator line longer than this is cut (a peer's 10 KB error description is not news).
MAX_LINE_CHARS = 1000
# Control characters (a newline in a central system's text would forge a log line of its own).
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


class OperatorFormatter(logging.Formatter):
    """One record, one line: the message's control characters escaped and a long message cut,
    so that text from a peer (a CALLERROR's description, an idTag) can neither forge lines nor
    flood the console. A traceback, at DEBUG, still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message.translate(_CONTROL)
        if len(message) > MAX_LINE_CHARS:
            cut = len(message) - MAX_LINE_CHARS
            message = f"{message[:MAX_LINE_CHARS]}... ({cut} more characters)"
        record.message = message
        return super().formatMessage(record)


class LoggingError(Exception):
    """The one exception root of logging: the message log cannot be written (its message names
    the directory or file and the cause)."""


class LoggingSetup:
    """Installed by `start`, undone by `stop` (tests call it more than once)."""

    def __init__(self) -> None:
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []

    def start(
        self,
        level: str,
        log_dir: Path | None,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        backup_count: int = 5,
        console: bool = True,
    ) -> None:
        root = logging.getLogger()
        root.setLevel(level.upper())
        if console:
            stream = logging.StreamHandler()
            stream.setFormatter(OperatorFormatter(_FORMAT))
            root.addHandler(stream)
            self._handlers.append((root, stream))
        # transitions logs every callback at INFO; only its warnings are news to an operator.
        logging.getLogger("transitions").setLevel(logging.WARNING)
        # httpx2 logs every request's URL at INFO, a presigned URL's signature in its query
        # included; the file transfer service logs each transfer itself, without credentials.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        if log_dir is not None:
            self.open_message_log(log_dir, max_bytes=max_bytes, backup_count=backup_count)

    def open_message_log(self, log_dir: Path, *, max_bytes: int, backup_count: int) -> None:
        """Write the OCPP message log to `log_dir` (created when missing); LoggingError when
        it cannot be written there."""
        problem = directory_problem(log_dir)
        if problem is not None:
            raise LoggingError(f"log directory {log_dir}: {problem}")
        path = log_dir / MESSAGE_LOG_NAME
        try:
            open_message_file(path, max_bytes=max_bytes, backup_count=backup_count)
        except OSError as exc:  # e.g. a directory where the file should be
            raise LoggingError(f"message log {path}: cannot open it: {reason(exc)}") from exc

    def stop(self) -> None:
        close_message_file()
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        self._handlers.clear()
