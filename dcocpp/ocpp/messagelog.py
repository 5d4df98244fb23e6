"""The OCPP message log: every frame in and out, with a timestamp, one line each.

Frames are hot (every CALL is four of them), so writing one must cost microseconds: a line is
formatted and appended to a queue, and a writer thread hands the queue to the stdlib's
`RotatingFileHandler` in batches (one size check, one write and one flush per batch instead of
per frame). Lines still queued at a crash are lost (at most `FLUSH_INTERVAL` seconds); what is
written is in order. A disk that cannot keep up (frozen, or slower than a peer's flood) lets
at most `MAX_QUEUED_CHARS` wait in memory: lines beyond it are dropped, and the file says how
many where they would have been (and the log, as a warning). Without a file (tests, library
use) frames go to the "dcocpp.messages" logger at DEBUG. Frames that would reveal the
AuthorizationKey are redacted first.
"""

from __future__ import annotations

import collections
import json
import logging
import logging.handlers
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

MESSAGE_LOGGER = "dcocpp.messages"
FLUSH_INTERVAL = 0.2
MAX_QUEUED_CHARS = 4 * 1024 * 1024
_SECRET_KEYS = ("AuthorizationKey",)
REDACTED = "<redacted>"

log = logging.getLogger(MESSAGE_LOGGER)
_warn = logging.getLogger(__name__)


def redact(text: str) -> str:
    """Hide the value of a ChangeConfiguration that sets a secret key."""
    if not any(key in text for key in _SECRET_KEYS):  # cheap test first: frames are hot
        return text
    try:
        frame = json.loads(text)
        payload = frame[3]
        if frame[0] == 2 and payload.get("key") in _SECRET_KEYS and "value" in payload:
            payload["value"] = REDACTED
            return json.dumps(frame, separators=(",", ":"))
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        pass
    return text


_second: tuple[int, str] = (-1, "")


def _timestamp() -> str:
    """UTC with milliseconds; the part down to the second is formatted once per second (a log
    line's time, on the path of every frame: not `dcocpp.clock.ocpp_time`, which formats the
    whole instant each time)."""
    global _second
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((now - whole) * 1000):03d}Z"


class MessageFile:
    """A size-rotated file of frame lines, written by its own thread in batches.

    `start()` opens the file and starts the thread; `close()` writes what is queued and stops."""

    def __init__(self, path: Path, *, max_bytes: int, backup_count: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handler = RotatingLogFile(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._lines: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()  # the lines, their size and the drops, across threads
        self._queued = 0  # characters in `_lines`
        self._dropped = 0  # lines dropped since the last batch
        self._lost = 0  # lines the file refused since it last took them (a full disk)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ocpp-message-log", daemon=True)

    def start(self) -> MessageFile:
        self._thread.start()
        return self

    def write(self, line: str) -> None:
        with self._lock:
            if self._queued + len(line) > MAX_QUEUED_CHARS:
                self._dropped += 1
                return
            self._queued += len(line)
            self._lines.append(line)

    @property
    def queued_chars(self) -> int:
        return self._queued

    def flush(self) -> None:
        """Write everything queued so far (from any thread)."""
        with self._lock:
            batch = list(self._lines)
            self._lines.clear()
            self._queued = 0
            dropped, self._dropped = self._dropped, 0
        if dropped:
            note = (
                f"{dropped} frame line(s) dropped: the message log could not be written fast enough"
            )
            batch.append(f"{_timestamp()} log -- {note}")
            _warn.warning("%s: %s", self.path, note)
        if batch:
            record = logging.LogRecord(
                MESSAGE_LOGGER, logging.INFO, "", 0, "\n".join(batch), None, None
            )
            self._handler.handle(record)
            self._note_outcome(len(batch))

    def _note_outcome(self, lines: int) -> None:
        """Say once when the file cannot be written (a full disk: no traceback per batch), and
        once when it can again, with how many lines were lost meanwhile."""
        error = self._handler.take_error()
        if error is not None:
            if self._lost == 0:
                _warn.warning(
                    "%s: cannot write (%s): frame lines are lost until it can again",
                    self.path,
                    error,
                )
            self._lost += lines
        elif self._lost:
            _warn.warning("%s: written again; %d frame line(s) were lost", self.path, self._lost)
            self._lost = 0

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()
        try:
            self._handler.close()
        except OSError as exc:  # its last flush, on a disk that is still full
            _warn.warning("%s: not closed cleanly: %s", self.path, exc)


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """The rotating file, keeping a write's error for its writer (`take_error`) instead of
    printing logging's "--- Logging error ---" traceback to the console for every batch."""

    _error: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        self._error = sys.exc_info()[1]

    def take_error(self) -> BaseException | None:
        error, self._error = self._error, None
        return error


_file: MessageFile | None = None


def open_message_file(path: Path, *, max_bytes: int, backup_count: int) -> MessageFile:
    """Send every MessageLog's frames to this file from now on."""
    global _file
    close_message_file()
    _file = MessageFile(path, max_bytes=max_bytes, backup_count=backup_count).start()
    return _file


def close_message_file() -> None:
    global _file
    if _file is not None:
        _file.close()
        _file = None


class MessageLog:
    """Writes `<time> <peer> <direction> <frame>` lines; `>>` sent, `<<` received. `tap`
    gets each line's direction and redacted text too (the operator's console)."""

    def __init__(self, peer: str, *, tap: Callable[[str, str], None] | None = None):
        self.peer = peer
        self._tap = tap

    def sent(self, text: str) -> None:
        self._line(">>", text)

    def received(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "backslashreplace")
        self._line("<<", text)

    def note(self, what: str) -> None:
        """A line about the connection itself (opened, closed, dropped frame)."""
        self._line("--", what)

    def _line(self, direction: str, text: str) -> None:
        sink = _file
        tap = self._tap
        if sink is None and tap is None and not log.isEnabledFor(logging.DEBUG):
            return
        text = redact(text)
        if tap is not None:
            tap(direction, text)
        if sink is not None:
            sink.write(f"{_timestamp()} {self.peer} {direction} {text}")
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s", self.peer, direction, text)
