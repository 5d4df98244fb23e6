"""The diagnostics archive: a .tar.gz of log files (cut to a time window where their lines
carry times) and JSON documents, written by the standard library's `tarfile`.

Blocking (it reads and compresses files): callers run `build_archive` in a worker thread."""

from __future__ import annotations

import io
import json
import re
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dcocpp.ocpp.errors import OcppError
from dcocpp.storage.oserrors import reason

# A line that starts with a time: the message log's `2026-12-07T01:53:13.123Z`, the console's
# `2026-12-07 01:53:13,123` (local time, no zone).
_LEADING_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,]\d+)?(Z|[+-]\d{2}:?\d{2})?"
)


class ArchiveError(OcppError):
    """The archive could not be written (the path and the cause)."""


def line_time(line: str) -> datetime | None:
    """The time a log line starts with (aware; a time without a zone is local), else None."""
    match = _LEADING_TIME.match(line)
    if match is None:
        return None
    day, clock, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock}{zone}")
    except ValueError:
        return None
    if match.group(3) is None:
        return parsed.replace(tzinfo=None).astimezone()  # naive: the local zone's wall time
    return parsed


def within(lines: Iterable[str], start: datetime | None, stop: datetime | None) -> Iterator[str]:
    """The lines logged from `start` to `stop` (either may be open). A line without a time (a
    traceback's) goes with the line before it; lines before the first timed one are kept."""
    keep = True
    for line in lines:
        at = line_time(line)
        if at is not None:
            keep = (start is None or at >= start) and (stop is None or at <= stop)
        if keep:
            yield line


def build_archive(
    target: Path,
    *,
    log_files: Sequence[Path],
    documents: Mapping[str, Any],
    start: datetime | None = None,
    stop: datetime | None = None,
) -> list[str]:
    """Write `target` (.tar.gz): each of `log_files` under `logs/` with only its lines from
    `start` to `stop`, and each of `documents` as `<name>.json`. Returns the member names.
    A log file that vanished meanwhile (rotated away) is left out; ArchiveError otherwise."""
    start = None if start is None else start.astimezone(UTC)
    stop = None if stop is None else stop.astimezone(UTC)
    names: list[str] = []
    now = time.time()
    try:
        with tarfile.open(target, "w:gz") as tar:
            for name, document in documents.items():
                data = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
                _add(tar, f"{name}.json", data, now)
                names.append(f"{name}.json")
            for path in log_files:
                # Through a temporary file, not memory (a log is megabytes): a tar member
                # needs its size before its bytes.
                with tempfile.TemporaryFile(dir=target.parent) as cut:
                    try:
                        with path.open(encoding="utf-8", errors="replace", newline="") as source:
                            for line in within(source, start, stop):
                                cut.write(line.encode())
                        mtime = path.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    info = tarfile.TarInfo(f"logs/{path.name}")
                    info.size, info.mtime, info.mode = cut.tell(), int(mtime), 0o644
                    cut.seek(0)
                    tar.addfile(info, cut)
                names.append(info.name)
    except OSError as exc:
        target.unlink(missing_ok=True)
        problem = f"cannot write the diagnostics archive: {reason(exc)}"
        raise ArchiveError(f"{target}: {problem}") from exc
    return names


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
