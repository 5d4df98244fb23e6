"""Small files that must survive a power cut whole: the OCPP keys the central system changed,
the data directory's record of its database, the certificate store."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_file(path: Path, text: str) -> None:
    """Replace `path` with `text` so that after a power cut it holds either the old or the new
    text, never a mix: a temporary file beside it, fsync, rename, fsync of the directory.
    Raises OSError (then `path` is unchanged)."""
    # mkstemp creates the file mode 0600: the OCPP keys may hold the AuthorizationKey.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    # The rename itself is only durable once the directory entry is on disk.
    _sync_directory(path.parent)


def move_file(source: Path, target: Path) -> None:
    """Rename `source` to `target` (same file system), durably. Raises OSError."""
    os.replace(source, target)
    _sync_directory(target.parent)
    if source.parent != target.parent:
        _sync_directory(source.parent)


def remove_file(path: Path) -> None:
    """Remove `path` durably (after a power cut it is gone). Raises OSError."""
    os.unlink(path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    if os.name == "posix":
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
