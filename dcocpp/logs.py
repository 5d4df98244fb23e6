"""Logging for the whole process: operator lines on stderr, the OCPP message log in a file.

The message log can be busy (every frame, both directions), so its file is written by a
QueueListener thread and never blocks the trio event loop on disk I/O.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from pathlib import Path

from dcocpp.ocpp.messagelog import MESSAGE_LOGGER

MESSAGE_LOG_NAME = "ocpp-messages.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class LoggingSetup:
    """Installed by `start`, undone by `stop` (tests and soft resets call it more than once)."""

    def __init__(self) -> None:
        self._listener: logging.handlers.QueueListener | None = None
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
            stream.setFormatter(logging.Formatter(_FORMAT))
            self._add(root, stream)
        # transitions logs every callback at INFO; only its warnings are news to an operator.
        logging.getLogger("transitions").setLevel(logging.WARNING)
        messages = logging.getLogger(MESSAGE_LOGGER)
        messages.propagate = False  # frames go to their own file, not the console
        if log_dir is None:
            messages.disabled = True
            return
        messages.disabled = False
        messages.setLevel(logging.INFO)
        log_dir.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            log_dir / MESSAGE_LOG_NAME,
            maxBytes=max_bytes,
            backupCount=backup_count,
            encoding="utf-8",
        )
        rotating.setFormatter(
            logging.Formatter("%(asctime)s.%(msecs)03d %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._add(messages, logging.handlers.QueueHandler(records))
        self._listener = logging.handlers.QueueListener(records, rotating)
        self._listener.start()
        self._rotating = rotating

    def _add(self, logger: logging.Logger, handler: logging.Handler) -> None:
        logger.addHandler(handler)
        self._handlers.append((logger, handler))

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()  # flushes what is queued
            self._listener = None
            self._rotating.close()
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        self._handlers.clear()
