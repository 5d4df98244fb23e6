"""How a transfer reports its progress to its caller."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int | None], None]
"""Called on the trio side with the bytes done so far and the total (None while the server has
not said), as the bytes move: often (every 64 KiB or so), so it must be cheap. The bytes done
go back to 0 when a server sends a file from its start again instead of resuming it."""
