"""A download's bytes on disk until it is complete.

The bytes go to `<target>.part`; beside it `<target>.part.json` records which file they are
the start of (the URL without credentials, and the server's validator of that version of the
file: an HTTP ETag or Last-Modified, an FTP size and modification time). A later attempt at the
same URL resumes from there (HTTP Range with If-Range, FTP REST) when the server still has
that version; anything else starts from the first byte. Only a complete file, flushed to the
disk, takes the target's name: the target never holds half a firmware.

Blocking file I/O: the transfers call it from worker threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dcocpp.ocpp.transfer.errors import TransferError
from dcocpp.storage.atomicfile import replace_file
from dcocpp.storage.oserrors import directory_problem, reason


def partial_path(target: Path) -> Path:
    """Where the bytes of a download to `target` are kept until it is complete."""
    return target.with_name(target.name + ".part")


def state_path(target: Path) -> Path:
    return target.with_name(target.name + ".part.json")


class PartialFile:
    """The partial download of `source` (a URL without credentials) to `target`."""

    def __init__(self, target: Path, source: str) -> None:
        self.target = target
        self.source = source
        self.part = partial_path(target)
        self.state = state_path(target)
        self.size = 0  # bytes on disk: where the next byte goes
        self.validator: str | None = None  # the version of the file those bytes are of
        self._file: BinaryIO | None = None

    def open(self) -> None:
        """Resume the bytes of an earlier attempt at the same source, or start empty."""
        problem = directory_problem(self.target.parent)
        if problem is not None:
            raise TransferError(f"download directory {self.target.parent}: {problem}")
        validator = self._saved_validator()
        with self._writing():
            # Unbuffered: a full disk fails the write that meets it, not a later close.
            self._file = open(self.part, "ab" if validator else "wb", buffering=0)  # noqa: SIM115
            self.size = self._file.tell()
        self.validator = validator if self.size else None

    def restart(self) -> None:
        """Drop the bytes so far: the server sends the file from its first byte."""
        self.close()
        with self._writing():
            self._file = open(self.part, "wb", buffering=0)  # noqa: SIM115
        self.size = 0
        self._set_validator(None)

    def expect(self, validator: str | None, total: int | None) -> None:
        """The server's answer: the version of the file (None: it names none, so these bytes
        cannot be resumed later) and its size when known; TransferError when the rest cannot
        fit on the disk, before any of it is written."""
        if total is not None and total > self.size:
            needed = total - self.size
            with self._writing():
                free = shutil.disk_usage(self.part.parent).free
            if needed > free:
                raise TransferError(
                    f"{self.part.parent}: not enough space for the download: "
                    f"{needed} more bytes needed, {free} free"
                )
        if validator != self.validator:
            self._set_validator(validator)

    def write(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        with self._writing():
            while view:
                written = self._file.write(view)
                assert written is not None  # a raw file in blocking mode
                view = view[written:]
                self.size += written

    def finish(self) -> None:
        """The download is complete: flushed to the disk, named `target`, the state gone."""
        assert self._file is not None
        with self._writing():
            os.fsync(self._file.fileno())
            self.close()
            os.replace(self.part, self.target)
            self.state.unlink(missing_ok=True)
            _sync_directory(self.target.parent)

    def close(self) -> None:
        """Close the file; its bytes and state stay for the next attempt."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def discard(self) -> None:
        """Close and remove the bytes and the state (the download is given up)."""
        self.close()
        discard(self.target)

    def _saved_validator(self) -> str | None:
        try:
            state = json.loads(self.state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # none saved, or unreadable: start over
        if not isinstance(state, dict) or state.get("source") != self.source:
            return None
        validator = state.get("validator")
        return validator if isinstance(validator, str) else None

    def _set_validator(self, validator: str | None) -> None:
        with self._writing():
            if validator is None:
                self.state.unlink(missing_ok=True)
            else:
                replace_file(
                    self.state, json.dumps({"source": self.source, "validator": validator})
                )
        self.validator = validator

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise TransferError(f"{self.part}: cannot write: {reason(exc)}") from exc


def discard(target: Path) -> None:
    """Remove what a download to `target` left to resume (nothing if there is none)."""
    for path in (partial_path(target), state_path(target)):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise TransferError(f"{path}: cannot remove: {reason(exc)}") from exc


def _sync_directory(directory: Path) -> None:
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
