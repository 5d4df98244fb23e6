"""OSErrors as an operator reads them: the cause in a few words, for a one-line message that
names the path or address itself (each layer translates its OSErrors into its own exception
root at its boundary, with these words)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def reason(exc: OSError) -> str:
    """`[Errno 98] Address already in use: ...` -> `address already in use`."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def directory_problem(path: Path) -> str | None:
    """Create the directory `path` (with its parents) when it is missing; None when the charger
    can write files in it, else why not (`not a directory`, `cannot create it: ...`,
    `cannot write in it: ...`)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # exist_ok covers directories only: something else is there
        return "not a directory"
    except OSError as exc:
        return f"cannot create it: {reason(exc)}"
    try:
        # A real file, as the charger writes them (permissions, read-only file systems, /proc).
        with tempfile.NamedTemporaryFile(dir=path, prefix=".dcocpp-write-test-"):
            pass
    except OSError as exc:
        return f"cannot write in it: {reason(exc)}"
    return None
