"""One charger per data directory: the process that runs on it holds an exclusive lock.

Two `dcocpp run` on one data directory (a second start by hand, a unit file and a forgotten
terminal) would each take the other's running transactions for cut off by a crash, bill them
twice or not at all, and drive the same relays. The lock is `flock` on `<dataDir>/dcocpp.lock`:
the kernel releases it with the process, whatever ends it, so a crash never leaves a stale
lock behind. The file holds the pid of its holder, for the message of the one refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from dcocpp.storage.database import StorageError

LOCK_NAME = "dcocpp.lock"


@contextlib.contextmanager
def held(data_dir: Path) -> Iterator[None]:
    """Hold `data_dir` for this process while the block runs; `StorageError` (one line, with
    the holder's pid) when another process holds it."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"data directory {data_dir}: cannot create {LOCK_NAME}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise StorageError(
                f"data directory {data_dir}: another dcocpp (pid {holder}) is running on it;"
                " one charger per data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
